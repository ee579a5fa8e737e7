//! Object Lock (write once, read many): the retention every object is written under, and the
//! start-up check that the bucket can hold it.
//!
//! S3 takes the lock headers on PutObject and CreateMultipartUpload and requires a checksum with
//! them (every upload here carries CRC32C). Writing them needs `s3:PutObjectRetention`; the check
//! needs `s3:GetBucketObjectLockConfiguration`.

use std::time::{Duration, SystemTime};

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::DateTime;
use aws_sdk_s3::types::{ObjectLockEnabled, ObjectLockMode};

use crate::aws;
use crate::config::{ObjectLock, S3Config};

/// A retention that has run out by the time of its upload (a file that waited on disk longer than
/// the retention), or that would within [`LEAST_AHEAD`], is extended to this from the upload: S3
/// refuses a date in the past, and every object must be locked.
const LEAST_REMAINING: Duration = Duration::from_secs(24 * 3600);

/// How far ahead a retention date must lie when the upload starts, so that it is still ahead when
/// the last part of a large upload arrives.
const LEAST_AHEAD: Duration = Duration::from_secs(3600);

/// The answer S3 gives for a bucket without Object Lock.
const NOT_ENABLED: &str = "ObjectLockConfigurationNotFoundError";

/// How long the start-up check may take: an S3 outage must not hold up capture.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// The lock headers of one object.
#[derive(Debug, Clone)]
pub(crate) struct Retention {
    pub mode: ObjectLockMode,
    pub until: DateTime,
    /// The retention counted from the close had already run out (or nearly): the object gets
    /// [`LEAST_REMAINING`] from the upload instead.
    pub extended: bool,
}

impl Retention {
    /// Retained `lock.days` from `closed` (when the file was closed); if that date has passed, or
    /// lies less than [`LEAST_AHEAD`] away, a day from `now` instead. A close time in the future (a
    /// clock stepped back, a touched file) counts as now: a lock longer than configured could not be
    /// shortened in compliance mode.
    pub fn for_file(lock: ObjectLock, closed: SystemTime, now: SystemTime) -> Self {
        let days = Duration::from_secs(u64::from(lock.days) * 24 * 3600);
        let floor = now + LEAST_REMAINING;
        // At most 100 years past a time no later than now: this cannot overflow a SystemTime.
        let until = closed.min(now).checked_add(days).unwrap_or(floor);
        let extended = until < now + LEAST_AHEAD;
        Self {
            mode: ObjectLockMode::from(lock.mode.as_str()),
            until: DateTime::from(if extended { floor } else { until }),
            extended,
        }
    }
}

/// The bucket cannot hold what the configuration asks for.
#[derive(Debug, thiserror::Error)]
#[error(
    "WICKRIO_S3_OBJECT_LOCK_MODE: bucket {bucket:?} does not have Object Lock enabled, so its objects cannot be retained; enable Object Lock on the bucket (S3 console: Properties, Object Lock; it needs versioning, and cannot be turned off again), or unset WICKRIO_S3_OBJECT_LOCK_MODE and WICKRIO_S3_RETENTION_DAYS"
)]
pub struct LockNotEnabled {
    pub bucket: String,
}

