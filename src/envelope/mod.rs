//! Client-side envelope encryption in the Amazon S3 Encryption Client formats, so that the official
//! S3 Encryption Clients (and, for V2, the original bot's decryption sample) open what the bot
//! uploads. V2 (the default): each object gets an AES-256 data key from KMS `GenerateDataKey`, bound
//! to the encryption context `{"aws:x-amz-cek-alg":"AES/GCM/NoPadding"}`; the body is AES-256-GCM
//! with a random 12-byte IV and the 16-byte tag appended; the wrapped key, IV and context travel in
//! the object's metadata. V3, with key commitment, is in [`v3`]. Readers take both.

mod data_keys;
pub mod gcm;
mod key_ring;
pub mod v3;

pub(crate) use data_keys::{DataKeys, key_freshness};
pub(crate) use key_ring::{KeyRing, PERIOD_KEY_UNUSABLE};

use std::collections::HashMap;
use std::fmt;

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use zeroize::Zeroizing;

use crate::aws::{AwsFailure, Retry, failure};

pub(crate) const CEK_ALG: &str = "AES/GCM/NoPadding";
const CONTEXT_KEY: &str = "aws:x-amz-cek-alg";
const WRAP_ALG: &str = "kms+context";

/// The metadata keys of the V2 format (stored as user metadata, `x-amz-meta-<key>`).
pub mod meta {
    pub(crate) const KEY_V2: &str = "x-amz-key-v2";
    pub const IV: &str = "x-amz-iv";
    pub(crate) const CEK_ALG: &str = "x-amz-cek-alg";
    pub(crate) const TAG_LEN: &str = "x-amz-tag-len";
    pub(crate) const WRAP_ALG: &str = "x-amz-wrap-alg";
    pub(crate) const MATDESC: &str = "x-amz-matdesc";
    pub(crate) const PLAIN_LEN: &str = "x-amz-unencrypted-content-length";
}

use crate::config::Format;

/// The KMS encryption context a data key of this format is bound to.
fn context_of(format: Format) -> HashMap<String, String> {
    match format {
        Format::V2 => context(),
        Format::V3 => v3::context(),
    }
}

/// One object's data key and IV (V2) or Message ID (V3). The plaintext key is wiped on drop and
/// never printed.
pub struct Envelope {
    key: Zeroizing<[u8; gcm::KEY_LEN]>,
    wrapped: Vec<u8>,
    nonce: Nonce,
}

/// What makes an object's encryption unique under a (possibly reused) data key.
enum Nonce {
    Iv([u8; gcm::IV_LEN]),
    /// V3: the Message ID, and the content key and commitment derived from it.
    MessageId([u8; v3::MESSAGE_ID_LEN], v3::Derived),
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Envelope { key: [redacted], .. }")
    }
}

fn context() -> HashMap<String, String> {
    HashMap::from([(CONTEXT_KEY.to_owned(), CEK_ALG.to_owned())])
}

/// Asks KMS for a fresh data key under `key_arn`: its plaintext (wiped on drop) and wrapped form.
async fn generate_data_key(
    kms: &aws_sdk_kms::Client,
    key_arn: &str,
    format: Format,
) -> Result<(Zeroizing<[u8; gcm::KEY_LEN]>, Vec<u8>), AwsFailure> {
    let out = kms
        .generate_data_key()
        .key_id(key_arn)
        .key_spec(DataKeySpec::Aes256)
        .set_encryption_context(Some(context_of(format)))
        .send()
        .await
        .map_err(|e| failure(&format!("get a data key from KMS key {key_arn}"), e))?;
    let bad = || {
        AwsFailure::new(
            Retry::Soon,
            format!("get a data key from KMS key {key_arn}"),
            "GenerateDataKey returned no usable key",
        )
    };
    let plaintext = Zeroizing::new(out.plaintext.ok_or_else(bad)?.into_inner());
    let key: [u8; gcm::KEY_LEN] = plaintext.as_slice().try_into().map_err(|_| bad())?;
    let wrapped = out.ciphertext_blob.ok_or_else(bad)?.into_inner();
    Ok((Zeroizing::new(key), wrapped))
}

