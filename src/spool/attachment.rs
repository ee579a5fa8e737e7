//! Receiving an attachment: streamed to a hidden partial file (never held whole in memory), fsync'd,
//! then linked under its final `attachment_<time>_<name>` name. A partial file that is dropped before
//! it is finished is removed, so an aborted upload leaves nothing behind.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::AsyncWriteExt;

use super::SpoolError;
use super::health::Health;
use super::naming::{Names, attachment_name};
use crate::durable;

/// Longest name part we keep, leaving room in the 255-byte file-name limit for the
/// `attachment_<17 digits>_` prefix and a collision suffix.
const MAX_NAME_BYTES: usize = 200;
/// How often (in bytes received) free space is checked during a long upload.
const FREE_CHECK_EVERY: u64 = 8 << 20;

/// Why a requested file name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BadName {
    #[error("file name contains a control character (such as NUL)")]
    ControlCharacter,
    #[error("file name contains a `..` path component")]
    ParentDirectory,
}

/// Makes a producer's file name safe to use as part of a local file name: path tricks (`..`, control
/// characters such as NUL) are refused; path separators become `_`; long names are cut (keeping the
/// extension) to fit the file system's 255-byte limit.
pub(crate) fn safe_attachment_name(requested: &str) -> Result<String, BadName> {
    if requested.chars().any(char::is_control) {
        return Err(BadName::ControlCharacter);
    }
    if requested.split(['/', '\\']).any(|part| part == "..") {
        return Err(BadName::ParentDirectory);
    }
    let name: String = requested
        .trim()
        .chars()
        .map(|c| if c == '/' || c == '\\' { '_' } else { c })
        .collect();
    if name.is_empty() {
        return Ok("unnamed".into());
    }
    if name.len() <= MAX_NAME_BYTES {
        return Ok(name);
    }
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e)
        .filter(|e| e.len() <= 16)
        .unwrap_or("");
    let keep = MAX_NAME_BYTES - if ext.is_empty() { 0 } else { ext.len() + 1 };
    let mut cut = keep;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    Ok(if ext.is_empty() {
        name[..cut].to_owned()
    } else {
        format!("{}.{ext}", &name[..cut])
    })
}

/// An attachment being received.
pub(crate) struct PartialAttachment {
    file: tokio::fs::File,
    guard: RemoveOnDrop,
    dir: PathBuf,
    written: u64,
    max: u64,
    min_free: u64,
    next_free_check: u64,
    health: Arc<Health>,
}

/// A finished, durable attachment whose message line is not yet written.
#[derive(Debug)]
pub(super) struct SavedAttachment {
    pub path: PathBuf,
    pub bytes: u64,
}

impl PartialAttachment {
    pub(super) async fn create(
        dir: &Path,
        names: &Names,
        max: u64,
        min_free: u64,
        health: Arc<Health>,
    ) -> Result<Self, SpoolError> {
        let path = dir.join(names.partial_attachment());
        let p = path.clone();
        // The guard is made with the file, so a request dropped while it is being created (or
        // before it took the file) removes it all the same: a hang-up leaves no partial file.
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::task::spawn_blocking(move || {
            let created = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&p)
                .map(|f| (f, RemoveOnDrop(Some(p.clone()))))
                .and_then(|(f, guard)| {
                    // Locked so that recovery in another instance sharing FILEDEST leaves it alone.
                    f.try_lock().map_err(std::io::Error::from)?;
                    Ok((f, guard))
                });
            let _ = tx.send(created);
        });
        let (file, guard) = rx
            .await
            .map_err(|e| SpoolError::task(&path, e))?
            .map_err(|e| SpoolError::io(&path, e))?;
        Ok(Self {
            file: tokio::fs::File::from_std(file),
            guard,
            dir: dir.to_owned(),
            written: 0,
            max,
            min_free,
            next_free_check: FREE_CHECK_EVERY,
            health,
        })
    }

    /// A write or sync failed: the device's fault (not a full disk) makes the spool unready.
    fn device_error(&self, e: std::io::Error) -> SpoolError {
        let err = SpoolError::io(self.guard.path(), e);
        if !matches!(err, SpoolError::DiskFull { .. }) {
            self.health.failed(&err);
        }
        err
    }

    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), SpoolError> {
        self.written += chunk.len() as u64;
        if self.written > self.max {
            return Err(SpoolError::TooLarge { max: self.max });
        }
        if self.written >= self.next_free_check {
            self.next_free_check = self.written + FREE_CHECK_EVERY;
            let (dir, min) = (self.dir.clone(), self.min_free);
            tokio::task::spawn_blocking(move || super::disk::check_free(&dir, min))
                .await
                .map_err(|e| SpoolError::task(&self.dir, e))??;
        }
        match self.file.write_all(chunk).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.device_error(e)),
        }
    }

    /// Makes the bytes durable and gives the file its final name (with a suffix if that name is
    /// taken), then makes the name durable too. On any failure nothing is left: neither the partial
    /// file nor one under the final name.
    pub(super) async fn finish(mut self, safe_name: &str) -> Result<SavedAttachment, SpoolError> {
        let partial = self.guard.path().to_owned();
        if let Err(e) = self.file.flush().await {
            return Err(self.device_error(e));
        }
        if let Err(e) = self.file.sync_all().await {
            return Err(self.device_error(e));
        }
        let (dir, name, from) = (self.dir.clone(), safe_name.to_owned(), partial.clone());
        let linked = tokio::task::spawn_blocking(move || link_under_free_name(&dir, &name, &from))
            .await
            .map_err(|e| SpoolError::task(&partial, e))?;
        let path = match linked {
            Ok(path) => path,
            Err(e) => return Err(self.device_error(e)),
        };
        // The partial name is gone and the final one is durable: nothing left to clean up.
        self.guard.0 = None;
        Ok(SavedAttachment {
            path,
            bytes: self.written,
        })
    }
}

