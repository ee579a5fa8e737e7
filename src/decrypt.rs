//! `retention-bot decrypt`: restores what the bot uploaded. Every object under a prefix is downloaded,
//! decrypted when it carries an S3 Encryption Client V2 envelope (plain objects are copied), and
//! restored to its `wickrio-file-path` (attachments under `attachments/`).
//!
//! Plaintext is written to an unnamed file (`O_TMPFILE`) and given its name only after the GCM tag
//! checked out and the data is fsync'd, so no unauthenticated plaintext is ever left behind, not even
//! by a kill -9 in the middle of an object.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write as _;
use std::path::{Component, Path, PathBuf};

use aws_sdk_s3::types::ChecksumMode;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag};
use nix::sys::stat::Mode;
use sha2::{Digest, Sha256};

use crate::aws::{self, AwsFailure, failure};
use crate::envelope::{EnvelopeError, StoredEnvelope, gcm};
use crate::objects::metadata::{self, TYPE};

/// Which archive in S3 a tool works on (the defaults are the bot's settings, so the line that ran
/// the bot also names its archive). Shared by `decrypt` and `legal-hold`.
#[derive(Debug, Clone, clap::Args)]
pub struct Archive {
    /// The bucket the bot uploaded to.
    #[arg(long, env = "WICKRIO_S3_BUCKET_NAME")]
    pub bucket: String,
    /// Only objects under this folder.
    #[arg(long, env = "WICKRIO_S3_FOLDER_NAME", default_value = "", value_parser = folder_prefix)]
    pub prefix: String,
    /// The bucket's region.
    #[arg(long, env = "WICKRIO_S3_REGION", default_value = "us-east-1")]
    pub region: String,
    /// The KMS key's region [default: the bucket's].
    #[arg(long, env = "WICKRIO_KMS_REGION")]
    pub kms_region: Option<String>,
    /// How its clients reach AWS (the role they assume), handed over by whoever runs the tool.
    #[arg(skip)]
    pub aws: aws::Aws,
}

impl Archive {
    /// Every object under the prefix: key and stored size.
    pub async fn list(&self, s3: &aws_sdk_s3::Client) -> Result<Vec<(String, u64)>, AwsFailure> {
        let mut listed = Vec::new();
        let mut pages = s3
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&self.prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| failure(&format!("list s3://{}/{}", self.bucket, self.prefix), e))?;
            listed.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| Some((o.key()?.to_owned(), o.size().unwrap_or(0).max(0) as u64))),
            );
        }
        Ok(listed)
    }

    /// The S3 client for the bucket and the KMS client for its objects' data keys.
    pub async fn clients(&self) -> (aws_sdk_s3::Client, aws_sdk_kms::Client) {
        let s3 = self.aws.s3(&self.region).await;
        let kms_region = self.kms_region.as_deref().unwrap_or(&self.region);
        (s3, aws_sdk_kms::Client::new(&self.aws.sdk_config(kms_region).await))
    }
}

/// What to restore, and where: `retention-bot decrypt`'s own options.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    #[command(flatten)]
    pub archive: Archive,
    /// Directory to restore into; attachments go to DIR/attachments.
    #[arg(long, value_name = "DIR")]
    pub dest: PathBuf,
}

/// A folder as a key prefix: `a/b`, `/a/b/` and `a/b/` all list `a/b/...`; empty lists everything.
pub fn folder_prefix(folder: &str) -> Result<String, std::convert::Infallible> {
    Ok(match folder.trim_matches('/') {
        "" => String::new(),
        p => format!("{p}/"),
    })
}

/// What happened to one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Decrypted(PathBuf),
    Copied(PathBuf),
    /// An identical file was already at the path (a re-run).
    AlreadyThere(PathBuf),
}