impl Envelope {
    /// One object's envelope: a data key (its plaintext and its KMS-wrapped form) and a fresh
    /// random IV, never used before with this key.
    pub fn new(format: Format, key: Zeroizing<[u8; gcm::KEY_LEN]>, wrapped: Vec<u8>) -> Result<Self, AwsFailure> {
        let random = |bytes: &mut [u8]| {
            getrandom::fill(bytes).map_err(|e| AwsFailure::caused_by(Retry::Soon, "draw a random IV", e))
        };
        let nonce = match format {
            Format::V2 => {
                let mut iv = [0u8; gcm::IV_LEN];
                random(&mut iv)?;
                Nonce::Iv(iv)
            }
            Format::V3 => {
                let mut id = [0u8; v3::MESSAGE_ID_LEN];
                random(&mut id)?;
                let derived = v3::derive(&key, &id);
                Nonce::MessageId(id, derived)
            }
        };
        Ok(Self { key, wrapped, nonce })
    }

    pub fn encryptor(&self) -> Result<gcm::Encryptor, gcm::GcmError> {
        match &self.nonce {
            Nonce::Iv(iv) => gcm::Encryptor::new(&self.key, iv),
            Nonce::MessageId(_, derived) => gcm::Encryptor::with_aad(&derived.key, &v3::IV, &v3::SUITE_ID),
        }
    }

    /// The object's user metadata, for a plaintext of `plain_len` bytes.
    pub fn metadata(&self, plain_len: u64) -> Vec<(&'static str, String)> {
        let mut metadata = match &self.nonce {
            Nonce::Iv(iv) => vec![
                (meta::KEY_V2, B64.encode(&self.wrapped)),
                (meta::IV, B64.encode(iv)),
                (meta::CEK_ALG, CEK_ALG.to_owned()),
                (meta::TAG_LEN, (gcm::TAG_LEN * 8).to_string()),
                (meta::WRAP_ALG, WRAP_ALG.to_owned()),
                // Serialising a map of two strings cannot fail.
                (meta::MATDESC, serde_json::to_string(&context()).unwrap_or_default()),
            ],
            Nonce::MessageId(id, derived) => v3::metadata(&self.wrapped, id, &derived.commitment),
        };
        metadata.push((meta::PLAIN_LEN, plain_len.to_string()));
        metadata
    }
}

