//! `retention-bot shred --period P`: crypto-shredding. With per-period keys
//! (`WICKRIO_KMS_MSTRKEY_ARN=...:alias/retention-{yyyy}-{mm}`) every object of a period is encrypted
//! under that period's one KMS key, so scheduling that key's deletion makes the whole period
//! unreadable for good, in backups and replicas too, while every other period stays readable.
//!
//! It is made against someone who can write to the bucket (delete, hide, replace, plant) but holds
//! no KMS rights and no bot key. What is destroyed is decided from what they cannot forge:
//!
//! - the key is the one the period's alias names (from the template), and a manifest entry of the
//!   period signed by the bot must name it;
//! - KMS itself is asked about every version of every object outside the period (each distinct
//!   wrapped data key once: about 10⁶ HeadObject and at most 10⁶ KMS Decrypt calls for a bucket of
//!   10⁶ object versions, far fewer Decrypts with data-key reuse), and a single one under the key
//!   refuses the shred: nothing hidden, deleted from view or left out of a manifest can make it
//!   destroy another period ([`wrapping`]);
//! - each bot's chain (every version of its manifests read, as `verify` reads them) must be whole up
//!   to its newest head, and every file of the period it lists must be in the bucket: a backlog
//!   still on a bot's disk holds the shred back ([`survey`]).
//!
//! It also refuses when the period ended less than a day ago, when any manifest cannot be read, when
//! any signed entry of another period names the key, and when any version of the period's objects
//! is under Object Lock retention or a legal hold, naming each. Then KMS schedules the deletion (7 to
//! 30 days, during which `shred --cancel` undoes it); `shred` waits longer than the bots' bound on a
//! reused data key ([`crate::envelope::key_freshness`]), counts the period's objects again, and puts
//! the signed record in the bucket.

use crate::manifest::shred_record as record;
mod survey;
mod watch;
mod wrapping;

pub use watch::Shred;
pub(crate) use watch::{KeepCopyError, ShredWatch};

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use aws_sdk_kms::types::KeyState;
use aws_sdk_s3::primitives::ByteStream;
use chrono::{DateTime, Utc};
use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::aws::{AwsFailure, failure};
use crate::decrypt::Archive;
use crate::error_chain::Chain;
use crate::manifest::verify::{Listing, ObjectReader, ShredRecords, Version, newest_record};
use crate::objects::keys::object_name;
use crate::period::{Granularity, Period, name_time};
use record::{Contents, KeptText, RecordReader, ShredBody, ShredRecord, ShreddedKey, ShreddedObject, State};
use wrapping::{Looked, Verdict, Witness, held_by};

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
    /// With --cancel: the signed record to cancel, from a file (a saved copy, when the bucket's is
    /// gone). Its signature and period are checked as the bucket's would be.
    #[arg(long, value_name = "FILE", requires = "cancel")]
    pub record: Option<PathBuf>,
    /// The public key file of a bot that writes to the archive: its chain is checked whole and its
    /// signed entries count. Repeat it for each bot; the signing bot's own key always counts (for a
    /// dry run, which needs no password: [default: $WICKRIO_STATE_DIR/public_key.txt]).
    #[arg(long, value_name = "FILE")]
    pub public_key: Vec<PathBuf>,
    /// A chain head record kept elsewhere (a copy of a chainhead_*.json, or of a chain-head event):
    /// each bot's chain in the bucket must reach its newest head. Repeatable.
    #[arg(long, value_name = "FILE")]
    pub head: Vec<PathBuf>,
}