/// Why one object could not be restored. Nothing was written for it.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error(transparent)]
    S3(#[from] AwsFailure),
    #[error("the object's envelope")]
    Envelope(#[from] EnvelopeError),
    #[error(transparent)]
    Cipher(#[from] gcm::GcmError),
    #[error("the body is {got} bytes once decrypted, but x-amz-unencrypted-content-length says {expected}")]
    Length { got: u64, expected: u64 },
    #[error("the object is shorter than a GCM tag: it is truncated")]
    Truncated,
    #[error("unsafe restore path {0:?} (absolute, empty, or with '..'): refusing to write outside the destination")]
    UnsafePath(String),
    #[error("cannot write {path}")]
    Io {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error(
        "{size} bytes, more than the {limit} bytes the bot ever writes in an object of this kind (planted?); not read"
    )]
    TooLarge { size: u64, limit: u64 },
}

/// Every object's outcome, in key order.
#[derive(Debug, Default)]
pub struct Summary {
    pub restored: Vec<(String, Outcome)>,
    pub failed: Vec<(String, ObjectError)>,
}

/// Lists the bucket under the prefix and restores every object; a failed object does not stop the rest.
pub async fn run(options: &Options) -> Result<Summary, AwsFailure> {
    let (s3, kms) = options.archive.clients().await;
    let restorer = Restorer { s3, kms, options };
    let mut summary = Summary::default();
    for (key, _) in options.archive.list(&restorer.s3).await? {
        match restorer.restore(&key).await {
            Ok(outcome) => summary.restored.push((key, outcome)),
            Err(e) => summary.failed.push((key, e)),
        }
    }
    Ok(summary)
}

struct Restorer<'a> {
    s3: aws_sdk_s3::Client,
    kms: aws_sdk_kms::Client,
    options: &'a Options,
}

impl Restorer<'_> {
    async fn restore(&self, key: &str) -> Result<Outcome, ObjectError> {
        let bucket = &self.options.archive.bucket;
        let object = get(&self.s3, bucket, key, None).await?;
        let metadata = object.metadata().cloned().unwrap_or_default();
        let relative = restore_path(key, &self.options.archive.prefix, &metadata)?;
        let target = self.options.dest.join(&relative);
        let mut plain = Plaintext::of(&metadata, &self.kms).await?;
        let encrypted = plain.is_encrypted();
        let parent = target.parent().unwrap_or(&self.options.dest).to_owned();
        let io = |path: &Path| {
            let path = path.to_owned();
            move |error| ObjectError::Io { path, error }
        };
        let mut out = tokio::fs::File::from_std(unnamed_file_in(&parent).map_err(io(&parent))?);

        let mut body = object.body;
        while let Some(data) = plain.read(&mut body, bucket, key).await? {
            tokio::io::AsyncWriteExt::write_all(&mut out, &data)
                .await
                .map_err(io(&target))?;
        }
        plain.finish()?;
        let file = out.into_std().await;
        let outcome_path = target.clone();
        let own_key = key.to_owned();
        let named = tokio::task::spawn_blocking(move || name_file(file, &target, &own_key))
            .await
            .map_err(|e| ObjectError::Io {
                path: outcome_path.clone(),
                error: std::io::Error::other(e),
            })?
            .map_err(io(&outcome_path))?;
        Ok(match (named, encrypted) {
            (Named::Same(p), _) => Outcome::AlreadyThere(p),
            (Named::New(p), true) => Outcome::Decrypted(p),
            (Named::New(p), false) => Outcome::Copied(p),
        })
    }
}

/// An object's body turned back into the file's bytes, chunk by chunk: copied when plain, decrypted
/// when it carries an envelope, with nothing returned as checked until `finish` checked the GCM tag.
pub struct Plaintext {
    envelope: Option<(gcm::Decryptor, Option<u64>)>,
    /// The last TAG_LEN bytes seen so far: the tag, if the body ends here.
    held: Vec<u8>,
    written: u64,
}

impl Plaintext {
    /// For an object with this metadata (the data key, if any, unwrapped with KMS).
    pub async fn of(metadata: &HashMap<String, String>, kms: &aws_sdk_kms::Client) -> Result<Self, ObjectError> {
        let envelope = match StoredEnvelope::from_metadata(metadata)? {
            Some(e) => Some((e.decryptor(kms).await?, e.plain_len)),
            None => None,
        };
        Ok(Self {
            envelope,
            held: Vec::new(),
            written: 0,
        })
    }

    pub fn is_encrypted(&self) -> bool {
        self.envelope.is_some()
    }

    /// The plaintext of the next chunk of the body (less the bytes that may be the tag).
    pub fn next(&mut self, chunk: &[u8]) -> Result<Vec<u8>, ObjectError> {
        let data = match &mut self.envelope {
            None => chunk.to_vec(),
            Some((decryptor, _)) => {
                self.held.extend_from_slice(chunk);
                let ready = self.held.len().saturating_sub(gcm::TAG_LEN);
                let mut data: Vec<u8> = self.held.drain(..ready).collect();
                decryptor.decrypt(&mut data)?;
                data
            }
        };
        self.written += data.len() as u64;
        Ok(data)
    }

