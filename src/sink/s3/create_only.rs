//! Uploads never overwrite. Every PutObject and CompleteMultipartUpload carries `If-None-Match: *`,
//! so S3 stores the object only if its key is free and answers 412 Precondition Failed otherwise
//! (AWS: "Conditional writes"; a concurrent conditional write to the same key gets 409
//! ConditionalRequestConflict, which is retried as passing trouble).
//!
//! A 412 has two very different causes. The bot's own earlier attempt at this same file may have
//! stored the object and lost its answer (a dropped connection, a crash between the upload and the
//! local delete): then the object is this file, and the upload has succeeded. Or something else put
//! other content under the key: then the file must neither overwrite it nor be dropped. The object's
//! `wickrio-content-mac` metadata (a keyed hash of the content, see `ContentMac`) tells them apart (for encrypted objects the ciphertext differs at every
//! attempt, so the plaintext's hash is the only thing to compare). Reading it takes `s3:GetObject`
//! on the folder (HeadObject); without it every 412 is treated as other content.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use super::error::UploadError;
use super::target::Target;
use crate::aws::{Retry, failure};
use crate::objects::metadata;

/// `wickrio-content-mac`: a keyed hash (HMAC-SHA256 under a key derived from the bot's signing key) of
/// the file's SHA-256. A plain SHA-256 in the metadata would let anyone who may read the bucket's
/// metadata, but not decrypt its objects, confirm a guess of a file's content; the keyed one tells
/// only this bot that an object is its file.
pub(crate) struct ContentMac(zeroize::Zeroizing<[u8; 32]>);

impl ContentMac {
    pub fn new(signing_key: &ed25519_dalek::SigningKey) -> Self {
        Self(crate::identity::derived_key(signing_key, "s3 content mac"))
    }

    /// The metadata value for a file whose SHA-256 is `sha256` (hex).
    pub fn of(&self, sha256: &str) -> String {
        // HKDF's extract step is HMAC-SHA256(salt, input): here (the key, the file's hash).
        let (mac, _) = hkdf::Hkdf::<sha2::Sha256>::extract(Some(self.0.as_ref()), sha256.as_bytes());
        hex::encode(mac)
    }
}

impl std::fmt::Debug for ContentMac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContentMac(..)")
    }
}

/// The `If-None-Match` value that means "only if no object has this key".
pub(crate) const ANY_OBJECT: &str = "*";

/// True when S3 refused a conditional write because the key already holds an object.
pub(crate) fn key_taken<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> bool {
    match error {
        SdkError::ServiceError(e) => e.raw().status().as_u16() == 412 || e.err().code() == Some("PreconditionFailed"),
        _ => false,
    }
}

/// What the key holds, as far as the bot can tell.
pub(crate) enum Found {
    /// This file: same `wickrio-content-mac` and plaintext length.
    Ours,
    /// An object that is not this file.
    Other(UploadError),
    /// Nothing, or the bot cannot look (no object now, no `s3:GetObject`, S3 unreachable): what it
    /// would mean after a 412.
    Unknown(UploadError),
}

