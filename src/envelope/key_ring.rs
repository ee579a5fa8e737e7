//! Which KMS key a file is encrypted under. One configured key for ever, or, with a period template
//! (`alias/retention-{yyyy}-{mm}`), the key the period's alias points to: the period is the one in
//! the file's name (UTC), so a whole period can later be crypto-shredded by deleting its one key.
//!
//! A period's alias is resolved (`DescribeKey`) once and kept: every entry and upload of the period
//! names the same key id, and a KMS outage mid-period costs nothing but data keys. A look-ahead task
//! resolves the current period and the one starting within a day, and raises an event and the
//! `KMS_Period_Keys_Missing` gauge when one has no usable key (or creates it, with
//! `WICKRIO_KMS_CREATE_PERIOD_KEYS`). A file whose key is missing waits on local disk: it is never
//! uploaded in the clear and never under another period's key.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_kms::types::{KeySpec, KeyState, KeyUsageType, Tag};

use super::DataKeys;
use crate::aws::{AwsFailure, Retry, failure};
use crate::config::Format;
use crate::config::{DataKeyReuse, KmsConfig};
use crate::events::{EventKind, Events};
use crate::metrics::{Gauge, Metrics};
use crate::period::{Granularity, Period, name_time};
use crate::sync::lock;

/// How often the look-ahead runs; it looks a day ahead, so an hour leaves 23 hours to act.
const LOOK_AHEAD_EVERY: Duration = Duration::from_secs(3600);
/// How long a period found without a key is not asked about again.
const ASK_AGAIN: Duration = Duration::from_secs(5);
/// How soon the look-ahead tries again while a key is missing.
const RETRY_MISSING: Duration = Duration::from_secs(60);
/// How far ahead a coming period's key must exist.
const LOOK_AHEAD: chrono::TimeDelta = chrono::TimeDelta::days(1);
/// The code of the failure of a file whose period's key is missing or not enabled (the alias names
/// none, or a key pending deletion or disabled).
pub(crate) const PERIOD_KEY_UNUSABLE: &str = "PeriodKeyUnusable";
/// The tag the bot puts on keys it creates, holding the period.
pub(crate) const PERIOD_TAG: &str = "retention-bot-period";

/// The keys files are encrypted under, and their data keys.
pub(crate) struct KeyRing {
    kms: aws_sdk_kms::Client,
    template: String,
    period: Option<Granularity>,
    create: bool,
    format: Format,
    reuse: Option<DataKeyReuse>,
    /// Each period's key ARN, once resolved to an enabled key.
    resolved: Mutex<HashMap<Period, String>>,
    /// Periods whose missing key the operators have heard of (once each, until it appears).
    said_missing: Mutex<HashSet<Period>>,
    /// Periods found without a usable key, and until when KMS is not asked again: files waiting
    /// for the key retry every few seconds, which must not become a DescribeKey per file.
    missing_until: Mutex<HashMap<Period, Instant>>,
    /// Keys the bot created whose alias could not be made yet: used when it is tried again.
    orphans: Mutex<HashMap<Period, (String, String)>>,
    /// One resolution at a time: the look-ahead and the sink must not both create a period's key.
    resolving: tokio::sync::Mutex<()>,
    data_keys: Mutex<HashMap<String, Arc<DataKeys>>>,
    metrics: Arc<Metrics>,
    events: Events,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("template", &self.template)
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    pub fn new(kms: aws_sdk_kms::Client, config: &KmsConfig, metrics: Arc<Metrics>, events: Events) -> Self {
        Self {
            kms,
            template: config.key_arn.clone(),
            period: config.period,
            create: config.create_period_keys,
            format: config.format,
            reuse: config.reuse,
            resolved: Mutex::default(),
            said_missing: Mutex::default(),
            missing_until: Mutex::default(),
            orphans: Mutex::default(),
            resolving: tokio::sync::Mutex::new(()),
            data_keys: Mutex::default(),
            metrics,
            events,
        }
    }

    /// The key a file named `name` is encrypted under (and its entry names): the configured one, or
    /// its period's, resolved. Fails while that key is missing or unusable: the file must wait.
    pub(crate) async fn key_for(&self, name: &str) -> Result<String, AwsFailure> {
        let Some(granularity) = self.period else {
            return Ok(self.template.clone());
        };
        // Fail closed: a file whose period is unknown waits rather than going under a guess.
        let time = name_time(name).ok_or_else(|| {
            AwsFailure::new(
                Retry::Slowly,
                format!("choose the KMS key of {name}"),
                "its name tells no key period; it waits on local disk",
            )
        })?;
        self.resolve(granularity.period_of(time)).await
    }

