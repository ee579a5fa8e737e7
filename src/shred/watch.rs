//! The running bot's side of a shred: a file of a period that was shredded while the file still
//! waited on the bot's disk (the bot was down, or the period's key was missing) must stay
//! shredded. Such a file is never uploaded (its key is pending deletion or gone, and the bot never
//! makes a new key for a period that has ended); once the period's shredding record, signed with
//! this bot's own key, is in the bucket and KMS holds the record's key pending deletion (or has
//! deleted it), the bot removes the file and says so: an event, a log line and a `discarded` entry
//! in its signed manifest chain.
//!
//! Only this bot's own signature counts: someone who can write to the bucket can plant a record,
//! but cannot sign one, nor change what KMS says of the key.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ed25519_dalek::VerifyingKey;

use super::record::{State, file_name};
use crate::manifest::verify::{ObjectReader, Version, not_in_effect, read_record};
use crate::period::{Granularity, Period, name_time};

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
    own_key: VerifyingKey,
    granularity: Granularity,
    answers: Mutex<HashMap<Period, (Instant, Option<String>)>>,
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
    pub fn new(reader: ObjectReader, prefix: String, own_key: VerifyingKey, granularity: Granularity) -> Self {
        Self {
            reader,
            prefix,
            own_key,
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
        if let Some((asked, answer)) = lock(&self.answers).get(&period)
            && asked.elapsed() < ASK_AGAIN
        {
            return answer.clone();
        }
        let answer = self.ask(period).await;
        lock(&self.answers).insert(period, (Instant::now(), answer.clone()));
        answer
    }

    async fn ask(&self, period: Period) -> Option<String> {
        let key = format!("{}{}", self.prefix, file_name(period));
        let current = Version {
            id: None,
            size: 0,
            marker: false,
        };
        let record = match read_record(&self.reader, &key, &current, std::slice::from_ref(&self.own_key)).await {
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
        Some(self.reader.location(&key))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
