//! What a queue message keeps in S3: a body the SQS Extended Client (AWS's libraries for Java and
//! Python) moved there, leaving a pointer in the queue; and an attachment a file message names by its
//! S3 location instead of carrying it. Both are read with a size cap, as they arrive.

use serde_json::Value;

use crate::error_chain::Chain;
use crate::spool::{PartialAttachment, SpoolError};

/// The Extended Client's pointer class (the payload-offloading library, Java 2.x and Python).
pub const POINTER: &str = "software.amazon.payloadoffloading.PayloadS3Pointer";
/// The pointer class of the Extended Client's Java 1.x releases.
pub const LEGACY_POINTER: &str = "com.amazon.sqs.javamessaging.MessageS3Pointer";

/// An object in S3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct S3Ref {
    pub bucket: String,
    pub key: String,
}

impl std::fmt::Display for S3Ref {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

/// Why what a message keeps in S3 was not read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    /// The object is not there, not ours to read, or too large: the message cannot be archived as
    /// it is (it returns, and goes to the dead-letter queue).
    #[error("{0}")]
    Refused(String),
    /// S3 did not answer: the message is tried again.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

/// The S3 object a body points to, when it is an Extended Client pointer:
/// `["<pointer class>", {"s3BucketName": ..., "s3Key": ...}]`.
pub fn pointer(body: &str) -> Option<S3Ref> {
    if !body.trim_start().starts_with('[') {
        return None;
    }
    let value: Value = serde_json::from_str(body).ok()?;
    let [class, place] = value.as_array()?.as_slice() else {
        return None;
    };
    if ![POINTER, LEGACY_POINTER].contains(&class.as_str()?) {
        return None;
    }
    Some(S3Ref {
        bucket: place.get("s3BucketName")?.as_str()?.to_owned(),
        key: place.get("s3Key")?.as_str()?.to_owned(),
    })
}

/// The S3 location a file message names for its bytes (`file.s3` {`bucket`, `key`}): `None` when
/// it names none, an error when `s3` is there but not a bucket and a key.
pub(crate) fn attachment_ref(file: &serde_json::Map<String, Value>) -> Result<Option<S3Ref>, String> {
    let Some(s3) = file.get("s3") else { return Ok(None) };
    let text = |k: &str| {
        s3.get(k)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    match (text("bucket"), text("key")) {
        (Some(bucket), Some(key)) => Ok(Some(S3Ref { bucket, key })),
        _ => Err("file.s3 must be an object with a bucket and a key (strings)".into()),
    }
}

/// Whether `at` is in a bucket the bot may read payloads from (`WICKRIO_SQS_PAYLOAD_BUCKETS`):
/// otherwise a producer could name any object the bot can read (its own archive, say) or delete.
pub fn allowed(at: &S3Ref, buckets: &[String]) -> Result<(), String> {
    if buckets.contains(&at.bucket) {
        return Ok(());
    }
    Err(format!(
        "bucket {:?} is not in WICKRIO_SQS_PAYLOAD_BUCKETS: the bot reads payloads and attachments only from the buckets listed there",
        at.bucket
    ))
}

/// Opens the object, refusing it at once if it says it is larger than `max`.
async fn open(s3: &aws_sdk_s3::Client, at: &S3Ref, max: u64) -> Result<aws_sdk_s3::primitives::ByteStream, FetchError> {
    let out = s3
        .get_object()
        .bucket(&at.bucket)
        .key(&at.key)
        .send()
        .await
        .map_err(|e| {
            // What the object is (gone, archived away) refuses the message: it cannot be archived as
            // it is. Anything else (access denied, a wrong region, throttling) is the bot's setup or
            // S3's moment: the message waits for it to be mended.
            let failure = crate::aws::failure(&format!("read {at}"), e);
            let refused = matches!(
                failure.code.as_deref(),
                Some("NoSuchKey" | "NoSuchBucket" | "InvalidObjectState")
            );
            let why = crate::error_chain::chain(&failure);
            if refused {
                FetchError::Refused(why)
            } else {
                FetchError::Unavailable(why)
            }
        })?;
    let len = out.content_length().and_then(|l| u64::try_from(l).ok()).unwrap_or(0);
    if len > max {
        return Err(FetchError::Refused(format!(
            "{at} holds {len} bytes, over the limit of {max}"
        )));
    }
    Ok(out.body)
}

/// A body kept in S3, whole, at most `max` bytes (counted as they arrive, whatever the object said).
pub(crate) async fn fetch_body(s3: &aws_sdk_s3::Client, at: &S3Ref, max: u64) -> Result<Vec<u8>, FetchError> {
    let mut body = open(s3, at, max).await?;
    let mut bytes = Vec::new();
    while let Some(chunk) = body
        .try_next()
        .await
        .map_err(|e| FetchError::Unavailable(format!("reading {at}: {e}", e = Chain(&e))))?
    {
        if (bytes.len() + chunk.len()) as u64 > max {
            return Err(FetchError::Refused(format!("{at} is over the limit of {max} bytes")));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// An attachment kept in S3, streamed into `partial` (which enforces `WICKRIO_INGEST_MAX_FILE`).
pub(crate) async fn fetch_attachment(
    s3: &aws_sdk_s3::Client,
    at: &S3Ref,
    partial: &mut PartialAttachment,
    max: u64,
) -> Result<(), FetchError> {
    let mut body = open(s3, at, max).await?;
    while let Some(chunk) = body
        .try_next()
        .await
        .map_err(|e| FetchError::Unavailable(format!("reading {at}: {e}", e = Chain(&e))))?
    {
        match partial.write(&chunk).await {
            Err(SpoolError::TooLarge { max }) => {
                return Err(FetchError::Refused(format!("{at} is over the limit of {max} bytes")));
            }
            other => other?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_of_both_classes_are_read_and_anything_else_is_a_body() {
        let at = S3Ref {
            bucket: "b".into(),
            key: "k/1".into(),
        };
        for class in [POINTER, LEGACY_POINTER] {
            let body = format!(r#"["{class}",{{"s3BucketName":"b","s3Key":"k/1"}}]"#);
            assert_eq!(pointer(&body), Some(at.clone()));
        }
        for body in [
            r#"{"message":"x"}"#,
            r#"["other.Class",{"s3BucketName":"b","s3Key":"k"}]"#,
            r#"["software.amazon.payloadoffloading.PayloadS3Pointer",{"s3BucketName":"b"}]"#,
            r#"["software.amazon.payloadoffloading.PayloadS3Pointer"]"#,
            "[not json",
        ] {
            assert_eq!(pointer(body), None, "{body}");
        }
    }
}
