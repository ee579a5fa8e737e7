//! `retention-bot shred --period P`: crypto-shredding. With per-period keys
//! (`WICKRIO_KMS_MSTRKEY_ARN=...:alias/retention-{yyyy}-{mm}`) every object of a period is encrypted
//! under that period's one KMS key, so scheduling that key's deletion makes the whole period
//! unreadable for good, in backups and replicas too, while every other period stays readable.
//!
//! The period's objects are those whose names carry a time in it; its keys are the ones their
//! signed manifest entries name. Before anything changes, `shred` refuses when a key also protects
//! another period's file, or when any of the period's objects is still under Object Lock retention
//! or a legal hold (the archive promised to keep it), naming each. Then KMS schedules the deletion
//! (7 to 30 days, during which `shred --cancel` undoes it) and a signed record goes to the bucket.

pub mod record;

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_kms::types::KeyState;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ObjectLockLegalHoldStatus;
use ed25519_dalek::SigningKey;

use crate::aws::{AwsFailure, failure};
use crate::decrypt::{Archive, ObjectError, stream};
use crate::manifest::head::is_head_record;
use crate::manifest::{Entry, is_manifest_name};
use crate::period::{Period, name_time};
use crate::sink::s3::keys::object_name;
use record::{KeptText, ShredBody, ShredRecord, ShreddedKey, ShreddedObject, State};

/// `shred`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// The period to destroy: a year (2025) or a month (2025-03), UTC, as the key template names it.
    #[arg(long, value_name = "PERIOD", value_parser = Period::parse)]
    pub period: Period,
    #[command(flatten)]
    pub archive: Archive,
    /// Days KMS waits before it deletes the key (7 to 30). The objects cannot be decrypted from the
    /// start; `shred --cancel` within these days makes them readable again.
    #[arg(long, value_name = "DAYS", default_value_t = 30, value_parser = clap::value_parser!(u32).range(7..=30))]
    pub pending_days: u32,
    /// Show what would be shredded (keys, objects, anything that holds it back) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Cancel a shred still in its pending window: the keys are kept and enabled again.
    #[arg(long, conflicts_with = "dry_run")]
    pub cancel: bool,
}

/// Why `shred` changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ShredError {
    #[error("{0}")]
    Aws(#[from] AwsFailure),
    #[error(
        "the period {period} is not over until {until}: files are still written under its key; shred it after that"
    )]
    NotOver { period: Period, until: String },
    #[error("no object under s3://{bucket}/{prefix} belongs to the period {period}")]
    NoObjects {
        period: Period,
        bucket: String,
        prefix: String,
    },
    #[error(
        "no manifest entry of the period {period} names a KMS key (its files were uploaded plain, or before per-period keys); there is no key to destroy"
    )]
    NoKey { period: Period },
    #[error("cannot read the period's manifest {key} ({error}): without it the period's keys are not known")]
    Manifest { key: String, error: ObjectError },
    #[error(
        "KMS key {key} protects {name}, of the period {other}, too: destroying it would shred that period as well; nothing was changed"
    )]
    SharedKey { key: String, name: String, other: String },
    #[error("{} of the period's objects must still be kept, so nothing was changed:\n{}", .0.len(), list_held(.0))]
    Held(Vec<(String, String)>),
    #[error("no shredding record {key} to cancel ({why})")]
    NoRecord { key: String, why: String },
}