    /// The plaintext of the next chunk of `body` (the object `bucket`/`key`); `None` at its end.
    pub async fn read(
        &mut self,
        body: &mut aws_sdk_s3::primitives::ByteStream,
        bucket: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, ObjectError> {
        let chunk = body
            .try_next()
            .await
            .map_err(|e| AwsFailure::caused_by(aws::Retry::Soon, format!("download s3://{bucket}/{key}"), e))?;
        chunk.map(|chunk| self.next(&chunk)).transpose()
    }

    /// Checks the tag and the length: only then is what `next` and `read` returned the file.
    pub fn finish(self) -> Result<(), ObjectError> {
        let Some((decryptor, plain_len)) = self.envelope else {
            return Ok(());
        };
        if self.held.len() < gcm::TAG_LEN {
            return Err(ObjectError::Truncated);
        }
        decryptor.finish(&self.held)?;
        match plain_len {
            Some(expected) if expected != self.written => Err(ObjectError::Length {
                got: self.written,
                expected,
            }),
            _ => Ok(()),
        }
    }
}

/// GetObject (of one version, or the current one), with S3's checksum of what it sends checked by
/// the SDK.
async fn get(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    version: Option<&str>,
) -> Result<aws_sdk_s3::operation::get_object::GetObjectOutput, AwsFailure> {
    s3.get_object()
        .bucket(bucket)
        .key(key)
        .set_version_id(version.map(str::to_owned))
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .map_err(|e| match version {
            Some(v) => failure(&format!("download s3://{bucket}/{key} (version {v})"), e),
            None => failure(&format!("download s3://{bucket}/{key}"), e),
        })
}

/// The most of an object `stream` keeps in memory (manifests and head records are far smaller): a
/// planted object under such a name cannot exhaust the reader's memory.
pub(crate) const MAX_KEPT: u64 = 64 << 20;

/// One object read through: its plaintext's length and SHA-256, the plaintext itself when asked
/// for, and what its retention counts from and until.
pub struct Streamed {
    pub plain_len: u64,
    pub sha256: String,
    pub text: Option<Vec<u8>>,
    pub lock_mode: Option<String>,
    pub retain_until: Option<std::time::SystemTime>,
    /// What the retention counts from: the file's close (`wickrio-closed-at`); for an object
    /// without it (written before the bot recorded it), a day before the upload, as the upload may
    /// have come that long after the close.
    pub retained_from: Option<std::time::SystemTime>,
}

/// Streams one object through its decryption and a hash, in memory: nothing touches the disk. Keeps
/// the plaintext only if `keep` (manifests and heads, refused above [`MAX_KEPT`]).
pub async fn stream(
    s3: &aws_sdk_s3::Client,
    kms: &aws_sdk_kms::Client,
    bucket: &str,
    key: &str,
    keep: bool,
) -> Result<Streamed, ObjectError> {
    stream_keeping(s3, kms, bucket, key, None, keep.then_some(MAX_KEPT)).await
}

/// As [`stream`], of one version (or the current one), keeping the plaintext up to `keep` bytes (a
/// larger object is refused before it is read).
pub(crate) async fn stream_keeping(
    s3: &aws_sdk_s3::Client,
    kms: &aws_sdk_kms::Client,
    bucket: &str,
    key: &str,
    version: Option<&str>,
    keep: Option<u64>,
) -> Result<Streamed, ObjectError> {
    let mut object = Opened::open(s3, kms, bucket, key, version).await?;
    let limit = keep.unwrap_or(0);
    // Stored: the plaintext, and a GCM tag when encrypted.
    if keep.is_some() && object.size > limit + gcm::TAG_LEN as u64 {
        return Err(ObjectError::TooLarge {
            size: object.size,
            limit,
        });
    }
    let mut out = Streamed {
        plain_len: 0,
        sha256: String::new(),
        text: keep.map(|_| Vec::new()),
        lock_mode: object.lock_mode.take(),
        retain_until: object.retain_until,
        retained_from: object.retained_from,
    };
    let mut hasher = Sha256::new();
    while let Some(data) = object.read().await? {
        hasher.update(&data);
        out.plain_len += data.len() as u64;
        if let Some(text) = &mut out.text {
            if (text.len() + data.len()) as u64 > limit {
                return Err(ObjectError::TooLarge {
                    size: (text.len() + data.len()) as u64,
                    limit,
                });
            }
            text.extend_from_slice(&data);
        }
    }
    object.plain.finish()?;
    out.sha256 = hex::encode(hasher.finalize());
    Ok(out)
}

/// An object being read: its plaintext chunk by chunk (authenticated only once `plain.finish()`
/// checked the tag), and what it says of its retention.
pub struct Opened {
    body: aws_sdk_s3::primitives::ByteStream,
    pub plain: Plaintext,
    bucket: String,
    key: String,
    /// Bytes stored.
    pub size: u64,
    pub lock_mode: Option<String>,
    pub retain_until: Option<std::time::SystemTime>,
    /// See [`Streamed::retained_from`].
    pub retained_from: Option<std::time::SystemTime>,
}

impl Opened {
    pub async fn open(
        s3: &aws_sdk_s3::Client,
        kms: &aws_sdk_kms::Client,
        bucket: &str,
        key: &str,
        version: Option<&str>,
    ) -> Result<Opened, ObjectError> {
        use std::time::SystemTime;
        let object = get(s3, bucket, key, version).await?;
        let metadata = object.metadata().cloned().unwrap_or_default();
        let to_time = |t: &aws_sdk_s3::primitives::DateTime| SystemTime::try_from(*t).ok();
        let closed_at = metadata
            .get(metadata::CLOSED_AT)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(SystemTime::from);
        Ok(Opened {
            size: object.content_length().and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
            lock_mode: object.object_lock_mode().map(|m| m.as_str().to_owned()),
            retain_until: object.object_lock_retain_until_date().and_then(to_time),
            retained_from: closed_at.or_else(|| {
                let uploaded = object.last_modified().and_then(to_time)?;
                uploaded.checked_sub(std::time::Duration::from_secs(24 * 3600))
            }),
            plain: Plaintext::of(&metadata, kms).await?,
            body: object.body,
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        })
    }

