//! The running bot's side of a shred: a file of a period that was shredded while the file still
//! waited on the bot's disk (the bot was down, or the period's key was missing) must stay
//! shredded. Such a file is never uploaded (its key is pending deletion or gone, and the bot never
//! makes a new key for a period that has ended); once the period's shredding record, signed with
//! this bot's own key, is in the bucket and KMS holds the record's key pending deletion (or has
//! deleted it), the bot removes the file and says so: an event, a log line and a `discarded` entry
//! in its signed manifest chain.
//!
//! A manifest (or chain head record) of the period caught the same way cannot go up either; its
//! entries are the chain's, so the bot puts a copy of its text (metadata only: names, sizes,
//! hashes) in a signed supplement to the period's record, `shredding_<period>_<manifest>.json`,
//! which `verify` reads as it reads the main record's copies, before it removes the file.
//!
//! Only this bot's own signature counts: someone who can write to the bucket can plant a record,
//! but cannot sign one, nor change what KMS says of the key.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use ed25519_dalek::SigningKey;

use super::record::{Contents, KeptText, ShredBody, ShredRecord, State, file_name, supplement_name};
use crate::aws::failure;
use crate::manifest::entry::MAX_MANIFEST;
use crate::manifest::verify::{ObjectReader, Version, not_in_effect, read_record};
use crate::period::{Granularity, Period, name_time};
use crate::sync::lock;

/// How long an answer about a period is kept: files waiting for a key retry every few seconds.
const ASK_AGAIN: Duration = Duration::from_secs(60);

/// A file the bot removes unsent because its period was shredded, and the record that says so.
#[derive(Debug)]
pub struct Discarded {
    pub file: crate::spool::ClosedFile,
    pub record: String,
}

pub struct ShredWatch {
    reader: ObjectReader,
    prefix: String,
    /// Verifies the records (only this bot's count) and signs the supplements.
    signer: SigningKey,
    granularity: Granularity,
    /// Per period: when it was asked, and the record in effect.
    answers: Mutex<HashMap<Period, (Instant, Option<InEffect>)>>,
}

/// A period's record in effect: where it lies, and the record.
type InEffect = (String, ShredRecord);

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
        }
    }

    /// The ended period a file (by its name) belongs to, if its period has ended.
    pub fn ended_period(&self, name: &str) -> Option<Period> {
        let period = self.granularity.period_of(name_time(name)?);
        (period.next().start() <= crate::clock::now()).then_some(period)
    }

    /// Where the record lies that shows `period` shredded for good, if one does: this bot's
    /// signature, this archive, the period, scheduled, and KMS holding its key pending deletion or
    /// deleted.
    pub async fn in_effect(&self, period: Period) -> Option<String> {
        self.record(period).await.map(|(at, _)| at)
    }

    async fn record(&self, period: Period) -> Option<InEffect> {
        if let Some((asked, answer)) = lock(&self.answers).get(&period)
            && asked.elapsed() < ASK_AGAIN
        {
            return answer.clone();
        }
        let answer = self.ask(period).await;
        lock(&self.answers).insert(period, (Instant::now(), answer.clone()));
        answer
    }

    async fn ask(&self, period: Period) -> Option<InEffect> {
        let key = format!("{}{}", self.prefix, file_name(period));
        let current = Version {
            id: None,
            size: 0,
            marker: false,
        };
        let own = [self.signer.verifying_key()];
        let record = match read_record(&self.reader, &key, &current, &own).await {
            Ok(record) => record,
            Err(e) => {
                tracing::debug!(period = %period, error = %e, "no shredding record of ours for the period");
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
        Some((self.reader.location(&key), record))
    }

    /// Puts a copy of a manifest or head record of the shredded `period` (the file at `path`) in a
    /// signed supplement to the period's record; its location.
    pub async fn keep_copy(&self, period: Period, path: &std::path::Path) -> Result<String, String> {
        let (_, main) = self
            .record(period)
            .await
            .ok_or_else(|| format!("the period {period} is not shredded (any more)"))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let size = tokio::fs::metadata(path).await.map_err(|e| e.to_string())?.len();
        if size > MAX_MANIFEST {
            return Err(format!("{size} bytes, more than a manifest can be"));
        }
        let text = tokio::fs::read_to_string(path).await.map_err(|e| e.to_string())?;
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
            .map_err(|e| failure(&format!("upload s3://{}/{key}", self.reader.bucket), &e).message)?;
        Ok(self.reader.location(&key))
    }
}
