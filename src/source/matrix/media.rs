//! A message's media, streamed from the homeserver to the spool. matrix-sdk's own download holds the
//! whole file (and, for encrypted media, its plaintext too) in memory before anything can look at
//! its size; here each chunk goes to the partial attachment as it arrives (decrypted on the way by
//! matrix-sdk-crypto's `AttachmentDecryptor`, which checks the file's hash at the end), and a file
//! over `WICKRIO_INGEST_MAX_FILE` is refused as soon as it says or shows it is.

use std::collections::VecDeque;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use matrix_sdk::Client;
use matrix_sdk::ruma::MxcUri;
use matrix_sdk::ruma::events::room::MediaSource;
use matrix_sdk_base::crypto::AttachmentDecryptor;

use super::MatrixError;
use crate::error_chain::Chain;
use crate::spool::{PartialAttachment, Spool, SpoolError};

/// A download that sends nothing for this long is given up (and tried again).
const STALLED: Duration = Duration::from_secs(60);

/// Why media was not saved, for the message's `matrix.media_error`.
pub(super) enum NotSaved {
    /// Worth another try (the network, the homeserver).
    Retry(String),
    /// Another try cannot help (too large, not found, a bad hash).
    Refused(String),
}

/// Downloads `source` into a new partial attachment. A full disk or a spool that refuses is an
/// error (the sync is read again later); anything about the media itself is [`NotSaved`].
pub(super) async fn download(
    client: &Client,
    source: &MediaSource,
    spool: &Spool,
    max: u64,
) -> Result<Result<PartialAttachment, NotSaved>, MatrixError> {
    let (uri, encryption) = match source {
        MediaSource::Plain(uri) => (uri.clone(), None),
        MediaSource::Encrypted(file) => (file.url.clone(), Some(file.as_ref().clone().into())),
    };
    let mut response = match fetch(client, &uri).await {
        Ok(r) => r,
        Err(e) => return Ok(Err(e)),
    };
    if let Some(len) = response.content_length().filter(|len| *len > max) {
        return Ok(Err(too_large(len, max)));
    }
    let mut partial = spool.begin_attachment(max).await?;
    let queue = Queue::default();
    let mut reader = queue.clone();
    let mut decryptor = match encryption {
        Some(info) => match AttachmentDecryptor::new(&mut reader, info) {
            Ok(d) => Some(d),
            Err(e) => {
                return Ok(Err(NotSaved::Refused(format!(
                    "cannot decrypt {uri}: {e}",
                    e = Chain(&e)
                ))));
            }
        },
        None => None,
    };
    if let Err(e) = copy_body(&mut response, &mut partial, &queue, &mut decryptor, &uri, max).await? {
        return Ok(Err(e));
    }
    // The end: the decryptor checks the file's hash against the event's.
    if let Some(decryptor) = &mut decryptor
        && let Err(e) = decryptor.read(&mut [0u8; 1])
    {
        return Ok(Err(NotSaved::Refused(format!(
            "{uri} does not match its hash: {e}",
            e = Chain(&e)
        ))));
    }
    Ok(Ok(partial))
}

/// Asks the homeserver for `uri`, falling back to the older unauthenticated path, and turns an
/// answer that is not the media into why it is not saved; kept apart from the streaming that follows.
async fn fetch(client: &Client, uri: &MxcUri) -> Result<matrix_sdk::reqwest::Response, NotSaved> {
    let Ok((server, id)) = uri.parts() else {
        return Err(NotSaved::Refused(format!("{uri} is not an mxc:// URI")));
    };
    let response = match get(client, &format!("_matrix/client/v1/media/download/{server}/{id}"), true).await {
        // A homeserver without authenticated media (before Matrix 1.11) serves the older path.
        Ok(r) if r.status() == 404 || r.status() == 405 => {
            get(client, &format!("_matrix/media/v3/download/{server}/{id}"), false).await?
        }
        Ok(r) => r,
        Err(e) => return Err(e),
    };
    if !response.status().is_success() {
        let status = response.status();
        let why = format!("the homeserver answered {status} for {uri}");
        return Err(if status.is_server_error() {
            NotSaved::Retry(why)
        } else {
            NotSaved::Refused(why)
        });
    }
    Ok(response)
}

