//! Where the S3 sink's data keys come from: a fresh one from KMS `GenerateDataKey` for every object,
//! or, with reuse on (`WICKRIO_KMS_DATAKEY_MAX_AGE_SECS`, `WICKRIO_KMS_DATAKEY_MAX_OBJECTS`), one
//! key for several objects, each with its own random IV, until it is old enough or has served enough
//! objects; then it is dropped (and its plaintext wiped) and the next object gets a new one. An
//! attachment-heavy network makes one KMS call per batch of objects instead of one per object. (In
//! the V3 format each object's key is derived from the data key and its own Message ID, so objects
//! sharing a data key never share a content key either.)
//!
//! A reused key is used only while its KMS key is known to be enabled, and that knowledge is never
//! older than [`key_freshness`]: KMS issuing a data key shows its key enabled, so a reused key is
//! replaced at least that often, whatever `WICKRIO_KMS_DATAKEY_MAX_AGE_SECS` allows, and a key
//! disabled or scheduled for deletion (a shred) issues no new one. (One call a minute, as a
//! `DescribeKey` would cost, and no permission more.) `shred` waits longer than this bound after
//! scheduling a deletion before it counts the period's objects.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::{Envelope, gcm};
use crate::aws::AwsFailure;
use crate::config::DataKeyReuse;
use crate::config::Format;
use crate::metrics::{Counter, Metrics};

/// How stale the knowledge that a reused data key's KMS key is enabled may grow.
const KEY_FRESHNESS: Duration = Duration::from_secs(60);
/// Tests shorten the bound (`shred` then waits less, and so does every test of it). Nothing an
/// operator sets, so not in `--help`; the bot and the tool log a warning when it is set.
pub(crate) const TEST_KEY_FRESHNESS_VAR: &str = "RETENTION_BOT_TEST_KEY_FRESHNESS_SECS";

/// How long a reused data key may be used after its KMS key was last seen enabled.
pub(crate) fn key_freshness() -> Duration {
    static BOUND: OnceLock<Duration> = OnceLock::new();
    *BOUND.get_or_init(|| {
        let Some(secs) = std::env::var(TEST_KEY_FRESHNESS_VAR)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
        else {
            return KEY_FRESHNESS;
        };
        tracing::warn!(
            secs,
            "{TEST_KEY_FRESHNESS_VAR} is set: the KMS key state is checked this often (for tests only)"
        );
        Duration::from_secs(secs.clamp(1, KEY_FRESHNESS.as_secs()))
    })
}

/// The data keys of one KMS key.
pub(crate) struct DataKeys {
    kms: aws_sdk_kms::Client,
    key_arn: String,
    format: Format,
    reuse: Option<DataKeyReuse>,
    current: tokio::sync::Mutex<Option<Current>>,
    metrics: Arc<Metrics>,
}

/// The key being reused: the plaintext is wiped on drop.
struct Current {
    key: Zeroizing<[u8; gcm::KEY_LEN]>,
    wrapped: Vec<u8>,
    /// When KMS issued it: when its key was last known to be enabled.
    born: Instant,
    used: u64,
}

impl std::fmt::Debug for DataKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKeys")
            .field("key_arn", &self.key_arn)
            .field("reuse", &self.reuse)
            .finish_non_exhaustive()
    }
}

impl DataKeys {
    pub fn new(
        kms: aws_sdk_kms::Client,
        key_arn: String,
        format: Format,
        reuse: Option<DataKeyReuse>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            kms,
            key_arn,
            format,
            reuse,
            current: tokio::sync::Mutex::new(None),
            metrics,
        }
    }

    /// The envelope of the next object: its data key (fresh or reused) and a fresh random IV.
    /// Failing here means nothing is uploaded.
    pub async fn envelope(&self) -> Result<Envelope, AwsFailure> {
        let Some(reuse) = self.reuse else {
            let (key, wrapped) = self.generate().await?;
            return Envelope::new(self.format, key, wrapped);
        };
        let mut current = self.current.lock().await;
        let max_age = reuse.max_age.min(key_freshness());
        let spent = |c: &Current| c.used >= reuse.max_objects || c.born.elapsed() >= max_age;
        if current.as_ref().is_none_or(spent) {
            // The spent key goes (wiped) before the new one is asked for.
            *current = None;
            // Born when asked for: KMS may have taken a while (and retries) to answer.
            let asked = Instant::now();
            let (key, wrapped) = self.generate().await?;
            *current = Some(Current {
                key,
                wrapped,
                born: asked,
                used: 0,
            });
        }
        let Some(c) = current.as_mut() else {
            return Err(AwsFailure::new(
                crate::aws::Retry::Soon,
                "reuse a data key",
                "no data key",
            ));
        };
        c.used += 1;
        Envelope::new(self.format, c.key.clone(), c.wrapped.clone())
    }

    /// A new data key; `KMS_Requests` counts each one KMS issued.
    async fn generate(&self) -> Result<(Zeroizing<[u8; gcm::KEY_LEN]>, Vec<u8>), AwsFailure> {
        let key = super::generate_data_key(&self.kms, &self.key_arn, self.format).await?;
        self.metrics.incr(Counter::KmsRequests);
        Ok(key)
    }
}
