//! Where the S3 sink's data keys come from: a fresh one from KMS `GenerateDataKey` for every object,
//! or, with reuse on (`WICKRIO_KMS_DATAKEY_MAX_AGE_SECS`, `WICKRIO_KMS_DATAKEY_MAX_OBJECTS`), one
//! key for several objects, each with its own random IV, until it is old enough or has served enough
//! objects; then it is dropped (and its plaintext wiped) and the next object gets a new one. An
//! attachment-heavy network makes one KMS call per batch of objects instead of one per object. (In
//! the V3 format each object's key is derived from the data key and its own Message ID, so objects
//! sharing a data key never share a content key either.)

use std::sync::Arc;
use std::time::Instant;

use zeroize::Zeroizing;

use super::{Envelope, Format, gcm};
use crate::aws::AwsFailure;
use crate::config::DataKeyReuse;
use crate::metrics::{Counter, Metrics};

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
                used: 0,
            });
        }
        let Some(c) = current.as_mut() else {
            return Err(AwsFailure::new(crate::aws::Retry::Soon, "no data key"));
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
