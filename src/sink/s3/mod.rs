//! The S3 sink: every closed file is uploaded to `<folder>/<name>` (encrypted first when a KMS key is
//! configured) and deleted locally only once S3 has confirmed the object. Files wait on disk for as
//! long as S3 or KMS is unreachable, so a restart picks up exactly what was not yet uploaded.
//!
//! `deliver` only queues, so the HTTP source and the manifest stage never wait on the network, and
//! the backlog is visible in the metrics. Two upload workers take files from the queue in order: one
//! file's last parts and completion overlap the next file's first parts, while a shared budget of
//! part buffers keeps memory bounded.

mod upload;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::task::JoinSet;

use super::Sink;
use crate::aws::{self, AwsFailure, Retry};
use crate::config::S3Config;
use crate::envelope::Envelope;
use crate::metrics::{Counter, Gauge, Metrics};
use crate::report::{EventKind, Events};
use crate::spool::{ClosedFile, FileKind, disk};

use upload::PartBudget;

/// Files uploaded at once.
const WORKERS: usize = 2;
/// Transient failures retry after 1 s, doubling up to this, with jitter.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Refusals (access denied, no such bucket, key disabled) retry this often: they need an operator.
const REFUSED_RETRY: Duration = Duration::from_secs(120);

/// Queues closed files for the uploader task.
pub struct S3Sink {
    queue: Option<flume::Sender<ClosedFile>>,
    workers: JoinSet<()>,
    metrics: Arc<Metrics>,
    /// How long `finish` lets the uploader empty its queue before leaving the rest for next start.
    finish_grace: Duration,
}

/// What the uploader needs to turn a file into an object.
struct Uploader {
    s3: aws_sdk_s3::Client,
    kms: Option<(aws_sdk_kms::Client, String)>,
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
}

/// Where an attempt failed: each service has its own failing and recovered events.
#[derive(Debug, Clone, Copy)]
enum Service {
    S3 = 0,
    Kms = 1,
}

