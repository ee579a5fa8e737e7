//! Disk facts the spool acts on: free space, and making a directory entry durable.

use std::path::Path;

use super::SpoolError;

/// Bytes an unprivileged writer may still use on the file system holding `dir`.
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    let st = nix::sys::statvfs::statvfs(dir).map_err(std::io::Error::from)?;
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    Ok(st.blocks_available() as u64 * st.fragment_size() as u64)
}

/// Refuses new data while `dir`'s file system has less than `min` bytes free.
pub fn check_free(dir: &Path, min: u64) -> Result<(), SpoolError> {
    let free = free_bytes(dir).map_err(|e| SpoolError::io(dir, &e))?;
    if free < min {
        return Err(SpoolError::DiskLow {
            path: dir.to_owned(),
            free_mib: free >> 20,
            min_mib: min >> 20,
        });
    }
    Ok(())
}

/// fsyncs a directory so that a file created, renamed or removed in it survives a power loss.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Replaces `path` with `bytes` so that a crash leaves the old or the new content, never a torn one:
/// write a temporary file, fsync it, rename it over `path`, fsync the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    sync_dir(dir)
}

/// Does the device take a write again? Creates a file beside `path`, writes and fsyncs a byte,
/// renames it to `path`, fsyncs the directory, then removes it: every step a commit takes. (After a
/// failed write or sync the spool waits for this, or for a real commit, before it reports ready.)
pub fn probe_write(path: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    let result = (|| {
        // Not create_new: a probe file a failed probe could not remove must not stop every later one.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(b"\n")?;
        f.sync_data()?;
        std::fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    let _ = std::fs::remove_file(&tmp);
    let _ = std::fs::remove_file(path);
    result?;
    sync_dir(dir)
}