/// Why an object's envelope metadata cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("metadata {0} is missing")]
    Missing(&'static str),
    #[error("metadata {key} is {value:?}; this tool reads {expected}")]
    Unsupported {
        key: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("metadata {0} is not valid: {1}")]
    Invalid(&'static str, String),
    #[error(transparent)]
    Kms(#[from] AwsFailure),
    #[error(transparent)]
    Cipher(#[from] gcm::GcmError),
}

/// An encrypted object's envelope as read back from its metadata.
#[derive(Debug)]
pub struct StoredEnvelope {
    wrapped: Vec<u8>,
    context: HashMap<String, String>,
    stored: Stored,
    pub plain_len: Option<u64>,
}

#[derive(Debug)]
enum Stored {
    V2 { iv: [u8; gcm::IV_LEN] },
    V3(v3::Stored),
}

impl StoredEnvelope {
    /// `None` when the object carries no envelope (it was uploaded plain).
    pub fn from_metadata(metadata: &HashMap<String, String>) -> Result<Option<Self>, EnvelopeError> {
        let plain_len = Self::plain_len_from(metadata)?;
        Self::check_one_envelope(metadata)?;
        if let Some(stored) = v3::read(metadata)? {
            return Ok(Some(Self {
                wrapped: stored.wrapped.clone(),
                context: stored.context.clone(),
                stored: Stored::V3(stored),
                plain_len,
            }));
        }
        let Some(wrapped) = metadata.get(meta::KEY_V2) else {
            return Ok(None);
        };
        Self::from_v2_metadata(metadata, wrapped, plain_len).map(Some)
    }

    /// The plaintext length the metadata states, if it states one: read first, whatever the format,
    /// so that a bad length is refused before anything else.
    fn plain_len_from(metadata: &HashMap<String, String>) -> Result<Option<u64>, EnvelopeError> {
        Ok(match metadata.get(meta::PLAIN_LEN) {
            None => None,
            Some(n) => Some(
                n.parse()
                    .map_err(|_| EnvelopeError::Invalid(meta::PLAIN_LEN, format!("{n:?} is not a length")))?,
            ),
        })
    }

    /// Refuses metadata holding both envelopes, or V3 keys without V3's wrapped key, before either
    /// format's reader is tried: neither reader looks at the other format's keys.
    fn check_one_envelope(metadata: &HashMap<String, String>) -> Result<(), EnvelopeError> {
        if metadata.contains_key(meta::KEY_V2) && metadata.contains_key(v3::meta::KEY) {
            return Err(EnvelopeError::Invalid(
                v3::meta::KEY,
                format!("an object holds one envelope, but this one has {} too", meta::KEY_V2),
            ));
        }
        // V3 keys without V3's wrapped key: not a V2 object with extras, but a V3 one stripped of
        // its key (the official clients refuse it too).
        if !metadata.contains_key(v3::meta::KEY)
            && let Some(key) = [v3::meta::CONTENT_CIPHER, v3::meta::COMMITMENT, v3::meta::MESSAGE_ID]
                .into_iter()
                .find(|k| metadata.contains_key(*k))
        {
            return Err(EnvelopeError::Missing(if metadata.contains_key(meta::KEY_V2) {
                v3::meta::KEY
            } else {
                key
            }));
        }
        Ok(())
    }

    /// The V2 envelope, once `wrapped` (the `x-amz-key-v2` value) shows the object has one: kept
    /// apart from [`Self::from_metadata`], which decides which format's reader applies.
    fn from_v2_metadata(
        metadata: &HashMap<String, String>,
        wrapped: &str,
        plain_len: Option<u64>,
    ) -> Result<Self, EnvelopeError> {
        let get = |key: &'static str| metadata.get(key).ok_or(EnvelopeError::Missing(key));
        let expect = |key: &'static str, expected: &'static str| {
            let value = get(key)?;
            if value != expected {
                return Err(EnvelopeError::Unsupported {
                    key,
                    value: value.clone(),
                    expected,
                });
            }
            Ok(())
        };
        expect(meta::CEK_ALG, CEK_ALG)?;
        expect(meta::WRAP_ALG, WRAP_ALG)?;
        if let Some(tag_len) = metadata.get(meta::TAG_LEN) {
            expect(meta::TAG_LEN, "128").map_err(|_| EnvelopeError::Unsupported {
                key: meta::TAG_LEN,
                value: tag_len.clone(),
                expected: "128",
            })?;
        }
        let wrapped = B64
            .decode(wrapped)
            .map_err(|e| EnvelopeError::Invalid(meta::KEY_V2, crate::error_chain::chain(&e)))?;
        let iv = B64
            .decode(get(meta::IV)?)
            .ok()
            .and_then(|iv| <[u8; gcm::IV_LEN]>::try_from(iv).ok())
            .ok_or_else(|| EnvelopeError::Invalid(meta::IV, "not 12 bytes of base64".into()))?;
        let context: HashMap<String, String> = serde_json::from_str(get(meta::MATDESC)?)
            .map_err(|e| EnvelopeError::Invalid(meta::MATDESC, crate::error_chain::chain(&e)))?;
        if context.get(CONTEXT_KEY).map(String::as_str) != Some(CEK_ALG) {
            return Err(EnvelopeError::Invalid(
                meta::MATDESC,
                format!("the KMS context must hold \"{CONTEXT_KEY}\": \"{CEK_ALG}\""),
            ));
        }
        Ok(Self {
            wrapped,
            context,
            stored: Stored::V2 { iv },
            plain_len,
        })
    }

    /// The KMS key (its ARN, as KMS answers) that wraps this object's data key: `shred` asks, so as
    /// to destroy only keys that protect the period's objects. Asked under the stored context, and
    /// when KMS refuses that, under each format's own, whatever format the metadata claims: altered
    /// metadata must not hide which key the data key is under.
    pub(crate) async fn wrapping_key(&self, kms: &aws_sdk_kms::Client) -> Result<String, EnvelopeError> {
        let contexts = [self.context.clone(), context_of(Format::V2), context_of(Format::V3)];
        wrapping_key_of(kms, &self.wrapped, &contexts).await
    }

    /// KMS `Decrypt` of the wrapped data key, under the stored context (which KMS checks).
    async fn unwrap(
        &self,
        kms: &aws_sdk_kms::Client,
    ) -> Result<aws_sdk_kms::operation::decrypt::DecryptOutput, EnvelopeError> {
        unwrap_with(kms, &self.wrapped, &self.context).await
    }

    /// The wrapped data key as stored: objects that share one share their KMS key.
    pub fn wrapped(&self) -> &[u8] {
        &self.wrapped
    }

    /// Unwraps the data key with KMS (which checks the context) and returns a decryptor; a V3
    /// object's key commitment is checked first.
    pub(crate) async fn decryptor(&self, kms: &aws_sdk_kms::Client) -> Result<gcm::Decryptor, EnvelopeError> {
        let out = self.unwrap(kms).await?;
        let plaintext = Zeroizing::new(
            out.plaintext
                .ok_or(EnvelopeError::Invalid("data key", "KMS returned no key".into()))?
                .into_inner(),
        );
        let key = Zeroizing::new(
            <[u8; gcm::KEY_LEN]>::try_from(plaintext.as_slice())
                .map_err(|_| EnvelopeError::Invalid("data key", "the data key is not 32 bytes".into()))?,
        );
        match &self.stored {
            Stored::V2 { iv } => Ok(gcm::Decryptor::new(&key, iv)?),
            Stored::V3(v3) => v3.decryptor(&key),
        }
    }
}

/// KMS `Decrypt` of a wrapped data key under `context` (which KMS checks).
async fn unwrap_with(
    kms: &aws_sdk_kms::Client,
    wrapped: &[u8],
    context: &HashMap<String, String>,
) -> Result<aws_sdk_kms::operation::decrypt::DecryptOutput, EnvelopeError> {
    Ok(kms
        .decrypt()
        .ciphertext_blob(Blob::new(wrapped.to_vec()))
        .set_encryption_context(Some(context.clone()))
        .send()
        .await
        .map_err(|e| failure("unwrap the data key with KMS", e))?)
}

/// The key KMS says wraps `wrapped`, asked under each of `contexts` in turn until one is taken.
/// Refused under all, the refusal that says most is returned: one about the key (its state, the
/// caller's rights) over a wrong context's `InvalidCiphertextException`. The unwrapped key is wiped
/// at once.
async fn wrapping_key_of(
    kms: &aws_sdk_kms::Client,
    wrapped: &[u8],
    contexts: &[HashMap<String, String>],
) -> Result<String, EnvelopeError> {
    let mut refused = EnvelopeError::Invalid("data key", "no context to ask KMS under".into());
    for (i, context) in contexts.iter().enumerate() {
        if contexts[..i].contains(context) {
            continue;
        }
        match unwrap_with(kms, wrapped, context).await {
            Ok(out) => {
                drop(out.plaintext.map(|p| Zeroizing::new(p.into_inner())));
                return out.key_id.ok_or(EnvelopeError::Invalid(
                    "data key",
                    "KMS did not say which key unwrapped it".into(),
                ));
            }
            Err(e) => {
                let wrong_context =
                    |e: &EnvelopeError| matches!(e, EnvelopeError::Kms(f) if f.is("InvalidCiphertextException"));
                if i == 0 || wrong_context(&refused) || !wrong_context(&e) {
                    refused = e;
                }
            }
        }
    }
    Err(refused)
}

/// For an object whose envelope metadata does not parse: the data key it still carries (base64
/// under `x-amz-key-v2` or `x-amz-3`), if any. Whoever can repair the metadata can read such an
/// object, so `shred` asks about it as about any other ([`wrapping_key_any_context`]).
pub(crate) fn salvaged_wrapped(metadata: &HashMap<String, String>) -> Option<Vec<u8>> {
    [meta::KEY_V2, v3::meta::KEY]
        .iter()
        .filter_map(|k| metadata.get(*k))
        .find_map(|v| B64.decode(v).ok())
}

/// The key KMS says wraps `wrapped`, asked under each format's context in turn.
pub(crate) async fn wrapping_key_any_context(
    kms: &aws_sdk_kms::Client,
    wrapped: &[u8],
) -> Result<String, EnvelopeError> {
    wrapping_key_of(kms, wrapped, &[context_of(Format::V2), context_of(Format::V3)]).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(pairs: &[(&str, &str)]) -> Result<Option<StoredEnvelope>, EnvelopeError> {
        StoredEnvelope::from_metadata(&pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    const GOOD: &[(&str, &str)] = &[
        (meta::KEY_V2, "AAEC"),
        (meta::IV, "AAECAwQFBgcICQoL"),
        (meta::CEK_ALG, CEK_ALG),
        (meta::TAG_LEN, "128"),
        (meta::WRAP_ALG, "kms+context"),
        (meta::MATDESC, r#"{"aws:x-amz-cek-alg":"AES/GCM/NoPadding"}"#),
        (meta::PLAIN_LEN, "5"),
    ];

    #[test]
    fn reads_back_what_it_writes() {
        let e = stored(GOOD).unwrap().unwrap();
        assert_eq!(e.wrapped, vec![0, 1, 2]);
        assert!(matches!(e.stored, Stored::V2 { iv } if iv == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]));
        assert_eq!(e.plain_len, Some(5));
        assert!(stored(&[("wickrio-type", "file")]).unwrap().is_none());
    }

    #[test]
    fn refuses_other_algorithms_and_bad_values() {
        let with = |key: &str, value: &str| -> Vec<(&str, String)> {
            GOOD.iter()
                .map(|(k, v)| (*k, if *k == key { value.to_owned() } else { v.to_string() }))
                .collect()
        };
        for (key, value) in [
            (meta::CEK_ALG, "AES/CBC/PKCS5Padding"),
            (meta::WRAP_ALG, "kms"),
            (meta::TAG_LEN, "96"),
            (meta::IV, "AAEC"),
            (meta::MATDESC, "{}"),
            (meta::PLAIN_LEN, "x"),
        ] {
            let pairs = with(key, value);
            let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let err = stored(&pairs).unwrap_err().to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn metadata_has_every_v2_key_and_hides_the_key_in_debug() {
        let env = Envelope {
            key: Zeroizing::new([42; 32]),
            wrapped: vec![1, 2, 3],
            nonce: Nonce::Iv([7; 12]),
        };
        let m: HashMap<String, String> = env.metadata(10).into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        assert_eq!(m[meta::MATDESC], r#"{"aws:x-amz-cek-alg":"AES/GCM/NoPadding"}"#);
        assert_eq!(m[meta::TAG_LEN], "128");
        assert_eq!(m[meta::WRAP_ALG], "kms+context");
        assert_eq!(m[meta::PLAIN_LEN], "10");
        let back = StoredEnvelope::from_metadata(&m).unwrap().unwrap();
        assert_eq!(back.wrapped, vec![1, 2, 3]);
        assert!(matches!(back.stored, Stored::V2 { iv } if iv == [7; 12]));
        assert!(!format!("{env:?}").contains("42"));
    }

    #[test]
    fn a_v3_envelope_reads_back_and_both_envelopes_at_once_are_refused() {
        let env = Envelope::new(Format::V3, Zeroizing::new([42; 32]), vec![1, 2, 3]).unwrap();
        let mut m: HashMap<String, String> = env.metadata(10).into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        assert_eq!(m[v3::meta::CONTENT_CIPHER], "115");
        assert_eq!(m[v3::meta::CONTEXT], r#"{"aws:x-amz-cek-alg":"115"}"#);
        assert!(!m.contains_key(meta::KEY_V2) && !m.contains_key(meta::IV));
        let back = StoredEnvelope::from_metadata(&m).unwrap().unwrap();
        assert_eq!((back.wrapped.as_slice(), back.plain_len), (&[1u8, 2, 3][..], Some(10)));
        assert!(matches!(back.stored, Stored::V3(_)));
        m.insert(meta::KEY_V2.into(), "AAEC".into());
        assert!(StoredEnvelope::from_metadata(&m).is_err());
        // Stripped of its V3 key, with V2's put in: refused, not read as V2.
        m.remove(v3::meta::KEY);
        let err = StoredEnvelope::from_metadata(&m).unwrap_err().to_string();
        assert!(err.contains(v3::meta::KEY), "{err}");
    }
}
