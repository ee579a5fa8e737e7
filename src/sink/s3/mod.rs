//! The S3 sink: every closed file is uploaded to `<folder>/<name>` (encrypted first when a KMS key is
//! configured) and deleted locally only once S3 has confirmed the object. Files wait on disk for as
//! long as S3 or KMS is unreachable, so a restart picks up exactly what was not yet uploaded.
//!
//! `deliver` only queues, so the HTTP source and the manifest stage never wait on the network, and
//! the backlog is visible in the metrics. Four upload workers take files from the queue in order: one
//! file's last parts and completion overlap the next file's first parts, while a shared budget of
//! part buffers keeps memory bounded. A file that fails is not retried by the worker that holds it
//! for long: it waits on its own back-off outside the workers and rejoins the queue, so a file S3
//! refuses never holds back the files behind it.

mod create_only;
mod error;
pub mod object_lock;
mod part_budget;
mod retry;
mod sha256_pair;
mod signed_payload;
mod target;
mod upload;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::Sink;
use crate::aws::{self, Retry};
use crate::config::S3Config;
use crate::durable;
use crate::envelope::{KeyRing, gcm};
use crate::events::{EventKind, Events, announce};
use crate::manifest::verify::ObjectReader;
use crate::metrics::{Counter, Gauge, Metrics};
use crate::objects::{keys, metadata};
use crate::shred::ShredWatch;
use crate::spool::{ClosedFile, FileKind};

use crate::error_chain::Chain;
pub(crate) use create_only::ContentMac;
use error::Service;
pub(crate) use error::UploadError;
use part_budget::PartBudget;
use retry::{FIRST_BACKOFF, Next, REFUSED_RETRY};

/// Files uploaded at once. Four keep the store busy where two left it waiting between one file's
/// completion and the next file's parts (about 5% faster on `S3_BENCH=upload cargo bench --bench
/// s3`); memory is bounded by the part budget, not by the workers.
const WORKERS: usize = 4;

/// A file on its way to S3, with its own retry state.
struct Queued {
    file: ClosedFile,
    attempts: u64,
    backoff: Duration,
    /// Operators have heard (an event) that this file's key holds other content.
    conflict_said: bool,
}

/// Queues closed files for the uploader task.
pub(crate) struct S3Sink {
    queue: Option<flume::Sender<Queued>>,
    workers: JoinSet<()>,
    metrics: Arc<Metrics>,
    /// How long `finish` lets the uploader empty its queue before leaving the rest for next start.
    finish_grace: Duration,
    keys: Option<Arc<KeyRing>>,
    /// With per-period keys: files of shredded periods, handed back to the manifest stage to be
    /// recorded as discarded and removed.
    discards: Option<Discards>,
}

/// What the manifest stage needs to discard files of shredded periods: the watch that tells one,
/// and the files the uploader gave up on for it.
pub(crate) struct Discards {
    pub watch: Arc<ShredWatch>,
    pub files: mpsc::UnboundedReceiver<ClosedFile>,
}

/// What the uploader needs to turn a file into an object.
struct Uploader {
    s3: aws_sdk_s3::Client,
    kms: Option<Arc<KeyRing>>,
    config: S3Config,
    /// Stable for this installation and distinct between bots: keeps attachment keys unique when
    /// two bots share a folder (message file names carry their own random instance id).
    bot_tag: String,
    metrics: Arc<Metrics>,
    budget: PartBudget,
    events: Events,
    /// Per [`Service`]: failing since its last success. Operators hear of the first failure and
    /// of the recovery, not of every retry.
    failing: [AtomicBool; 2],
    content_mac: ContentMac,
    /// With per-period keys: whether a file's period was shredded, and where such a file goes.
    shredded: Option<(Arc<ShredWatch>, mpsc::UnboundedSender<ClosedFile>)>,
}

impl Service {
    fn failing(self, e: &UploadError) -> (EventKind, String) {
        match self {
            Service::S3 => (
                EventKind::S3Failing,
                format!(
                    "S3 upload failing: {e}; closed files wait on local disk and are retried",
                    e = Chain(&e)
                ),
            ),
            Service::Kms => (
                EventKind::KmsFailing,
                format!(
                    "KMS failing: {e}; nothing is uploaded unencrypted: closed files wait on local disk and are retried",
                    e = Chain(&e)
                ),
            ),
        }
    }

