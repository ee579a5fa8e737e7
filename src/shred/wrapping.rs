//! What protects each object version, as KMS says when it unwraps the version's data key: the one
//! witness `shred` trusts about what deleting a key destroys. Manifests, object names and metadata
//! can all be written by anyone who can write to the bucket; KMS's answer cannot.
//!
//! The argument, while the period's key is enabled: the operator can unwrap under it (shown by the
//! period's own objects), and KMS unwraps any data key under it given the context it was made under.
//! Every version is asked under its stored context and under each format's own (V2's and V3's,
//! whatever the version's metadata claims), so a version whose data key no context unwraps, or that
//! unwraps under another key, is not under it. Only KMS's positive answers are remembered (which key
//! a data key is under depends on the ciphertext alone); a refusal is asked again for each version,
//! so a planted version cannot make KMS's refusal stand for another's data key. Every version of
//! every object is asked about: a delete marker or a newer version over an object does not hide it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_sdk_s3::operation::head_object::HeadObjectOutput;
use aws_sdk_s3::types::ObjectLockLegalHoldStatus;
use chrono::{DateTime, Utc};
use futures_util::StreamExt as _;

use super::ShredError;
use crate::aws::failure;
use crate::envelope::{EnvelopeError, StoredEnvelope, salvaged_wrapped, wrapping_key_any_context};
use crate::manifest::verify::{ObjectReader, Version};
use crate::sync::lock;

/// Versions looked at once.
const AT_ONCE: usize = 16;

/// KMS's answers that, with the period's key enabled and unwrappable by the operator, show a data
/// key is not under it under that context: another key's state or permissions, or a ciphertext no
/// key of this account takes under it.
const NOT_THE_KEY: &[&str] = &[
    "NotFoundException",
    "KMSInvalidStateException",
    "DisabledException",
    "AccessDeniedException",
    "IncorrectKeyException",
    "InvalidCiphertextException",
];

/// Which key protects a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Not encrypted: no key protects it.
    Plain,
    /// The period's key.
    Ours,
    /// Another key, or KMS refused for a reason (the code) that shows it is not the period's key
    /// while that key is enabled.
    Other(String),
    /// KMS refused because a key is pending deletion: the period's own key, if it is pending (a
    /// shred run again), or another one.
    Pending,
}

/// One version as `shred` saw it.
pub(super) struct Looked {
    pub key: String,
    pub version: Version,
    pub head: HeadObjectOutput,
    pub verdict: Verdict,
    pub wrapped: Option<Vec<u8>>,
}

/// Asks S3 and KMS about versions, remembering which key each data key is under.
pub(super) struct Witness<'r> {
    pub reader: &'r ObjectReader,
    /// The period's key (ARN).
    pub key: String,
    under: Mutex<HashMap<Vec<u8>, String>>,
    kms_calls: AtomicUsize,
    s3_calls: AtomicUsize,
}

impl<'r> Witness<'r> {
    pub fn new(reader: &'r ObjectReader, key: String) -> Self {
        Self {
            reader,
            key,
            under: Mutex::default(),
            kms_calls: AtomicUsize::new(0),
            s3_calls: AtomicUsize::new(0),
        }
    }

    /// Looks at every version in `versions`, several at a time, handing each to `seen` as it is
    /// looked at (nothing of them is held: a bucket of a million versions costs no more memory).
    pub(crate) async fn look_all(
        &self,
        versions: impl Iterator<Item = (String, Version)>,
        mut seen: impl FnMut(Looked) -> Result<(), ShredError>,
    ) -> Result<(), ShredError> {
        let mut looks = futures_util::stream::iter(versions.map(|(key, version)| self.look(key, version)))
            .buffer_unordered(AT_ONCE);
        while let Some(looked) = looks.next().await {
            seen(looked?)?;
        }
        Ok(())
    }

