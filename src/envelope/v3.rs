//! The S3 Encryption Client message format v3, with key commitment: algorithm suite
//! `ALG_AES_256_GCM_HKDF_SHA512_COMMIT_KEY` (id 0x0073, "115"), what current official clients read
//! under their default commitment policy.
//!
//! From the specification (`s3-encryption/key-derivation.md`, `data-format/content-metadata.md`):
//! each object gets a random 28-byte Message ID; HKDF-SHA512 extracts with the Message ID as salt
//! and the plaintext data key as input, then expands `0x0073 || "DERIVEKEY"` to the 32-byte content
//! key and `0x0073 || "COMMITKEY"` to a 28-byte commitment, stored with the object. The body is
//! AES-256-GCM under the derived key with an IV of twelve 0x01 bytes (the key is unique per object)
//! and the suite id `0x00 0x73` as AAD, tag appended. The data key is wrapped by KMS with the
//! context `{"aws:x-amz-cek-alg": "115"}`. A reader derives the commitment again and refuses an
//! object whose stored one differs before it decrypts anything: one ciphertext can never be made to
//! open under two keys.
//!
//! Metadata (compact keys): `x-amz-c` = `115`, `x-amz-3` (the wrapped key, base64), `x-amz-w` = `12`
//! (kms+context), `x-amz-t` (the KMS context, JSON), `x-amz-i` (the Message ID, base64), `x-amz-d`
//! (the commitment, base64).

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use zeroize::Zeroizing;

use super::{EnvelopeError, gcm};

/// The suite id, as the AAD and the HKDF info prefix.
pub(crate) const SUITE_ID: [u8; 2] = [0x00, 0x73];
/// The suite id as `x-amz-c` and the KMS context hold it.
pub(crate) const SUITE: &str = "115";
/// `x-amz-w` for kms+context.
const WRAP_KMS_CONTEXT: &str = "12";
pub(crate) const MESSAGE_ID_LEN: usize = 28;
const COMMITMENT_LEN: usize = 28;
/// The fixed IV of the committing suite.
pub const IV: [u8; gcm::IV_LEN] = [0x01; gcm::IV_LEN];

pub mod meta {
    pub(crate) const CONTENT_CIPHER: &str = "x-amz-c";
    pub(crate) const KEY: &str = "x-amz-3";
    pub(crate) const WRAP_ALG: &str = "x-amz-w";
    pub(crate) const CONTEXT: &str = "x-amz-t";
    pub(crate) const MESSAGE_ID: &str = "x-amz-i";
    pub(crate) const COMMITMENT: &str = "x-amz-d";
}

/// The content key and the commitment of one object.
pub struct Derived {
    pub key: Zeroizing<[u8; gcm::KEY_LEN]>,
    pub commitment: [u8; COMMITMENT_LEN],
}

/// HKDF-SHA512: extract with the Message ID as salt, expand the content key and the commitment.
pub fn derive(data_key: &[u8; gcm::KEY_LEN], message_id: &[u8; MESSAGE_ID_LEN]) -> Derived {
    let hk = hkdf::Hkdf::<sha2::Sha512>::new(Some(message_id), data_key);
    let info = |label: &[u8]| [&SUITE_ID[..], label].concat();
    let mut key = Zeroizing::new([0u8; gcm::KEY_LEN]);
    let mut commitment = [0u8; COMMITMENT_LEN];
    // 32 and 28 bytes are far below HKDF-SHA512's limit of 16,320: `expand` cannot fail.
    let _ = hk.expand(&info(b"DERIVEKEY"), key.as_mut());
    let _ = hk.expand(&info(b"COMMITKEY"), &mut commitment);
    Derived { key, commitment }
}

/// The KMS encryption context of the committing suite.
pub fn context() -> HashMap<String, String> {
    HashMap::from([(super::CONTEXT_KEY.to_owned(), SUITE.to_owned())])
}

/// An object's v3 metadata.
pub fn metadata(wrapped: &[u8], message_id: &[u8; MESSAGE_ID_LEN], commitment: &[u8]) -> Vec<(&'static str, String)> {
    vec![
        (meta::CONTENT_CIPHER, SUITE.to_owned()),
        (meta::KEY, B64.encode(wrapped)),
        (meta::WRAP_ALG, WRAP_KMS_CONTEXT.to_owned()),
        // Serialising a map of two strings cannot fail.
        (meta::CONTEXT, serde_json::to_string(&context()).unwrap_or_default()),
        (meta::MESSAGE_ID, B64.encode(message_id)),
        (meta::COMMITMENT, B64.encode(commitment)),
    ]
}

/// What a v3 object's metadata says: the wrapped key, the context to unwrap it with, the Message ID
/// and the stored commitment.
#[derive(Debug)]
pub struct Stored {
    pub wrapped: Vec<u8>,
    pub context: HashMap<String, String>,
    pub message_id: [u8; MESSAGE_ID_LEN],
    pub commitment: [u8; COMMITMENT_LEN],
}

