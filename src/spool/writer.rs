//! The writer thread: append, group commit, rotate.
//!
//! It runs on its own OS thread because everything it does is blocking file I/O; producers reach it
//! through a bounded channel and never block an async worker.
//!
//! A commit writes every batch that queued up, makes the files durable, and only then answers. What
//! makes an answer true:
//! - a batch is answered Ok only once every file it went into is fsync'd, and a file closed in the
//!   commit is also renamed to its closed name with the directory fsync'd;
//! - a batch is all or nothing: it goes into the open file if it fits, else into a new one, and a
//!   batch larger than a whole file gets files of its own (cut at line boundaries), so a failure can
//!   take all of it out again;
//! - a file on which a write, fsync, rename or directory fsync failed is never written again (after a
//!   failed fsync Linux may have dropped the dirty pages: "fsyncgate"). It is cut back to what earlier
//!   commits acknowledged, closed as `<name>.suspect.txt` and handed on; every batch of the commit in
//!   it is refused, and the spool reports itself unready until a write and an fsync succeed again.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::naming::{acked_note, open_name, suspect_name};
use super::{ClosedFile, FileKind, Request, Shared, SpoolError};
use crate::durable;
use crate::error_chain::Chain;
use crate::message::Lines;
use crate::metrics::Counter;

/// Stop gathering a group once it holds this many bytes, so one commit stays short.
const MAX_GROUP_BYTES: usize = 32 << 20;
/// While unhealthy, the writer tries a write and an fsync this often even without traffic, so that
/// readiness (and with it a load balancer's traffic) comes back when the disk does.
const PROBE_EVERY: Duration = Duration::from_secs(5);

type Ack = oneshot::Sender<Result<(), SpoolError>>;

pub(super) struct Writer {
    shared: Shared,
    /// The file new batches go into.
    current: Option<OpenFile>,
    /// Files filled during this commit; closed once it is durable.
    sealed: Vec<OpenFile>,
    /// Files that failed during this commit, and why: every batch in them is refused.
    failed: HashMap<u64, SpoolError>,
    next_id: u64,
}

struct OpenFile {
    id: u64,
    file: File,
    /// Where it is now: the open name, or the closed name once renamed.
    path: PathBuf,
    closed_path: PathBuf,
    len: u64,
    /// Bytes acknowledged by earlier commits: all that survives if the file fails.
    acked: u64,
    /// Bytes whose pages were dropped from the page cache (see [`OpenFile::drop_behind`]).
    dropped: u64,
    rotate_at: Option<Instant>,
    /// With per-period keys, the period its name puts it in.
    period: Option<crate::period::Period>,
}

/// Durable pages are dropped from the page cache in steps of this many bytes.
const DROP_STEP: u64 = 8 << 20;

impl OpenFile {
    /// Due to close: its time is up, or (the monotonic clock aside: a suspend, a clock step) the
    /// wall clock has left its period.
    fn due(&self) -> bool {
        self.rotate_at.is_some_and(|at| Instant::now() >= at)
            || self.period.is_some_and(|p| !p.contains(crate::clock::now()))
    }

    /// A message file is written once and read again only after it closes (hashed for its manifest
    /// entry, maybe uploaded), so its durable pages are dropped from the page cache as it grows,
    /// all but the last few MiB: a file of gigabytes does not crowd the host's cache, and new writes
    /// land in pages just freed rather than in new ones. Measured on this project's machines: a
    /// writer that drops behind it wrote 1.3 GB/s where one that kept its pages wrote 0.5-0.8 GB/s
    /// (docs/benchmarks.md). Only a hint: a failure changes nothing but speed.
    fn drop_behind(&mut self) {
        let upto = (self.acked / DROP_STEP).saturating_sub(1) * DROP_STEP;
        if upto <= self.dropped {
            return;
        }
        let (from, len) = (self.dropped as i64, (upto - self.dropped) as i64);
        if let Err(e) = nix::fcntl::posix_fadvise(
            &self.file,
            from,
            len,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
        ) {
            tracing::debug!(error = %e, file = %self.path.display(), "cannot drop written pages from the page cache");
        }
        self.dropped = upto;
    }
}