/// Why `shred` changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ShredError {
    #[error(transparent)]
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
        "no object of the period {period} is under KMS key {key}, as KMS answers this operator (check kms:Decrypt on the period keys); nothing was changed"
    )]
    NothingUnderKey { period: Period, key: String },
    #[error(
        "KMS key {key} protects {name}, of the period {other}, too: destroying it would shred that as well; nothing was changed"
    )]
    SharedKey { key: String, name: String, other: String },
    #[error(
        "{} file(s) of the period are listed by a bot's signed entries but are not in the bucket (a backlog still on a bot's disk): shred once they are uploaded; nothing was changed:\n  {}",
        .0.len(),
        .0.join("\n  ")
    )]
    Backlog(Vec<String>),
    #[error(
        "a bot's chain cannot be proven whole, so files it lists beyond the break are unknown; nothing was changed:\n  {}",
        .0.join("\n  ")
    )]
    Unproven(Vec<String>),
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
    /// The period's object versions under the key: key, version id, stored size.
    pub objects: Vec<(String, Option<String>, u64)>,
    /// Objects named in the period that its key does not protect (plain, or under another key):
    /// they stay readable, and the record leaves them out.
    pub left: Vec<(String, String)>,
    pub kept: Vec<KeptText>,
    /// Objects under a manifest's name that no version of can be read, and no bot's chain needs
    /// (planted): left aside, with why.
    pub set_aside: Vec<(String, String)>,
    /// Object versions outside the period asked about, and the S3 and KMS calls it took.
    pub outside: usize,
    pub calls: (usize, usize),
    /// Wrapped data keys KMS said are under the key.
    wrapped: HashSet<Vec<u8>>,
    /// Those of the bots' own versions of the period's files.
    bots_wrapped: HashSet<Vec<u8>>,
    /// When the listing the plan was made from began (seconds since the epoch): versions written
    /// since are asked about again before the record is made.
    listed_at: i64,
}

/// The period's key, objects and the plaintext of its manifests and head records; refuses as the
/// module says. `bots` are the public keys whose signed entries and chains count (the first is the
/// signer's).
pub async fn plan(options: &Options, bots: &[VerifyingKey]) -> Result<Plan, ShredError> {
    let (period, archive) = (options.period, &options.archive);
    check_when(options)?;
    let (s3, kms) = archive.clients().await;
    let alias = period.fill(&options.key_template);
    let (key, key_state) = describe(&kms, &alias).await?;
    if !matches!(key_state, Some(KeyState::Enabled | KeyState::PendingDeletion)) {
        return Err(ShredError::Alias {
            alias,
            why: format!(
                "names key {key}, which is {}: enable it first, so that KMS can say what it protects",
                key_state.as_ref().map_or("of unknown state", |s| s.as_str())
            ),
        });
    }
    let listed_at = Utc::now().timestamp();
    let listing = Listing::read(archive, &s3).await?;
    if !listing.with_data().any(|k| in_period(period, k)) {
        return Err(ShredError::NoObjects {
            period,
            bucket: archive.bucket.clone(),
            prefix: archive.prefix.clone(),
        });
    }
    let reader = ObjectReader {
        s3,
        kms,
        bucket: archive.bucket.clone(),
    };
    let earlier = earlier_shreds(&reader, archive, &listing, bots).await;
    let survey = survey::survey(&reader, &listing, &earlier, bots, &options.head, period, &key).await;
    judge(&reader.kms, &survey, period, &key, &alias).await?;
    let witness = Witness::new(&reader, key.clone());
    let mut plan = Plan {
        key: key.clone(),
        key_state: key_state.clone(),
        kept: survey.kept,
        set_aside: survey.unreadable,
        listed_at,
        ..Plan::default()
    };
    let pending = key_state == Some(KeyState::PendingDeletion);
    inside(&witness, &listing, &survey.listed, period, pending, &mut plan).await?;
    outside(&witness, &listing, &earlier, period, pending, &mut plan, |_| true).await?;
    plan.calls = witness.calls();
    Ok(plan)
}

/// The template names the period's kind, and the period is a day past its end (on the real clock:
/// a test clock left in an operator's shell must not move what is "over").
fn check_when(options: &Options) -> Result<(), ShredError> {
    let period = options.period;
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
    let from = period.next().start() + GRACE;
    if Utc::now() < from {
        return Err(ShredError::NotOver {
            period,
            from: from.to_rfc3339(),
        });
    }
    Ok(())
}

/// Periods shredded before, whose manifests are read from their records. A record that cannot be
/// read or is no bot's counts for nothing (`verify` names it): its objects are asked about as any
/// other's, and if it held the only copy of a manifest, the chain it leaves unproven refuses.
async fn earlier_shreds(
    reader: &ObjectReader,
    archive: &Archive,
    listing: &Listing,
    bots: &[VerifyingKey],
) -> ShredRecords {
    let mut problems = Vec::new();
    let earlier = ShredRecords::load(reader, &archive.prefix, listing, bots, &mut problems).await;
    for problem in problems {
        tracing::warn!("{problem}");
    }
    earlier
}

