//! Shredded periods in a bucket check: the signed shredding records `shred` left beside the archive
//! (`shredding_<period>.json`). A record that verifies with one of the given keys, for this archive,
//! while KMS holds its key pending deletion (or has deleted it), makes its period's objects
//! `SHREDDED` (expected, not checked; gone is expected too, as a lifecycle rule deletes them), and
//! lends its copies of the period's manifests and chain head records, so the chains are still
//! walked through the period even once those objects are gone. A record that does not verify is a
//! problem and changes nothing; a cancelled one changes nothing either.
//!
//! Each record's versions are read newest first, and the first that verifies counts: a planted
//! version over it is named (`REPLACED`, or `HIDDEN` under a delete marker) and changes nothing. A
//! record is read only as far as its signed header allows ([`RecordReader`]).

use std::collections::{HashMap, HashSet};

use aws_sdk_kms::types::KeyState;
use ed25519_dalek::VerifyingKey;

use super::versions::{Listing, ObjectReader, Over, Version};
use super::{Problem, Shredded};
use crate::decrypt::ObjectError;
use crate::manifest::Entry;
use crate::manifest::shred_record::{RecordError, RecordReader, ShredRecord, State, is_record_name};
use crate::objects::keys::object_name;
use crate::period::{Period, name_time};

/// Why a record version was not taken.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error(transparent)]
    Object(#[from] ObjectError),
    #[error(transparent)]
    Record(#[from] RecordError),
}

/// One version of a record, read as far as its signed header allows.
pub(crate) async fn read_record(
    reader: &ObjectReader,
    key: &str,
    version: &Version,
    keys: &[VerifyingKey],
) -> Result<ShredRecord, ReadError> {
    let mut object = reader.open(key, version).await?;
    let mut record = RecordReader::new(keys);
    while let Some(chunk) = object.read().await? {
        record.feed(&chunk)?;
    }
    object.plain.finish()?;
    Ok(record.finish()?)
}

/// The first key of a record that KMS does not hold pending deletion (or deleted), with its state.
pub(crate) async fn not_in_effect(kms: &aws_sdk_kms::Client, record: &ShredRecord) -> Option<(String, String)> {
    for key in &record.body.keys {
        match kms.describe_key().key_id(&key.arn).send().await {
            Ok(out) => match out.key_metadata.and_then(|m| m.key_state) {
                Some(KeyState::PendingDeletion | KeyState::PendingReplicaDeletion) => {}
                state => {
                    return Some((
                        key.arn.clone(),
                        state.map_or("unknown".into(), |s| s.as_str().to_owned()),
                    ));
                }
            },
            // Deleted: the shred is complete.
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found_exception()) => {}
            Err(e) => {
                return Some((
                    key.arn.clone(),
                    crate::error_chain::chain(&crate::aws::failure("look up the key", e)),
                ));
            }
        }
    }
    None
}

/// Whether KMS has deleted every key a record names (each answers NotFound).
pub(crate) async fn keys_deleted(kms: &aws_sdk_kms::Client, record: &ShredRecord) -> bool {
    for key in &record.body.keys {
        match kms.describe_key().key_id(&key.arn).send().await {
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found_exception()) => {}
            _ => return false,
        }
    }
    !record.body.keys.is_empty()
}

#[derive(Debug, Default)]
pub(crate) struct ShredRecords {
    /// The records' own objects.
    pub records: Vec<String>,
    /// The shredded periods' objects, by key.
    pub objects: HashSet<String>,
    /// The plaintext of the shredded periods' manifests and head records, by key.
    pub kept: HashMap<String, String>,
    pub periods: Vec<Shredded>,
}

impl ShredRecords {
    /// The records under `prefix` in `listing`: each verified (with `keys`) and, if scheduled,
    /// checked with KMS; what is wrong with one is added to `problems`.
    pub async fn load(
        reader: &ObjectReader,
        prefix: &str,
        listing: &Listing,
        keys: &[VerifyingKey],
        problems: &mut Vec<Problem>,
    ) -> Self {
        let mut out = Self::default();
        for key in listing.with_data().filter(|k| is_record_name(object_name(k))) {
            out.records.push(key.clone());
            let at = reader.location(key);
            let Some(record) = newest_valid(reader, listing, key, keys, problems).await else {
                continue;
            };
            if record.body.bucket != reader.bucket || record.body.prefix != prefix {
                problems.push(Problem::Unreadable {
                    at,
                    why: format!(
                        "a shredding record of another archive (s3://{}/{}): it counts only there",
                        record.body.bucket, record.body.prefix
                    ),
                });
                continue;
            }
            if record.body.state != State::Scheduled {
                continue;
            }
            // The record says so; KMS must agree, or the period's objects are checked as usual (a
            // cancelled deletion, or an old record put back, hides nothing).
            if let Some((key, state)) = not_in_effect(&reader.kms, &record).await {
                problems.push(Problem::ShredNotInEffect {
                    record: at,
                    period: record.body.period.clone(),
                    key,
                    state,
                });
                continue;
            }
            out.take(record, at, listing);
        }
        out
    }