/// Reads the bucket's Object Lock configuration. A lock mode for a bucket without Object Lock is
/// refused (every upload would be refused). Otherwise says what applies: this bot's retention, or
/// the bucket's default. A check that cannot be made (no permission, S3 unreachable) is a warning
/// when a mode is set, and nothing else: the uploads themselves report a refusal.
pub(crate) async fn check_bucket(client: &aws_sdk_s3::Client, config: &S3Config) -> Result<(), LockNotEnabled> {
    let bucket = &config.bucket;
    let call = client.get_object_lock_configuration().bucket(bucket).send();
    let answer = match tokio::time::timeout(CHECK_TIMEOUT, call).await {
        Ok(answer) => answer,
        Err(_) => {
            if config.object_lock.is_some() {
                tracing::warn!(
                    bucket,
                    "cannot check the bucket's Object Lock configuration: S3 did not answer in {} s; uploads will say if it is missing",
                    CHECK_TIMEOUT.as_secs()
                );
            }
            return Ok(());
        }
    };
    let lock = match answer {
        Ok(out) => out.object_lock_configuration,
        Err(e) if e.as_service_error().and_then(|s| s.code()) == Some(NOT_ENABLED) => None,
        Err(e) => {
            if config.object_lock.is_some() {
                let e = aws::failure(&format!("read the Object Lock configuration of s3://{bucket}"), e);
                // A refusal is most likely the permission; anything else (network, credentials) says itself.
                let hint = if e.retry == aws::Retry::Slowly {
                    " (needs s3:GetBucketObjectLockConfiguration)"
                } else {
                    ""
                };
                tracing::warn!(error = %crate::error_chain::Chain(&e), "cannot check the bucket's Object Lock configuration{hint}; uploads will say if it is missing");
            }
            return Ok(());
        }
    };
    let enabled = lock.as_ref().and_then(|l| l.object_lock_enabled()) == Some(&ObjectLockEnabled::Enabled);
    let default = lock
        .as_ref()
        .and_then(|l| l.rule())
        .and_then(|r| r.default_retention())
        .map(|d| {
            let period = match (d.days(), d.years()) {
                (Some(days), _) => format!("{days} days"),
                (None, Some(years)) => format!("{years} years"),
                (None, None) => "an unstated period".to_owned(),
            };
            let mode = d.mode().map_or("no mode", |m| m.as_str()).to_owned();
            format!("{mode} for {period}")
        });
    match (config.object_lock, enabled) {
        (Some(_), false) => Err(LockNotEnabled { bucket: bucket.clone() }),
        (Some(lock), true) => {
            tracing::info!(
                bucket,
                mode = lock.mode.as_str(),
                days = lock.days,
                bucket_default = default.as_deref().unwrap_or("none"),
                "every object is written under Object Lock retention (this overrides the bucket's default)"
            );
            Ok(())
        }
        (None, _) => {
            if let Some(default) = default {
                tracing::info!(
                    bucket,
                    "WICKRIO_S3_OBJECT_LOCK_MODE is not set: the bucket's default Object Lock retention applies to every object: {default}"
                );
            }
            Ok(())
        }
    }
}

/// The check at start-up: it holds up the start (at most a few seconds) only when a lock mode is
/// set, which it can refuse; otherwise it runs alongside, to say what the bucket applies.
pub async fn check_at_start(config: &S3Config, aws: &aws::Aws) -> Result<(), LockNotEnabled> {
    let client = aws.s3(&config.region).await;
    if config.object_lock.is_some() {
        return check_bucket(&client, config).await;
    }
    let config = config.clone();
    tokio::spawn(async move {
        let _ = check_bucket(&client, &config).await;
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LockMode;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    #[test]
    fn retained_from_the_close_and_never_less_than_a_day_from_the_upload() {
        let lock = ObjectLock {
            mode: LockMode::Compliance,
            days: 30,
        };
        let closed = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let r = Retention::for_file(lock, closed, closed + DAY);
        assert_eq!(r.mode, ObjectLockMode::Compliance);
        assert_eq!(r.until, DateTime::from(closed + 30 * DAY));
        assert!(!r.extended);
        // Waited on disk 40 days: retained a day from the upload, not in the past.
        let late = closed + 40 * DAY;
        let r = Retention::for_file(lock, closed, late);
        assert_eq!(r.until, DateTime::from(late + DAY));
        assert!(r.extended);
        // Closed "in the future" (the clock stepped back): counted from now, never longer.
        let r = Retention::for_file(lock, closed + 5 * DAY, closed);
        assert_eq!(r.until, DateTime::from(closed + 30 * DAY));
        // Half an hour of retention left at the upload: too close, a day from the upload.
        let r = Retention::for_file(lock, closed, closed + 30 * DAY - Duration::from_secs(1800));
        assert!(r.extended);
        // Half a day left: kept as counted from the close, no warning.
        let r = Retention::for_file(lock, closed, closed + 30 * DAY - DAY / 2);
        assert_eq!((r.until, r.extended), (DateTime::from(closed + 30 * DAY), false));
    }

    /// One day of retention (allowed) counts from the close like any other, with no warning: only
    /// a date that has passed is moved.
    #[test]
    fn a_one_day_retention_counts_from_the_close_without_a_warning() {
        let lock = ObjectLock {
            mode: LockMode::Governance,
            days: 1,
        };
        let closed = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let r = Retention::for_file(lock, closed, closed + Duration::from_secs(10));
        assert_eq!((r.until, r.extended), (DateTime::from(closed + DAY), false));
    }

    #[test]
    fn the_refusal_says_what_to_change() {
        let e = LockNotEnabled { bucket: "b".into() }.to_string();
        assert!(
            e.starts_with("WICKRIO_S3_OBJECT_LOCK_MODE: bucket \"b\" does not have Object Lock enabled"),
            "{e}"
        );
        assert!(e.contains("unset WICKRIO_S3_OBJECT_LOCK_MODE"), "{e}");
    }
}
