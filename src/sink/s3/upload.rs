//! One file to one object: read in parts on the blocking pool, encrypt them if a key is configured,
//! and send them as a single PutObject or as a multipart upload with a few parts in flight. Every part
//! in memory holds a permit of a [`PartBudget`] shared by all uploads, so memory stays bounded
//! (`PART_SIZE * PARTS_IN_MEMORY`, 32 MiB) whatever the files' sizes and however many are under way.
//! Every request carries a CRC32C checksum that S3 verifies before it stores the data, and every
//! write is create-only (`create_only`).

use std::io::Read;
use std::path::Path;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::create_only;
use super::error::UploadError;
use super::object_lock::Retention;
use super::part_budget::{Part, PartBudget};
use super::sha256_pair::{Sha256Stream, update_pair};
use super::signed_payload::SignedPayload;
use super::target::Target;
use crate::aws::{AwsFailure, Retry, failure};
use crate::envelope::{Envelope, gcm};
use crate::error_chain::Chain;
use crate::metrics::Counter;

/// 8 MiB parts: S3's minimum is 5 MiB, and 10,000 parts of 8 MiB hold 78 GiB, above any file the
/// bot writes (the GCM cap keeps encrypted files under 64 GiB; rotation keeps the rest small).
pub(crate) const PART_SIZE: usize = 8 << 20;
/// Parts of one file being sent at once.
const IN_FLIGHT: usize = 3;
type Parts = mpsc::Receiver<Result<Part, UploadError>>;

/// What an upload did, for the check before the local copy is deleted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Uploaded {
    /// Bytes read from the file.
    pub plain_len: u64,
    /// Bytes S3 accepted (ciphertext and tag, when encrypted).
    pub sent: u64,
}

/// Uploads `path`, encrypted under `envelope` when one is given, if it still holds what its manifest
/// entry lists (`listed`, its SHA-256).
pub async fn upload(
    target: Target<'_>,
    path: &Path,
    listed: &str,
    envelope: Option<Envelope>,
    budget: &PartBudget,
) -> Result<Uploaded, UploadError> {
    let (file, plain_len, closed) = open(path).await?;
    let retention = target
        .lock
        .map(|lock| Retention::for_file(lock, closed, std::time::SystemTime::now()));
    if let Some(r) = retention.as_ref().filter(|r| r.extended) {
        tracing::warn!(
            file = %path.display(),
            until = %r.until,
            "the file's Object Lock retention, counted from its close, has run out or has less than an hour left: its object is retained for a day from now instead"
        );
    }
    let mut metadata = target.metadata.clone();
    // What the retention counts from: the close, or now if the close lies ahead (a clock stepped back).
    let counted_from = closed.min(std::time::SystemTime::now());
    metadata.insert(
        crate::objects::metadata::CLOSED_AT.to_owned(),
        crate::objects::metadata::time_value(counted_from),
    );
    if let Some(envelope) = &envelope {
        metadata.extend(envelope.metadata(plain_len).into_iter().map(|(k, v)| (k.to_owned(), v)));
    }
    let encryptor = match &envelope {
        Some(e) => Some(e.encryptor().map_err(UploadError::Cipher)?),
        None => None,
    };
    drop(envelope);
    // What the parts must add up to before the object may be stored: a reader that stopped short
    // (a panic) ends its channel like one that finished.
    let body_len = plain_len + if encryptor.is_some() { gcm::TAG_LEN as u64 } else { 0 };
    let parts = read_parts(file, path, plain_len, listed.to_owned(), encryptor, budget.clone());
    let target = Target { metadata, ..target };
    let sent = if plain_len <= PART_SIZE as u64 {
        put_single(&target, parts, body_len, retention, plain_len).await?
    } else {
        put_multipart(&target, parts, body_len, retention, plain_len).await?
    };
    Ok(Uploaded { plain_len, sent })
}