/// The survey's refusals, in the order an operator fixes them.
async fn judge(
    kms: &aws_sdk_kms::Client,
    survey: &survey::Survey,
    period: Period,
    key: &str,
    alias: &str,
) -> Result<(), ShredError> {
    // A manifest no version of which can be read refuses only if a bot's chain needs it (the
    // chain then breaks): one planted under a manifest's name, perhaps under a retention no one can
    // lift, must not hold every shred back for good.
    if !survey.unproven.is_empty() {
        let mut why = survey.unproven.clone();
        why.extend(
            survey
                .unreadable
                .iter()
                .map(|(at, e)| format!("{at} cannot be read: {e}")),
        );
        return Err(ShredError::Unproven(why));
    }
    if !survey.backlog.is_empty() {
        return Err(ShredError::Backlog(survey.backlog.clone()));
    }
    if let Some((name, other)) = survey.shares_key.clone() {
        return Err(ShredError::SharedKey {
            key: key.to_owned(),
            name,
            other,
        });
    }
    // The key may be named by its id or an alias: each name is asked of KMS. (A name KMS will not
    // describe to this operator is not a period key: the policy lets it see those.)
    for (named, (name, other)) in &survey.named_elsewhere {
        if describe(kms, named).await.is_ok_and(|(arn, _)| arn == key) {
            return Err(ShredError::SharedKey {
                key: key.to_owned(),
                name: name.clone(),
                other: other.clone(),
            });
        }
    }
    if !survey.signed_naming_key {
        return Err(ShredError::NoEntry {
            period,
            key: key.to_owned(),
            alias: alias.to_owned(),
        });
    }
    Ok(())
}

/// Every version of the period's objects: under the key (destroyed), or left. The bots' own versions
/// of the files their signed entries list (each key's oldest) may not be held: retention or a legal
/// hold on anything else (a copy someone put there) holds nothing back.
async fn inside(
    witness: &Witness<'_>,
    listing: &Listing,
    listed: &HashSet<String>,
    period: Period,
    pending: bool,
    plan: &mut Plan,
) -> Result<(), ShredError> {
    let now = Utc::now();
    let mut held = Vec::new();
    let bots_version =
        |key: &str, version: &Version| listed.contains(key) && listing.data_versions(key).next() == Some(version);
    let versions = versions(listing, |k| in_period(period, k));
    witness
        .look_all(versions, |looked| {
            // A shred run again: the key already refuses to unwrap anything.
            let ours = looked.verdict == Verdict::Ours || (pending && looked.verdict == Verdict::Pending);
            if !ours {
                plan.left.push((looked.key.clone(), left_why(&looked.verdict)));
            } else {
                if bots_version(&looked.key, &looked.version) {
                    held.extend(held_by(&looked, now));
                    plan.bots_wrapped.extend(looked.wrapped.clone());
                }
                plan.take(looked);
            }
            Ok(())
        })
        .await?;
    if !held.is_empty() {
        return Err(ShredError::Held(held));
    }
    if plan.objects.is_empty() {
        return Err(ShredError::NothingUnderKey {
            period,
            key: plan.key.clone(),
        });
    }
    Ok(())
}

/// Every version of every object outside the period (but the earlier shreds' and their records)
/// that `also` passes: KMS must say none is under the key, but a copy of a bot's file of the period
/// (the same wrapped data key, which no file of another period shares) that someone put there.
async fn outside(
    witness: &Witness<'_>,
    listing: &Listing,
    earlier: &ShredRecords,
    period: Period,
    pending: bool,
    plan: &mut Plan,
    also: impl Fn(&Version) -> bool,
) -> Result<(), ShredError> {
    let others: Vec<(String, Version)> = versions(listing, |k| {
        !in_period(period, k) && !earlier.objects.contains(k) && !earlier.records.iter().any(|r| r == k)
    })
    .filter(|(_, v)| also(v))
    .collect();
    plan.outside += others.len();
    let (key, bots_wrapped) = (plan.key.clone(), plan.bots_wrapped.clone());
    let mut copies = Vec::new();
    witness
        .look_all(others.into_iter(), |looked| {
            let at = format!("{} (version {})", looked.key, looked.version.label());
            let copy = looked.wrapped.as_ref().is_some_and(|w| bots_wrapped.contains(w));
            match looked.verdict {
                Verdict::Ours if copy => {
                    copies.push(looked);
                    Ok(())
                }
                Verdict::Ours => Err(ShredError::SharedKey {
                    key: key.clone(),
                    other: other_period(period, &looked.key),
                    name: at,
                }),
                Verdict::Pending if pending => Err(ShredError::Envelope {
                    key: at,
                    why: format!(
                        "KMS refuses it as under a key pending deletion, and {key} is pending deletion: cancel (shred --cancel) and run the shred again while the key is enabled"
                    ),
                }),
                _ => Ok(()),
            }
        })
        .await?;
    for looked in copies {
        plan.left.push((
            looked.key.clone(),
            "a copy of a file of the period put outside it (the same data key): destroyed with it".into(),
        ));
        plan.take(looked);
    }
    Ok(())
}