/// Looks at the object under the key (HeadObject) and compares it with this file.
pub async fn look(target: &Target<'_>, plain_len: u64) -> Found {
    let ours = target
        .metadata
        .get(metadata::CONTENT_MAC)
        .map(String::as_str)
        .unwrap_or_default();
    let conflict = |found: String| UploadError::Conflict {
        bucket: target.bucket.to_owned(),
        key: target.key.to_owned(),
        found,
    };
    let head = target
        .client
        .head_object()
        .bucket(target.bucket)
        .key(target.key)
        .send()
        .await;
    let head = match head {
        Ok(head) => head,
        Err(e) => {
            let gone = e.raw_response().is_some_and(|r| r.status().as_u16() == 404);
            let e = failure(&format!("read the object s3://{}/{}", target.bucket, target.key), e);
            return Found::Unknown(if gone || e.retry == Retry::Soon {
                // Passing trouble, or the object went away since the 412: the next attempt tells.
                UploadError::S3(e.with_retry(Retry::Soon))
            } else {
                conflict(format!(
                    "an object the bot may not read to compare with this file, most likely its own earlier upload ({}): grant the bot s3:GetObject on the folder so that it can tell",
                    crate::error_chain::Chain(&e)
                ))
            });
        }
    };
    let stored_len = head
        .metadata()
        .and_then(|m| m.get(crate::envelope::meta::PLAIN_LEN))
        .and_then(|n| n.parse::<u64>().ok())
        .or_else(|| head.content_length().and_then(|n| u64::try_from(n).ok()));
    match head.metadata().and_then(|m| m.get(metadata::CONTENT_MAC)) {
        Some(theirs) if !ours.is_empty() && theirs.eq_ignore_ascii_case(ours) && stored_len != Some(plain_len) => {
            Found::Other(conflict(format!(
                "an object with this file's content MAC but {} bytes of content, where this file has {plain_len}",
                stored_len.map_or_else(|| "an unknown number of".to_owned(), |n| n.to_string())
            )))
        }
        Some(theirs) if !ours.is_empty() && theirs.eq_ignore_ascii_case(ours) => Found::Ours,
        Some(theirs) => Found::Other(conflict(format!(
            "other content (its {} is {theirs}; this file's is {ours})",
            metadata::CONTENT_MAC
        ))),
        None => Found::Other(conflict(format!(
            "an object without {} metadata, so not one this version of the bot wrote",
            metadata::CONTENT_MAC
        ))),
    }
}

/// After a 412: `Ok` if the object under the key is this file (an earlier attempt stored it), a
/// [`UploadError::Conflict`] if it is anything else or cannot be compared. The bot stores an object
/// only once its bytes were hashed and found to be the listed ones (`upload::read_parts`), so its own
/// `wickrio-content-mac` is the content's.
pub async fn settle(target: &Target<'_>, plain_len: u64) -> Result<(), UploadError> {
    match look(target, plain_len).await {
        Found::Ours => {
            tracing::info!(
                key = target.key,
                "the object is already in S3 (an earlier attempt stored it and its answer was lost)"
            );
            Ok(())
        }
        Found::Other(e) | Found::Unknown(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_s3::error::ErrorMetadata;
    use aws_sdk_s3::operation::put_object::PutObjectError;
    use aws_sdk_s3::primitives::SdkBody;

    fn answered(status: u16, code: &str) -> SdkError<PutObjectError, HttpResponse> {
        let meta = ErrorMetadata::builder().code(code).build();
        let raw = HttpResponse::new(status.try_into().unwrap(), SdkBody::empty());
        SdkError::service_error(PutObjectError::generic(meta), raw)
    }

    #[test]
    fn the_content_mac_is_keyed_by_the_bot_and_hides_the_hash() {
        let (a, b) = (
            ContentMac::new(&ed25519_dalek::SigningKey::from_bytes(&[1; 32])),
            ContentMac::new(&ed25519_dalek::SigningKey::from_bytes(&[2; 32])),
        );
        let sha = "ab".repeat(32);
        assert_eq!(a.of(&sha), a.of(&sha));
        assert_ne!(a.of(&sha), b.of(&sha), "another bot's key, another value");
        assert_ne!(a.of(&sha), a.of(&"cd".repeat(32)));
        assert_ne!(a.of(&sha), sha);
        assert_eq!(format!("{a:?}"), "ContentMac(..)");
    }

    #[test]
    fn only_a_precondition_failure_means_the_key_is_taken() {
        assert!(key_taken(&answered(412, "PreconditionFailed")));
        assert!(!key_taken(&answered(409, "ConditionalRequestConflict")));
        assert!(!key_taken(&answered(403, "AccessDenied")));
        assert!(!key_taken(&answered(500, "InternalError")));
    }
}
