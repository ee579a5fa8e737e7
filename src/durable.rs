//! Files that survive a power cut and cannot be turned against the bot: directory fsyncs, atomic
//! replacement, free space, and opening a file found by its name without following a link someone
//! else planted there. Every part of the bot that writes or repairs files goes through these, and
//! through [`for_each_line`] when it reads one back.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Flags for opening a file found by name: never through a symbolic link, never blocking on a FIFO.
const BY_NAME: i32 = nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC;

/// Bytes an unprivileged writer may still use on the file system holding `dir`.
pub(crate) fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    let st = nix::sys::statvfs::statvfs(dir).map_err(std::io::Error::from)?;
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    Ok(st.blocks_available() as u64 * st.fragment_size() as u64)
}

/// fsyncs a directory so that a file created, renamed or removed in it survives a power loss.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Makes everything written to the file system `dir` is on durable, with one call (`syncfs`)
/// rather than one `fsync` per file: for many files written at once, then published together.
pub(crate) fn sync_filesystem(dir: &Path) -> std::io::Result<()> {
    let dir = File::open(dir)?;
    nix::unistd::syncfs(&dir).map_err(std::io::Error::from)
}

/// Removes a file and makes the removal durable (its directory fsync'd).
pub(crate) fn remove_durably(path: &Path) -> std::io::Result<()> {
    std::fs::remove_file(path)?;
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

/// fsyncs the directory holding `path`.
pub(crate) fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => sync_dir(dir),
        _ => sync_dir(Path::new(".")),
    }
}

/// Replaces `path` with `bytes` so that a crash leaves the old or the new content, never a torn one:
/// a new temporary file beside it (mode 0600, never through a link), fsync'd, renamed over `path`,
/// then the directory fsync'd.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    // A leftover from a crash (or something planted there) is replaced, never written through.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(BY_NAME)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    sync_parent(path)
}

/// Does the device take a write again? Creates a file beside `path`, writes and fsyncs a byte,
/// renames it to `path`, fsyncs the directory, then removes it: every step a commit takes.
pub(crate) fn probe_write(path: &Path) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let result = (|| {
        // Not create_new: a probe file a failed probe could not remove must not stop every later one.
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(BY_NAME)
            .open(&tmp)?;
        f.write_all(b"\n")?;
        f.sync_data()?;
        std::fs::rename(&tmp, path)?;
        sync_parent(path)
    })();
    let _ = std::fs::remove_file(&tmp);
    let _ = std::fs::remove_file(path);
    result?;
    sync_parent(path)
}

/// Opens a file found by its name for reading; refuses (`InvalidInput`) anything but a regular file
/// reached without a symbolic link.
pub(crate) fn open_regular(path: &Path) -> std::io::Result<File> {
    open_checked(path, OpenOptions::new().read(true))
}

/// [`open_regular`], for repairs (read and write).
pub(crate) fn open_regular_rw(path: &Path) -> std::io::Result<File> {
    open_checked(path, OpenOptions::new().read(true).write(true))
}

fn open_checked(path: &Path, options: &mut OpenOptions) -> std::io::Result<File> {
    let not_regular = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{} is not a regular file (a link, a FIFO or a device): left alone",
                path.display()
            ),
        )
    };
    // Looked at before it is opened: opening a device node can itself have effects.
    if !std::fs::symlink_metadata(path)?.is_file() {
        return Err(not_regular());
    }
    let file = options
        .custom_flags(BY_NAME)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            // ELOOP: the name is a symbolic link; ENXIO: a FIFO with no writer; EISDIR: a directory.
            Some(nix::libc::ELOOP | nix::libc::ENXIO | nix::libc::EISDIR) => not_regular(),
            _ => e,
        })?;
    if !file.metadata()?.is_file() {
        return Err(not_regular());
    }
    Ok(file)
}

/// Whether an error from [`open_regular`] means "not a regular file" (rather than an I/O failure).
pub(crate) fn is_not_regular(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::InvalidInput
}

/// Reads `source` line by line (each with its `\n`; the last one may have none) through one 1 MiB
/// buffer, whatever the file's size, handing each line to `each`; returns the last line. The one
/// loop spool recovery (finding a torn tail) and the manifest (hashing a file) read files with.
pub(crate) fn for_each_line(source: impl Read, mut each: impl FnMut(&[u8])) -> std::io::Result<Vec<u8>> {
    let mut reader = BufReader::with_capacity(1 << 20, source);
    let (mut line, mut last) = (Vec::new(), Vec::new());
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(last);
        }
        each(&line);
        std::mem::swap(&mut last, &mut line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symlink_fifo_or_directory_is_not_opened_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "secret").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        for path in [&link, &fifo, &dir.path().to_path_buf()] {
            let e = open_regular_rw(path).unwrap_err();
            assert!(is_not_regular(&e), "{}: {e}", path.display());
        }
        assert!(open_regular(&target).is_ok());
    }

    #[test]
    fn atomic_writes_replace_a_planted_temporary_link_instead_of_writing_through_it() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        let path = dir.path().join("head.json");
        std::os::unix::fs::symlink(&victim, path.with_extension("tmp")).unwrap();
        write_atomically(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