/// The period (at the template's granularity) a key's name is of, or "unknown".
fn other_period(period: Period, key: &str) -> String {
    name_time(object_name(key)).map_or("unknown".to_owned(), |t| period.granularity().period_of(t).to_string())
}

fn in_period(period: Period, key: &str) -> bool {
    name_time(object_name(key)).is_some_and(|t| period.contains(t))
}

/// Every version holding data of the keys that pass `keep`, but shredding records'.
fn versions<'l>(
    listing: &'l Listing,
    keep: impl Fn(&str) -> bool + 'l,
) -> impl Iterator<Item = (String, Version)> + 'l {
    listing
        .keys
        .iter()
        .filter(move |(k, _)| keep(k) && !record::is_record_name(object_name(k)))
        .flat_map(|(k, versions)| versions.data.iter().map(move |v| (k.clone(), v.clone())))
}

fn left_why(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Plain => "not encrypted: it stays readable".into(),
        Verdict::Other(why) => format!("{why}: it stays readable"),
        Verdict::Pending => "under another key pending deletion: it stays as it is".into(),
        Verdict::Ours => "under the key".into(),
    }
}

impl Plan {
    fn take(&mut self, looked: Looked) {
        if let Some(wrapped) = looked.wrapped {
            self.wrapped.insert(wrapped);
        }
        self.objects.push((looked.key, looked.version.id, looked.version.size));
    }
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
        Err(e) => Err(failure(&format!("look up KMS alias {alias}"), e).into()),
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
        .map_err(|e| failure(&format!("look up KMS key {arn}"), e))?
        .key_metadata;
    let id = meta.as_ref().map_or(arn, |m| m.key_id.as_str()).to_owned();
    Ok((id, meta))
}

/// Schedules the deletion of `plan`'s key (a key already pending deletion keeps its date); returns
/// the key as the record names it.
pub async fn schedule(options: &Options, plan: &Plan) -> Result<ShreddedKey, ShredError> {
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
            .map_err(|e| failure(&format!("schedule the deletion of KMS key {arn}"), e))?
            .deletion_date
            .map(|d| d.secs()),
    };
    Ok(ShreddedKey {
        arn: arn.clone(),
        deletion_date: date
            .and_then(|s| DateTime::from_timestamp(s, 0))
            .map(|d| d.to_rfc3339()),
    })
}

/// How long `shred` waits after scheduling the deletion before it counts: longer than any bot may
/// still use a reused data key of the key.
pub fn settle_time() -> Duration {
    let bound = crate::envelope::key_freshness();
    bound + (bound / 2).max(Duration::from_secs(5))
}

/// After [`settle_time`]: counts the period's objects under the key again (a backlog file uploaded
/// since the plan was made is one of them), asks KMS about every version outside the period written
/// since the plan's listing (a file of another period under the key cancels the deletion at once),
/// and uploads the signed record. Whatever fails after the deletion was scheduled, a record is signed
/// (from the plan as it stands) and returned with the error, for the operator to keep.
pub async fn record(
    options: &Options,
    mut plan: Plan,
    key: ShreddedKey,
    signer: &SigningKey,
) -> Result<(ShredRecord, Result<String, AwsFailure>), ShredError> {
    let (s3, kms) = options.archive.clients().await;
    let reader = ObjectReader {
        s3: s3.clone(),
        kms: kms.clone(),
        bucket: options.archive.bucket.clone(),
    };
    let witness = Witness::new(&reader, plan.key.clone());
    let recounted = match Listing::read(&options.archive, &s3).await {
        Ok(listing) => recount(&witness, &listing, options.period, &mut plan).await,
        Err(e) => Err(e.into()),
    };
    if let Err(e @ ShredError::SharedKey { .. }) = recounted {
        undo_schedule(&kms, &plan.key).await?;
        return Err(e);
    }
    let failed_recount = recounted.err().map(|e| {
        AwsFailure::caused_by(
            crate::aws::Retry::Soon,
            "count the period's objects again after the wait (the record lists those of the plan)",
            e,
        )
    });
    let mut objects: BTreeMap<String, u64> = BTreeMap::new();
    for (k, _, size) in &plan.objects {
        objects.entry(k.clone()).or_insert(*size);
    }
    let objects = objects
        .into_iter()
        .map(|(key, size)| ShreddedObject { key, size })
        .collect();
    let record = sign_record(options, State::Scheduled, vec![key], objects, plan.kept, signer);
    let uploaded = match failed_recount {
        Some(failed) => Err(failed),
        None => upload(options, &record).await,
    };
    Ok((record, uploaded))
}