    /// The data keys of `key_arn` (one reuse state per key, so a key is never reused across periods).
    pub fn data_keys(&self, key_arn: &str) -> Arc<DataKeys> {
        let mut all = lock(&self.data_keys);
        all.entry(key_arn.to_owned())
            .or_insert_with(|| {
                Arc::new(DataKeys::new(
                    self.kms.clone(),
                    key_arn.to_owned(),
                    self.format,
                    self.reuse,
                    self.metrics.clone(),
                ))
            })
            .clone()
    }

    /// The key ARN of `period`'s alias, if it names an enabled key.
    async fn resolve(&self, period: Period) -> Result<String, AwsFailure> {
        if let Some(arn) = self.cached(period) {
            return Ok(arn);
        }
        let alias = period.fill(&self.template);
        let _one_at_a_time = self.resolving.lock().await;
        if let Some(arn) = self.cached(period) {
            return Ok(arn);
        }
        let recently_missing = lock(&self.missing_until)
            .get(&period)
            .is_some_and(|until| Instant::now() < *until);
        if recently_missing {
            return Err(AwsFailure::new(
                Retry::Soon,
                format!("use the KMS key for the period {period} ({alias})"),
                "it was missing moments ago",
            ));
        }
        let resolved = self.resolve_now(period, &alias).await;
        if resolved.is_err() {
            lock(&self.missing_until).insert(period, Instant::now() + ASK_AGAIN);
        }
        resolved
    }

    async fn resolve_now(&self, period: Period, alias: &str) -> Result<String, AwsFailure> {
        let arn = match self.describe(alias).await? {
            Some((arn, KeyState::Enabled)) => arn,
            Some((arn, state)) => {
                return Err(self.missing(
                    period,
                    alias,
                    &format!("names key {arn}, which is {}, not enabled", state.as_str()),
                ));
            }
            // Never for a period that has ended: its key may be gone because it was shredded, and a
            // new one would bring the shredded period back from a file still waiting here.
            None if self.create && !period.ended_by(crate::clock::now()) => self.create_key(period, alias).await?,
            None if self.create => {
                return Err(self.missing(
                    period,
                    alias,
                    "does not exist, and the period has ended, so the bot does not create its key (it may have been shredded); if it was not, create the key and alias by hand",
                ));
            }
            None => return Err(self.missing(period, alias, "does not exist")),
        };
        // One key per period: shredding one period must never take another with it.
        let shared = lock(&self.resolved)
            .iter()
            .find(|(p, a)| **p != period && **a == arn)
            .map(|(p, _)| *p);
        if let Some(other) = shared {
            return Err(self.missing(
                period,
                alias,
                &format!("names key {arn}, which is the period {other}'s key too (a shred of one would destroy both)"),
            ));
        }
        lock(&self.said_missing).remove(&period);
        lock(&self.missing_until).remove(&period);
        lock(&self.resolved).insert(period, arn.clone());
        Ok(arn)
    }

    fn cached(&self, period: Period) -> Option<String> {
        lock(&self.resolved).get(&period).cloned()
    }

    /// `DescribeKey` of an alias: the key's ARN and state, or `None` when the alias does not exist.
    async fn describe(&self, alias: &str) -> Result<Option<(String, KeyState)>, AwsFailure> {
        match self.kms.describe_key().key_id(alias).send().await {
            Ok(out) => {
                let meta = out.key_metadata.ok_or_else(|| {
                    AwsFailure::new(
                        Retry::Soon,
                        format!("look up KMS alias {alias}"),
                        "DescribeKey returned no key",
                    )
                })?;
                let state = meta.key_state.clone().unwrap_or(KeyState::Unavailable);
                Ok(Some((meta.arn.unwrap_or(meta.key_id), state)))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found_exception()) => Ok(None),
            Err(e) => Err(failure(&format!("look up KMS alias {alias}"), e)),
        }
    }

    /// Tells the operators (once per period) that `period`'s key is missing; the error for the file.
    fn missing(&self, period: Period, alias: &str, what: &str) -> AwsFailure {
        let message = format!(
            "the KMS key for the period {period} (from {start}): {alias} {what}; create the key and alias \
             (or set WICKRIO_KMS_CREATE_PERIOD_KEYS=true), until then that period's files wait on local disk, never uploaded unencrypted",
            start = period.start().format("%Y-%m-%dT%H:%MZ"),
        );
        if lock(&self.said_missing).insert(period) {
            tracing::error!("{message}");
            self.events.send(EventKind::PeriodKeyMissing, message.clone());
        }
        // Soon: the files should go up within seconds of someone making the key.
        AwsFailure::new(Retry::Soon, format!("use the KMS key for the period {period}"), message)
            .with_code(PERIOD_KEY_UNUSABLE)
    }

