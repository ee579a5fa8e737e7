//! The spool: the rotating writer between the sources and the sink.
//!
//! One writer thread owns the open message file. Producers hand it batches of lines and wait; it
//! writes everything that queued up while the previous fsync ran, fsyncs once (group commit) and only
//! then answers them all. So an acknowledgement always means "on disk", and many producers share one
//! fsync. Closed files are immutable and handed to the sink as [`ClosedFile`]s.

mod attachment;
pub mod disk;
mod health;
pub mod naming;
pub(crate) mod recovery;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;

pub(crate) use attachment::{PartialAttachment, safe_attachment_name};

use crate::config::SpoolConfig;
use crate::error_chain::Chain;
use crate::events::Events;
use crate::message::Lines;
use crate::metrics::{Counter, Gauge, Metrics};
use attachment::SavedAttachment;
use health::Health;
use naming::Names;

/// What a closed file holds; the sink files them differently (and S3 tags them so).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Messages,
    Attachment,
    /// A file of signed manifest entries (see `manifest::entry`).
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
    /// Its SHA-256 (hex), once the manifest stage has listed it: attachment keys carry part of it.
    pub sha256: Option<String>,
    /// The KMS key it is to be encrypted under, as its manifest entry names it.
    pub kms_key: Option<String>,
}

impl ClosedFile {
    pub fn new(path: PathBuf, kind: FileKind, bytes: u64) -> Self {
        Self {
            path,
            kind,
            bytes,
            sha256: None,
            kms_key: None,
        }
    }
}

/// An attachment whose message line is durable: it now belongs to the sink.
#[derive(Debug, Clone)]
pub(crate) struct StoredAttachment {
    pub path: PathBuf,
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
    /// The cause kept whole (its OS error number too), behind `Arc` because one failed group
    /// commit answers every request in it.
    #[error("I/O error on {path}")]
    Io {
        path: PathBuf,
        #[source]
        error: Arc<std::io::Error>,
    },
    #[error("attachment is larger than WICKRIO_INGEST_MAX_FILE ({max} bytes)")]
    TooLarge { max: u64 },
    #[error("the bot is shutting down and takes no new data; retry shortly")]
    ShuttingDown,
}

impl SpoolError {
    fn io(path: &Path, e: std::io::Error) -> Self {
        if e.raw_os_error() == Some(nix::libc::ENOSPC) {
            return SpoolError::DiskFull { path: path.to_owned() };
        }
        SpoolError::Io {
            path: path.to_owned(),
            error: Arc::new(e),
        }
    }