/// The period's versions written since the plan (under a data key KMS said is the key's, or
/// refused as pending: a file of the period goes under its period's key only, which now is), and
/// every version outside the period written since, which KMS must not say is under the key.
async fn recount(witness: &Witness<'_>, listing: &Listing, period: Period, plan: &mut Plan) -> Result<(), ShredError> {
    let known: HashSet<(String, Option<String>)> =
        plan.objects.iter().map(|(k, v, _)| (k.clone(), v.clone())).collect();
    let new: Vec<(String, Version)> = versions(listing, |k| in_period(period, k))
        .filter(|(k, v)| !known.contains(&(k.clone(), v.id.clone())))
        .collect();
    let mut added = Vec::new();
    witness
        .look_all(new.into_iter(), |looked| {
            added.push(looked);
            Ok(())
        })
        .await?;
    for looked in added {
        let ours =
            looked.wrapped.as_ref().is_some_and(|w| plan.wrapped.contains(w)) || looked.verdict == Verdict::Pending;
        if ours {
            plan.take(looked);
        } else {
            plan.left.push((looked.key.clone(), left_why(&looked.verdict)));
        }
    }
    // A minute of slack for clocks between S3 and this host.
    let since = plan.listed_at - 60;
    let earlier = ShredRecords::default();
    outside(witness, listing, &earlier, period, false, plan, |v| v.modified >= since).await
}

/// Cancels a deletion just scheduled (a file of another period turned up under the key).
async fn undo_schedule(kms: &aws_sdk_kms::Client, arn: &str) -> Result<(), ShredError> {
    enable_again(kms, arn).await.map_err(|e| match e {
        ShredError::Aws(f) => {
            let operation = format!("{} (do it by hand NOW)", f.operation);
            ShredError::Aws(f.with_operation(operation))
        }
        other => other,
    })
}

/// `shred --cancel`: cancels the deletion of the keys the period's signed record names (from the
/// bucket, or `--record`), enables them again and puts a signed cancellation over the record and
/// each of its supplements (without the manifests' copies: the period is readable again).
pub async fn cancel(
    options: &Options,
    signer: &SigningKey,
) -> Result<(ShredRecord, Result<String, AwsFailure>), ShredError> {
    let archive = &options.archive;
    let (s3, kms) = archive.clients().await;
    let key = record_key(options);
    let no_record = |why: String| ShredError::NoRecord { key: key.clone(), why };
    let bots = [signer.verifying_key()];
    let reader = ObjectReader {
        s3: s3.clone(),
        kms: kms.clone(),
        bucket: archive.bucket.clone(),
    };
    let listing = Listing::read(archive, &s3).await?;
    let previous = match &options.record {
        Some(path) => {
            let (file, keys) = (path.clone(), bots.to_vec());
            tokio::task::spawn_blocking(move || read_record_file(&file, &keys))
                .await
                .map_err(|e| no_record(crate::error_chain::chain(&e)))?
                .map_err(|why| no_record(format!("{}: {why}", path.display())))?
        }
        None => newest_record(&reader, &listing, &key, &bots)
            .await
            .map(|(_, record)| record)
            .map_err(|e| {
                no_record(format!(
                    "{e} (a saved copy may be given with --record FILE)",
                    e = Chain(&e)
                ))
            })?,
    };
    let body = &previous.body;
    if body.period != options.period.to_string() || body.bucket != archive.bucket || body.prefix != archive.prefix {
        return Err(no_record(format!(
            "it is for the period {} of s3://{}/{}",
            body.period, body.bucket, body.prefix
        )));
    }
    if body.state != State::Scheduled {
        return Err(no_record(
            "it is a cancellation already: the keys were enabled again".into(),
        ));
    }
    for shredded in &body.keys {
        enable_again(&kms, &shredded.arn).await?;
    }
    let keys: Vec<ShreddedKey> = body
        .keys
        .iter()
        .map(|k| ShreddedKey {
            deletion_date: None,
            ..k.clone()
        })
        .collect();
    cancel_supplements(options, &reader, &listing, &keys, signer).await?;
    let record = sign_record(options, State::Cancelled, keys, previous.objects, Vec::new(), signer);
    let uploaded = upload_at(options, &key, &record).await;
    Ok((record, uploaded))
}

