//! The spool's one disk rule of its own: refuse new data while a destination is low on space.

use std::path::Path;

use super::SpoolError;
use crate::durable;

/// Refuses new data while `dir`'s file system has less than `min` bytes free.
pub(crate) fn check_free(dir: &Path, min: u64) -> Result<(), SpoolError> {
    let free = durable::free_bytes(dir).map_err(|e| SpoolError::io(dir, e))?;
    if free < min {
        return Err(SpoolError::DiskLow {
            path: dir.to_owned(),
            free_mib: free >> 20,
            min_mib: min >> 20,
        });
    }
    Ok(())
}