impl Service {
    fn failing(self, e: &AwsFailure) -> (EventKind, String) {
        match self {
            Service::S3 => (
                EventKind::S3Failing,
                format!("S3 upload failing: {e}; closed files wait on local disk and are retried"),
            ),
            Service::Kms => (
                EventKind::KmsFailing,
                format!(
                    "KMS failing: {e}; nothing is uploaded unencrypted: closed files wait on local disk and are retried"
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
        bot_tag: String,
        metrics: Arc<Metrics>,
        events: Events,
        finish_grace: Duration,
    ) -> Self {
        let s3 = aws::s3_client(&aws::sdk_config(&config.region).await);
        let kms = match &config.kms {
            Some(kms) => Some((
                aws_sdk_kms::Client::new(&aws::sdk_config(&kms.region).await),
                kms.key_arn.clone(),
            )),
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
            bot_tag,
            metrics: metrics.clone(),
            budget: PartBudget::default(),
            events,
            failing: Default::default(),
        });
        let (tx, rx) = flume::unbounded();
        let mut workers = JoinSet::new();
        for _ in 0..WORKERS {
            workers.spawn(uploader.clone().run(rx.clone()));
        }
        Self {
            queue: Some(tx),
            workers,
            metrics,
            finish_grace,
        }
    }
}

impl Sink for S3Sink {
    async fn deliver(&mut self, file: ClosedFile) {
        self.metrics.raise(Gauge::S3BacklogFiles, 1);
        self.metrics.raise(Gauge::S3BacklogBytes, file.bytes);
        if let Some(queue) = &self.queue
            && queue.send(file).is_err()
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
    async fn run(self: Arc<Self>, queue: flume::Receiver<ClosedFile>) {
        while let Ok(file) = queue.recv_async().await {
            self.upload_until_done(&file).await;
            self.metrics.lower(Gauge::S3BacklogFiles, 1);
            self.metrics.lower(Gauge::S3BacklogBytes, file.bytes);
        }
    }

    /// Tries until the object is confirmed and the local copy removed (or the file is found gone).
    async fn upload_until_done(&self, file: &ClosedFile) {
        let key = self.key_for(file);
        let mut backoff = Duration::from_secs(1);
        for attempt in 1u64.. {
            match self.upload_once(file, &key).await {
                Ok(bytes) => {
                    self.note_success();
                    self.metrics.incr(Counter::S3Uploads);
                    self.metrics.add(Counter::S3UploadedBytes, bytes);
                    tracing::info!(file = %file.path.display(), key, bytes, attempt, "uploaded to S3");
                    remove_local(&file.path).await;
                    return;
                }
                Err(None) => return,
                Err(Some((service, e))) => {
                    self.metrics.incr(Counter::S3PostErrors);
                    self.note_failure(service, &e);
                    let wait = match e.retry {
                        Retry::Soon => {
                            tracing::warn!(file = %file.path.display(), attempt, error = %e, "upload failed; the file waits on disk and is retried");
                            let wait = jitter(backoff);
                            backoff = (backoff * 2).min(MAX_BACKOFF);
                            wait
                        }
                        Retry::Slowly => {
                            tracing::error!(
                                file = %file.path.display(),
                                attempt,
                                error = %e,
                                retry_secs = REFUSED_RETRY.as_secs(),
                                "upload REFUSED: check the bucket, the KMS key and this bot's permissions; files wait on disk"
                            );
                            REFUSED_RETRY
                        }
                    };
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    fn note_failure(&self, service: Service, e: &AwsFailure) {
        if !self.failing[service as usize].swap(true, Ordering::Relaxed) {
            let (kind, message) = service.failing(e);
            self.events.send(kind, message);
        }
    }

    fn note_success(&self) {
        for service in [Service::Kms, Service::S3] {
            if self.failing[service as usize].swap(false, Ordering::Relaxed) {
                let (kind, message) = service.recovered();
                tracing::info!("{message}");
                self.events.send(kind, message);
            }
        }
    }

    /// `Err(None)`: the file is gone (nothing to upload).
    async fn upload_once(&self, file: &ClosedFile, key: &str) -> Result<u64, Option<(Service, AwsFailure)>> {
        if !tokio::fs::try_exists(&file.path).await.unwrap_or(true) {
            tracing::warn!(file = %file.path.display(), "closed file vanished before its upload; nothing to upload");
            return Err(None);
        }
        // Fail closed: with a key configured there is no path to an unencrypted upload.
        let envelope = match &self.kms {
            Some((kms, key_arn)) => Some(
                Envelope::generate(kms, key_arn)
                    .await
                    .map_err(|e| Some((Service::Kms, e)))?,
            ),
            None => None,
        };
        let name = file_name(&file.path);
        let target = upload::Target {
            client: &self.s3,
            bucket: &self.config.bucket,
            key,
            metadata: HashMap::from([
                ("wickrio-type".to_owned(), file.kind.as_str().to_owned()),
                ("wickrio-file-path".to_owned(), name),
            ]),
            metrics: &self.metrics,
        };
        upload::upload(target, &file.path, envelope, &self.budget)
            .await
            .map_err(|e| Some((Service::S3, e)))
    }

    fn key_for(&self, file: &ClosedFile) -> String {
        let name = file_name(&file.path);
        let name = match (file.kind, name.strip_prefix("attachment_")) {
            // attachment_<time>_<name> → attachment_<time>_<bot tag>_<name>
            (FileKind::Attachment, Some(rest)) => match rest.split_once('_') {
                Some((time, original)) => format!("attachment_{time}_{}_{original}", self.bot_tag),
                None => format!("attachment_{}_{rest}", self.bot_tag),
            },
            _ => name,
        };
        self.config.key_for(&name)
    }
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
    let result = tokio::task::spawn_blocking(move || {
        std::fs::remove_file(&path)?;
        match path.parent() {
            Some(dir) => disk::sync_dir(dir),
            None => Ok(()),
        }
    })
    .await;
    if let Ok(Err(e)) = result {
        tracing::warn!(error = %e, "uploaded, but cannot delete the local copy; it will be uploaded again at the next start");
    }
}

/// Between half and all of `d`, so that many bots recovering from one outage do not retry in step.
fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    d.mul_f64(0.5 + f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX) / 2.0)
}
