//! The writer thread: append, group commit, rotate.
//!
//! It runs on its own OS thread because everything it does is blocking file I/O; producers reach it
//! through a bounded channel and never block an async worker.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::naming::{Names, open_name};
use super::{ClosedFile, FileKind, Request, SpoolError, disk};
use crate::config::SpoolConfig;
use crate::metrics::{Counter, Metrics};

/// Stop gathering a group once it holds this many bytes, so one commit stays short.
const MAX_GROUP_BYTES: usize = 32 << 20;

pub(super) struct Writer {
    config: SpoolConfig,
    names: Arc<Names>,
    metrics: Arc<Metrics>,
    closed: mpsc::UnboundedSender<ClosedFile>,
    healthy: Arc<AtomicBool>,
    open: Option<OpenFile>,
}

struct OpenFile {
    file: File,
    open_path: PathBuf,
    closed_path: PathBuf,
    len: u64,
    rotate_at: Option<Instant>,
}

type Ack = oneshot::Sender<Result<(), SpoolError>>;

impl Writer {
    pub(super) fn new(
        config: SpoolConfig,
        names: Arc<Names>,
        metrics: Arc<Metrics>,
        closed: mpsc::UnboundedSender<ClosedFile>,
        healthy: Arc<AtomicBool>,
    ) -> Self {
        Self {
            config,
            names,
            metrics,
            closed,
            healthy,
            open: None,
        }
    }