    fn recovered(self) -> (EventKind, &'static str) {
        match self {
            Service::S3 => (EventKind::S3Recovered, "S3 uploads recovered: files are uploaded again"),
            Service::Kms => (EventKind::KmsRecovered, "KMS recovered: data keys are issued again"),
        }
    }
}

impl S3Sink {
    /// Builds the clients (no network call is made yet: an outage at start-up must not stop capture).
    pub async fn new(
        config: S3Config,
        bot: BotKeys,
        metrics: Arc<Metrics>,
        events: Events,
        finish_grace: Duration,
        aws: &aws::Aws,
    ) -> Self {
        let s3 = aws.s3(&config.region).await;
        let mut shredded = None;
        let mut discards = None;
        let kms = match &config.kms {
            Some(kms) => {
                let client = aws_sdk_kms::Client::new(&aws.sdk_config(&kms.region).await);
                let ring = Arc::new(KeyRing::new(client.clone(), kms, metrics.clone(), events.clone()));
                tokio::spawn(ring.clone().look_ahead());
                if let Some(granularity) = kms.period {
                    let reader = ObjectReader {
                        s3: s3.clone(),
                        kms: client,
                        bucket: config.bucket.clone(),
                    };
                    let prefix = crate::decrypt::folder_prefix(&config.folder).unwrap_or_default();
                    let watch = Arc::new(ShredWatch::new(reader, prefix, bot.signer, granularity));
                    let (tx, rx) = mpsc::unbounded_channel();
                    shredded = Some((watch.clone(), tx));
                    discards = Some(Discards { watch, files: rx });
                }
                Some(ring)
            }
            None => None,
        };
        tracing::info!(
            bucket = %config.bucket,
            folder = %config.folder,
            region = %config.region,
            encrypted = kms.is_some(),
            "closed files go to S3"
        );
        let uploader = Arc::new(Uploader {
            s3,
            kms,
            config,
            bot_tag: bot.tag,
            metrics: metrics.clone(),
            budget: PartBudget::default(),
            events,
            failing: Default::default(),
            content_mac: bot.content_mac,
            shredded,
        });
        let (tx, rx) = flume::unbounded();
        let mut workers = JoinSet::new();
        for _ in 0..WORKERS {
            // Weak: files waiting aside must not keep the queue open once the sink finishes.
            workers.spawn(uploader.clone().run(rx.clone(), tx.downgrade()));
        }
        Self {
            queue: Some(tx),
            workers,
            metrics,
            finish_grace,
            keys: uploader.kms.clone(),
            discards,
        }
    }

    /// The keys files are encrypted under, for their manifest entries; `None` when uploads are plain.
    pub(crate) fn key_ring(&self) -> Option<Arc<KeyRing>> {
        self.keys.clone()
    }

    /// With per-period keys, what the manifest stage needs to discard files of shredded periods
    /// (once: the files' receiver moves).
    pub(crate) fn take_discards(&mut self) -> Option<Discards> {
        self.discards.take()
    }
}

/// Who the bot is, as the sink needs it: the tag in its attachments' keys, its content MAC, and
/// its signing key (only its own shredding records count, and it signs their supplements).
pub(crate) struct BotKeys {
    pub tag: String,
    pub content_mac: ContentMac,
    pub signer: ed25519_dalek::SigningKey,
}

impl Sink for S3Sink {
    async fn deliver(&mut self, file: ClosedFile) {
        self.metrics.raise(Gauge::S3BacklogFiles, 1);
        self.metrics.raise(Gauge::S3BacklogBytes, file.bytes);
        let queued = Queued {
            file,
            attempts: 0,
            backoff: FIRST_BACKOFF,
            conflict_said: false,
        };
        if let Some(queue) = &self.queue
            && queue.send(queued).is_err()
        {
            tracing::error!("the S3 uploader has stopped; the file stays on disk for the next start");
        }
    }