/// A batch written in this commit, waiting for its files to become durable.
struct Written {
    count: usize,
    done: Ack,
    files: Vec<u64>,
}

impl Writer {
    pub(super) fn new(shared: Shared) -> Self {
        Self {
            shared,
            current: None,
            sealed: Vec::new(),
            failed: HashMap::new(),
            next_id: 0,
        }
    }

    pub(super) fn run(mut self, rx: flume::Receiver<Request>) {
        loop {
            let rotate_at = self.current.as_ref().and_then(|o| o.rotate_at);
            // Wakes at least every PROBE_EVERY: a failure elsewhere (an attachment's) may have made
            // the spool unhealthy while this thread waited, and only a probe brings it back when no
            // traffic comes (an unready bot gets none from a load balancer).
            let wake = Instant::now() + PROBE_EVERY;
            let first = rx.recv_deadline(rotate_at.map_or(wake, |at| at.min(wake)));
            let first = match first {
                Ok(r) => r,
                Err(flume::RecvTimeoutError::Timeout) => {
                    if rotate_at.is_some_and(|at| Instant::now() >= at) {
                        self.close_current("time limit reached");
                    }
                    if !self.shared.health.is_healthy() {
                        self.probe();
                    }
                    continue;
                }
                Err(flume::RecvTimeoutError::Disconnected) => {
                    self.close_current("shutdown");
                    return;
                }
            };
            // Gather everything that queued up while the last fsync ran: one commit for all.
            let mut group = Vec::new();
            let mut bytes = 0;
            let mut close = None;
            let mut next = Some(first);
            while let Some(request) = next.take() {
                match request {
                    Request::Append { lines, done } => {
                        bytes += lines.bytes.len();
                        group.push((lines, done));
                    }
                    Request::Close { done } => {
                        close = Some(done);
                        break;
                    }
                }
                if bytes < MAX_GROUP_BYTES {
                    next = rx.try_recv().ok();
                }
            }
            self.commit(group);
            if let Some(done) = close {
                self.close_current("shutdown");
                let _ = done.send(());
                // Whatever is still queued arrived after the close: refuse it.
                drop(rx);
                return;
            }
        }
    }

    /// Writes a group, makes it durable, then answers every producer in it.
    fn commit(&mut self, group: Vec<(Lines, Ack)>) {
        if group.is_empty() {
            return;
        }
        if self.current.as_ref().is_some_and(OpenFile::due) {
            self.seal_current();
        }
        if let Err(e) = super::disk::check_free(&self.shared.config.mesg_dest, self.shared.config.min_free_bytes) {
            for (lines, done) in group {
                self.fail(lines.count, done, e.clone());
            }
            self.settle();
            return;
        }
        let mut written = Vec::with_capacity(group.len());
        for (lines, done) in group {
            match self.write_batch(&lines.bytes) {
                Ok(files) => written.push(Written {
                    count: lines.count,
                    done,
                    files,
                }),
                Err(e) => self.fail(lines.count, done, e),
            }
        }
        // A batch spread over several files is all or nothing: one failed file fails them all.
        let spread: Vec<Vec<u64>> = written
            .iter()
            .filter(|w| w.files.len() > 1)
            .map(|w| w.files.clone())
            .collect();
        self.settle_with(&spread);
        let mut acked_any = false;
        for w in written {
            match w.files.iter().find_map(|id| self.failed.get(id)) {
                Some(e) => {
                    let e = e.clone();
                    self.fail(w.count, w.done, e);
                }
                None => {
                    acked_any = true;
                    self.shared.metrics.add(Counter::MessagesSaved, w.count as u64);
                    let _ = w.done.send(Ok(()));
                }
            }
        }
        if acked_any && self.failed.is_empty() {
            self.shared.health.recovered();
        }
        self.failed.clear();
    }

    fn fail(&self, count: usize, done: Ack, e: SpoolError) {
        self.shared.metrics.add(Counter::MessagesSavedFailed, count as u64);
        let _ = done.send(Err(e));
    }