/// Cancels a key's deletion if it is pending, and enables it (a cancelled deletion leaves it
/// disabled).
async fn enable_again(kms: &aws_sdk_kms::Client, arn: &str) -> Result<(), ShredError> {
    let (id, meta) = key_metadata(kms, arn).await.map_err(|e| {
        let operation = format!("{} (a key KMS has deleted cannot be brought back)", e.operation);
        ShredError::Aws(e.with_operation(operation))
    })?;
    if meta.and_then(|m| m.key_state) == Some(KeyState::PendingDeletion) {
        kms.cancel_key_deletion()
            .key_id(&id)
            .send()
            .await
            .map_err(|e| failure(&format!("cancel the deletion of KMS key {arn}"), e))?;
    }
    kms.enable_key()
        .key_id(&id)
        .send()
        .await
        .map_err(|e| failure(&format!("enable KMS key {arn} again"), e))?;
    Ok(())
}

/// Each supplement of the period's record (a bot's copy of a stranded manifest) gets a signed
/// cancellation over it too, so that no reader takes the period as shredded any more.
async fn cancel_supplements(
    options: &Options,
    reader: &ObjectReader,
    listing: &Listing,
    keys: &[ShreddedKey],
    signer: &SigningKey,
) -> Result<(), ShredError> {
    let main = record_key(options);
    let prefix = format!("{}_", main.trim_end_matches(".json"));
    let bots = [signer.verifying_key()];
    let supplements = listing
        .with_data()
        .filter(|k| k.starts_with(&prefix) && record::is_record_name(object_name(k)));
    for key in supplements {
        let Ok((_, supplement)) = newest_record(reader, listing, key, &bots).await else {
            continue;
        };
        if supplement.body.state == State::Scheduled {
            let cancelled = sign_record(options, State::Cancelled, keys.to_vec(), Vec::new(), Vec::new(), signer);
            upload_at(options, key, &cancelled).await?;
        }
    }
    Ok(())
}

/// A record from a file, read as the bucket's is: the signature checked before more than the first
/// line is kept.
fn read_record_file(path: &std::path::Path, bots: &[VerifyingKey]) -> Result<ShredRecord, String> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(path).map_err(|e| crate::error_chain::chain(&e))?;
    let mut reader = RecordReader::new(bots);
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = file.read(&mut buf).map_err(|e| crate::error_chain::chain(&e))?;
        if n == 0 {
            return reader.finish().map_err(|e| crate::error_chain::chain(&e));
        }
        reader.feed(&buf[..n]).map_err(|e| crate::error_chain::chain(&e))?;
    }
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
        public_key: hex::encode(signer.verifying_key().as_bytes()),
        contents: Contents {
            lines: 0,
            bytes: 0,
            sha256: String::new(),
        },
    };
    ShredRecord::sign(body, objects, kept, signer)
}

fn record_key(options: &Options) -> String {
    format!("{}{}", options.archive.prefix, record::file_name(options.period))
}

/// Puts the period's record, unencrypted (see [`record`]); returns its location.
async fn upload(options: &Options, record: &ShredRecord) -> Result<String, AwsFailure> {
    upload_at(options, &record_key(options), record).await
}

/// Puts a record at `key`, unencrypted; returns its location.
async fn upload_at(options: &Options, key: &str, record: &ShredRecord) -> Result<String, AwsFailure> {
    let archive = &options.archive;
    let (s3, _) = archive.clients().await;
    s3.put_object()
        .bucket(&archive.bucket)
        .key(key)
        .content_type("application/json")
        .body(ByteStream::from(record.to_json().into_bytes()))
        .send()
        .await
        .map_err(|e| {
            failure(
                &format!("upload the shredding record to s3://{}/{key}", archive.bucket),
                e,
            )
        })?;
    Ok(format!("s3://{}/{key}", archive.bucket))
}
