//! `retention-bot shred --period P`: crypto-shredding. With per-period keys
//! (`WICKRIO_KMS_MSTRKEY_ARN=...:alias/retention-{yyyy}-{mm}`) every object of a period is encrypted
//! under that period's one KMS key, so scheduling that key's deletion makes the whole period
//! unreadable for good, in backups and replicas too, while every other period stays readable.
//!
//! What is destroyed is decided from sources an attacker with write access to the folder cannot
//! forge: the key is the one the period's alias names (from the template), a manifest entry signed
//! by the bot must name it, and each object counts as the period's only if KMS itself says that key
//! wraps its data key. Before anything changes, `shred` refuses when the period ended less than a
//! day ago (its last files may still be on their way up), when any manifest cannot be read (it could
//! list another period's file under the key), when any entry of another period names the key, and
//! when any of the period's objects is still under Object Lock retention or a legal hold, naming
//! each. Then KMS schedules the deletion (7 to 30 days, during which `shred --cancel` undoes it) and
//! a signed record goes to the bucket.

pub mod record;

use std::collections::{BTreeMap, HashMap};

use aws_sdk_kms::types::KeyState;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ObjectLockLegalHoldStatus;
use chrono::{DateTime, Utc};
use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::aws::{AwsFailure, failure};
use crate::decrypt::{Archive, stream, stream_keeping};
use crate::envelope::StoredEnvelope;
use crate::manifest::head::is_head_record;
use crate::manifest::verify::ShredRecords;
use crate::manifest::{Entry, is_manifest_name};
use crate::period::{Granularity, Period, name_time};
use crate::sink::s3::keys::{ListedObjects, object_name};
use record::{KeptText, ShredBody, ShredRecord, ShreddedKey, ShreddedObject, State};

/// How long after a period's end it may be shredded: its last files, its last manifest (closed at
/// the next tick) and any backlog must have reached the bucket, or they would be left out.
const GRACE: chrono::TimeDelta = chrono::TimeDelta::days(1);

/// `shred`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// The period to destroy: a year (2025) or a month (2025-03), UTC, as the key template names it.
    #[arg(long, value_name = "PERIOD", value_parser = Period::parse)]
    pub period: Period,
    /// The bot's key template: the alias whose key is destroyed is this with the period filled in.
    #[arg(long, env = "WICKRIO_KMS_MSTRKEY_ARN", value_name = "TEMPLATE")]
    pub key_template: String,
    #[command(flatten)]
    pub archive: Archive,
    /// Days KMS waits before it deletes the key (7 to 30). The objects cannot be decrypted from the
    /// start; `shred --cancel` within these days makes them readable again.
    #[arg(long, value_name = "DAYS", default_value_t = 30, value_parser = clap::value_parser!(u32).range(7..=30))]
    pub pending_days: u32,
    /// Show what would be shredded (the key, the objects, anything that holds it back) and change
    /// nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Cancel a shred still in its pending window: the key is kept and enabled again.
    #[arg(long, conflicts_with = "dry_run")]
    pub cancel: bool,
    /// With --dry-run (which needs no password): the bot's public key file, whose signed entries
    /// count [default: $WICKRIO_STATE_DIR/public_key.txt]. Otherwise the key that signs is used.
    #[arg(long, value_name = "FILE", requires = "dry_run")]
    pub public_key: Option<std::path::PathBuf>,
}

/// Why `shred` changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ShredError {
    #[error("{0}")]
    Aws(#[from] AwsFailure),
    #[error("{0}")]
    Usage(String),
    #[error(
        "the period {period} may be shredded from {from} on (a day after its end, so that its last files have reached the bucket)"
    )]
    NotOver { period: Period, from: String },
    #[error("no object under s3://{bucket}/{prefix} belongs to the period {period}")]
    NoObjects {
        period: Period,
        bucket: String,
        prefix: String,
    },
    #[error("the period's alias {alias} {why}")]
    Alias { alias: String, why: String },
    #[error(
        "no manifest entry of the period {period} signed by this bot names KMS key {key} (the one {alias} names): its files were uploaded plain, under another key, or before per-period keys; nothing was changed"
    )]
    NoEntry { period: Period, key: String, alias: String },
    #[error(
        "{} manifest(s) cannot be read, so whether they list another period's file under the key is unknown; nothing was changed:\n{}",
        .0.len(),
        list(.0)
    )]
    Unreadable(Vec<(String, String)>),
    #[error(
        "KMS key {key} protects {name}, of the period {other}, too: destroying it would shred that as well; nothing was changed"
    )]
    SharedKey { key: String, name: String, other: String },
    #[error("{} of the period's objects must still be kept, so nothing was changed:\n{}", .0.len(), list(.0))]
    Held(Vec<(String, String)>),
    #[error("cannot tell which KMS key protects {key}: {why}; nothing was changed")]
    Envelope { key: String, why: String },
    #[error("no shredding record {key} to cancel: {why}")]
    NoRecord { key: String, why: String },
}