/// Why media over `max` bytes is refused, the same words whether its size was said or seen.
fn too_large(bytes: u64, max: u64) -> NotSaved {
    NotSaved::Refused(format!("{bytes} bytes is over WICKRIO_INGEST_MAX_FILE ({max} bytes)"))
}

/// Streams the body chunk by chunk into `partial` (through `decryptor`, fed by `queue`, if the media
/// is encrypted), giving up on a stall, a break, a bad chunk or too many bytes. The hash is checked
/// by the caller once the body has ended.
async fn copy_body(
    response: &mut matrix_sdk::reqwest::Response,
    partial: &mut PartialAttachment,
    queue: &Queue,
    decryptor: &mut Option<AttachmentDecryptor<'_, Queue>>,
    uri: &MxcUri,
    max: u64,
) -> Result<Result<(), NotSaved>, MatrixError> {
    let mut received = 0u64;
    loop {
        let chunk = match tokio::time::timeout(STALLED, response.chunk()).await {
            Ok(Ok(Some(chunk))) => chunk,
            Ok(Ok(None)) => break,
            Ok(Err(e)) => {
                return Ok(Err(NotSaved::Retry(format!(
                    "the download of {uri} broke off: {e}",
                    e = Chain(&e)
                ))));
            }
            Err(_) => {
                return Ok(Err(NotSaved::Retry(format!(
                    "the download of {uri} stalled for {} s",
                    STALLED.as_secs()
                ))));
            }
        };
        received += chunk.len() as u64;
        if received > max {
            return Ok(Err(too_large(received, max)));
        }
        let written = match decryptor {
            None => partial.write(&chunk).await,
            Some(decryptor) => {
                queue.push(&chunk);
                // Exactly what is queued: reading more would look like the end to the decryptor.
                let mut plain = vec![0u8; chunk.len()];
                match decryptor.read_exact(&mut plain) {
                    Ok(()) => partial.write(&plain).await,
                    Err(e) => {
                        return Ok(Err(NotSaved::Refused(format!(
                            "cannot decrypt {uri}: {e}",
                            e = Chain(&e)
                        ))));
                    }
                }
            }
        };
        match written {
            Ok(()) => {}
            Err(SpoolError::TooLarge { .. }) => return Ok(Err(too_large(received, max))),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Ok(()))
}

async fn get(client: &Client, path: &str, authenticated: bool) -> Result<matrix_sdk::reqwest::Response, NotSaved> {
    let url = client
        .homeserver()
        .join(path)
        .map_err(|e| NotSaved::Refused(format!("cannot make a media URL: {e}", e = Chain(&e))))?;
    // No time limit on the whole download (matrix-sdk's client gives up after 30 s, too soon for a
    // video); a download that stops moving is cut off by STALLED instead.
    let mut request = client.http_client().get(url).timeout(Duration::from_secs(24 * 3600));
    if authenticated && let Some(token) = client.access_token() {
        request = request.bearer_auth(token);
    }
    request
        .send()
        .await
        .map_err(|e| NotSaved::Retry(format!("cannot reach the homeserver's media: {e}", e = Chain(&e))))
}

/// Bytes waiting for the decryptor, which reads them through a handle of its own while this side
/// pushes the next chunk in.
#[derive(Clone, Default)]
struct Queue(Arc<Mutex<VecDeque<u8>>>);

impl Queue {
    fn push(&self, bytes: &[u8]) {
        if let Ok(mut q) = self.0.lock() {
            q.extend(bytes);
        }
    }
}

impl Read for Queue {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut q = self
            .0
            .lock()
            .map_err(|_| std::io::Error::other("media queue poisoned"))?;
        let n = buf.len().min(q.len());
        for (slot, byte) in buf.iter_mut().zip(q.drain(..n)) {
            *slot = byte;
        }
        Ok(n)
    }
}
