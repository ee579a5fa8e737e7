//! Where the S3 sink's data keys come from: a fresh one from KMS `GenerateDataKey` for every object,
//! or, with reuse on (`WICKRIO_KMS_DATAKEY_MAX_AGE_SECS`, `WICKRIO_KMS_DATAKEY_MAX_OBJECTS`), one
//! key for several objects, each with its own random IV, until it is old enough or has served enough
//! objects; then it is dropped (and its plaintext wiped) and the next object gets a new one. An
//! attachment-heavy network makes one KMS call per batch of objects instead of one per object. (In
//! the V3 format each object's key is derived from the data key and its own Message ID, so objects
//! sharing a data key never share a content key either.)
//!
//! A reused key is used only while its KMS key is known to be enabled, and that knowledge is never
//! older than [`key_freshness`]: past it, the next object first asks KMS (`DescribeKey`), and a key
//! that is disabled or scheduled for deletion (a shred) drops the data key at once. `shred` waits
//! longer than this bound after scheduling a deletion before it counts the period's objects.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use aws_sdk_kms::types::KeyState;

use zeroize::Zeroizing;

use super::{Envelope, Format, gcm};
use crate::aws::AwsFailure;
use crate::config::DataKeyReuse;
use crate::metrics::{Counter, Metrics};

/// How stale the knowledge that a reused data key's KMS key is enabled may grow.
const KEY_FRESHNESS: Duration = Duration::from_secs(60);
/// Tests shorten the bound (`shred` then waits less, and so does every test of it). Nothing an
/// operator sets, so not in `--help`; the bot and the tool log a warning when it is set.
pub const TEST_KEY_FRESHNESS_VAR: &str = "RETENTION_BOT_TEST_KEY_FRESHNESS_SECS";

/// How long a reused data key may be used after its KMS key was last seen enabled.
pub fn key_freshness() -> Duration {
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
pub struct DataKeys {
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
    born: Instant,
    /// When KMS last showed the key enabled (it issued the data key, or `DescribeKey` said so).
    confirmed: Instant,
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
        let spent = |c: &Current| c.used >= reuse.max_objects || c.born.elapsed() >= reuse.max_age;
        if current.as_ref().is_none_or(spent) {
            // The spent key goes (wiped) before the new one is asked for.
            *current = None;
            let (key, wrapped) = self.generate().await?;
            *current = Some(Current {
                key,
                wrapped,
                born: Instant::now(),
                confirmed: Instant::now(),
                used: 0,
            });
        }
        if current
            .as_ref()
            .is_some_and(|c| c.confirmed.elapsed() >= key_freshness())
        {
            if let Err(e) = self.confirm_enabled().await {
                // Wiped at once: no object goes under a key that may be on its way out.
                *current = None;
                return Err(e);
            }
            if let Some(c) = current.as_mut() {
                c.confirmed = Instant::now();
            }
        }
        let Some(c) = current.as_mut() else {
            return Err(AwsFailure::new(crate::aws::Retry::Soon, "no data key"));
        };
        c.used += 1;
        Envelope::new(self.format, c.key.clone(), c.wrapped.clone())
    }

    /// KMS still holds the key enabled (`DescribeKey`).
    async fn confirm_enabled(&self) -> Result<(), AwsFailure> {
        let out = self
            .kms
            .describe_key()
            .key_id(&self.key_arn)
            .send()
            .await
            .map_err(|e| crate::aws::failure(&format!("look up KMS key {}", self.key_arn), &e))?;
        match out.key_metadata.and_then(|m| m.key_state) {
            Some(KeyState::Enabled) => Ok(()),
            state => Err(AwsFailure::new(
                crate::aws::Retry::Slowly,
                format!(
                    "KMS key {} is {}, not enabled: its reused data key was dropped and nothing more is encrypted under it",
                    self.key_arn,
                    state.map_or_else(|| "of unknown state".to_owned(), |s| s.as_str().to_owned())
                ),
            )),
        }
    }

    /// A new data key; `KMS_Requests` counts each one KMS issued.
    async fn generate(&self) -> Result<(Zeroizing<[u8; gcm::KEY_LEN]>, Vec<u8>), AwsFailure> {
        let key = super::generate_data_key(&self.kms, &self.key_arn, self.format).await?;
        self.metrics.incr(Counter::KmsRequests);
        Ok(key)
    }
}