    fn take(&mut self, record: ShredRecord, at: String, listing: &Listing) {
        let objects: Vec<String> = record
            .objects
            .iter()
            .map(|o| o.key.clone())
            .filter(|k| listing.current(k).is_some())
            .collect();
        let keys = record.body.keys.iter().map(|k| k.arn.clone());
        // A period's supplements (a bot's late copies of its manifests) join its main record.
        match self.periods.iter_mut().find(|p| p.period == record.body.period) {
            Some(period) => {
                for key in keys {
                    if !period.keys.contains(&key) {
                        period.keys.push(key);
                    }
                }
                period.objects += objects.len();
                period.objects_listed.extend(objects);
                if is_main_record(&at) {
                    period.record = at;
                }
            }
            None => self.periods.push(Shredded {
                period: record.body.period.clone(),
                record: at,
                keys: keys.collect(),
                objects: objects.len(),
                objects_listed: objects,
            }),
        }
        self.objects.extend(record.objects.into_iter().map(|o| o.key));
        self.kept.extend(record.kept.into_iter().map(|t| (t.key, t.text)));
    }

    /// The shred that destroyed the file an entry lists: the entry's file is of a shredded period
    /// and under one of its record's keys. Its object may be there (unreadable) or gone.
    pub(crate) fn covering(&self, entry: &Entry) -> Option<&Shredded> {
        let time = name_time(&entry.body.name)?;
        let key = entry.body.kms_key.as_deref()?;
        self.periods
            .iter()
            .find(|s| Period::parse(&s.period).is_ok_and(|p| p.contains(time)) && s.keys.iter().any(|k| k == key))
    }
}

/// Whether a record's location is a period's main record (not a supplement).
fn is_main_record(at: &str) -> bool {
    let name = object_name(at);
    name.strip_prefix("shredding_")
        .and_then(|rest| rest.strip_suffix(".json"))
        .is_some_and(|period| Period::parse(period).is_ok())
}

/// The newest version of a record that one of `keys` signed (a record's versions are its states:
/// scheduled, cancelled), of those read; or why none is, from the newest read. Versions that are
/// not a bot's record are passed over; one that cannot be fetched stops the search.
pub(crate) async fn newest_record<'l>(
    reader: &ObjectReader,
    listing: &'l Listing,
    key: &str,
    keys: &[VerifyingKey],
) -> Result<(&'l Version, ShredRecord), ReadError> {
    let mut first_error = None;
    for version in listing.data_versions(key).rev() {
        match read_record(reader, key, version, keys).await {
            Ok(record) => return Ok((version, record)),
            // A version S3 did not give (a dropped connection, a throttle): its state is unknown,
            // and an older one (scheduled, under a cancellation) must not stand in for it.
            Err(e @ ReadError::Object(ObjectError::S3(_))) => return Err(e),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or(ReadError::Record(RecordError::NotARecord(
        "no version holds data".into(),
    ))))
}

/// [`newest_record`], with what is wrong said: a planted version over it is named, and so is a
/// record in view none of whose versions verifies.
async fn newest_valid(
    reader: &ObjectReader,
    listing: &Listing,
    key: &str,
    keys: &[VerifyingKey],
    problems: &mut Vec<Problem>,
) -> Option<ShredRecord> {
    let at = reader.location(key);
    problems.extend(super::own::piled(listing, key, &at));
    match newest_record(reader, listing, key, keys).await {
        Ok((version, record)) => {
            problems.extend(over_problem(listing, key, version, &at));
            Some(record)
        }
        // Something no bot signed, deleted since (a marker over it): gone from view, as a deleted
        // planted file is.
        Err(_) if listing.current(key).is_none() => None,
        Err(ReadError::Record(RecordError::BadSignature)) => {
            problems.push(Problem::BadSignature { at });
            None
        }
        Err(e) => {
            problems.push(Problem::Unreadable {
                at,
                why: crate::error_chain::chain(&e),
            });
            None
        }
    }
}

/// `HIDDEN` or `REPLACED` when something stands over the bot's `version` of `key`.
pub(crate) fn over_problem(listing: &Listing, key: &str, version: &Version, at: &str) -> Option<Problem> {
    Some(match listing.over(key, version)? {
        Over::Marker(marker) => Problem::Hidden {
            at: at.to_owned(),
            version: version.label().to_owned(),
            marker,
        },
        Over::Newer(newer) => Problem::Replaced {
            at: at.to_owned(),
            version: version.label().to_owned(),
            newer,
        },
    })
}