    /// Creates `period`'s key (symmetric, tagged with the period) and its alias. A key made before
    /// whose alias could not be made is used again, never a second one.
    async fn create_key(&self, period: Period, alias: &str) -> Result<String, AwsFailure> {
        let made = lock(&self.orphans).get(&period).cloned();
        let (key_id, arn) = match made {
            Some(made) => made,
            None => {
                let tag = Tag::builder()
                    .tag_key(PERIOD_TAG)
                    .tag_value(period.to_string())
                    .build()
                    .map_err(|e| AwsFailure::caused_by(Retry::Slowly, format!("tag the KMS key for {period}"), e))?;
                let out = self
                    .kms
                    .create_key()
                    .description(format!(
                        "retention-bot: messages and files of {period} (UTC); delete it to shred them"
                    ))
                    .key_usage(KeyUsageType::EncryptDecrypt)
                    .key_spec(KeySpec::SymmetricDefault)
                    .tags(tag)
                    .send()
                    .await
                    .map_err(|e| failure(&format!("create the KMS key for {period}"), e))?;
                let meta = out.key_metadata.ok_or_else(|| {
                    AwsFailure::new(
                        Retry::Soon,
                        format!("create the KMS key for {period}"),
                        "CreateKey returned no key",
                    )
                })?;
                let made = (meta.key_id.clone(), meta.arn.unwrap_or(meta.key_id));
                lock(&self.orphans).insert(period, made.clone());
                made
            }
        };
        // CreateAlias takes the alias's name (`alias/...`), not its ARN.
        let alias_name = alias.rsplit_once(':').map_or(alias, |(_, name)| name);
        if let Err(e) = self
            .kms
            .create_alias()
            .alias_name(alias_name)
            .target_key_id(&key_id)
            .send()
            .await
        {
            // Another bot may have made it first: its key is the period's.
            if let Ok(Some((theirs, KeyState::Enabled))) = self.describe(alias).await {
                return Ok(theirs);
            }
            let failed = failure(&format!("create KMS alias {alias_name} for {period}"), e);
            // The bot may not delete keys (that is shred's, an operator's): it says which key it made.
            return Err(self.missing(
                period,
                alias,
                &format!(
                    "could not be created ({}); the key {arn} made for it is used once the alias can be made",
                    crate::error_chain::chain(&failed)
                ),
            ));
        }
        lock(&self.orphans).remove(&period);
        let message = format!("created the KMS key {arn} and alias {alias_name} for the period {period}");
        tracing::info!("{message}");
        self.events.send(EventKind::PeriodKeyCreated, message);
        Ok(arn)
    }

    /// The cached key of `period`, if KMS no longer holds it enabled (disabled, or scheduled for
    /// deletion by a shred): dropped from the cache, so the next file asks again and waits.
    async fn recheck(&self, period: Period) {
        let Some(arn) = self.cached(period) else { return };
        if let Ok(Some((_, state))) = self.describe(&arn).await
            && state != KeyState::Enabled
        {
            lock(&self.resolved).remove(&period);
        }
    }

    /// Drops the reused data keys (wiping them) of every key but `keep`'s: a past period's plaintext
    /// data key must not outlive its use, nor a shred of its period.
    fn prune_data_keys(&self, keep: &[String]) {
        lock(&self.data_keys).retain(|arn, _| keep.contains(arn));
    }

    /// Resolves the current period's key and the next one's when it starts within a day, every hour,
    /// so that a missing key is known (and, if allowed, created) before a file needs it.
    pub(crate) async fn look_ahead(self: Arc<Self>) {
        let Some(granularity) = self.period else { return };
        loop {
            let now = crate::clock::now();
            let mut periods = vec![granularity.period_of(now)];
            let coming = granularity.period_of(now + LOOK_AHEAD);
            if coming != periods[0] {
                periods.push(coming);
            }
            let mut missing = 0;
            let mut keep = Vec::new();
            for period in periods {
                self.recheck(period).await;
                match self.resolve(period).await {
                    Ok(arn) => keep.push(arn),
                    Err(e) => {
                        missing += 1;
                        tracing::warn!(period = %period, error = %crate::error_chain::Chain(&e), "period key not ready");
                    }
                }
            }
            self.prune_data_keys(&keep);
            self.metrics.set(Gauge::KmsPeriodKeysMissing, missing);
            // A missing key is looked for again soon, so the gauge clears once someone makes it.
            tokio::time::sleep(if missing > 0 { RETRY_MISSING } else { LOOK_AHEAD_EVERY }).await;
        }
    }
}
