//! The spool: the rotating writer between the sources and the sink.
//!
//! One writer thread owns the open message file. Producers hand it batches of lines and wait; it
//! writes everything that queued up while the previous fsync ran, fsyncs once (group commit) and only
//! then answers them all. So an acknowledgement always means "on disk", and many producers share one
//! fsync. Closed files are immutable and handed to the sink as [`ClosedFile`]s.

mod attachment;
pub mod disk;
pub mod naming;
pub(crate) mod recovery;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{mpsc, oneshot};

pub use attachment::{PartialAttachment, SavedAttachment, safe_attachment_name};

use crate::config::SpoolConfig;
use crate::message::Lines;
use crate::metrics::{Counter, Gauge, Metrics};
use naming::Names;

/// What a closed file holds; the sink files them differently (and S3 tags them so).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Messages,
    Attachment,
    /// A file of signed manifest entries (see `identity::manifest`).
    Manifest,
}

impl FileKind {
    /// The name used in manifests (and, with S3, in `wickrio-type`).
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::Messages => "message",
            FileKind::Attachment => "file",
            FileKind::Manifest => "manifest",
        }
    }
}

/// A complete, immutable file that the sink now owns.
#[derive(Debug, Clone)]
pub struct ClosedFile {
    pub path: PathBuf,
    pub kind: FileKind,
    pub bytes: u64,
}

/// Why the spool could not take data. Every variant is safe to show a producer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SpoolError {
    #[error(
        "disk low: {free_mib} MiB free under {path}, below WICKRIO_COMP_MIN_FREE_MB={min_mib}; new data is refused until space is freed"
    )]
    DiskLow { path: PathBuf, free_mib: u64, min_mib: u64 },
    #[error("disk full while writing {path}; nothing partial was kept; free space and retry")]
    DiskFull { path: PathBuf },
    #[error("I/O error on {path}: {error}")]
    Io { path: PathBuf, error: String },
    #[error("attachment is larger than WICKRIO_INGEST_MAX_FILE ({max} bytes)")]
    TooLarge { max: u64 },
    #[error("the bot is shutting down and takes no new data; retry shortly")]
    ShuttingDown,
}

impl SpoolError {
    fn io(path: &Path, e: &std::io::Error) -> Self {
        if e.raw_os_error() == Some(nix::libc::ENOSPC) {
            return SpoolError::DiskFull { path: path.to_owned() };
        }
        SpoolError::Io {
            path: path.to_owned(),
            error: e.to_string(),
        }
    }
}

/// A request to the writer thread.
enum Request {
    Append {
        lines: Lines,
        done: oneshot::Sender<Result<(), SpoolError>>,
    },
    Close {
        done: oneshot::Sender<()>,
    },
}

/// Cheap to clone; every clone feeds the same writer.
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

struct Inner {
    tx: flume::Sender<Request>,
    config: SpoolConfig,
    names: Arc<Names>,
    metrics: Arc<Metrics>,
    closed: mpsc::UnboundedSender<ClosedFile>,
    /// False after the writer hit an I/O error it could not roll back, until a write succeeds again.
    healthy: Arc<AtomicBool>,
}

/// Counts messages waiting on the writer in `Messages_Pending` while it lives: the watchdog's view
/// of the spool's pending work.
struct Pending<'a> {
    metrics: &'a Metrics,
    count: u64,
}

impl<'a> Pending<'a> {
    fn new(metrics: &'a Metrics, count: usize) -> Self {
        let count = count as u64;
        metrics.raise(Gauge::MessagesPending, count);
        Self { metrics, count }
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.metrics.lower(Gauge::MessagesPending, self.count);
    }
}

/// Requests queued for the writer at most; producers wait (asynchronously) beyond it.
const QUEUE_DEPTH: usize = 4096;