/// Hard-links `from` under the first free `attachment_...` name (link never overwrites), removes
/// `from`, and fsyncs the directory. If a step after the link fails, the new name is removed again.
fn link_under_free_name(dir: &Path, safe_name: &str, from: &Path) -> std::io::Result<PathBuf> {
    let now = crate::clock::now();
    for n in 0..10_000 {
        let path = dir.join(attachment_name(safe_name, now, n));
        match std::fs::hard_link(from, &path) {
            Ok(()) => {
                return match std::fs::remove_file(from).and_then(|()| durable::sync_dir(dir)) {
                    Ok(()) => Ok(path),
                    Err(e) => {
                        let _ = std::fs::remove_file(&path);
                        Err(e)
                    }
                };
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("no free attachment name after 10000 tries"))
}

impl SavedAttachment {
    /// Removes a saved attachment whose message could not be written, and makes that durable.
    pub(super) async fn discard(self) {
        let path = self.path;
        let _ = tokio::task::spawn_blocking(move || {
            let removed = std::fs::remove_file(&path).and_then(|()| match path.parent() {
                Some(dir) => durable::sync_dir(dir),
                None => Ok(()),
            });
            if let Err(e) = removed {
                tracing::warn!(error = %crate::error_chain::Chain(&e), file = %path.display(), "cannot remove an attachment whose message was refused");
            }
        })
        .await;
    }
}

/// Removes a partial file when the upload is abandoned (error, client gone, shutdown).
struct RemoveOnDrop(Option<PathBuf>);

impl RemoveOnDrop {
    fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let Some(path) = self.0.take() else { return };
        let remove = move || {
            // NotFound is the normal case after `finish` moved the file to its final name.
            let _ = std::fs::remove_file(path);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(remove)),
            Err(_) => remove(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_path_tricks() {
        assert_eq!(safe_attachment_name("../../etc/passwd"), Err(BadName::ParentDirectory));
        assert_eq!(safe_attachment_name("a\\..\\b"), Err(BadName::ParentDirectory));
        assert_eq!(safe_attachment_name("a\0b"), Err(BadName::ControlCharacter));
        assert_eq!(safe_attachment_name("a\nb"), Err(BadName::ControlCharacter));
    }

    #[test]
    fn flattens_paths_and_keeps_ordinary_names() {
        assert_eq!(
            safe_attachment_name("dir/sub/report.pdf").unwrap(),
            "dir_sub_report.pdf"
        );
        assert_eq!(safe_attachment_name("my..file.txt").unwrap(), "my..file.txt");
        assert_eq!(safe_attachment_name("").unwrap(), "unnamed");
    }

    #[test]
    fn long_names_fit_with_their_extension() {
        let long = format!("{}.jpeg", "é".repeat(300));
        let safe = safe_attachment_name(&long).unwrap();
        assert!(safe.len() <= MAX_NAME_BYTES, "{}", safe.len());
        assert!(safe.ends_with(".jpeg"));
        assert!(attachment_name(&safe, chrono::Utc::now(), 9999).len() <= 255);
    }
}
