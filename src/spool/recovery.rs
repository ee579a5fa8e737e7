//! Crash recovery, run once before the writer starts.
//!
//! A message file left `.open` by a crash (kill -9, power loss) holds every acknowledged line, since
//! each was fsync'd before its acknowledgement, plus perhaps a torn tail that was never acknowledged.
//! Recovery cuts the file after its last complete, valid JSON line (never dropping a complete one),
//! closes it and hands it to the sink. Partial attachments were never acknowledged and are removed.
//! Files another live instance holds locked are left alone.

use std::fs::File;
use std::path::{Path, PathBuf};

use tokio::sync::mpsc;

use super::naming::{PARTIAL_PREFIX, acked_note, closed_name_of_open, suspect_name};
use super::{ClosedFile, FileKind};
use crate::config::SpoolConfig;
use crate::durable;
use crate::metrics::{Counter, Metrics};

pub(super) fn recover(
    config: &SpoolConfig,
    metrics: &Metrics,
    closed: &mpsc::UnboundedSender<ClosedFile>,
) -> std::io::Result<()> {
    for (path, bytes) in close_abandoned(&config.mesg_dest, &config.basename)? {
        metrics.incr(Counter::MessageFilesClosed);
        let _ = closed.send(ClosedFile::new(path, FileKind::Messages, bytes));
    }
    remove_partial_attachments(&config.file_dest)
}

/// Repairs and closes every `<basename>_*.txt.open` file in `dir` that no live instance holds
/// locked; returns the closed files and their sizes. Used for message files and manifests alike.
pub(crate) fn close_abandoned(dir: &Path, basename: &str) -> std::io::Result<Vec<(PathBuf, u64)>> {
    let mut closed = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(closed_name) = name.to_str().and_then(|n| closed_name_of_open(n, basename)) else {
            continue;
        };
        let open_path = entry.path();
        let Some(file) = open_regular(&open_path)? else {
            continue;
        };
        if file.try_lock().is_err() {
            tracing::info!(file = %open_path.display(), "open file belongs to a running instance; left alone");
            continue;
        }
        // A file given up after a failed write says how much of it was acknowledged: only that
        // is kept, and it is closed as suspect.
        let note = acked_note(&open_path);
        let acked = std::fs::read_to_string(&note)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok());
        if let Some(acked) = acked
            && file.metadata()?.len() > acked
        {
            file.set_len(acked)?;
        }
        let (kept, dropped) = cut_torn_tail(&file)?;
        if kept == 0 {
            drop(file);
            std::fs::remove_file(&open_path)?;
            let _ = std::fs::remove_file(&note);
            durable::sync_dir(dir)?;
            tracing::warn!(file = %open_path.display(), dropped_bytes = dropped, "removed an open file that held no complete line");
            continue;
        }
        let closed_path = match acked {
            Some(_) => suspect_name(&dir.join(closed_name)),
            None => dir.join(closed_name),
        };
        std::fs::rename(&open_path, &closed_path)?;
        let _ = std::fs::remove_file(&note);
        durable::sync_dir(dir)?;
        drop(file);
        tracing::warn!(file = %closed_path.display(), kept_bytes = kept, dropped_bytes = dropped, "recovered a message file left open by a crash");
        closed.push((closed_path, kept));
    }
    Ok(closed)
}

/// Opens a file found by its name for repair; `None` (with a warning) for anything but a regular
/// file, so that a link planted under an open file's name cannot make recovery truncate its target.
fn open_regular(path: &Path) -> std::io::Result<Option<File>> {
    match durable::open_regular_rw(path) {
        Ok(file) => Ok(Some(file)),
        Err(e) if durable::is_not_regular(&e) => {
            tracing::warn!(file = %path.display(), "not a regular file where an open file was expected; left alone");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Truncates `file` after its last complete line that is valid JSON; returns (kept, dropped) bytes.
pub(crate) fn cut_torn_tail(file: &File) -> std::io::Result<(u64, u64)> {
    let total = file.metadata()?.len();
    // From the start, wherever the file's position was left.
    std::io::Seek::rewind(&mut &*file)?;
    let (mut offset, mut good) = (0u64, 0u64);
    durable::for_each_line(file, |line| {
        offset += line.len() as u64;
        let complete = line.last() == Some(&b'\n');
        if complete && serde_json::from_slice::<serde::de::IgnoredAny>(line).is_ok() {
            good = offset;
        }
    })?;
    if good < total {
        file.set_len(good)?;
    }
    file.sync_all()?;
    Ok((good, total - good))
}

fn remove_partial_attachments(dir: &Path) -> std::io::Result<()> {
    let mut removed = false;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if !entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(PARTIAL_PREFIX))
        {
            continue;
        }
        let Some(file) = open_regular(&entry.path())? else {
            continue;
        };
        if file.try_lock().is_err() {
            continue; // another instance is still receiving it
        }
        std::fs::remove_file(entry.path())?;
        tracing::warn!(file = %entry.path().display(), "removed a partial attachment that was never acknowledged");
        removed = true;
    }
    if removed {
        durable::sync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::io::Write;

    #[test]
    fn cuts_only_the_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut f = File::create(&path).unwrap();
        f.write_all(b"{\"a\":1}\n{\"b\":2}\n{\"c\":").unwrap();
        let f = OpenOptions::new().read(true).write(true).open(&path).unwrap();
        assert_eq!(cut_torn_tail(&f).unwrap(), (16, 5));
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"a\":1}\n{\"b\":2}\n");
    }

    #[test]
    fn a_symlink_named_like_an_open_file_is_left_alone_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("precious");
        std::fs::write(&target, b"{\"a\":1}\nnot json").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("rm_x_1.txt.open")).unwrap();
        assert!(close_abandoned(dir.path(), "rm").unwrap().is_empty());
        assert_eq!(std::fs::read(&target).unwrap(), b"{\"a\":1}\nnot json");
        assert!(dir.path().join("rm_x_1.txt.open").exists());
    }

    #[test]
    fn a_noted_file_keeps_only_its_acknowledged_bytes_and_is_closed_as_suspect() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("rm_x_1.txt.open");
        std::fs::write(&open, b"{\"a\":1}\n{\"refused\":2}\n").unwrap();
        std::fs::write(acked_note(&open), b"8").unwrap();
        let closed = close_abandoned(dir.path(), "rm").unwrap();
        assert_eq!(closed, vec![(dir.path().join("rm_x_1.suspect.txt"), 8)]);
        assert_eq!(std::fs::read(&closed[0].0).unwrap(), b"{\"a\":1}\n");
        assert!(!acked_note(&open).exists());
    }

    #[test]
    fn the_cut_reads_from_the_start_whatever_the_position() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"{\"a\":1}\n{\"b\"").unwrap();
        assert_eq!(cut_torn_tail(&f).unwrap(), (8, 4));
    }

    #[test]
    fn zeros_after_the_last_line_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"{\"a\":1}\n\0\0\0\0").unwrap();
        let f = OpenOptions::new().read(true).write(true).open(&path).unwrap();
        assert_eq!(cut_torn_tail(&f).unwrap(), (8, 4));
    }
}
