//! Shredded periods in a bucket check: the signed shredding records `shred` left beside the archive
//! (`shredding_<period>.json`). A record that verifies with one of the given keys makes its period's
//! objects `SHREDDED` (expected, not checked), and lends its copies of the period's manifests and
//! chain head records, so the chains are still walked through the period. A record that does not
//! verify is a problem and changes nothing; a cancelled one changes nothing either.

use std::collections::{HashMap, HashSet};

use ed25519_dalek::VerifyingKey;

use super::{Problem, Shredded};
use crate::decrypt::stream;
use crate::shred::record::{ShredRecord, State, is_record_name};
use crate::sink::s3::keys::object_name;

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
            let record = match stream(s3, kms, bucket, key, true).await {
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
            });
            out.objects.extend(objects);
            out.kept.extend(record.body.kept.into_iter().map(|t| (t.key, t.text)));
        }
        out
    }
}
