//! One writer per state directory. Two processes on one state directory (an `import` while the daemon
//! runs, or a second daemon during a rolling deploy on a shared volume) would each write manifest
//! entry N from their own chain head and fork the chain. So every command that writes takes an
//! exclusive `flock` on `<state dir>/retention-bot.lock` for its whole life; a second one is refused at
//! once with the holder's PID, host and command. The kernel drops the lock when its holder dies,
//! kill -9 included, so there is never a stale lock to clean up. Linux's NFS client (EFS included)
//! turns `flock` into an NFSv4 lock the server enforces across hosts.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub(crate) const LOCK_FILE: &str = "retention-bot.lock";

/// Held for as long as it lives.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another retention-bot holds {path} ({holder}): two processes on one state directory would fork the signed manifest chain; stop that one first{hint}"
    )]
    Held {
        path: PathBuf,
        holder: String,
        hint: &'static str,
    },
    #[error("cannot lock {path} (check that the state directory, WICKRIO_STATE_DIR, is writable)")]
    Io { path: PathBuf, source: std::io::Error },
}

impl StateLock {
    /// Takes the lock of `state_dir` for `command` (`run`, `import`), or says who holds it.
    pub fn acquire(state_dir: &Path, command: &str) -> Result<StateLock, LockError> {
        let path = state_dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim() {
                    "" => "it has not said who it is yet".to_owned(),
                    h => h.to_owned(),
                };
                return Err(LockError::Held {
                    path,
                    holder,
                    hint: match command {
                        "import" => {
                            "; or, to add messages while it runs, POST them to its HTTP source instead: curl -H 'Content-Type: application/x-ndjson' --data-binary @FILE http://<WICKRIO_INGEST_ADDR>/v1/messages"
                        }
                        _ => "",
                    },
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        // Who holds it, for the message a second process gets. Informational: the lock is the flock.
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "unknown host".to_owned());
        let since = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let who = format!(
            "PID {} on host {host}, `retention-bot {command}` since {since}\n",
            std::process::id()
        );
        let written = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(who.as_bytes()));
        if let Err(e) = written {
            tracing::warn!(error = %crate::error_chain::Chain(&e), file = %path.display(), "cannot note this process in the lock file (the lock itself is held)");
        }
        Ok(StateLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_name() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateLock::acquire(dir.path(), "run").unwrap();
        let e = StateLock::acquire(dir.path(), "import").unwrap_err().to_string();
        assert!(e.contains(&format!("PID {}", std::process::id())), "{e}");
        assert!(e.contains("`retention-bot run`") && e.contains("POST them"), "{e}");
        drop(first);
        StateLock::acquire(dir.path(), "run").unwrap();
    }

    #[test]
    fn a_symlinked_lock_file_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "keep").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join(LOCK_FILE)).unwrap();
        assert!(matches!(
            StateLock::acquire(dir.path(), "run"),
            Err(LockError::Io { .. })
        ));
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    }
}