/// The file, its size and its last modification (when it was closed), from the blocking pool.
async fn open(path: &Path) -> Result<(std::fs::File, u64, std::time::SystemTime), UploadError> {
    let owned = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let file = crate::durable::open_regular(&owned)?;
        let facts = file.metadata()?;
        Ok((file, facts.len(), facts.modified()?))
    })
    .await
    .map_err(|error| UploadError::Task { what: "reader", error })?
    .map_err(|error| read_error(path, error))
}

fn read_error(path: &Path, error: std::io::Error) -> UploadError {
    UploadError::Read {
        path: path.to_owned(),
        error,
    }
}

/// A reader thread: parts of `PART_SIZE` bytes (the last one shorter, and carrying the GCM tag),
/// one waiting in the channel while the next is read. The bytes are hashed as they are read, and the
/// last part is sent only if they are what the manifest lists (`listed`, the SHA-256 the object's
/// `wickrio-content-mac` is keyed from): an object S3 stores, whole, always is the listed file, which
/// is what lets a create-only retry trust that metadata.
fn read_parts(
    mut file: std::fs::File,
    path: &Path,
    plain_len: u64,
    listed: String,
    mut encryptor: Option<gcm::Encryptor>,
    budget: PartBudget,
) -> Parts {
    let (tx, rx) = mpsc::channel(1);
    let path = path.to_owned();
    let runtime = tokio::runtime::Handle::current();
    let reader = budget.reader();
    tokio::task::spawn_blocking(move || {
        // Held until the closure returns, however it returns.
        let _reader = reader;
        let mut left = plain_len;
        let mut file_hash = Sha256Stream::new();
        let mut scratch = Vec::new();
        loop {
            // Waits (off the async threads) until the budget has room for one more part.
            let Ok(permit) = runtime.block_on(budget.permits.clone().acquire_owned()) else {
                return;
            };
            let take = left.min(PART_SIZE as u64) as usize;
            let last = take as u64 == left;
            let mut part = budget.buffer(take + if last { gcm::TAG_LEN } else { 0 });
            // Read into the buffer's spare capacity: no zeroing of 8 MiB first.
            let read = (&mut file).take(take as u64).read_to_end(&mut part).and_then(|n| {
                (n == take)
                    .then_some(())
                    .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the file ended early"))
            });
            if let Err(e) = read {
                let _ = tx.blocking_send(Err(read_error(&path, e)));
                return;
            }
            left -= take as u64;
            let mut part_hash = Sha256Stream::new();
            if let Err(e) = seal(
                &mut part,
                &mut file_hash,
                &mut part_hash,
                encryptor.as_mut(),
                &mut scratch,
            ) {
                let _ = tx.blocking_send(Err(UploadError::Cipher(e)));
                return;
            }
            if last {
                let file_hash = std::mem::replace(&mut file_hash, Sha256Stream::new());
                let closed = close_last(&mut part, &mut part_hash, file_hash, encryptor.take(), &listed, &path);
                if let Err(e) = closed {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
            let part = Part {
                body: Bytes::from(part),
                sha256: hex::encode(part_hash.finish()),
                budget: budget.clone(),
                _permit: permit,
            };
            if tx.blocking_send(Ok(part)).is_err() || last {
                return;
            }
        }
    });
    rx
}

/// The last part: sent only if the file's bytes were the listed ones, and with the GCM tag appended
/// (and hashed with the body) when encrypted.
fn close_last(
    part: &mut Vec<u8>,
    part_hash: &mut Sha256Stream,
    file_hash: Sha256Stream,
    encryptor: Option<gcm::Encryptor>,
    listed: &str,
    path: &Path,
) -> Result<(), UploadError> {
    let read = hex::encode(file_hash.finish());
    if read != listed {
        return Err(UploadError::Changed {
            path: path.to_owned(),
            listed: listed.to_owned(),
            read,
        });
    }
    if let Some(encryptor) = encryptor {
        let tag = encryptor.finish().map_err(UploadError::Cipher)?;
        part.extend_from_slice(&tag);
        part_hash.update(&tag);
    }
    Ok(())
}

/// Bytes encrypted and hashed at a time: the plain copy a chunk is hashed from stays in the cache.
const SEAL_CHUNK: usize = 64 << 10;

/// Hashes `part` into the file's hash (its plain bytes) and the part's own (the bytes sent) in one
/// pass, encrypting it in place first if `encryptor` is given; `scratch` holds a chunk's plain copy.
fn seal(
    part: &mut [u8],
    file_hash: &mut Sha256Stream,
    part_hash: &mut Sha256Stream,
    encryptor: Option<&mut gcm::Encryptor>,
    scratch: &mut Vec<u8>,
) -> Result<(), gcm::GcmError> {
    let Some(encryptor) = encryptor else {
        update_pair(file_hash, part, part_hash, part);
        return Ok(());
    };
    for chunk in part.chunks_mut(SEAL_CHUNK) {
        scratch.clear();
        scratch.extend_from_slice(chunk);
        encryptor.encrypt(chunk)?;
        update_pair(file_hash, scratch, part_hash, chunk);
    }
    Ok(())
}

fn reader_stopped(target: &Target<'_>, read: u64, expected: u64) -> UploadError {
    UploadError::ReaderStopped {
        key: target.key.to_owned(),
        read,
        expected,
    }
}

async fn next_part(parts: &mut Parts) -> Result<Option<Part>, UploadError> {
    parts.recv().await.transpose()
}

/// Returns the bytes sent.
async fn put_single(
    target: &Target<'_>,
    mut parts: Parts,
    body_len: u64,
    retention: Option<Retention>,
    plain_len: u64,
) -> Result<u64, UploadError> {
    // Held until the request is done: its permit covers the body in memory.
    let part = next_part(&mut parts).await?;
    let read = part.as_ref().map_or(0, |p| p.body.len() as u64);
    let Some(part) = part.filter(|_| read == body_len) else {
        return Err(reader_stopped(target, read, body_len));
    };
    let body = part.body.clone();
    let signed = SignedPayload(part.sha256.clone());
    let sent = body.len() as u64;
    let put = target
        .client
        .put_object()
        .bucket(target.bucket)
        .key(target.key)
        .set_metadata(Some(target.metadata.clone()))
        .set_object_lock_mode(retention.as_ref().map(|r| r.mode.clone()))
        .set_object_lock_retain_until_date(retention.map(|r| r.until))
        .checksum_algorithm(ChecksumAlgorithm::Crc32C)
        .if_none_match(create_only::ANY_OBJECT)
        .body(ByteStream::from(body))
        .customize()
        .interceptor(signed)
        .send()
        .await;
    match put {
        Ok(_) => target.metrics.incr(Counter::S3PartsUploaded),
        Err(e) if create_only::key_taken(&e) => create_only::settle(target, plain_len).await?,
        Err(e) => {
            return Err(UploadError::S3(failure(
                &format!("upload s3://{}/{}", target.bucket, target.key),
                e,
            )));
        }
    }
    Ok(sent)
}

/// Returns the bytes sent.
async fn put_multipart(
    target: &Target<'_>,
    parts: Parts,
    body_len: u64,
    retention: Option<Retention>,
    plain_len: u64,
) -> Result<u64, UploadError> {
    abort_abandoned(target).await;
    let what = format!("upload s3://{}/{}", target.bucket, target.key);
    let created = target
        .client
        .create_multipart_upload()
        .bucket(target.bucket)
        .key(target.key)
        .set_metadata(Some(target.metadata.clone()))
        .set_object_lock_mode(retention.as_ref().map(|r| r.mode.clone()))
        .set_object_lock_retain_until_date(retention.map(|r| r.until))
        .checksum_algorithm(ChecksumAlgorithm::Crc32C)
        .send()
        .await
        .map_err(|e| UploadError::S3(failure(&what, e)))?;
    let upload_id = created
        .upload_id()
        .ok_or_else(|| UploadError::S3(AwsFailure::new(Retry::Soon, what.clone(), "S3 returned no upload id")))?
        .to_owned();
    let result = send_parts(target, &upload_id, parts, body_len).await;
    let (completed, sent) = match result {
        Ok(completed) => completed,
        Err(e) => {
            abort(target, &upload_id).await;
            return Err(e);
        }
    };
    let completion = target
        .client
        .complete_multipart_upload()
        .bucket(target.bucket)
        .key(target.key)
        .upload_id(&upload_id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(completed)).build())
        .if_none_match(create_only::ANY_OBJECT)
        .send()
        .await;
    match completion {
        Ok(_) => Ok(sent),
        Err(e) if create_only::key_taken(&e) => {
            // The parts are not an object and never will be: free their storage now.
            abort(target, &upload_id).await;
            create_only::settle(target, plain_len).await?;
            Ok(sent)
        }
        Err(e) => Err(UploadError::S3(failure(&what, e))),
    }
}

/// Best effort: an upload left behind is also aborted before this file's next attempt.
async fn abort(target: &Target<'_>, upload_id: &str) {
    let _ = target
        .client
        .abort_multipart_upload()
        .bucket(target.bucket)
        .key(target.key)
        .upload_id(upload_id)
        .send()
        .await;
}

/// The completed parts, in order, and the bytes they held.
async fn send_parts(
    target: &Target<'_>,
    upload_id: &str,
    mut parts: Parts,
    body_len: u64,
) -> Result<(Vec<CompletedPart>, u64), UploadError> {
    let mut in_flight = JoinSet::new();
    let mut completed = Vec::new();
    let mut number = 0;
    let mut sent = 0u64;
    loop {
        // A free slot first, then the next part: no part waits in memory for a slot.
        if in_flight.len() >= IN_FLIGHT
            && let Some(done) = in_flight.join_next().await
        {
            completed.push(joined(done)?);
        }
        let Some(part) = next_part(&mut parts).await? else {
            if sent != body_len {
                // The parts in flight are dropped (aborted); the caller aborts the upload.
                return Err(reader_stopped(target, sent, body_len));
            }
            break;
        };
        number += 1;
        sent += part.body.len() as u64;
        let request = target
            .client
            .upload_part()
            .bucket(target.bucket)
            .key(target.key)
            .upload_id(upload_id)
            .part_number(number)
            .checksum_algorithm(ChecksumAlgorithm::Crc32C)
            .body(ByteStream::from(part.body.clone()))
            .customize()
            .interceptor(SignedPayload(part.sha256.clone()));
        let what = format!("upload part {number} of s3://{}/{}", target.bucket, target.key);
        let metrics = target.metrics.clone();
        in_flight.spawn(async move {
            let out = request.send().await.map_err(|e| UploadError::S3(failure(&what, e)))?;
            drop(part);
            metrics.incr(Counter::S3PartsUploaded);
            Ok(CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag)
                .set_checksum_crc32_c(out.checksum_crc32_c)
                .build())
        });
    }
    while let Some(done) = in_flight.join_next().await {
        completed.push(joined(done)?);
    }
    completed.sort_by_key(|p| p.part_number);
    Ok((completed, sent))
}