    pub(super) fn run(mut self, rx: flume::Receiver<Request>) {
        loop {
            let first = match self.open.as_ref().and_then(|o| o.rotate_at) {
                Some(deadline) => rx.recv_deadline(deadline),
                None => rx.recv().map_err(|_| flume::RecvTimeoutError::Disconnected),
            };
            let first = match first {
                Ok(r) => r,
                Err(flume::RecvTimeoutError::Timeout) => {
                    self.close_open("time limit reached");
                    continue;
                }
                Err(flume::RecvTimeoutError::Disconnected) => {
                    self.close_open("shutdown");
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
                self.close_open("shutdown");
                let _ = done.send(());
                // Whatever is still queued arrived after the close: refuse it.
                drop(rx);
                return;
            }
        }
    }

    /// Writes a group, fsyncs once, then answers every producer in it.
    fn commit(&mut self, group: Vec<(crate::message::Lines, Ack)>) {
        if group.is_empty() {
            return;
        }
        if self
            .open
            .as_ref()
            .and_then(|o| o.rotate_at)
            .is_some_and(|at| Instant::now() >= at)
        {
            self.close_open("time limit reached");
        }
        if let Err(e) = disk::check_free(&self.config.mesg_dest, self.config.min_free_bytes) {
            for (lines, done) in group {
                self.fail(lines.count, done, e.clone());
            }
            return;
        }
        let mut written = Vec::with_capacity(group.len());
        for (lines, done) in group {
            match self.write(&lines.bytes) {
                Ok(()) => written.push((lines.count, done)),
                Err(e) => self.fail(lines.count, done, e),
            }
        }
        if written.is_empty() {
            return;
        }
        let synced = match &self.open {
            Some(o) => o.file.sync_data().map_err(|e| SpoolError::io(&o.open_path, &e)),
            None => Ok(()), // everything went into files that rotation already closed (and fsync'd)
        };
        match synced {
            Ok(()) => {
                self.healthy.store(true, Ordering::Relaxed);
                for (count, done) in written {
                    self.metrics.add(Counter::MessagesSaved, count as u64);
                    let _ = done.send(Ok(()));
                }
            }
            Err(e) => {
                // After a failed fsync the page cache cannot be trusted: never append to this file
                // again. Its content is still closed and handed on; the producers retry.
                tracing::error!(error = %e, "fsync of the message file failed; closing it");
                self.close_open("fsync failed");
                for (count, done) in written {
                    self.fail(count, done, e.clone());
                }
            }
        }
    }

    fn fail(&self, count: usize, done: Ack, e: SpoolError) {
        self.metrics.add(Counter::MessagesSavedFailed, count as u64);
        let _ = done.send(Err(e));
    }

    /// Appends whole lines, rotating at line boundaries when the size limit is reached. A line longer
    /// than the limit gets a file of its own. On error the current file is cut back to its last
    /// complete line, so no half line is ever left in it.
    fn write(&mut self, mut bytes: &[u8]) -> Result<(), SpoolError> {
        while !bytes.is_empty() {
            let limit = self.config.max_file_bytes;
            let len = self.open.as_ref().map_or(0, |o| o.len);
            let room = limit.saturating_sub(len);
            let take = if (bytes.len() as u64) <= room {
                bytes.len()
            } else {
                // The longest run of whole lines that fits; failing that, rotate first, or (if the
                // file is empty) write the one oversized line.
                match bytes[..room as usize].iter().rposition(|b| *b == b'\n') {
                    Some(i) => i + 1,
                    None if len > 0 => {
                        self.close_open("size limit reached");
                        continue;
                    }
                    None => bytes.iter().position(|b| *b == b'\n').map_or(bytes.len(), |i| i + 1),
                }
            };
            let open = self.ensure_open()?;
            if let Err(e) = open.file.write_all(&bytes[..take]) {
                let err = SpoolError::io(&open.open_path, &e);
                if let Err(cut) = open.file.set_len(open.len) {
                    tracing::error!(error = %cut, file = %open.open_path.display(), "cannot cut back a failed write; closing the file");
                    self.healthy.store(false, Ordering::Relaxed);
                    self.abandon_open();
                }
                return Err(err);
            }
            open.len += take as u64;
            bytes = &bytes[take..];
            if open.len >= limit {
                self.close_open("size limit reached");
            }
        }
        Ok(())
    }

    fn ensure_open(&mut self) -> Result<&mut OpenFile, SpoolError> {
        if self.open.is_none() {
            self.open = Some(self.create()?);
        }
        // Just set above when it was empty.
        self.open.as_mut().ok_or(SpoolError::ShuttingDown)
    }

    fn create(&self) -> Result<OpenFile, SpoolError> {
        let dir = &self.config.mesg_dest;
        let closed_name = self.names.message_file(&self.config.basename, chrono::Utc::now());
        let closed_path = dir.join(&closed_name);
        let open_path = dir.join(open_name(&closed_name));
        let io = |e: std::io::Error| SpoolError::io(&open_path, &e);
        // create_new: a name is never reused, even if the clock went backwards.
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&open_path)
            .map_err(io)?;
        // The lock tells recovery in another instance sharing this directory that the file is live.
        file.try_lock().map_err(|e| io(std::io::Error::other(e.to_string())))?;
        disk::sync_dir(dir).map_err(io)?;
        tracing::debug!(file = %open_path.display(), "opened message file");
        Ok(OpenFile {
            file,
            open_path,
            closed_path,
            len: 0,
            rotate_at: self.config.rotate_after.map(|d| Instant::now() + d),
        })
    }

    /// fsync, rename to the closed name, fsync the directory, hand to the sink.
    fn close_open(&mut self, why: &str) {
        let Some(open) = self.open.take() else { return };
        let result = open
            .file
            .sync_all()
            .and_then(|()| std::fs::rename(&open.open_path, &open.closed_path))
            .and_then(|()| disk::sync_dir(&self.config.mesg_dest));
        match result {
            Ok(()) => {
                tracing::info!(file = %open.closed_path.display(), bytes = open.len, reason = why, "closed message file");
                self.metrics.incr(Counter::MessageFilesClosed);
                let _ = self.closed.send(ClosedFile {
                    path: open.closed_path,
                    kind: FileKind::Messages,
                    bytes: open.len,
                });
            }
            Err(e) => {
                // Left as `.open`: the next start's recovery closes it.
                tracing::error!(error = %e, file = %open.open_path.display(), "cannot close message file; recovery will close it at the next start");
                self.healthy.store(false, Ordering::Relaxed);
            }
        }
    }

    /// Stops using a file that may hold a torn line; recovery repairs and closes it at the next start.
    fn abandon_open(&mut self) {
        if let Some(open) = self.open.take() {
            tracing::error!(file = %open.open_path.display(), "message file left open for recovery at the next start");
        }
    }
}