fn list(items: &[(String, String)]) -> String {
    items
        .iter()
        .map(|(key, why)| format!("  {key}: {why}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What a shred of a period covers.
#[derive(Debug, Default)]
pub struct Plan {
    /// The period's key, as its alias names it, and its state.
    pub key: String,
    pub key_state: Option<KeyState>,
    pub objects: Vec<(String, u64)>,
    /// Objects named in the period that its key does not protect (plain, or under another key):
    /// they stay readable, and the record leaves them out.
    pub left: Vec<(String, String)>,
    pub kept: Vec<KeptText>,
}

/// The period's key, objects and the plaintext of its manifests and head records; refuses as the
/// module says. `bot` is the public key whose signed entries count.
pub async fn plan(options: &Options, bot: &VerifyingKey) -> Result<Plan, ShredError> {
    let (period, archive) = (options.period, &options.archive);
    if Granularity::of_template(&options.key_template).map_err(ShredError::Usage)? != Some(period.granularity()) {
        return Err(ShredError::Usage(format!(
            "the key template {:?} does not name a key per {} as --period {period} needs (set --key-template or WICKRIO_KMS_MSTRKEY_ARN to the bot's template)",
            options.key_template,
            if period.granularity() == Granularity::Month {
                "month"
            } else {
                "year"
            }
        )));
    }
    // The real clock: a test clock left in an operator's shell must not move what is "over".
    let now = Utc::now();
    if now < period.next().start() + GRACE {
        return Err(ShredError::NotOver {
            period,
            from: (period.next().start() + GRACE).to_rfc3339(),
        });
    }
    let (s3, kms) = archive.clients().await;
    let alias = period.fill(&options.key_template);
    let (key, key_state) = describe(&kms, &alias).await?;
    let listed = archive.list(&s3).await?;
    let in_period = |key: &str| name_time(object_name(key)).is_some_and(|t| period.contains(t));
    if !listed.iter().any(|(k, _)| in_period(k)) {
        return Err(ShredError::NoObjects {
            period,
            bucket: archive.bucket.clone(),
            prefix: archive.prefix.clone(),
        });
    }
    // Periods shredded before: their manifests are read from their records. A record that cannot
    // be read, or is not this bot's, leaves its manifests unknown: refused below, saying why.
    let mut record_problems = Vec::new();
    let earlier = ShredRecords::load(
        &s3,
        &kms,
        &archive.bucket,
        &listed,
        std::slice::from_ref(bot),
        &mut record_problems,
    )
    .await;
    let mut plan = Plan {
        key: key.clone(),
        key_state: key_state.clone(),
        ..Plan::default()
    };
    let mut unreadable: Vec<(String, String)> = record_problems
        .iter()
        .map(|p| ("a shredding record".to_owned(), p.to_string()))
        .collect();
    let mut signed_naming_key = false;
    // Other periods' entries (signed or not: a false refusal is safe): one file per key value they
    // name, and one file per period whose entries name none (an older fixed key, or plain).
    let mut named_elsewhere: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut unnamed_elsewhere: BTreeMap<String, Entry> = BTreeMap::new();
    for (object, _) in listed
        .iter()
        .filter(|(k, _)| is_manifest_name(object_name(k)) || is_head_record(object_name(k)))
    {
        let text = match earlier.kept.get(object) {
            Some(text) => text.clone(),
            None => match stream(&s3, &kms, &archive.bucket, object, true).await {
                Ok(read) => String::from_utf8_lossy(&read.text.unwrap_or_default()).into_owned(),
                Err(e) => {
                    unreadable.push((object.clone(), e.to_string()));
                    continue;
                }
            },
        };
        if in_period(object) {
            plan.kept.push(KeptText {
                key: object.clone(),
                text: text.clone(),
            });
        }
        for entry in text.lines().filter_map(|line| serde_json::from_str::<Entry>(line).ok()) {
            let time = name_time(&entry.body.name);
            if time.is_some_and(|t| period.contains(t)) {
                signed_naming_key |= entry.body.kms_key.as_deref() == Some(key.as_str()) && entry.verify(bot);
                continue;
            }
            let other = time.map_or("unknown".to_owned(), |t| period.granularity().period_of(t).to_string());
            match entry.body.kms_key.clone() {
                Some(named) => {
                    named_elsewhere.entry(named).or_insert((entry.body.name, other));
                }
                None => {
                    unnamed_elsewhere.entry(other).or_insert(entry);
                }
            }
        }
    }
    if !unreadable.is_empty() {
        return Err(ShredError::Unreadable(unreadable));
    }
    // The key may be named by its ARN, its id or an alias: each name is asked of KMS. (A name
    // KMS will not describe to this operator is not a period key: the policy lets it see those.)
    for (named, (name, other)) in named_elsewhere {
        let arn = if named == key {
            Some(key.clone())
        } else {
            describe(&kms, &named).await.ok().map(|(arn, _)| arn)
        };
        if arn.as_deref() == Some(key.as_str()) {
            return Err(ShredError::SharedKey { key, name, other });
        }
    }
    // Files of other periods whose entries name no key: one of each period, unwrapped, must not be
    // under it either (an alias pointed at the key the bot used before its template).
    let objects = ListedObjects::new(listed.iter().map(|(k, _)| k));
    for (other, entry) in unnamed_elsewhere {
        let Some(object) = objects.find(&entry.body.name, &entry.body.sha256, None) else {
            continue;
        };
        if under_key(&s3, &kms, &archive.bucket, object, &key).await? {
            return Err(ShredError::SharedKey {
                key,
                name: entry.body.name,
                other,
            });
        }
    }
    if !signed_naming_key {
        return Err(ShredError::NoEntry { period, key, alias });
    }
    let mut held = Vec::new();
    let mut wrapping: HashMap<Vec<u8>, String> = HashMap::new();
    for (object, size) in listed.iter().filter(|(k, _)| in_period(k)) {
        let head = s3
            .head_object()
            .bucket(&archive.bucket)
            .key(object)
            .send()
            .await
            .map_err(|e| failure(&format!("read s3://{}/{object}", archive.bucket), &e))?;
        let metadata = head.metadata().cloned().unwrap_or_default();
        let envelope = StoredEnvelope::from_metadata(&metadata).map_err(|e| ShredError::Envelope {
            key: object.clone(),
            why: e.to_string(),
        })?;
        let Some(envelope) = envelope else {
            plan.left
                .push((object.clone(), "not encrypted: it stays readable".into()));
            continue;
        };
        let under = match wrapping.get(envelope.wrapped()) {
            Some(under) => under.clone(),
            None => match envelope.wrapping_key(&kms).await {
                Ok(under) => {
                    wrapping.insert(envelope.wrapped().to_vec(), under.clone());
                    under
                }
                // A shred run again: the key already refuses to unwrap anything.
                Err(e) if key_state == Some(KeyState::PendingDeletion) && pending_deletion(&e.to_string()) => {
                    key.clone()
                }
                Err(e) => {
                    return Err(ShredError::Envelope {
                        key: object.clone(),
                        why: e.to_string(),
                    });
                }
            },
        };
        if under == key {
            // Only what would be destroyed is held back by a hold.
            held.extend(held_by(object, &head, now));
            plan.objects.push((object.clone(), *size));
        } else {
            plan.left.push((
                object.clone(),
                format!("under KMS key {under}, not {key}: it stays readable"),
            ));
        }
    }
    if !held.is_empty() {
        return Err(ShredError::Held(held));
    }
    Ok(plan)
}

/// Whether KMS refused because the key is pending deletion (`KMSInvalidStateException`).
fn pending_deletion(error: &str) -> bool {
    error.contains("KMSInvalidStateException")
}

/// Whether `object` is encrypted under `key`: KMS says so when it unwraps the object's data key,
/// or refuses because that key is pending deletion. A plain object, or one under another key
/// (or one KMS will not unwrap for another reason), is not.
async fn under_key(
    s3: &aws_sdk_s3::Client,
    kms: &aws_sdk_kms::Client,
    bucket: &str,
    object: &str,
    key: &str,
) -> Result<bool, ShredError> {
    let head = s3
        .head_object()
        .bucket(bucket)
        .key(object)
        .send()
        .await
        .map_err(|e| failure(&format!("read s3://{bucket}/{object}"), &e))?;
    let metadata = head.metadata().cloned().unwrap_or_default();
    let Ok(Some(envelope)) = StoredEnvelope::from_metadata(&metadata) else {
        return Ok(false);
    };
    Ok(match envelope.wrapping_key(kms).await {
        Ok(under) => under == key,
        Err(e) => {
            pending_deletion(&e.to_string())
                && describe(kms, key)
                    .await
                    .is_ok_and(|(_, s)| s == Some(KeyState::PendingDeletion))
        }
    })
}

/// The key ARN an alias names, and its state.
async fn describe(kms: &aws_sdk_kms::Client, alias: &str) -> Result<(String, Option<KeyState>), ShredError> {
    match kms.describe_key().key_id(alias).send().await {
        Ok(out) => {
            let meta = out.key_metadata.ok_or_else(|| ShredError::Alias {
                alias: alias.to_owned(),
                why: "names no key".into(),
            })?;
            Ok((meta.arn.unwrap_or(meta.key_id), meta.key_state))
        }
        Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found_exception()) => Err(ShredError::Alias {
            alias: alias.to_owned(),
            why: "does not exist: check --period and the key template".into(),
        }),
        Err(e) => Err(failure(&format!("look up KMS alias {alias}"), &e).into()),
    }
}

/// A key's id, which every KMS API takes (moto's key-state calls take nothing else), and its
/// metadata.
async fn key_metadata(
    kms: &aws_sdk_kms::Client,
    arn: &str,
) -> Result<(String, Option<aws_sdk_kms::types::KeyMetadata>), AwsFailure> {
    let meta = kms
        .describe_key()
        .key_id(arn)
        .send()
        .await
        .map_err(|e| failure(&format!("look up KMS key {arn}"), &e))?
        .key_metadata;
    let id = meta.as_ref().map_or(arn, |m| m.key_id.as_str()).to_owned();
    Ok((id, meta))
}

/// Why S3 must still keep an object: a legal hold, or retention until after `now`.
fn held_by(
    object: &str,
    head: &aws_sdk_s3::operation::head_object::HeadObjectOutput,
    now: DateTime<Utc>,
) -> Vec<(String, String)> {
    let mut held = Vec::new();
    if head.object_lock_legal_hold_status() == Some(&ObjectLockLegalHoldStatus::On) {
        held.push((
            object.to_owned(),
            "under a legal hold (retention-bot legal-hold off lifts it)".to_owned(),
        ));
    }
    if let Some(until) = head.object_lock_retain_until_date() {
        let until = DateTime::from_timestamp(until.secs(), until.subsec_nanos()).unwrap_or(DateTime::<Utc>::MAX_UTC);
        if until > now {
            let mode = head.object_lock_mode().map_or("", |m| m.as_str());
            held.push((
                object.to_owned(),
                format!("under {mode} retention until {}", until.to_rfc3339()),
            ));
        }
    }
    held
}

/// Schedules the deletion of `plan`'s key (a key already pending deletion keeps its date) and
/// uploads the signed record. The record is returned even when its upload failed, with the error:
/// the key is scheduled either way, and the operator must keep the record.
pub async fn shred(
    options: &Options,
    plan: Plan,
    signer: &SigningKey,
) -> Result<(ShredRecord, Result<String, AwsFailure>), ShredError> {
    let (_, kms) = options.archive.clients().await;
    let arn = &plan.key;
    let (id, meta) = key_metadata(&kms, arn).await?;
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
    let keys = vec![ShreddedKey {
        arn: arn.clone(),
        deletion_date: date
            .and_then(|s| DateTime::from_timestamp(s, 0))
            .map(|d| d.to_rfc3339()),
    }];
    let objects = plan
        .objects
        .into_iter()
        .map(|(key, size)| ShreddedObject { key, size })
        .collect();
    let record = sign_record(options, State::Scheduled, keys, objects, plan.kept, signer);
    let uploaded = upload(options, &record).await;
    Ok((record, uploaded))
}

/// `shred --cancel`: cancels the deletion of the keys the period's signed record names, enables
/// them again and replaces the record with a signed cancellation (without the manifests' copies:
/// the period is readable again).
pub async fn cancel(
    options: &Options,
    signer: &SigningKey,
) -> Result<(ShredRecord, Result<String, AwsFailure>), ShredError> {
    let archive = &options.archive;
    let (s3, kms) = archive.clients().await;
    let key = record_key(options);
    let no_record = |why: String| ShredError::NoRecord { key: key.clone(), why };
    let previous = stream_keeping(&s3, &kms, &archive.bucket, &key, Some(record::MAX_RECORD))
        .await
        .map_err(|e| no_record(e.to_string()))?;
    let previous: ShredRecord = serde_json::from_slice(&previous.text.unwrap_or_default())
        .map_err(|e| no_record(format!("it is not a shredding record: {e}")))?;
    if !previous.verify(&signer.verifying_key()) {
        return Err(no_record("its signature is not this bot's".into()));
    }
    let body = &previous.body;
    if body.period != options.period.to_string() || body.bucket != archive.bucket || body.prefix != archive.prefix {
        return Err(no_record(format!(
            "it is for the period {} of s3://{}/{}",
            body.period, body.bucket, body.prefix
        )));
    }
    for shredded in &body.keys {
        let arn = &shredded.arn;
        let (id, meta) = key_metadata(&kms, arn).await?;
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
    let record = sign_record(options, State::Cancelled, keys, body.objects, Vec::new(), signer);
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
        at: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        objects,
        kept,
        public_key: hex::encode(signer.verifying_key().as_bytes()),
    };
    ShredRecord::sign(body, signer)
}

fn record_key(options: &Options) -> String {
    format!("{}{}", options.archive.prefix, record::file_name(options.period))
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
