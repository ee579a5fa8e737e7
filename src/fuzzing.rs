//! What the fuzz targets call. Each function is one parser of untrusted input, run whole.

use std::io::Write;

pub use crate::source::http::framing::{Framing, MAX_FRAMING};

/// Crash recovery of an open file holding `bytes`: returns what it kept and dropped.
pub fn recover_tail(bytes: &[u8]) -> std::io::Result<(Vec<u8>, u64)> {
    let mut file = tempfile::tempfile()?;
    file.write_all(bytes)?;
    let (kept, dropped) = crate::spool::recovery::cut_torn_tail(&file)?;
    let mut out = Vec::new();
    use std::io::{Read, Seek};
    file.rewind()?;
    file.read_to_end(&mut out)?;
    assert_eq!(out.len() as u64, kept);
    Ok((out, dropped))
}