impl Spool {
    /// Recovers what a previous run left open, then starts the writer thread.
    pub fn start(
        config: SpoolConfig,
        metrics: Arc<Metrics>,
        closed: mpsc::UnboundedSender<ClosedFile>,
    ) -> std::io::Result<Self> {
        recovery::recover(&config, &metrics, &closed)?;
        let names = Arc::new(Names::new());
        let healthy = Arc::new(AtomicBool::new(true));
        let (tx, rx) = flume::bounded(QUEUE_DEPTH);
        let writer = writer::Writer::new(
            config.clone(),
            names.clone(),
            metrics.clone(),
            closed.clone(),
            healthy.clone(),
        );
        std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || writer.run(rx))?;
        tracing::info!(instance = names.instance(), dir = %config.mesg_dest.display(), "spool started");
        Ok(Spool {
            inner: Arc::new(Inner {
                tx,
                config,
                names,
                metrics,
                closed,
                healthy,
            }),
        })
    }

    /// Writes the lines durably; returns once they are fsync'd.
    pub async fn append(&self, lines: Lines) -> Result<(), SpoolError> {
        let (done, rx) = oneshot::channel();
        let count = lines.count;
        let _pending = Pending::new(&self.inner.metrics, count);
        if self.inner.tx.send_async(Request::Append { lines, done }).await.is_err() {
            return Err(self.refused(count, SpoolError::ShuttingDown));
        }
        rx.await.unwrap_or(Err(SpoolError::ShuttingDown))
    }

    /// [`append`](Self::append) for callers on a plain thread (the import source).
    pub fn append_blocking(&self, lines: Lines) -> Result<(), SpoolError> {
        let (done, rx) = oneshot::channel();
        let count = lines.count;
        let _pending = Pending::new(&self.inner.metrics, count);
        if self.inner.tx.send(Request::Append { lines, done }).is_err() {
            return Err(self.refused(count, SpoolError::ShuttingDown));
        }
        rx.blocking_recv().unwrap_or(Err(SpoolError::ShuttingDown))
    }

    fn refused(&self, count: usize, e: SpoolError) -> SpoolError {
        self.inner.metrics.add(Counter::MessagesSavedFailed, count as u64);
        e
    }

    /// Closes the open file (rotating it to the sink) and stops the writer once everything queued
    /// before this call is written. Later appends fail with [`SpoolError::ShuttingDown`].
    pub async fn close(&self) {
        let (done, rx) = oneshot::channel();
        if self.inner.tx.send_async(Request::Close { done }).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Blocking twin of [`close`](Self::close).
    pub fn close_blocking(&self) {
        let (done, rx) = oneshot::channel();
        if self.inner.tx.send(Request::Close { done }).is_ok() {
            let _ = rx.blocking_recv();
        }
    }

    /// Ready to accept: writer running and healthy, and enough free disk on both destinations.
    pub fn readiness(&self) -> Result<(), String> {
        if self.inner.tx.is_disconnected() {
            return Err("spool writer has stopped".into());
        }
        if !self.inner.healthy.load(Ordering::Relaxed) {
            return Err("last write to the message file failed; see the logs".into());
        }
        self.check_free_space().map_err(|e| e.to_string())
    }

    pub fn check_free_space(&self) -> Result<(), SpoolError> {
        let c = &self.inner.config;
        disk::check_free(&c.mesg_dest, c.min_free_bytes)?;
        disk::check_free(&c.file_dest, c.min_free_bytes)
    }

    /// Starts receiving an attachment into a hidden partial file in `FILEDEST`.
    pub async fn begin_attachment(&self, max_bytes: u64) -> Result<PartialAttachment, SpoolError> {
        self.check_free_space()?;
        let c = &self.inner.config;
        PartialAttachment::create(&c.file_dest, &self.inner.names, max_bytes, c.min_free_bytes).await
    }

    /// Writes the message line of a saved attachment; then the attachment belongs to the sink. If the
    /// line cannot be written the attachment is removed, so a refused request leaves nothing behind.
    pub async fn commit_attachment(&self, saved: SavedAttachment, lines: Lines) -> Result<(), SpoolError> {
        match self.append(lines).await {
            Ok(()) => {
                self.inner.metrics.incr(Counter::FilesSaved);
                self.inner.metrics.add(Counter::FilesSavedBytes, saved.bytes);
                let _ = self.inner.closed.send(ClosedFile {
                    path: saved.path,
                    kind: FileKind::Attachment,
                    bytes: saved.bytes,
                });
                Ok(())
            }
            Err(e) => {
                self.inner.metrics.incr(Counter::FilesSavedFailed);
                saved.discard().await;
                Err(e)
            }
        }
    }

    pub fn file_dest(&self) -> &Path {
        &self.inner.config.file_dest
    }
}