    /// A helper task that did not finish (it panicked or was cancelled) while working on `path`.
    pub(crate) fn task(path: &Path, e: impl std::fmt::Display) -> Self {
        SpoolError::Io {
            path: path.to_owned(),
            error: Arc::new(std::io::Error::other(format!("the task failed: {e}"))),
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

/// What the writer thread and the attachment path both use: where files go and under which names,
/// where closed files are announced, what is counted, and the spool's health.
#[derive(Clone)]
struct Shared {
    config: SpoolConfig,
    names: Arc<Names>,
    metrics: Arc<Metrics>,
    closed: mpsc::UnboundedSender<ClosedFile>,
    /// Unhealthy after a failed write or sync, until a write and an fsync succeed again.
    health: Arc<Health>,
}

struct Inner {
    tx: flume::Sender<Request>,
    shared: Shared,
    /// Attachments being finished: they run to the end whatever their producer does, and the
    /// writer is closed only after them.
    attachments: TaskTracker,
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
        events: Events,
        closed: mpsc::UnboundedSender<ClosedFile>,
    ) -> std::io::Result<Self> {
        recovery::recover(&config, &metrics, &closed)?;
        let names = Arc::new(Names::new());
        let health = Arc::new(Health::new(metrics.clone(), events));
        let (tx, rx) = flume::bounded(QUEUE_DEPTH);
        let shared = Shared {
            config,
            names,
            metrics,
            closed,
            health,
        };
        let writer = writer::Writer::new(shared.clone());
        std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || writer.run(rx))?;
        tracing::info!(instance = shared.names.instance(), dir = %shared.config.mesg_dest.display(), "spool started");
        Ok(Spool {
            inner: Arc::new(Inner {
                tx,
                shared,
                attachments: TaskTracker::new(),
            }),
        })
    }

    /// Writes the lines durably; returns once they are fsync'd.
    pub async fn append(&self, lines: Lines) -> Result<(), SpoolError> {
        let (done, rx) = oneshot::channel();
        let count = lines.count;
        let _pending = Pending::new(&self.inner.shared.metrics, count);
        if self.inner.tx.send_async(Request::Append { lines, done }).await.is_err() {
            return Err(self.refused(count, SpoolError::ShuttingDown));
        }
        rx.await.unwrap_or(Err(SpoolError::ShuttingDown))
    }

    /// [`append`](Self::append) for callers on a plain thread (the import source).
    pub(crate) fn append_blocking(&self, lines: Lines) -> Result<(), SpoolError> {
        let (done, rx) = oneshot::channel();
        let count = lines.count;
        let _pending = Pending::new(&self.inner.shared.metrics, count);
        if self.inner.tx.send(Request::Append { lines, done }).is_err() {
            return Err(self.refused(count, SpoolError::ShuttingDown));
        }
        rx.blocking_recv().unwrap_or(Err(SpoolError::ShuttingDown))
    }

    fn refused(&self, count: usize, e: SpoolError) -> SpoolError {
        self.inner
            .shared
            .metrics
            .add(Counter::MessagesSavedFailed, count as u64);
        e
    }

    /// Waits for the attachments being finished, then closes the open file (rotating it to the sink)
    /// and stops the writer once everything queued before this call is written. Later appends fail
    /// with [`SpoolError::ShuttingDown`].
    pub async fn close(&self) {
        self.inner.attachments.close();
        self.inner.attachments.wait().await;
        let (done, rx) = oneshot::channel();
        if self.inner.tx.send_async(Request::Close { done }).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Ready to accept: writer running and healthy, and enough free disk on both destinations.
    pub fn readiness(&self) -> Result<(), String> {
        if self.inner.tx.is_disconnected() {
            return Err("spool writer has stopped".into());
        }
        if !self.inner.shared.health.is_healthy() {
            return Err("a write or fsync of the spool failed; unready until one succeeds again (see the logs)".into());
        }
        self.check_free_space().map_err(|e| crate::error_chain::chain(&e))
    }

    pub(crate) fn check_free_space(&self) -> Result<(), SpoolError> {
        let c = &self.inner.shared.config;
        disk::check_free(&c.mesg_dest, c.min_free_bytes)?;
        disk::check_free(&c.file_dest, c.min_free_bytes)
    }

    /// Starts receiving an attachment into a hidden partial file in `FILEDEST`.
    pub(crate) async fn begin_attachment(&self, max_bytes: u64) -> Result<PartialAttachment, SpoolError> {
        self.check_free_space()?;
        let c = &self.inner.shared.config;
        PartialAttachment::create(
            &c.file_dest,
            &self.inner.shared.names,
            max_bytes,
            c.min_free_bytes,
            self.inner.shared.health.clone(),
        )
        .await
    }

    /// Makes a received attachment durable under its final name, then writes its message line
    /// (`line` makes it, given where the file was saved) durably; then the attachment belongs to the
    /// sink. This runs in a task of its own, so a producer that hangs up cannot stop it half-way:
    /// either both the file and its line are kept, or neither is (a refused line takes its file with it).
    pub(crate) async fn store_attachment(
        &self,
        partial: PartialAttachment,
        safe_name: String,
        line: impl FnOnce(&str) -> Lines + Send + 'static,
    ) -> Result<StoredAttachment, SpoolError> {
        // After close() nothing new may start: the writer is about to stop.
        if self.inner.attachments.is_closed() {
            return Err(self.refused(1, SpoolError::ShuttingDown));
        }
        let spool = self.clone();
        let job = async move {
            let saved = partial
                .finish(&safe_name)
                .await
                .inspect_err(|_| spool.inner.shared.metrics.incr(Counter::FilesSavedFailed))?;
            let lines = line(&saved.path.to_string_lossy());
            spool.commit_attachment(saved, lines).await
        };
        self.inner.attachments.spawn(job).await.unwrap_or_else(|e| {
            Err(SpoolError::task(
                &self.inner.shared.config.file_dest,
                format!("attachment: {e}", e = Chain(&e)),
            ))
        })
    }

    /// [`store_attachment`](Self::store_attachment) for a source that built the message itself: its
    /// line names where the file was saved (`file.localfilename`), as the original's do.
    pub(crate) async fn store_message_attachment(
        &self,
        partial: PartialAttachment,
        safe_name: String,
        message: crate::message::Message,
    ) -> Result<StoredAttachment, SpoolError> {
        let line = move |path: &str| {
            let mut message = message;
            message.set_local_filename(path);
            let mut one = Lines::default();
            one.push(&message);
            one
        };
        self.store_attachment(partial, safe_name, line).await
    }

    /// Writes the message line of a saved attachment; then the attachment belongs to the sink. If the
    /// line cannot be written the attachment is removed, so a refused request leaves nothing behind.
    async fn commit_attachment(&self, saved: SavedAttachment, lines: Lines) -> Result<StoredAttachment, SpoolError> {
        match self.append(lines).await {
            Ok(()) => {
                self.inner.shared.metrics.incr(Counter::FilesSaved);
                self.inner.shared.metrics.add(Counter::FilesSavedBytes, saved.bytes);
                let stored = StoredAttachment {
                    path: saved.path.clone(),
                    bytes: saved.bytes,
                };
                let _ = self
                    .inner
                    .shared
                    .closed
                    .send(ClosedFile::new(saved.path, FileKind::Attachment, saved.bytes));
                Ok(stored)
            }
            Err(e) => {
                self.inner.shared.metrics.incr(Counter::FilesSavedFailed);
                saved.discard().await;
                Err(e)
            }
        }
    }

    pub fn file_dest(&self) -> &Path {
        &self.inner.shared.config.file_dest
    }
}
