//! Shredded periods in a bucket check: the signed shredding records `shred` left beside the archive
//! (`shredding_<period>.json`). A record that verifies with one of the given keys makes its period's
//! objects `SHREDDED` (expected, not checked), and lends its copies of the period's manifests and
//! chain head records, so the chains are still walked through the period. A record that does not
//! verify is a problem and changes nothing; a cancelled one changes nothing either.

use std::collections::{HashMap, HashSet};

use aws_sdk_kms::types::KeyState;
use ed25519_dalek::VerifyingKey;

use super::{Problem, Shredded};
use crate::decrypt::stream_keeping;
use crate::shred::record::{MAX_RECORD, ShredRecord, State, is_record_name};
use crate::sink::s3::keys::object_name;

/// The first key of a record that KMS does not hold pending deletion (or deleted), with its state.
async fn not_in_effect(kms: &aws_sdk_kms::Client, record: &ShredRecord) -> Option<(String, String)> {
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
            Err(e) => return Some((key.arn.clone(), crate::aws::failure("look up the key", &e).message)),
        }
    }
    None
}

#[derive(Debug, Default)]
pub struct ShredRecords {
    /// The records' own objects.
    pub records: Vec<String>,
    /// The shredded periods' objects, by key.
    pub objects: HashSet<String>,
    /// The plaintext of the shredded periods' manifests and head records, by key.
    pub kept: HashMap<String, String>,
    pub periods: Vec<Shredded>,
}

impl ShredRecords {
    pub async fn load(
        s3: &aws_sdk_s3::Client,
        kms: &aws_sdk_kms::Client,
        bucket: &str,
        listed: &[(String, u64)],
        keys: &[VerifyingKey],
        problems: &mut Vec<Problem>,
    ) -> Self {
        let mut out = Self::default();
        for (key, _) in listed.iter().filter(|(k, _)| is_record_name(object_name(k))) {
            out.records.push(key.clone());
            let at = format!("s3://{bucket}/{key}");
            let record = match stream_keeping(s3, kms, bucket, key, Some(MAX_RECORD)).await {
                Ok(read) => serde_json::from_slice::<ShredRecord>(&read.text.unwrap_or_default())
                    .map_err(|e| format!("not a shredding record: {e}")),
                Err(e) => Err(e.to_string()),
            };
            let record = match record {
                Ok(r) if keys.iter().any(|k| r.verify(k)) => r,
                Ok(_) => {
                    problems.push(Problem::BadSignature { at });
                    continue;
                }
                Err(why) => {
                    problems.push(Problem::Unreadable { at, why });
                    continue;
                }
            };
            if record.body.state != State::Scheduled {
                continue;
            }
            // The record says so; KMS must agree, or the period's objects are checked as usual (a
            // cancelled deletion, or an old record put back, hides nothing).
            if let Some((key, state)) = not_in_effect(kms, &record).await {
                problems.push(Problem::ShredNotInEffect {
                    record: at,
                    period: record.body.period.clone(),
                    key,
                    state,
                });
                continue;
            }
            let present: HashSet<&str> = listed.iter().map(|(k, _)| k.as_str()).collect();
            let objects: Vec<String> = record
                .body
                .objects
                .iter()
                .map(|o| o.key.clone())
                .filter(|k| present.contains(k.as_str()))
                .collect();
            out.periods.push(Shredded {
                period: record.body.period.clone(),
                record: at,
                keys: record.body.keys.iter().map(|k| k.arn.clone()).collect(),
                objects: objects.len(),
                objects_listed: objects.clone(),
            });
            out.objects.extend(objects);
            out.kept.extend(record.body.kept.into_iter().map(|t| (t.key, t.text)));
        }
        out
    }
}