    /// Writes one batch; returns the files it went into. On error nothing of it is left anywhere.
    fn write_batch(&mut self, bytes: &[u8]) -> Result<Vec<u64>, SpoolError> {
        let limit = self.shared.config.max_file_bytes;
        let len = bytes.len() as u64;
        let used = self.current.as_ref().map_or(0, |f| f.len);
        if used > 0 && used + len > limit {
            self.seal_current();
        }
        if len <= limit {
            let id = self.append(bytes)?;
            if self.current.as_ref().is_some_and(|f| f.len >= limit) {
                self.seal_current();
            }
            return Ok(vec![id]);
        }
        // Larger than a whole file: files of its own, each cut at a line boundary.
        let mut files = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let take = whole_lines_within(rest, limit);
            match self.append(&rest[..take]) {
                Ok(id) => files.push(id),
                Err(e) => {
                    let why = e.clone();
                    for id in files {
                        self.failed.insert(id, why.clone());
                    }
                    self.abandon_failed();
                    return Err(e);
                }
            }
            self.seal_current();
            rest = &rest[take..];
        }
        Ok(files)
    }

    /// Appends to the current file (opening one if needed). A failed write is cut back; if even that
    /// fails, the file is given up.
    fn append(&mut self, bytes: &[u8]) -> Result<u64, SpoolError> {
        if self.current.is_none() {
            self.current = Some(self.create()?);
        }
        let Some(f) = self.current.as_mut() else {
            return Err(SpoolError::ShuttingDown); // just set above
        };
        let before = f.len;
        let Err(e) = f.file.write_all(bytes) else {
            f.len += bytes.len() as u64;
            return Ok(f.id);
        };
        let err = SpoolError::io(&f.path, e);
        let cut = f.file.set_len(before);
        // A full disk refuses the batch, but a file cut back cleanly is as good as before; any other
        // failure means the device cannot be trusted with this file.
        let full = matches!(err, SpoolError::DiskFull { .. });
        if cut.is_err() || !full {
            if let Err(cut) = cut {
                tracing::error!(error = %cut, file = %f.path.display(), "cannot cut back a failed write");
            }
            let id = f.id;
            self.fail_file(id, err.clone());
            self.abandon_failed();
        }
        Err(err)
    }

    fn create(&mut self) -> Result<OpenFile, SpoolError> {
        let dir = &self.shared.config.mesg_dest;
        let now = crate::clock::now();
        let closed_name = self.shared.names.message_file(&self.shared.config.basename, now);
        let closed_path = dir.join(&closed_name);
        let path = dir.join(open_name(&closed_name));
        let created = (|| {
            // create_new: a name is never reused, even if the clock went backwards.
            let file = OpenOptions::new().append(true).create_new(true).open(&path)?;
            // The lock tells recovery in another instance sharing this directory that the file is live.
            file.try_lock().map_err(std::io::Error::from)?;
            if let Err(e) = durable::sync_dir(dir) {
                drop(file);
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
            Ok(file)
        })();
        let file = created.map_err(|e| {
            let err = SpoolError::io(&path, e);
            if !matches!(err, SpoolError::DiskFull { .. }) {
                self.shared.health.failed(&err);
            }
            err
        })?;
        tracing::debug!(file = %path.display(), "opened message file");
        self.next_id += 1;
        Ok(OpenFile {
            id: self.next_id,
            file,
            path,
            closed_path,
            len: 0,
            acked: 0,
            dropped: 0,
            rotate_at: self.rotate_at(now),
            period: self.shared.config.key_period.map(|g| g.period_of(now)),
        })
    }

    /// When a file opened `now` is due: after `WICKRIO_COMP_TIMEROTATE`, and with per-period KMS keys
    /// at the period's end at the latest, so that no file holds two periods' messages.
    fn rotate_at(&self, now: chrono::DateTime<chrono::Utc>) -> Option<Instant> {
        let after = self.shared.config.rotate_after.map(|d| Instant::now() + d);
        let period_end = self.shared.config.key_period.map(|granularity| {
            let end = granularity.period_of(now).next().start();
            Instant::now() + (end - now).to_std().unwrap_or_default()
        });
        match (after, period_end) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The current file is full (or due): it is closed when this commit settles.
    fn seal_current(&mut self) {
        if let Some(f) = self.current.take() {
            self.sealed.push(f);
        }
    }

    /// Closes the current file outside a commit (time limit, shutdown).
    fn close_current(&mut self, why: &str) {
        if self.current.is_some() {
            tracing::debug!(reason = why, "closing the message file");
            self.seal_current();
            self.settle();
            self.failed.clear();
        }
    }

    fn settle(&mut self) {
        self.settle_with(&[]);
    }

    /// Makes this commit's files durable: fsyncs the current file and fsyncs, renames and hands on
    /// the sealed ones. Every failure lands in `failed`; files of a batch in `spread` fail together.
    fn settle_with(&mut self, spread: &[Vec<u64>]) {
        let dir = self.shared.config.mesg_dest.clone();
        let mut errors = Vec::new();
        for f in &self.sealed {
            if let Err(e) = f.file.sync_all() {
                errors.push((f.id, SpoolError::io(&f.path, e)));
            }
        }
        if let Some(f) = &self.current
            && f.len > f.acked
            && let Err(e) = f.file.sync_data()
        {
            errors.push((f.id, SpoolError::io(&f.path, e)));
        }
        for (id, e) in errors {
            self.fail_file(id, e);
        }
        self.spread_failures(spread);
        self.abandon_failed();

        let mut renamed = Vec::new();
        for mut f in std::mem::take(&mut self.sealed) {
            match std::fs::rename(&f.path, &f.closed_path) {
                Ok(()) => {
                    f.path = f.closed_path.clone();
                    renamed.push(f);
                }
                Err(e) => {
                    self.fail_file(f.id, SpoolError::io(&f.path, e));
                    self.sealed.push(f);
                }
            }
        }
        if !renamed.is_empty()
            && let Err(e) = durable::sync_dir(&dir)
        {
            let err = SpoolError::io(&dir, e);
            for f in &renamed {
                self.fail_file(f.id, err.clone());
            }
        }
        self.spread_failures(spread);
        self.sealed.extend(renamed);
        self.abandon_failed();
        for f in std::mem::take(&mut self.sealed) {
            tracing::info!(file = %f.path.display(), bytes = f.len, "closed message file");
            self.hand_on(f.path, f.len);
        }
        if let Some(f) = self.current.as_mut() {
            f.acked = f.len;
            f.drop_behind();
        }
    }

    /// A batch spread over several files fails whole: one failed file fails its siblings.
    fn spread_failures(&mut self, spread: &[Vec<u64>]) {
        for files in spread {
            if let Some(e) = files.iter().find_map(|id| self.failed.get(id)).cloned() {
                for id in files {
                    self.failed.entry(*id).or_insert_with(|| e.clone());
                }
            }
        }
    }

    /// Gives up every open or sealed file listed in `failed`.
    fn abandon_failed(&mut self) {
        if let Some(f) = self.current.take_if(|f| self.failed.contains_key(&f.id)) {
            self.abandon(f);
        }
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.sealed)
            .into_iter()
            .partition(|f| self.failed.contains_key(&f.id));
        self.sealed = kept;
        for f in gone {
            self.abandon(f);
        }
    }

    /// Never writes to `f` again: cuts it back to what was acknowledged, fsyncs that, and closes it
    /// under a suspect name (handing it on, since its acknowledged lines belong to the archive). A
    /// file that held nothing acknowledged is removed. Each step is best effort: the device failed.
    fn abandon(&mut self, f: OpenFile) {
        let why = self
            .failed
            .get(&f.id)
            .map(|e| crate::error_chain::chain(e))
            .unwrap_or_default();
        let dir = self.shared.config.mesg_dest.clone();
        if f.acked == 0 {
            match std::fs::remove_file(&f.path).and_then(|()| durable::sync_dir(&dir)) {
                Ok(()) => {
                    tracing::error!(file = %f.path.display(), error = %why, "message file given up: it held only refused lines, and is removed")
                }
                Err(e) => self.leave_for_recovery(&f, &format!("cannot remove it: {e}", e = Chain(&e))),
            }
            return;
        }
        if let Err(e) = f.file.set_len(f.acked) {
            return self.leave_for_recovery(&f, &format!("cannot cut it back: {e}", e = Chain(&e)));
        }
        // Cut, but maybe not durably: only a crash could bring the refused tail back, as it brings
        // back any whole line written before a crash.
        let synced = f.file.sync_all().is_ok();
        let suspect = suspect_name(&f.closed_path);
        let renamed = std::fs::rename(&f.path, &suspect);
        let (path, closed) = match &renamed {
            Ok(()) => (suspect, true),
            // Renamed to its closed name already (then a directory fsync failed): closed all the same.
            Err(_) => (f.path.clone(), f.path == f.closed_path),
        };
        let name_synced = renamed.is_ok() && durable::sync_dir(&dir).is_ok();
        tracing::error!(
            file = %path.display(),
            error = %why,
            kept_bytes = f.acked,
            synced,
            name_synced,
            "message file given up after a failed write or sync: its acknowledged lines are kept, the refused ones cut"
        );
        if closed {
            self.hand_on(path, f.acked);
        } else {
            tracing::error!(file = %path.display(), "cannot rename it either; left for recovery at the next start");
        }
    }

    /// A failed file that still holds refused lines: it is not handed on. A note beside it tells
    /// the next start's recovery how much of it was acknowledged, so recovery keeps only that.
    fn leave_for_recovery(&self, f: &OpenFile, why: &str) {
        let open_path = self.shared.config.mesg_dest.join(open_name(
            &f.closed_path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        ));
        // Renamed to its closed name already: back to the open name, which recovery looks for.
        let back = f.path == open_path || std::fs::rename(&f.path, &open_path).is_ok();
        let noted = durable::write_atomically(&acked_note(&open_path), f.acked.to_string().as_bytes());
        tracing::error!(
            file = %f.path.display(),
            reason = why,
            acknowledged_bytes = f.acked,
            noted = noted.is_ok(),
            at_open_name = back,
            "message file given up and left for recovery at the next start, which keeps only its acknowledged bytes"
        );
    }

    fn hand_on(&self, path: PathBuf, bytes: u64) {
        self.shared.metrics.incr(Counter::MessageFilesClosed);
        let _ = self
            .shared
            .closed
            .send(ClosedFile::new(path, FileKind::Messages, bytes));
    }

    /// Marks a file failed because the device failed on it (not merely a full disk refusing a write).
    fn fail_file(&mut self, id: u64, e: SpoolError) {
        self.shared.health.failed(&e);
        self.failed.insert(id, e);
    }

    /// Without traffic, checks whether both destinations take a write and an fsync again.
    fn probe(&self) {
        let name = format!(".probe_{}", self.shared.names.instance());
        let (messages, attachments) = (&self.shared.config.mesg_dest, &self.shared.config.file_dest);
        let dirs = if messages == attachments {
            vec![messages]
        } else {
            vec![messages, attachments]
        };
        for dir in dirs {
            if let Err(e) = durable::probe_write(&dir.join(&name)) {
                tracing::debug!(error = %Chain(&e), dir = %dir.display(), "still failing a write and fsync");
                return;
            }
        }
        self.shared.health.recovered();
    }
}

/// The longest run of whole lines in `bytes` within `limit`; a first line longer than that whole.
fn whole_lines_within(bytes: &[u8], limit: u64) -> usize {
    let room = (limit as usize).min(bytes.len());
    if room == bytes.len() {
        return room;
    }
    match bytes[..room].iter().rposition(|b| *b == b'\n') {
        Some(i) => i + 1,
        None => bytes.iter().position(|b| *b == b'\n').map_or(bytes.len(), |i| i + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_at_line_boundaries() {
        assert_eq!(whole_lines_within(b"aa\nbb\ncc\n", 7), 6);
        assert_eq!(whole_lines_within(b"aa\nbb\n", 100), 6);
        assert_eq!(
            whole_lines_within(b"aaaaaa\nb\n", 3),
            7,
            "a line longer than the limit whole"
        );
    }
}
