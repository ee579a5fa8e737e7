//! The running bot's side of a shred: a file of a period that was shredded while the file still
//! waited on the bot's disk (the bot was down, or the period's key was missing) must stay
//! shredded. Once the period's shredding record, signed with this bot's own key, is in the bucket
//! and KMS holds the record's key pending deletion, such a file is never uploaded (its key refuses,
//! the bot never makes a new key for the period, and asks no alias); it waits while the shred can
//! still be cancelled, and once KMS has deleted the key the bot removes it and says so: an event, a
//! log line and a `discarded` entry in its signed manifest chain.
//!
//! A manifest (or chain head record) of the period caught the same way cannot go up either; its
//! entries are the chain's, so the bot puts a copy of its text (metadata only: names, sizes,
//! hashes) in a signed supplement to the period's record, `shredding_<period>_<manifest>.json`,
//! which `verify` reads as it reads the main record's copies, before it removes the file.
//!
//! Only this bot's own signature counts: someone who can write to the bucket can plant a record,
//! but cannot sign one, nor change what KMS says of the key.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use ed25519_dalek::SigningKey;

use crate::aws::failure;
use crate::manifest::entry::MAX_MANIFEST;
use crate::manifest::shred_record::{Contents, KeptText, ShredBody, ShredRecord, State, file_name, supplement_name};
use crate::manifest::verify::{Listing, ObjectReader, keys_deleted, newest_record, not_in_effect};
use crate::period::{Granularity, Period, name_time};
use crate::sync::lock;

/// Why a shredded period's manifest could not be kept in a supplement to its record.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KeepCopyError {
    #[error("the period {0} is not shredded (any more)")]
    NotShredded(Period),
    #[error("cannot read {}", path.display())]
    Read {
        path: std::path::PathBuf,
        #[source]
        cause: std::io::Error,
    },
    #[error("{0} bytes, more than a manifest can be")]
    TooLarge(u64),
    #[error(transparent)]
    Upload(#[from] crate::aws::AwsFailure),
}

/// How long an answer about a period is kept: files waiting for a key retry every few seconds.
const ASK_AGAIN: Duration = Duration::from_secs(30);

pub(crate) struct ShredWatch {
    reader: ObjectReader,
    prefix: String,
    /// Verifies the records (only this bot's count) and signs the supplements.
    signer: SigningKey,
    granularity: Granularity,
    /// Per period: when it was asked, and the shred in effect.
    answers: Mutex<HashMap<Period, (Instant, Option<Shred>)>>,
    /// Periods whose waiting files the operators have heard of.
    said_waiting: Mutex<HashSet<Period>>,
}

/// A period's shred as this bot sees it.
#[derive(Debug, Clone)]
pub struct Shred {
    /// Where its record lies.
    pub record_at: String,
    record: ShredRecord,
    /// KMS has deleted every key the record names: past cancelling, so the period's waiting files
    /// may go (until then they wait: a cancelled shred brings the period back, files and all).
    pub keys_gone: bool,
}

impl Shred {
    /// Whether the record names `key` (an ARN) among the keys it destroys.
    pub fn names(&self, key: &str) -> bool {
        self.record.body.keys.iter().any(|k| k.arn == key)
    }
}