    /// One version: its head (metadata, Object Lock) and which key protects it.
    pub async fn look(&self, key: String, version: Version) -> Result<Looked, ShredError> {
        let bucket = &self.reader.bucket;
        self.s3_calls.fetch_add(1, Ordering::Relaxed);
        let at = format!("{key} (version {})", version.label());
        let head = self
            .reader
            .s3
            .head_object()
            .bucket(bucket)
            .key(&key)
            .set_version_id(version.id.clone())
            .send()
            .await
            .map_err(|e| failure(&format!("read s3://{bucket}/{at}"), e))?;
        let metadata = head.metadata().cloned().unwrap_or_default();
        let (verdict, wrapped) = match StoredEnvelope::from_metadata(&metadata) {
            Ok(None) => (Verdict::Plain, None),
            Ok(Some(envelope)) => {
                let wrapped = envelope.wrapped().to_vec();
                (
                    self.verdict(&at, &wrapped, || envelope.wrapping_key(&self.reader.kms))
                        .await?,
                    Some(wrapped),
                )
            }
            // Metadata that does not parse (planted, or altered): the data key it may still carry
            // is asked about all the same, under each format's context.
            Err(_) => match salvaged_wrapped(&metadata) {
                None => (Verdict::Plain, None),
                Some(wrapped) => {
                    let ask = || wrapping_key_any_context(&self.reader.kms, &wrapped);
                    (self.verdict(&at, &wrapped, ask).await?, Some(wrapped.clone()))
                }
            },
        };
        Ok(Looked {
            key,
            version,
            head,
            verdict,
            wrapped,
        })
    }

    /// Which key `wrapped` is under: remembered, or KMS's answer to `ask`.
    async fn verdict<F, Fut>(&self, at: &str, wrapped: &[u8], ask: F) -> Result<Verdict, ShredError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<String, EnvelopeError>>,
    {
        let known = lock(&self.under).get(wrapped).cloned();
        let answer = match known {
            Some(arn) => Ok(arn),
            None => {
                self.kms_calls.fetch_add(1, Ordering::Relaxed);
                ask().await
            }
        };
        Ok(match answer {
            Ok(arn) => {
                lock(&self.under).insert(wrapped.to_vec(), arn.clone());
                if arn == self.key {
                    Verdict::Ours
                } else {
                    Verdict::Other(format!("under KMS key {arn}"))
                }
            }
            Err(EnvelopeError::Kms(e)) if e.is("KMSInvalidStateException") => Verdict::Pending,
            Err(EnvelopeError::Kms(e)) if NOT_THE_KEY.iter().any(|code| e.is(code)) => Verdict::Other(format!(
                "KMS will not unwrap its data key under any context the formats use ({}): not under {}",
                e.code.as_deref().unwrap_or_default(),
                self.key
            )),
            Err(EnvelopeError::Invalid(..)) => Verdict::Other("it carries no data key KMS takes".into()),
            Err(e) => {
                return Err(ShredError::Envelope {
                    key: at.to_owned(),
                    why: format!(
                        "KMS could not say which key protects it: {e}",
                        e = crate::error_chain::Chain(&e)
                    ),
                });
            }
        })
    }

    /// The HeadObject and KMS Decrypt calls made so far.
    pub fn calls(&self) -> (usize, usize) {
        (
            self.s3_calls.load(Ordering::Relaxed),
            self.kms_calls.load(Ordering::Relaxed),
        )
    }
}

/// Why S3 must still keep a version: a legal hold, or retention until after `now`.
pub(super) fn held_by(looked: &Looked, now: DateTime<Utc>) -> Vec<(String, String)> {
    let head = &looked.head;
    let at = format!("{} (version {})", looked.key, looked.version.label());
    let mut held = Vec::new();
    if head.object_lock_legal_hold_status() == Some(&ObjectLockLegalHoldStatus::On) {
        held.push((
            at.clone(),
            "under a legal hold (retention-bot legal-hold off lifts it)".to_owned(),
        ));
    }
    if let Some(until) = head.object_lock_retain_until_date() {
        let until = DateTime::from_timestamp(until.secs(), until.subsec_nanos()).unwrap_or(DateTime::<Utc>::MAX_UTC);
        if until > now {
            let mode = head.object_lock_mode().map_or("", |m| m.as_str());
            held.push((at, format!("under {mode} retention until {}", until.to_rfc3339())));
        }
    }
    held
}
