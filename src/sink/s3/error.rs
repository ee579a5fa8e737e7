//! Why one attempt at uploading a file did not upload it, and what that means for its retry.
//!
//! Each variant says what failed; its cause is kept typed as `source()` and printed with the rest of
//! the chain where the failure is reported (`error_chain::Chain`).

use std::io;
use std::path::PathBuf;

use crate::aws::{AwsFailure, Retry};
use crate::envelope::gcm::GcmError;

/// One failed attempt at one file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UploadError {
    /// The file was removed before its upload (found gone: nothing to upload, nothing to retry).
    #[error("{} vanished before its upload; nothing to upload", .0.display())]
    Gone(PathBuf),
    /// The local file could not be opened or read.
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        error: io::Error,
    },
    /// The file could not be hashed for its attachment key.
    #[error("cannot hash {} for its key", path.display())]
    Hash {
        path: PathBuf,
        #[source]
        error: io::Error,
    },
    /// KMS issued no data key: nothing is uploaded unencrypted.
    #[error(transparent)]
    Kms(AwsFailure),
    /// The cipher failed (OpenSSL refused a context or a step).
    #[error("cannot encrypt")]
    Cipher(#[source] GcmError),
    /// S3 failed or refused a call.
    #[error(transparent)]
    S3(AwsFailure),
    /// A task of the upload (reader, part sender, hasher) panicked or was cancelled.
    #[error("the {what} task failed")]
    Task {
        what: &'static str,
        #[source]
        error: tokio::task::JoinError,
    },
    /// The reader ended before the file's last byte (it panicked): nothing was stored.
    #[error(
        "the reader stopped after {read} of the {expected} bytes of s3://.../{key}: nothing was stored; the local copy is kept"
    )]
    ReaderStopped { key: String, read: u64, expected: u64 },
    /// The file no longer holds what its manifest entry lists: nothing was stored.
    #[error(
        "{} no longer holds what its manifest entry lists (SHA-256 read {read}, listed {listed}): nothing was stored; the local copy is kept",
        path.display()
    )]
    Changed {
        path: PathBuf,
        listed: String,
        read: String,
    },
    /// The key already holds an object that is not this file, or that the bot cannot compare with
    /// it: uploads never overwrite, and the file waits on disk.
    #[error(
        "s3://{bucket}/{key} already holds {found}: uploads never overwrite, so the file waits on disk; move that object aside, or find what else writes under this bucket and folder"
    )]
    Conflict { bucket: String, key: String, found: String },
    /// S3 took other than what the file holds, or the file changed since it was closed: the local
    /// copy is kept.
    #[error(
        "{} is {} on disk and was {closed} bytes when closed; {read} bytes were read and {sent} sent (expected {expected}): the local copy is kept",
        path.display(),
        on_disk.map_or_else(|| "unreadable".to_owned(), |n| format!("{n} bytes")),
    )]
    Incomplete {
        path: PathBuf,
        on_disk: Option<u64>,
        closed: u64,
        read: u64,
        sent: u64,
        expected: u64,
    },
}

/// Which service an attempt failed at: each has its own failing and recovered events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    S3 = 0,
    Kms = 1,
}

impl UploadError {
    /// How soon trying again may help: a refusal or a local file that cannot be read waits long,
    /// anything passing (network, throttling, a task that died) is tried again soon.
    pub fn retry(&self) -> Retry {
        match self {
            Self::Kms(e) | Self::S3(e) => e.retry,
            Self::Read { .. }
            | Self::Incomplete { .. }
            | Self::Changed { .. }
            | Self::Gone(_)
            | Self::Conflict { .. } => Retry::Slowly,
            Self::Hash { .. } | Self::Cipher(_) | Self::Task { .. } | Self::ReaderStopped { .. } => Retry::Soon,
        }
    }

    /// The service operators hear about: KMS for a data key KMS would not give, S3 for the rest.
    pub fn service(&self) -> Service {
        match self {
            Self::Kms(_) => Service::Kms,
            _ => Service::S3,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_wait_long_passing_troubles_retry_soon_and_kms_is_its_own_service() {
        let refused = AwsFailure::new(Retry::Slowly, "upload", "AccessDenied");
        let throttled = AwsFailure::new(Retry::Soon, "upload", "SlowDown");
        assert_eq!(UploadError::S3(refused.clone()).retry(), Retry::Slowly);
        assert_eq!(UploadError::S3(throttled.clone()).retry(), Retry::Soon);
        assert_eq!(UploadError::Kms(refused).service(), Service::Kms);
        assert_eq!(UploadError::S3(throttled).service(), Service::S3);
        let unreadable = UploadError::Read {
            path: "/x".into(),
            error: io::Error::from(io::ErrorKind::PermissionDenied),
        };
        assert_eq!(unreadable.retry(), Retry::Slowly);
        assert_eq!(unreadable.to_string(), "cannot read /x");
        let chain = crate::error_chain::chain(&unreadable);
        assert!(
            chain.starts_with("cannot read /x: ") && chain.len() > "cannot read /x: ".len(),
            "{chain}"
        );
        assert_eq!(
            UploadError::Cipher(GcmError::Cipher("EVP_EncryptUpdate")).retry(),
            Retry::Soon
        );
    }

    #[test]
    fn an_incomplete_upload_says_every_figure() {
        let e = UploadError::Incomplete {
            path: "/s/f.txt".into(),
            on_disk: None,
            closed: 10,
            read: 10,
            sent: 9,
            expected: 26,
        };
        assert_eq!(
            e.to_string(),
            "/s/f.txt is unreadable on disk and was 10 bytes when closed; 10 bytes were read and 9 sent (expected 26): the local copy is kept"
        );
    }
}