    /// The plaintext of the next chunk; `None` at the end (then call `plain.finish()`).
    pub async fn read(&mut self) -> Result<Option<Vec<u8>>, ObjectError> {
        self.plain.read(&mut self.body, &self.bucket, &self.key).await
    }
}

/// Where an object goes under the destination: its `wickrio-file-path` (attachments, typed
/// `file`, under `attachments/`), or its key without the prefix. Anything that could climb out of the
/// destination is refused: object metadata is input like any other.
fn restore_path(key: &str, prefix: &str, metadata: &HashMap<String, String>) -> Result<PathBuf, ObjectError> {
    let named = metadata::file_path(metadata);
    // Metadata names a file, never a directory to put it in: the bot's names hold no '/'.
    if let Some(name) = named.as_deref().filter(|n| n.contains('/')) {
        return Err(ObjectError::UnsafePath(name.to_owned()));
    }
    let relative = named.unwrap_or_else(|| {
        key.strip_prefix(prefix)
            .unwrap_or(key)
            .trim_start_matches('/')
            .to_owned()
    });
    let path = Path::new(&relative);
    let safe = !relative.is_empty()
        && !relative.contains('\0')
        && path.components().all(|c| matches!(c, Component::Normal(_)));
    if !safe {
        return Err(ObjectError::UnsafePath(relative));
    }
    Ok(match metadata.get(TYPE).map(String::as_str) {
        Some("file") => Path::new("attachments").join(path),
        _ => path.to_owned(),
    })
}

/// A file with no name in `dir`, so a crash leaves nothing behind.
fn unnamed_file_in(dir: &Path) -> std::io::Result<File> {
    std::fs::create_dir_all(dir)?;
    let fd = nix::fcntl::open(
        dir,
        OFlag::O_TMPFILE | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(|e| {
        std::io::Error::other(format!(
            "cannot create an unnamed file in {} ({e}); the file system must support O_TMPFILE (ext4, xfs, btrfs, tmpfs do)",
            dir.display(), e = crate::error_chain::Chain(&e)))
    })?;
    Ok(File::from(fd))
}

enum Named {
    New(PathBuf),
    /// An identical file already had the name.
    Same(PathBuf),
}

/// Syncs the authenticated file and links it at `target`. If another file already has that name,
/// an identical one means a re-run; a different one (two bots' attachments with the same name) is
/// kept, and this one is linked under the object key's own, unique file name beside it.
fn name_file(mut file: File, target: &Path, key: &str) -> std::io::Result<Named> {
    file.flush()?;
    file.sync_all()?;
    let link = |at: &Path| {
        use std::os::fd::AsRawFd;
        let proc_path = format!("/proc/self/fd/{}", file.as_raw_fd());
        nix::unistd::linkat(AT_FDCWD, proc_path.as_str(), AT_FDCWD, at, AtFlags::AT_SYMLINK_FOLLOW)
    };
    match link(target) {
        Ok(()) => {}
        Err(nix::errno::Errno::EEXIST) => {
            if sha256_of(target)? == sha256_of_fd(&file)? {
                return Ok(Named::Same(target.to_owned()));
            }
            let own_name = key.rsplit('/').next().unwrap_or(key);
            let beside = target.with_file_name(own_name);
            tracing::warn!(existing = %target.display(), restored = %beside.display(), "a different file already has this name; restoring beside it");
            link(&beside).map_err(std::io::Error::from)?;
            sync_parent(&beside)?;
            return Ok(Named::New(beside));
        }
        Err(e) => return Err(e.into()),
    }
    sync_parent(target)?;
    Ok(Named::New(target.to_owned()))
}

fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) => crate::durable::sync_dir(dir),
        None => Ok(()),
    }
}