fn list_held(held: &[(String, String)]) -> String {
    held.iter()
        .map(|(key, why)| format!("  {key}: {why}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What a shred of a period covers.
#[derive(Debug, Default)]
pub struct Plan {
    pub keys: BTreeSet<String>,
    pub objects: Vec<(String, u64)>,
    pub kept: Vec<KeptText>,
    /// Manifests of other periods that could not be read (a period shredded earlier): the check that
    /// no key is shared could not look into them.
    pub unread: Vec<String>,
}

/// The period's keys and objects, and the plaintext of its manifests and head records; refuses as
/// the module says.
pub async fn plan(options: &Options) -> Result<Plan, ShredError> {
    let (period, archive) = (options.period, &options.archive);
    let now = crate::clock::now();
    if period.next().start() > now {
        return Err(ShredError::NotOver {
            period,
            until: period.next().start().to_rfc3339(),
        });
    }
    let (s3, kms) = archive.clients().await;
    let listed = archive.list(&s3).await?;
    let in_period = |key: &str| name_time(object_name(key)).is_some_and(|t| period.contains(t));
    let mut plan = Plan {
        objects: listed.iter().filter(|(k, _)| in_period(k)).cloned().collect(),
        ..Plan::default()
    };
    if plan.objects.is_empty() {
        return Err(ShredError::NoObjects {
            period,
            bucket: archive.bucket.clone(),
            prefix: archive.prefix.clone(),
        });
    }
    // Every key a file of another period is under, with one such file.
    let mut others: BTreeMap<String, (String, String)> = BTreeMap::new();
    for (key, _) in listed
        .iter()
        .filter(|(k, _)| is_manifest_name(object_name(k)) || is_head_record(object_name(k)))
    {
        let mine = in_period(key);
        let text = match stream(&s3, &kms, &archive.bucket, key, true).await {
            Ok(read) => String::from_utf8_lossy(&read.text.unwrap_or_default()).into_owned(),
            Err(error) if mine => {
                return Err(ShredError::Manifest {
                    key: key.clone(),
                    error,
                });
            }
            Err(_) => {
                plan.unread.push(key.clone());
                continue;
            }
        };
        if mine {
            plan.kept.push(KeptText {
                key: key.clone(),
                text: text.clone(),
            });
        }
        for entry in text.lines().filter_map(|line| serde_json::from_str::<Entry>(line).ok()) {
            let Some(kms_key) = entry.body.kms_key.clone() else {
                continue;
            };
            match name_time(&entry.body.name) {
                Some(t) if period.contains(t) => {
                    plan.keys.insert(kms_key);
                }
                t => {
                    let other = t.map_or("unknown".to_owned(), |t| period.granularity().period_of(t).to_string());
                    others.entry(kms_key).or_insert((entry.body.name, other));
                }
            }
        }
    }
    if plan.keys.is_empty() {
        return Err(ShredError::NoKey { period });
    }
    if let Some((key, (name, other))) = plan.keys.iter().find_map(|k| others.get_key_value(k)) {
        return Err(ShredError::SharedKey {
            key: key.clone(),
            name: name.clone(),
            other: other.clone(),
        });
    }
    let held = held(&s3, &archive.bucket, &plan.objects, now).await?;
    if !held.is_empty() {
        return Err(ShredError::Held(held));
    }
    Ok(plan)
}

/// The objects S3 must still keep: under a legal hold, or retained until after `now`.
async fn held(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    objects: &[(String, u64)],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<(String, String)>, AwsFailure> {
    let mut held = Vec::new();
    for (key, _) in objects {
        let head = s3
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| failure(&format!("read the Object Lock state of s3://{bucket}/{key}"), &e))?;
        if head.object_lock_legal_hold_status() == Some(&ObjectLockLegalHoldStatus::On) {
            held.push((
                key.clone(),
                "under a legal hold (retention-bot legal-hold off lifts it)".to_owned(),
            ));
        }
        if let Some(until) = head.object_lock_retain_until_date() {
            let until = chrono::DateTime::from_timestamp(until.secs(), until.subsec_nanos()).unwrap_or(now);
            if until > now {
                let mode = head.object_lock_mode().map_or("", |m| m.as_str());
                held.push((
                    key.clone(),
                    format!("under {mode} retention until {}", until.to_rfc3339()),
                ));
            }
        }
    }
    Ok(held)
}

/// Schedules the deletion of `plan`'s keys (a key already pending deletion keeps its date) and
/// uploads the signed record. The record is returned even when its upload failed, with the error:
/// the keys are scheduled either way, and the operator must keep it.
pub async fn shred(
    options: &Options,
    plan: Plan,
    signer: &SigningKey,
) -> Result<(ShredRecord, Result<String, AwsFailure>), ShredError> {
    let (_, kms) = options.archive.clients().await;
    let mut keys = Vec::new();
    for arn in &plan.keys {
        let described = kms
            .describe_key()
            .key_id(arn)
            .send()
            .await
            .map_err(|e| failure(&format!("look up KMS key {arn}"), &e))?;
        let meta = described.key_metadata;
        // The key's id, which every KMS API takes (moto's key-state calls take nothing else).
        let id = meta.as_ref().map_or(arn.as_str(), |m| m.key_id.as_str()).to_owned();
        let date = match meta.as_ref().and_then(|m| m.key_state.clone()) {
            Some(KeyState::PendingDeletion) => meta.and_then(|m| m.deletion_date).map(|d| d.secs()),
            _ => kms
                .schedule_key_deletion()
                .key_id(&id)
                .pending_window_in_days(i32::try_from(options.pending_days).unwrap_or(30))
                .send()
                .await
                .map_err(|e| failure(&format!("schedule the deletion of KMS key {arn}"), &e))?
                .deletion_date
                .map(|d| d.secs()),
        };
        keys.push(ShreddedKey {
            arn: arn.clone(),
            deletion_date: date
                .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
                .map(|d| d.to_rfc3339()),
        });
    }
    let objects = plan
        .objects
        .into_iter()
        .map(|(key, size)| ShreddedObject { key, size })
        .collect();
    let record = sign_record(options, State::Scheduled, keys, objects, plan.kept, signer);
    let uploaded = upload(options, &record).await;
    Ok((record, uploaded))
}

/// `shred --cancel`: cancels the deletion of the keys the period's record names, enables them again
/// and replaces the record with a signed cancellation.
pub async fn cancel(
    options: &Options,
    signer: &SigningKey,
) -> Result<(ShredRecord, Result<String, AwsFailure>), ShredError> {
    let archive = &options.archive;
    let (s3, kms) = archive.clients().await;
    let key = record_key(options);
    let previous = stream(&s3, &kms, &archive.bucket, &key, true)
        .await
        .map_err(|e| ShredError::NoRecord {
            key: key.clone(),
            why: e.to_string(),
        })?;
    let previous: ShredRecord =
        serde_json::from_slice(&previous.text.unwrap_or_default()).map_err(|e| ShredError::NoRecord {
            key: key.clone(),
            why: format!("it is not a shredding record: {e}"),
        })?;
    for shredded in &previous.body.keys {
        let arn = &shredded.arn;
        let described = kms
            .describe_key()
            .key_id(arn)
            .send()
            .await
            .map_err(|e| failure(&format!("look up KMS key {arn}"), &e))?;
        let meta = described.key_metadata;
        let id = meta.as_ref().map_or(arn.as_str(), |m| m.key_id.as_str()).to_owned();
        if meta.and_then(|m| m.key_state) == Some(KeyState::PendingDeletion) {
            kms.cancel_key_deletion()
                .key_id(&id)
                .send()
                .await
                .map_err(|e| failure(&format!("cancel the deletion of KMS key {arn}"), &e))?;
        }
        // A cancelled deletion leaves the key disabled.
        kms.enable_key()
            .key_id(&id)
            .send()
            .await
            .map_err(|e| failure(&format!("enable KMS key {arn} again"), &e))?;
    }
    let body = previous.body;
    let keys = body
        .keys
        .into_iter()
        .map(|k| ShreddedKey {
            deletion_date: None,
            ..k
        })
        .collect();
    let record = sign_record(options, State::Cancelled, keys, body.objects, body.kept, signer);
    let uploaded = upload(options, &record).await;
    Ok((record, uploaded))
}

fn sign_record(
    options: &Options,
    state: State,
    keys: Vec<ShreddedKey>,
    objects: Vec<ShreddedObject>,
    kept: Vec<KeptText>,
    signer: &SigningKey,
) -> ShredRecord {
    let body = ShredBody {
        period: options.period.to_string(),
        state,
        bucket: options.archive.bucket.clone(),
        prefix: options.archive.prefix.clone(),
        keys,
        pending_days: options.pending_days,
        at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        objects,
        kept,
        public_key: hex::encode(signer.verifying_key().as_bytes()),
    };
    ShredRecord::sign(body, signer)
}

fn record_key(options: &Options) -> String {
    let name = record::file_name(options.period);
    let prefix = options.archive.prefix.trim_end_matches('/');
    if prefix.is_empty() {
        name
    } else {
        format!("{prefix}/{name}")
    }
}

/// Puts the record, unencrypted (see [`record`]); returns its location.
async fn upload(options: &Options, record: &ShredRecord) -> Result<String, AwsFailure> {
    let archive = &options.archive;
    let (s3, _) = archive.clients().await;
    let key = record_key(options);
    s3.put_object()
        .bucket(&archive.bucket)
        .key(&key)
        .content_type("application/json")
        .body(ByteStream::from(record.to_json().into_bytes()))
        .send()
        .await
        .map_err(|e| {
            failure(
                &format!("upload the shredding record to s3://{}/{key}", archive.bucket),
                &e,
            )
        })?;
    Ok(format!("s3://{}/{key}", archive.bucket))
}