/// Reads a v3 envelope; `None` when the object has none.
pub fn read(metadata: &HashMap<String, String>) -> Result<Option<Stored>, EnvelopeError> {
    let Some(wrapped) = metadata.get(meta::KEY) else {
        return Ok(None);
    };
    let get = |key: &'static str| metadata.get(key).ok_or(EnvelopeError::Missing(key));
    let expect = |key: &'static str, expected: &'static str| match get(key)? {
        value if value == expected => Ok(()),
        value => Err(EnvelopeError::Unsupported {
            key,
            value: value.clone(),
            expected,
        }),
    };
    expect(meta::CONTENT_CIPHER, SUITE)?;
    expect(meta::WRAP_ALG, WRAP_KMS_CONTEXT)?;
    let bytes = |key: &'static str, text: &str| {
        B64.decode(text)
            .map_err(|e| EnvelopeError::Invalid(key, crate::error_chain::chain(&e)))
    };
    let fixed = |key: &'static str| -> Result<[u8; 28], EnvelopeError> {
        bytes(key, get(key)?)?
            .try_into()
            .map_err(|_| EnvelopeError::Invalid(key, "not 28 bytes of base64".into()))
    };
    let context: HashMap<String, String> = serde_json::from_str(get(meta::CONTEXT)?)
        .map_err(|e| EnvelopeError::Invalid(meta::CONTEXT, crate::error_chain::chain(&e)))?;
    if context.get(super::CONTEXT_KEY).map(String::as_str) != Some(SUITE) {
        return Err(EnvelopeError::Invalid(
            meta::CONTEXT,
            format!("the KMS context must hold \"{}\": \"{SUITE}\"", super::CONTEXT_KEY),
        ));
    }
    Ok(Some(Stored {
        wrapped: bytes(meta::KEY, wrapped)?,
        context,
        message_id: fixed(meta::MESSAGE_ID)?,
        commitment: fixed(meta::COMMITMENT)?,
    }))
}

impl Stored {
    /// The decryptor for the body, once the data key proved to be the one the object was
    /// encrypted under (its commitment matches, compared in constant time).
    pub(crate) fn decryptor(&self, data_key: &[u8; gcm::KEY_LEN]) -> Result<gcm::Decryptor, EnvelopeError> {
        use subtle::ConstantTimeEq as _;
        let derived = derive(data_key, &self.message_id);
        if !bool::from(derived.commitment.ct_eq(&self.commitment)) {
            return Err(EnvelopeError::Invalid(
                meta::COMMITMENT,
                "the key commitment does not match the data key: the object or its metadata was altered".into(),
            ));
        }
        Ok(gcm::Decryptor::with_aad(&derived.key, &IV, &SUITE_ID)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivation_is_hkdf_sha512_with_the_suite_and_labels() {
        // Computed independently: HMAC-SHA512(salt = message id, ikm = key), then one HMAC block per
        // label (the outputs are shorter than SHA-512's 64 bytes).
        use hmac::{Hmac, Mac};
        let (key, mid) = ([7u8; 32], [9u8; MESSAGE_ID_LEN]);
        let prk = Hmac::<sha2::Sha512>::new_from_slice(&mid)
            .unwrap()
            .chain_update(key)
            .finalize()
            .into_bytes();
        let expand = |label: &[u8]| {
            let mut mac = Hmac::<sha2::Sha512>::new_from_slice(&prk).unwrap();
            mac.update(&[0x00, 0x73]);
            mac.update(label);
            mac.update(&[1]);
            mac.finalize().into_bytes()
        };
        let d = derive(&key, &mid);
        assert_eq!(&d.key[..], &expand(b"DERIVEKEY")[..32]);
        assert_eq!(&d.commitment[..], &expand(b"COMMITKEY")[..28]);
    }

    #[test]
    fn metadata_reads_back_and_a_wrong_key_is_refused_by_its_commitment() {
        let (key, mid) = ([3u8; 32], [4u8; MESSAGE_ID_LEN]);
        let d = derive(&key, &mid);
        let m: HashMap<String, String> = metadata(&[1, 2, 3], &mid, &d.commitment)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let stored = read(&m).unwrap().unwrap();
        assert_eq!(stored.wrapped, [1, 2, 3]);
        assert!(stored.decryptor(&key).is_ok());
        let err = stored.decryptor(&[5u8; 32]).err().unwrap().to_string();
        assert!(err.contains("key commitment does not match"), "{err}");
        for (k, v) in [
            (meta::CONTENT_CIPHER, "114"),
            (meta::WRAP_ALG, "02"),
            (meta::MESSAGE_ID, "AAEC"),
        ] {
            let mut bad = m.clone();
            bad.insert(k.to_owned(), v.to_owned());
            assert!(read(&bad).unwrap_err().to_string().contains(k), "{k}");
        }
    }
}