fn sha256_of(path: &Path) -> std::io::Result<[u8; 32]> {
    sha256_of_fd(&File::open(path)?)
}

fn sha256_of_fd(file: &File) -> std::io::Result<[u8; 32]> {
    use std::io::{Read, Seek};
    // The unnamed file was opened write-only: read it back through /proc.
    let mut reader = File::open(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(file)))?;
    reader.rewind()?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(hasher.finalize().into());
        }
        hasher.update(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_lists_its_own_keys_whatever_its_slashes() {
        for folder in ["a/b", "/a/b/", "a/b/"] {
            assert_eq!(folder_prefix(folder).unwrap(), "a/b/");
        }
        assert_eq!(folder_prefix("").unwrap(), "");
        assert_eq!(folder_prefix("/").unwrap(), "");
    }

    fn meta(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn restore_paths_follow_the_metadata_and_stay_inside() {
        let m = meta(&[("wickrio-type", "file"), ("wickrio-file-path", "attachment_1_a.pdf")]);
        assert_eq!(
            restore_path("f/attachment_1_tag_a.pdf", "f/", &m).unwrap(),
            Path::new("attachments/attachment_1_a.pdf")
        );
        let m = meta(&[("wickrio-type", "message"), ("wickrio-file-path", "m.txt")]);
        assert_eq!(restore_path("f/m.txt", "f", &m).unwrap(), Path::new("m.txt"));
        assert_eq!(restore_path("f/sub/x", "f", &meta(&[])).unwrap(), Path::new("sub/x"));
        let m = meta(&[
            ("wickrio-type", "file"),
            ("wickrio-file-path", "r%C3%A9sum%C3%A9%20%E5%A0%B1.pdf"),
            ("wickrio-file-path-encoding", "percent"),
        ]);
        assert_eq!(
            restore_path("f/k", "f", &m).unwrap(),
            Path::new("attachments/résumé 報.pdf")
        );
        for bad in [
            "../x",
            "/etc/passwd",
            "a/../../x",
            "",
            "a\0b",
            "%2E%2E/x",
            "a%00b",
            "sub/dir/x",
        ] {
            let m = meta(&[("wickrio-file-path", bad), ("wickrio-file-path-encoding", "percent")]);
            assert!(
                matches!(restore_path("k", "", &m), Err(ObjectError::UnsafePath(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn an_unnamed_file_gets_its_name_only_when_linked() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = unnamed_file_in(dir.path()).unwrap();
        f.write_all(b"hello").unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let target = dir.path().join("x.txt");
        assert!(matches!(name_file(f, &target, "k/x.txt").unwrap(), Named::New(_)));
        assert_eq!(std::fs::read(&target).unwrap(), b"hello");

        let mut same = unnamed_file_in(dir.path()).unwrap();
        same.write_all(b"hello").unwrap();
        assert!(matches!(name_file(same, &target, "k/x.txt").unwrap(), Named::Same(_)));

        let mut other = unnamed_file_in(dir.path()).unwrap();
        other.write_all(b"other").unwrap();
        let Named::New(beside) = name_file(other, &target, "k/x_tag.txt").unwrap() else {
            panic!()
        };
        assert_eq!(beside, dir.path().join("x_tag.txt"));
        assert_eq!(std::fs::read(&target).unwrap(), b"hello");
        assert_eq!(std::fs::read(&beside).unwrap(), b"other");
    }
}