    async fn finish(&mut self) {
        self.queue = None;
        let all_done = async { while self.workers.join_next().await.is_some() {} };
        if tokio::time::timeout(self.finish_grace, all_done).await.is_err() {
            self.workers.abort_all();
            tracing::warn!(
                files = self.metrics.level(Gauge::S3BacklogFiles),
                bytes = self.metrics.level(Gauge::S3BacklogBytes),
                "stopping with files not yet uploaded; they stay on disk and are uploaded at the next start"
            );
        }
    }
}

impl Uploader {
    async fn run(self: Arc<Self>, queue: flume::Receiver<Queued>, requeue: flume::WeakSender<Queued>) {
        while let Ok(item) = queue.recv_async().await {
            let Some((item, wait)) = self.try_upload(item).await else {
                continue;
            };
            // The file waits aside; this worker goes on with the next one at once.
            let requeue = requeue.clone();
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                // Gone once the sink finished: the file stays on disk for the next start.
                if let Some(queue) = requeue.upgrade() {
                    let _ = queue.send(item);
                }
            });
        }
    }

    /// Uploads the file (retrying a transient failure a few times in place) and removes the local
    /// copy. Returns the file and how long it should wait aside if it is not done.
    async fn try_upload(&self, mut item: Queued) -> Option<(Queued, Duration)> {
        let mut try_here = 0;
        loop {
            try_here += 1;
            item.attempts += 1;
            let conflict_said = item.conflict_said;
            let attempt = async {
                let sha256 = content_hash(&mut item.file).await?;
                let key = self.key_for(&item.file, &sha256);
                if conflict_said && let Some(outcome) = self.recheck(&item.file, &key, &sha256).await {
                    return outcome.map(|bytes| (key, bytes));
                }
                let bytes = self.upload_once(&item.file, &key, &sha256).await?;
                Ok::<_, UploadError>((key, bytes))
            };
            let e = match attempt.await {
                Ok((key, bytes)) => {
                    self.note_success();
                    self.metrics.incr(Counter::S3Uploads);
                    self.metrics.add(Counter::S3UploadedBytes, bytes);
                    tracing::info!(file = %item.file.path.display(), key, bytes, attempt = item.attempts, "uploaded to S3");
                    remove_local(&item.file.path).await;
                    self.done(&item.file);
                    return None;
                }
                Err(UploadError::Gone(path)) => {
                    tracing::warn!(file = %path.display(), "closed file vanished before its upload; nothing to upload");
                    self.done(&item.file);
                    return None;
                }
                Err(e @ UploadError::Conflict { .. }) => {
                    self.metrics.incr(Counter::S3PostErrors);
                    self.metrics.incr(Counter::S3KeyConflicts);
                    let message = format!("{e}; retried every {} s", REFUSED_RETRY.as_secs(), e = Chain(&e));
                    if item.conflict_said {
                        tracing::error!(file = %item.file.path.display(), "{message}");
                    } else {
                        item.conflict_said = true;
                        announce!(self.events, tracing::Level::ERROR, EventKind::S3KeyConflict, message);
                    }
                    return Some((item, REFUSED_RETRY));
                }
                Err(UploadError::Kms(failure)) => {
                    // A file of a shredded period: never uploaded, handed back to be discarded.
                    if self.hand_back_if_shredded(&item, &failure).await {
                        self.done(&item.file);
                        return None;
                    }
                    UploadError::Kms(failure)
                }
                Err(e) => e,
            };
            self.metrics.incr(Counter::S3PostErrors);
            self.note_failure(&e);
            let file = item.file.path.display();
            match e.retry() {
                Retry::Soon => {
                    tracing::warn!(%file, attempt = item.attempts, error = %Chain(&e), "upload failed; the file waits on disk and is retried");
                }
                Retry::Slowly => {
                    tracing::error!(
                        %file,
                        attempt = item.attempts,
                        error = %Chain(&e),
                        retry_secs = REFUSED_RETRY.as_secs(),
                        "upload REFUSED: check the bucket, the KMS key and this bot's permissions; the file waits on disk, other files go on"
                    );
                }
            }
            let (step, backoff) = retry::next(e.retry(), try_here, item.backoff, random_spread());
            item.backoff = backoff;
            match step {
                Next::InPlace(wait) => tokio::time::sleep(wait).await,
                Next::Aside(wait) => return Some((item, wait)),
            }
        }
    }

    /// Whether the file's (ended) period was shredded, as the bot's own signed record says, and
    /// its key refused for that reason (pending deletion, or gone): then it goes to the manifest
    /// stage, which keeps it waiting while the shred can be cancelled and records and removes it
    /// once the key is deleted. Only for a file under one of the record's keys (or none yet).
    async fn hand_back_if_shredded(&self, item: &Queued, failure: &crate::aws::AwsFailure) -> bool {
        let Some((watch, discards)) = &self.shredded else {
            return false;
        };
        let said_so = [
            "KMSInvalidStateException",
            "NotFoundException",
            "DisabledException",
            crate::envelope::PERIOD_KEY_UNUSABLE,
        ];
        if !said_so.iter().any(|code| failure.is(code)) {
            return false;
        }
        let Some(period) = watch.ended_period_of(&file_name(&item.file.path)) else {
            return false;
        };
        let Some(shred) = watch.shred_of(period).await else {
            return false;
        };
        if item.file.kms_key.as_deref().is_some_and(|key| !shred.names(key)) {
            return false;
        }
        discards.send(item.file.clone()).is_ok()
    }

    /// The file has left the backlog (uploaded, or found gone).
    fn done(&self, file: &ClosedFile) {
        self.metrics.lower(Gauge::S3BacklogFiles, 1);
        self.metrics.lower(Gauge::S3BacklogBytes, file.bytes);
    }

    fn note_failure(&self, e: &UploadError) {
        let service = e.service();
        if !self.failing[service as usize].swap(true, Ordering::Relaxed) {
            let (kind, message) = service.failing(e);
            self.events.send(kind, message);
        }
    }

    fn note_success(&self) {
        for service in [Service::Kms, Service::S3] {
            if self.failing[service as usize].swap(false, Ordering::Relaxed) {
                let (kind, message) = service.recovered();
                announce!(self.events, tracing::Level::INFO, kind, message);
            }
        }
    }

    /// A file whose key held other content is looked at again before it is uploaded again (a whole
    /// upload and a KMS data key every time, for nothing, while the other object stays). `Some` when
    /// the key holds an object the bot could read: this file after all (checked on disk again before
    /// its local copy goes), or still another. `None` when the bot cannot tell (the key is free, or it
    /// may not look): the file is uploaded, and `If-None-Match` decides.
    async fn recheck(&self, file: &ClosedFile, key: &str, sha256: &str) -> Option<Result<u64, UploadError>> {
        let target = self.target(file, key, sha256);
        match create_only::look(&target, file.bytes).await {
            create_only::Found::Ours => Some(self.still_listed(file, sha256).await.map(|()| file.bytes)),
            create_only::Found::Other(e) => Some(Err(e)),
            create_only::Found::Unknown(_) => None,
        }
    }

    /// The file on disk is still what its entry lists (before its local copy goes without an upload).
    async fn still_listed(&self, file: &ClosedFile, sha256: &str) -> Result<(), UploadError> {
        let path = file.path.clone();
        let facts = tokio::task::spawn_blocking(move || crate::manifest::file_facts(&path, false))
            .await
            .map_err(|error| UploadError::Task { what: "hashing", error })?
            .map_err(|error| UploadError::Hash {
                path: file.path.clone(),
                error,
            })?;
        if facts.sha256 == sha256 && facts.size == file.bytes {
            return Ok(());
        }
        Err(UploadError::Changed {
            path: file.path.clone(),
            listed: sha256.to_owned(),
            read: facts.sha256,
        })
    }

    fn target<'a>(&'a self, file: &ClosedFile, key: &'a str, sha256: &str) -> target::Target<'a> {
        target::Target {
            client: &self.s3,
            bucket: &self.config.bucket,
            key,
            metadata: metadata::for_file(file.kind.as_str(), &file_name(&file.path), &self.content_mac.of(sha256)),
            metrics: &self.metrics,
            lock: self.config.object_lock,
        }
    }

    async fn upload_once(&self, file: &ClosedFile, key: &str, sha256: &str) -> Result<u64, UploadError> {
        if !tokio::fs::try_exists(&file.path).await.unwrap_or(true) {
            return Err(UploadError::Gone(file.path.clone()));
        }
        // Fail closed: with a key configured there is no path to an unencrypted upload.
        let envelope = match &self.kms {
            Some(ring) => {
                // The key the file's entry names; a file listed before this start is looked up again.
                let key_arn = match &file.kms_key {
                    Some(key_arn) => key_arn.clone(),
                    None => ring.key_for(&file_name(&file.path)).await.map_err(UploadError::Kms)?,
                };
                Some(ring.data_keys(&key_arn).envelope().await.map_err(UploadError::Kms)?)
            }
            None => None,
        };
        let target = self.target(file, key, sha256);
        let uploaded = upload::upload(target, &file.path, sha256, envelope, &self.budget).await?;
        self.check_complete(file, &uploaded).await?;
        Ok(uploaded.plain_len)
    }

    /// Before the local copy goes: S3 took as many bytes as the object should hold, and the file is
    /// still the size it was when it was closed (and listed). Otherwise the copy is kept.
    async fn check_complete(&self, file: &ClosedFile, uploaded: &upload::Uploaded) -> Result<(), UploadError> {
        let on_disk = tokio::fs::metadata(&file.path).await.map(|m| m.len()).ok();
        let expected = uploaded.plain_len + if self.kms.is_some() { gcm::TAG_LEN as u64 } else { 0 };
        if uploaded.sent == expected && uploaded.plain_len == file.bytes && on_disk == Some(file.bytes) {
            return Ok(());
        }
        Err(UploadError::Incomplete {
            path: file.path.clone(),
            on_disk,
            closed: file.bytes,
            read: uploaded.plain_len,
            sent: uploaded.sent,
            expected,
        })
    }

    /// `<folder>/<file name>`. Attachment names are a producer's and may repeat (the same name in the
    /// same millisecond on two hosts of one bot, or after the clock stepped back), so their keys
    /// also carry this bot's tag and the start of the file's SHA-256: different files never share
    /// a key, and an upload of the same file again lands on the same key.
    fn key_for(&self, file: &ClosedFile, sha256: &str) -> String {
        let name = file_name(&file.path);
        if file.kind == FileKind::Attachment && name.starts_with("attachment_") {
            return self
                .config
                .key_for(&keys::attachment_object_name(&name, &self.bot_tag, sha256));
        }
        self.config.key_for(&name)
    }
}