fn joined(
    done: Result<Result<CompletedPart, UploadError>, tokio::task::JoinError>,
) -> Result<CompletedPart, UploadError> {
    done.map_err(|error| UploadError::Task {
        what: "part upload",
        error,
    })?
}

/// Aborts multipart uploads a crash left behind for this key. Keys are unique to this bot's files,
/// so an unfinished upload of this key can only be an earlier attempt at this same file. Best effort:
/// a bot allowed only `s3:PutObject` (the original's policy) still uploads, with a warning.
async fn abort_abandoned(target: &Target<'_>) {
    let listed = match target
        .client
        .list_multipart_uploads()
        .bucket(target.bucket)
        .prefix(target.key)
        .send()
        .await
    {
        Ok(listed) => listed,
        Err(e) => {
            // An S3-compatible store without the call (501) is told once, like a missing permission.
            let unsupported = e.raw_response().is_some_and(|r| r.status().as_u16() == 501);
            let e = failure(&format!("list unfinished uploads in s3://{}", target.bucket), e);
            // A missing permission (the original's policy has only s3:PutObject) is said once, not
            // for every file; a passing trouble every time.
            static REFUSAL_SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
            let refusal = e.retry == Retry::Slowly || unsupported;
            if !refusal || !REFUSAL_SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
                let why = if unsupported {
                    "the store does not implement ListMultipartUploads"
                } else {
                    "needs s3:ListBucketMultipartUploads"
                };
                tracing::warn!(error = %Chain(&e), "cannot look for unfinished uploads to abort ({why}); a crash may have left some behind");
            } else {
                tracing::debug!(error = %Chain(&e), "cannot look for unfinished uploads to abort");
            }
            return;
        }
    };
    for upload in listed.uploads() {
        let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) else {
            continue;
        };
        if key != target.key {
            continue;
        }
        tracing::info!(
            key,
            "aborting an unfinished multipart upload left by an earlier attempt"
        );
        if let Err(e) = target
            .client
            .abort_multipart_upload()
            .bucket(target.bucket)
            .key(key)
            .upload_id(id)
            .send()
            .await
        {
            let e = failure(
                &format!("abort an unfinished upload of s3://{}/{key}", target.bucket),
                e,
            );
            tracing::warn!(error = %Chain(&e), "cannot abort an unfinished upload (needs s3:AbortMultipartUpload)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn sha256(data: &[u8]) -> [u8; 32] {
        use sha2::Digest as _;
        sha2::Sha256::digest(data).into()
    }

    #[test]
    fn seal_hashes_the_plain_file_and_the_body_as_sent_and_encrypts_every_byte() {
        let plain: Vec<u8> = (0..3 * SEAL_CHUNK + 100).map(|i| (i % 251) as u8).collect();
        let mut scratch = Vec::new();

        let (mut file, mut part, mut body) = (Sha256Stream::new(), Sha256Stream::new(), plain.clone());
        seal(&mut body, &mut file, &mut part, None, &mut scratch).unwrap();
        assert_eq!(body, plain, "a plain part is sent as read");
        assert_eq!(part.finish(), sha256(&plain));
        assert_eq!(file.finish(), sha256(&plain));

        let (key, iv) = ([7u8; gcm::KEY_LEN], [9u8; gcm::IV_LEN]);
        let mut expected = plain.clone();
        gcm::Encryptor::new(&key, &iv).unwrap().encrypt(&mut expected).unwrap();
        let mut encryptor = gcm::Encryptor::new(&key, &iv).unwrap();
        let (mut file, mut part, mut body) = (Sha256Stream::new(), Sha256Stream::new(), plain.clone());
        seal(&mut body, &mut file, &mut part, Some(&mut encryptor), &mut scratch).unwrap();
        assert_eq!(body, expected, "chunk by chunk, the same ciphertext as in one go");
        assert_eq!(
            part.finish(),
            sha256(&expected),
            "the request is signed over the ciphertext"
        );
        assert_eq!(
            file.finish(),
            sha256(&plain),
            "the manifest check is over the plain bytes"
        );
    }

    #[tokio::test]
    async fn a_reader_that_stops_short_stores_nothing() {
        // Nothing listens on port 1: a request would fail with a connection error instead.
        let config = aws_sdk_s3::Config::builder()
            .behavior_version_latest()
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url("http://127.0.0.1:1")
            .credentials_provider(aws_sdk_s3::config::Credentials::new("a", "b", None, None, "test"))
            .build();
        let client = aws_sdk_s3::Client::from_conf(config);
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let target = Target {
            client: &client,
            bucket: "b",
            key: "k",
            metadata: Default::default(),
            metrics: &metrics,
            lock: None,
        };
        let (tx, rx) = mpsc::channel(1);
        drop(tx);
        let e = put_single(&target, rx, 10, None, 10).await.unwrap_err();
        assert!(
            matches!(
                e,
                UploadError::ReaderStopped {
                    read: 0,
                    expected: 10,
                    ..
                }
            ),
            "{e:?}"
        );
        let (tx, rx) = mpsc::channel(1);
        drop(tx);
        let e = send_parts(&target, "upload", rx, 2 * PART_SIZE as u64)
            .await
            .unwrap_err();
        assert!(matches!(e, UploadError::ReaderStopped { read: 0, .. }), "{e:?}");
    }
}