impl std::fmt::Debug for ShredWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShredWatch")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl ShredWatch {
    /// `prefix` as object keys begin (`folder/`, or empty).
    pub fn new(reader: ObjectReader, prefix: String, signer: SigningKey, granularity: Granularity) -> Self {
        Self {
            reader,
            prefix,
            signer,
            granularity,
            answers: Mutex::default(),
            said_waiting: Mutex::default(),
        }
    }

    /// The period a file (by its name) belongs to.
    pub fn period_of(&self, name: &str) -> Option<Period> {
        Some(self.granularity.period_of(name_time(name)?))
    }

    /// The period a file (by its name) belongs to, if it has ended by the bot's clock: only such a
    /// period can have been shredded (a day after its end at the earliest).
    pub(crate) fn ended_period_of(&self, name: &str) -> Option<Period> {
        self.period_of(name).filter(|p| p.ended_by(crate::clock::now()))
    }

    /// The shred of `period`, if one is in effect: this bot's signature, this archive, the period,
    /// scheduled, and KMS holding its keys pending deletion or deleted. Asked again at most every
    /// minute.
    pub(crate) async fn shred_of(&self, period: Period) -> Option<Shred> {
        if let Some((asked, answer)) = lock(&self.answers).get(&period)
            && asked.elapsed() < ASK_AGAIN
        {
            return answer.clone();
        }
        let answer = self.ask(period).await;
        lock(&self.answers).insert(period, (Instant::now(), answer.clone()));
        answer
    }

    /// Says once per period that its files wait while the shred can still be cancelled.
    pub(crate) fn say_waiting(&self, period: Period, shred: &Shred) {
        if lock(&self.said_waiting).insert(period) {
            tracing::warn!(
                period = %period,
                record = shred.record_at,
                "the period was shredded: its files still on this disk are not uploaded, and are removed once KMS has deleted its key (or go up if the shred is cancelled)"
            );
        }
    }

    async fn ask(&self, period: Period) -> Option<Shred> {
        let key = format!("{}{}", self.prefix, file_name(period));
        let own = [self.signer.verifying_key()];
        // Every version: a delete marker or a planted version over the record changes nothing.
        let listing = Listing::of_key(&self.reader.s3, &self.reader.bucket, &key).await.ok()?;
        let (_, record) = match newest_record(&self.reader, &listing, &key, &own).await {
            Ok(found) => found,
            Err(e) => {
                tracing::debug!(period = %period, error = %crate::error_chain::Chain(&e), "no shredding record of ours for the period");
                return None;
            }
        };
        let body = &record.body;
        let ours = body.state == State::Scheduled
            && body.period == period.to_string()
            && body.bucket == self.reader.bucket
            && body.prefix == self.prefix;
        if !ours {
            return None;
        }
        if let Some((arn, state)) = not_in_effect(&self.reader.kms, &record).await {
            tracing::warn!(period = %period, key = arn, state, "a shredding record of ours names a key KMS does not hold pending deletion; the period's files wait");
            return None;
        }
        let keys_gone = keys_deleted(&self.reader.kms, &record).await;
        Some(Shred {
            record_at: self.reader.location(&key),
            record,
            keys_gone,
        })
    }

    /// Puts a copy of a manifest or head record of the shredded `period` (the file at `path`) in a
    /// signed supplement to the period's record; its location.
    pub(crate) async fn keep_copy(&self, period: Period, path: &std::path::Path) -> Result<String, KeepCopyError> {
        let main = self
            .shred_of(period)
            .await
            .ok_or(KeepCopyError::NotShredded(period))?
            .record;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let read = |cause| KeepCopyError::Read {
            path: path.to_owned(),
            cause,
        };
        let size = tokio::fs::metadata(path).await.map_err(read)?.len();
        if size > MAX_MANIFEST {
            return Err(KeepCopyError::TooLarge(size));
        }
        let text = tokio::fs::read_to_string(path).await.map_err(read)?;
        let body = ShredBody {
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            public_key: hex::encode(self.signer.verifying_key().as_bytes()),
            contents: Contents {
                lines: 0,
                bytes: 0,
                sha256: String::new(),
            },
            ..main.body
        };
        let kept = vec![KeptText {
            key: format!("{}{name}", self.prefix),
            text,
        }];
        let record = ShredRecord::sign(body, Vec::new(), kept, &self.signer);
        let key = format!("{}{}", self.prefix, supplement_name(period, &name));
        self.reader
            .s3
            .put_object()
            .bucket(&self.reader.bucket)
            .key(&key)
            .content_type("application/json")
            .body(ByteStream::from(record.to_json().into_bytes()))
            .send()
            .await
            .map_err(|e| failure(&format!("upload s3://{}/{key}", self.reader.bucket), e))?;
        Ok(self.reader.location(&key))
    }
}