/// The file's SHA-256 (hex): the one its manifest entry holds, or hashed now (a manifest file, a
/// file recovered before it was listed), and kept for the file's next attempts.
async fn content_hash(file: &mut ClosedFile) -> Result<String, UploadError> {
    if let Some(known) = &file.sha256 {
        return Ok(known.clone());
    }
    let path = file.path.clone();
    let hashed = tokio::task::spawn_blocking(move || crate::manifest::file_facts(&path, false))
        .await
        .map_err(|error| UploadError::Task { what: "hashing", error })?
        .map_err(|error| match error.kind() {
            // Removed since it was closed: nothing to upload (not a failure to retry).
            std::io::ErrorKind::NotFound => UploadError::Gone(file.path.clone()),
            _ => UploadError::Hash {
                path: file.path.clone(),
                error,
            },
        })?
        .sha256;
    file.sha256 = Some(hashed.clone());
    Ok(hashed)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Deletes the uploaded file and makes the deletion durable. A failure only means the file is
/// uploaded again (to the same key) after a restart.
async fn remove_local(path: &Path) {
    let path = path.to_owned();
    let result = tokio::task::spawn_blocking(move || durable::remove_durably(&path)).await;
    if let Ok(Err(e)) = result {
        tracing::warn!(error = %Chain(&e), "uploaded, but cannot delete the local copy; it will be uploaded again at the next start");
    }
}

/// A random fraction in `[0, 1]`: how far `retry::next` spreads a wait, so that many bots recovering
/// from one outage do not retry in step.
fn random_spread() -> f64 {
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX)
}
