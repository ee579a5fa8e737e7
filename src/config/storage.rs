//! Where closed files go: the S3 bucket and, for client-side encryption, the KMS key.

use std::time::Duration;

use super::ConfigError;
use super::aws_names::{KMS_KEY, arn_region, check_region};

/// AES-GCM encrypts at most 2^36 - 32 bytes under one IV: the cap on one encrypted object.
const GCM_MAX_PLAINTEXT: u64 = (1 << 36) - 32;
/// Message files and attachments stay this far below the GCM cap when encryption is on: a file
/// rotates at a line boundary, so it may overshoot its size limit by one batch.
const ENCRYPTED_FILE_LIMIT: u64 = 60 << 30;
const _: () = assert!(ENCRYPTED_FILE_LIMIT < GCM_MAX_PLAINTEXT);
/// With S3, the original's defaults (1000000000 KiB, no time limit) would keep one file open, and
/// un-uploaded, for ever: the size limit defaults to 1 GiB, and with neither limit set, files also
/// rotate every 10 minutes.
pub(super) const S3_DEFAULT_ROTATION: (u64, Option<Duration>) = (1 << 30, Some(Duration::from_secs(600)));

/// Longest key prefix: S3 keys are at most 1,024 bytes, and the file names after it need the rest.
const MAX_FOLDER_BYTES: usize = 512;

/// Longest Object Lock retention accepted: 100 years, as S3's own limit on a bucket's default
/// retention. Anything longer is a typo (days taken for hours, a year for days).
const MAX_RETENTION_DAYS: u64 = 36_500;

/// The bucket closed files are uploaded to.
#[derive(Debug, Clone)]
pub struct S3Config {
    pub bucket: String,
    pub region: String,
    /// Key prefix without leading or trailing `/`; empty for the bucket's root.
    pub folder: String,
    /// `Some`: every object is encrypted client-side; nothing is ever uploaded plain.
    pub kms: Option<KmsConfig>,
    /// `Some`: every object is written under Object Lock retention (write once, read many).
    pub object_lock: Option<ObjectLock>,
    /// `Some`: the daemon checks the bucket as `verify s3://` does, this often.
    pub verify_every: Option<std::time::Duration>,
}

/// Object Lock retention for every object: S3 refuses to delete or overwrite an object version
/// until `days` after its file was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectLock {
    pub mode: LockMode,
    pub days: u32,
}

/// S3's two retention modes. Governance: users with `s3:BypassGovernanceRetention` may still delete
/// early. Compliance: nobody can, not even the account's root user, until the date has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    Governance,
    Compliance,
}

impl LockMode {
    /// As S3 spells it (`x-amz-object-lock-mode`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Governance => "GOVERNANCE",
            Self::Compliance => "COMPLIANCE",
        }
    }
}

impl S3Config {
    /// `<folder>/<name>`, or `<name>` without a folder.
    pub(crate) fn key_for(&self, name: &str) -> String {
        if self.folder.is_empty() {
            name.to_owned()
        } else {
            format!("{}/{name}", self.folder)
        }
    }
}

/// The KMS key that wraps each object's data key.
#[derive(Debug, Clone)]
pub struct KmsConfig {
    /// The key or alias ARN; with `period` set, a template holding `{yyyy}` (and `{mm}`).
    pub key_arn: String,
    /// `Some`: each year's or month's files go under that period's key (the template filled in).
    pub period: Option<crate::period::Granularity>,
    /// `WICKRIO_KMS_CREATE_PERIOD_KEYS`: the bot creates a coming period's key and alias itself.
    pub create_period_keys: bool,
    pub region: String,
    /// `Some`: a data key serves several objects (each with its own random IV) before it is dropped.
    pub reuse: Option<DataKeyReuse>,
    /// `WICKRIO_S3_ENCRYPTION_FORMAT`: V2 (the original's) or V3 (key commitment).
    pub format: Format,
}

/// Which message format objects are written in (`WICKRIO_S3_ENCRYPTION_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// What the original bot and its decryption sample read.
    #[default]
    V2,
    /// Key commitment (`ALG_AES_256_GCM_HKDF_SHA512_COMMIT_KEY`), what current official clients read
    /// by default.
    V3,
}

/// `WICKRIO_S3_ENCRYPTION_FORMAT`: `v2` (the default) or `v3`.
fn encryption_format(get: &impl Fn(&str) -> Option<String>) -> Result<Format, ConfigError> {
    match get(FORMAT).map(|f| f.to_ascii_lowercase()).as_deref() {
        None | Some("v2") => Ok(Format::V2),
        Some("v3") => Ok(Format::V3),
        Some(other) => Err(ConfigError::new(
            FORMAT,
            format!("{other:?} is not an encryption format"),
            "v2 (what the original bot and its decryption sample read) or v3 (key commitment, what current official S3 Encryption Clients read by default)",
        )),
    }
}

const FORMAT: &str = "WICKRIO_S3_ENCRYPTION_FORMAT";
/// KMS takes key ARNs of at most 2,048 bytes; manifest entries name the key, within their bound.
const MAX_KEY_NAME: usize = 2048;
const CREATE_KEYS: &str = "WICKRIO_KMS_CREATE_PERIOD_KEYS";

/// A period template (`{yyyy}`, `{mm}`) in `WICKRIO_KMS_MSTRKEY_ARN`: only in an alias, since a
/// key's id is random and cannot name a period.
fn key_period(key_arn: &str) -> Result<Option<crate::period::Granularity>, ConfigError> {
    const VAR: &str = "WICKRIO_KMS_MSTRKEY_ARN";
    let accepted = "a key or alias ARN, alias/<name>, or an alias template such as arn:aws:kms:eu-west-1:111122223333:alias/retention-{yyyy}-{mm} or alias/retention-{yyyy}-{mm} (a key per month), or ...alias/retention-{yyyy} (a key per year)";
    let period = crate::period::Granularity::of_template(key_arn).map_err(|e| ConfigError::new(VAR, e, accepted))?;
    if period.is_some() && !key_arn.contains(":alias/") && !key_arn.starts_with("alias/") {
        return Err(ConfigError::new(
            VAR,
            format!("{key_arn:?} puts a period placeholder in a key ARN; only an alias can name a period"),
            accepted,
        ));
    }
    Ok(period)
}

/// How long, and for how many objects, one data key is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataKeyReuse {
    pub max_age: Duration,
    pub max_objects: u64,
}

/// Most objects under one data key: AES-GCM with random 96-bit IVs stays far inside its bound
/// (2^32 messages per key, NIST SP 800-38D) at 2^20.
pub(crate) const MAX_DATAKEY_OBJECTS: u64 = 1 << 20;
/// Longest a data key is kept: a day.
const MAX_DATAKEY_AGE_SECS: u64 = 86_400;
/// The other bound when only one is set.
const DEFAULT_DATAKEY_AGE_SECS: u64 = 300;
const DEFAULT_DATAKEY_OBJECTS: u64 = 1000;

/// `WICKRIO_KMS_DATAKEY_MAX_AGE_SECS` and `WICKRIO_KMS_DATAKEY_MAX_OBJECTS`: off unless one is set.
fn datakey_reuse(get: &impl Fn(&str) -> Option<String>) -> Result<Option<DataKeyReuse>, ConfigError> {
    const AGE: &str = "WICKRIO_KMS_DATAKEY_MAX_AGE_SECS";
    const OBJECTS: &str = "WICKRIO_KMS_DATAKEY_MAX_OBJECTS";
    if get(AGE).is_none() && get(OBJECTS).is_none() {
        return Ok(None);
    }
    let age = super::parse_u64_in(get, AGE, DEFAULT_DATAKEY_AGE_SECS, 1..=MAX_DATAKEY_AGE_SECS, "seconds")?;
    let objects = super::parse_u64_in(
        get,
        OBJECTS,
        DEFAULT_DATAKEY_OBJECTS,
        1..=MAX_DATAKEY_OBJECTS,
        "objects",
    )?;
    Ok(Some(DataKeyReuse {
        max_age: Duration::from_secs(age),
        max_objects: objects,
    }))
}

pub(super) fn s3_config(get: &impl Fn(&str) -> Option<String>) -> Result<Option<S3Config>, ConfigError> {
    let key_arn = get("WICKRIO_KMS_MSTRKEY_ARN");
    let Some(bucket) = get("WICKRIO_S3_BUCKET_NAME") else {
        for (var, what) in [
            ("WICKRIO_KMS_MSTRKEY_ARN", "encryption applies to uploads only"),
            ("WICKRIO_KMS_DATAKEY_MAX_AGE_SECS", "data keys encrypt uploads only"),
            ("WICKRIO_KMS_DATAKEY_MAX_OBJECTS", "data keys encrypt uploads only"),
            (CREATE_KEYS, "period keys encrypt uploads only"),
            (FORMAT, "encryption applies to uploads only"),
            ("WICKRIO_S3_OBJECT_LOCK_MODE", "Object Lock applies to uploads only"),
            ("WICKRIO_S3_RETENTION_DAYS", "Object Lock applies to uploads only"),
            ("WICKRIO_VERIFY_EVERY_HOURS", "the scheduled check reads the bucket"),
        ] {
            if get(var).is_some() {
                return Err(ConfigError::new(
                    var,
                    format!("is set, but WICKRIO_S3_BUCKET_NAME is not: {what}"),
                    format!("set WICKRIO_S3_BUCKET_NAME too, or unset {var}"),
                ));
            }
        }
        return Ok(None);
    };
    check_bucket_name(&bucket)?;
    let region = get("WICKRIO_S3_REGION").unwrap_or_else(|| "us-east-1".to_owned());
    check_region("WICKRIO_S3_REGION", &region)?;
    let folder = get("WICKRIO_S3_FOLDER_NAME")
        .map(|f| f.trim_matches('/').to_owned())
        .unwrap_or_default();
    if folder.split('/').any(|part| part == "." || part == "..") || folder.chars().any(char::is_control) {
        return Err(ConfigError::new(
            "WICKRIO_S3_FOLDER_NAME",
            format!("{folder:?} has a '.' or '..' segment or a control character"),
            "a key prefix such as retention/bot1",
        ));
    }
    // S3 keys hold at most 1,024 bytes; the longest name the bot gives an object (an attachment's,
    // or a message file's with a 100-character basename) needs about 460 of them.
    if folder.len() > MAX_FOLDER_BYTES {
        return Err(ConfigError::new(
            "WICKRIO_S3_FOLDER_NAME",
            format!(
                "is {} bytes long, which leaves too little of S3's 1,024-byte key for the file names",
                folder.len()
            ),
            format!("a key prefix of at most {MAX_FOLDER_BYTES} bytes"),
        ));
    }
    let kms = kms_config(get, key_arn, &region)?;
    Ok(Some(S3Config {
        bucket,
        region,
        folder,
        kms,
        object_lock: object_lock(get)?,
        verify_every: verify_every(get)?,
    }))
}

/// `WICKRIO_KMS_MSTRKEY_ARN` and what goes with it, for a bucket in `bucket_region`; `None`: plain
/// uploads (and then none of its companions may be set).
fn kms_config(
    get: &impl Fn(&str) -> Option<String>,
    key_arn: Option<String>,
    bucket_region: &str,
) -> Result<Option<KmsConfig>, ConfigError> {
    Ok(match key_arn {
        None => {
            for var in [
                "WICKRIO_KMS_DATAKEY_MAX_AGE_SECS",
                "WICKRIO_KMS_DATAKEY_MAX_OBJECTS",
                CREATE_KEYS,
                FORMAT,
            ] {
                if get(var).is_some() {
                    return Err(ConfigError::new(
                        var,
                        "is set, but WICKRIO_KMS_MSTRKEY_ARN is not: nothing is encrypted",
                        format!("set WICKRIO_KMS_MSTRKEY_ARN too, or unset {var}"),
                    ));
                }
            }
            None
        }
        Some(key_arn) => {
            let period = key_period(&key_arn)?;
            if key_arn.len() > MAX_KEY_NAME {
                return Err(ConfigError::new(
                    "WICKRIO_KMS_MSTRKEY_ARN",
                    format!("is {} bytes long", key_arn.len()),
                    format!("a key or alias ARN of at most {MAX_KEY_NAME} bytes, as KMS allows"),
                ));
            }
            let sample = crate::period::Granularity::Month
                .period_of(chrono::Utc::now())
                .fill(&key_arn);
            // `alias/<name>` names an alias in WICKRIO_KMS_REGION, or else in the bucket's region.
            let arn_region = match sample.strip_prefix("alias/") {
                Some(name) if !name.is_empty() && !name.contains(':') => bucket_region.to_owned(),
                _ => arn_region("WICKRIO_KMS_MSTRKEY_ARN", &sample, &KMS_KEY)?,
            };
            let region = get("WICKRIO_KMS_REGION").unwrap_or(arn_region);
            check_region("WICKRIO_KMS_REGION", &region)?;
            let create_period_keys = super::parse_bool(get, CREATE_KEYS)?;
            if create_period_keys && period.is_none() {
                return Err(ConfigError::new(
                    CREATE_KEYS,
                    "is true, but WICKRIO_KMS_MSTRKEY_ARN names one key, not a period template",
                    "an alias template such as arn:aws:kms:eu-west-1:111122223333:alias/retention-{yyyy}-{mm}, or unset WICKRIO_KMS_CREATE_PERIOD_KEYS",
                ));
            }
            Some(KmsConfig {
                key_arn,
                period,
                create_period_keys,
                region,
                reuse: datakey_reuse(get)?,
                format: encryption_format(get)?,
            })
        }
    })
}

/// Longest interval between scheduled archive checks: a year.
const MAX_VERIFY_HOURS: f64 = 8760.0;

/// `WICKRIO_VERIFY_EVERY_HOURS`: hours, decimals allowed (`0.25` is 15 minutes); unset is off.
fn verify_every(get: &impl Fn(&str) -> Option<String>) -> Result<Option<std::time::Duration>, ConfigError> {
    const VAR: &str = "WICKRIO_VERIFY_EVERY_HOURS";
    let Some(text) = get(VAR) else { return Ok(None) };
    let accepted = "hours from 0.001 to 8760, e.g. 24 for a daily check (unset: no scheduled check)";
    let hours: f64 = text
        .parse()
        .map_err(|_| ConfigError::new(VAR, format!("{text:?} is not a number of hours"), accepted))?;
    if !hours.is_finite() || !(0.001..=MAX_VERIFY_HOURS).contains(&hours) {
        return Err(ConfigError::new(VAR, format!("{text:?} is out of range"), accepted));
    }
    Ok(Some(std::time::Duration::from_secs_f64(hours * 3600.0)))
}

/// `WICKRIO_S3_OBJECT_LOCK_MODE` and `WICKRIO_S3_RETENTION_DAYS`: both or neither.
fn object_lock(get: &impl Fn(&str) -> Option<String>) -> Result<Option<ObjectLock>, ConfigError> {
    const DAYS: &str = "WICKRIO_S3_RETENTION_DAYS";
    let days_accepted = format!("whole days from 1 to {MAX_RETENTION_DAYS}, e.g. 2557 (7 years)");
    let Some(mode) = get("WICKRIO_S3_OBJECT_LOCK_MODE") else {
        if get(DAYS).is_some() {
            return Err(ConfigError::new(
                DAYS,
                "is set, but WICKRIO_S3_OBJECT_LOCK_MODE is not: the retention needs a mode",
                "set WICKRIO_S3_OBJECT_LOCK_MODE to GOVERNANCE or COMPLIANCE too, or unset WICKRIO_S3_RETENTION_DAYS",
            ));
        }
        return Ok(None);
    };
    let mode = match mode.to_ascii_uppercase().as_str() {
        "GOVERNANCE" => LockMode::Governance,
        "COMPLIANCE" => LockMode::Compliance,
        _ => {
            return Err(ConfigError::new(
                "WICKRIO_S3_OBJECT_LOCK_MODE",
                format!("{mode:?} is not an Object Lock mode"),
                "GOVERNANCE or COMPLIANCE (unset: no lock)",
            ));
        }
    };
    if get(DAYS).is_none() {
        return Err(ConfigError::new(
            DAYS,
            format!("is required with WICKRIO_S3_OBJECT_LOCK_MODE={}", mode.as_str()),
            days_accepted,
        ));
    }
    let days = super::parse_u64_in(get, DAYS, 2557, 1..=MAX_RETENTION_DAYS, "days")?;
    Ok(Some(ObjectLock {
        mode,
        // At most MAX_RETENTION_DAYS, which fits.
        days: u32::try_from(days).unwrap_or(u32::MAX),
    }))
}

/// With encryption, no file may reach the GCM cap: refuse limits that would let one.
pub(super) fn check_encryptable(max_file_bytes: u64, max_attachment: u64) -> Result<(), ConfigError> {
    let accepted = format!("at most {ENCRYPTED_FILE_LIMIT} bytes (60 GiB) while WICKRIO_KMS_MSTRKEY_ARN is set");
    if max_file_bytes > ENCRYPTED_FILE_LIMIT {
        return Err(ConfigError::new(
            "WICKRIO_COMP_FILESIZE",
            format!(
                "{} KiB is above what one AES-GCM encrypted object can hold",
                max_file_bytes / 1024
            ),
            format!(
                "at most {} KiB while WICKRIO_KMS_MSTRKEY_ARN is set",
                ENCRYPTED_FILE_LIMIT / 1024
            ),
        ));
    }
    if max_attachment > ENCRYPTED_FILE_LIMIT {
        return Err(ConfigError::new(
            "WICKRIO_INGEST_MAX_FILE",
            format!("{max_attachment} bytes is above what one AES-GCM encrypted object can hold"),
            accepted,
        ));
    }
    Ok(())
}

/// S3's bucket naming rules, checked here so a typo fails at start-up, not at the first upload.
fn check_bucket_name(name: &str) -> Result<(), ConfigError> {
    let ok = (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        return Ok(());
    }
    Err(ConfigError::new(
        "WICKRIO_S3_BUCKET_NAME",
        format!("{name:?} is not a valid bucket name"),
        "3 to 63 lowercase letters, digits, '.' or '-', starting and ending with a letter or digit",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<Option<S3Config>, ConfigError> {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        s3_config(&|name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    #[test]
    fn no_bucket_means_local_storage() {
        assert!(parse(&[]).unwrap().is_none());
    }

    #[test]
    fn kms_without_a_bucket_is_refused() {
        let e = parse(&[("WICKRIO_KMS_MSTRKEY_ARN", "arn:aws:kms:eu-west-1:123456789012:key/abc")]).unwrap_err();
        assert_eq!(e.var, "WICKRIO_KMS_MSTRKEY_ARN");
    }

    #[test]
    fn the_scheduled_check_takes_hours_with_a_bucket_and_refuses_the_rest() {
        let bucket = [("WICKRIO_S3_BUCKET_NAME", "archive-1")];
        let with = |extra: &[(&str, &str)]| {
            let vars: Vec<(&str, &str)> = bucket.iter().chain(extra).copied().collect();
            s3_config(&|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string()))
        };
        assert_eq!(with(&[]).unwrap().unwrap().verify_every, None);
        assert_eq!(
            with(&[("WICKRIO_VERIFY_EVERY_HOURS", "24")])
                .unwrap()
                .unwrap()
                .verify_every,
            Some(std::time::Duration::from_secs(86_400))
        );
        assert_eq!(
            with(&[("WICKRIO_VERIFY_EVERY_HOURS", "0.25")])
                .unwrap()
                .unwrap()
                .verify_every,
            Some(std::time::Duration::from_secs(900))
        );
        for bad in ["0", "-1", "nan", "1e9", "daily"] {
            let e = with(&[("WICKRIO_VERIFY_EVERY_HOURS", bad)]).unwrap_err().to_string();
            assert!(e.contains("WICKRIO_VERIFY_EVERY_HOURS"), "{bad}: {e}");
        }
        let alone = s3_config(&|k| (k == "WICKRIO_VERIFY_EVERY_HOURS").then(|| "24".to_owned()));
        assert!(alone.unwrap_err().to_string().contains("WICKRIO_S3_BUCKET_NAME"));
    }

    #[test]
    fn object_lock_takes_a_mode_and_days_together_and_refuses_the_rest() {
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut pairs = vec![("WICKRIO_S3_BUCKET_NAME", "bkt-1")];
            pairs.extend_from_slice(extra);
            parse(&pairs)
        };
        assert_eq!(with(&[]).unwrap().unwrap().object_lock, None);
        let c = with(&[
            ("WICKRIO_S3_OBJECT_LOCK_MODE", "compliance"),
            ("WICKRIO_S3_RETENTION_DAYS", "2557"),
        ]);
        assert_eq!(
            c.unwrap().unwrap().object_lock,
            Some(ObjectLock {
                mode: LockMode::Compliance,
                days: 2557
            })
        );
        for (pairs, var, says) in [
            (
                vec![
                    ("WICKRIO_S3_OBJECT_LOCK_MODE", "WORM"),
                    ("WICKRIO_S3_RETENTION_DAYS", "1"),
                ],
                "WICKRIO_S3_OBJECT_LOCK_MODE",
                "not an Object Lock mode",
            ),
            (
                vec![("WICKRIO_S3_OBJECT_LOCK_MODE", "GOVERNANCE")],
                "WICKRIO_S3_RETENTION_DAYS",
                "is required",
            ),
            (
                vec![("WICKRIO_S3_RETENTION_DAYS", "30")],
                "WICKRIO_S3_RETENTION_DAYS",
                "needs a mode",
            ),
            (
                vec![
                    ("WICKRIO_S3_OBJECT_LOCK_MODE", "GOVERNANCE"),
                    ("WICKRIO_S3_RETENTION_DAYS", "0"),
                ],
                "WICKRIO_S3_RETENTION_DAYS",
                "out of range",
            ),
            (
                vec![
                    ("WICKRIO_S3_OBJECT_LOCK_MODE", "GOVERNANCE"),
                    ("WICKRIO_S3_RETENTION_DAYS", "36501"),
                ],
                "WICKRIO_S3_RETENTION_DAYS",
                "out of range",
            ),
            (
                vec![
                    ("WICKRIO_S3_OBJECT_LOCK_MODE", "GOVERNANCE"),
                    ("WICKRIO_S3_RETENTION_DAYS", "7y"),
                ],
                "WICKRIO_S3_RETENTION_DAYS",
                "not a whole number",
            ),
        ] {
            let e = with(&pairs).unwrap_err();
            assert_eq!(e.var, var, "{pairs:?}: {e}");
            assert!(e.to_string().contains(says), "{pairs:?}: {e}");
        }
        let e = parse(&[("WICKRIO_S3_OBJECT_LOCK_MODE", "GOVERNANCE")]).unwrap_err();
        assert_eq!(e.var, "WICKRIO_S3_OBJECT_LOCK_MODE");
        assert!(e.to_string().contains("WICKRIO_S3_BUCKET_NAME is not"), "{e}");
    }

    #[test]
    fn a_period_template_names_its_granularity_and_a_bad_one_is_refused() {
        use crate::period::Granularity;
        let kms = |arn: &str, extra: &[(&'static str, &'static str)]| {
            let mut pairs = vec![("WICKRIO_S3_BUCKET_NAME", "bkt-1"), ("WICKRIO_KMS_MSTRKEY_ARN", arn)];
            pairs.extend_from_slice(extra);
            parse(&pairs).map(|c| c.and_then(|c| c.kms))
        };
        let monthly = kms("arn:aws:kms:eu-west-1:111122223333:alias/retention-{yyyy}-{mm}", &[])
            .unwrap()
            .unwrap();
        assert_eq!(
            (monthly.period, monthly.region.as_str()),
            (Some(Granularity::Month), "eu-west-1")
        );
        let yearly = kms(
            "arn:aws:kms:eu-west-1:111122223333:alias/retention-{yyyy}",
            &[("WICKRIO_KMS_CREATE_PERIOD_KEYS", "true")],
        )
        .unwrap()
        .unwrap();
        assert_eq!(yearly.period, Some(Granularity::Year));
        assert!(yearly.create_period_keys);
        for (arn, extra, says) in [
            (
                "arn:aws:kms:eu-west-1:111122223333:key/{yyyy}",
                &[][..],
                "only an alias",
            ),
            (
                "arn:aws:kms:eu-west-1:111122223333:alias/r-{mm}",
                &[][..],
                "without {yyyy}",
            ),
            (
                "arn:aws:kms:eu-west-1:111122223333:alias/r-{dd}",
                &[][..],
                "placeholder other",
            ),
            (
                "arn:aws:kms:eu-west-1:111122223333:key/abc",
                &[("WICKRIO_KMS_CREATE_PERIOD_KEYS", "true")][..],
                "not a period template",
            ),
        ] {
            let e = kms(arn, extra).unwrap_err();
            assert!(e.to_string().contains(says), "{arn}: {e}");
        }
    }

    #[test]
    fn a_short_alias_and_a_short_alias_template_take_their_region_from_the_settings() {
        use crate::period::Granularity;
        let kms = |pairs: &[(&'static str, &'static str)]| {
            let mut all = vec![("WICKRIO_S3_BUCKET_NAME", "bkt-1"), ("WICKRIO_S3_REGION", "eu-west-2")];
            all.extend_from_slice(pairs);
            parse(&all).map(|c| c.and_then(|c| c.kms))
        };
        let fixed = kms(&[("WICKRIO_KMS_MSTRKEY_ARN", "alias/retention-archive")])
            .unwrap()
            .unwrap();
        assert_eq!((fixed.period, fixed.region.as_str()), (None, "eu-west-2"));
        let monthly = kms(&[
            ("WICKRIO_KMS_MSTRKEY_ARN", "alias/retention-{yyyy}-{mm}"),
            ("WICKRIO_KMS_REGION", "us-west-2"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            (monthly.period, monthly.region.as_str()),
            (Some(Granularity::Month), "us-west-2")
        );
        let yearly = kms(&[("WICKRIO_KMS_MSTRKEY_ARN", "alias/retention-{yyyy}")])
            .unwrap()
            .unwrap();
        assert_eq!(yearly.period, Some(Granularity::Year));
        for bad in ["alias/", "alias/a:b", "key/{yyyy}", "retention-{yyyy}"] {
            let pairs = [("WICKRIO_KMS_MSTRKEY_ARN", bad)];
            let e = kms(&pairs).unwrap_err();
            assert_eq!(e.var, "WICKRIO_KMS_MSTRKEY_ARN", "{bad}: {e}");
        }
        let long = format!("alias/{}", "a".repeat(MAX_KEY_NAME));
        let e = kms(&[("WICKRIO_KMS_MSTRKEY_ARN", long.leak())]).unwrap_err();
        assert!(e.to_string().contains("bytes long"), "{e}");
    }

    #[test]
    fn folder_is_trimmed_and_keys_join_it() {
        let c = parse(&[("WICKRIO_S3_BUCKET_NAME", "bkt-1"), ("WICKRIO_S3_FOLDER_NAME", "/a/b/")])
            .unwrap()
            .unwrap();
        assert_eq!(c.key_for("x.txt"), "a/b/x.txt");
        assert_eq!(c.region, "us-east-1");
        let c = parse(&[("WICKRIO_S3_BUCKET_NAME", "bkt-1")]).unwrap().unwrap();
        assert_eq!(c.key_for("x.txt"), "x.txt");
    }

    #[test]
    fn bad_values_name_their_variable() {
        let long_folder = "f".repeat(MAX_FOLDER_BYTES + 1);
        for (pairs, var) in [
            (
                vec![
                    ("WICKRIO_S3_BUCKET_NAME", "bkt-1"),
                    ("WICKRIO_S3_FOLDER_NAME", long_folder.as_str()),
                ],
                "WICKRIO_S3_FOLDER_NAME",
            ),
            (vec![("WICKRIO_S3_BUCKET_NAME", "B")], "WICKRIO_S3_BUCKET_NAME"),
            (vec![("WICKRIO_S3_BUCKET_NAME", "my_bucket")], "WICKRIO_S3_BUCKET_NAME"),
            (
                vec![("WICKRIO_S3_BUCKET_NAME", "bkt-1"), ("WICKRIO_S3_REGION", "Mars 1")],
                "WICKRIO_S3_REGION",
            ),
            (
                vec![
                    ("WICKRIO_S3_BUCKET_NAME", "bkt-1"),
                    ("WICKRIO_S3_FOLDER_NAME", "a/../b"),
                ],
                "WICKRIO_S3_FOLDER_NAME",
            ),
            (
                vec![
                    ("WICKRIO_S3_BUCKET_NAME", "bkt-1"),
                    ("WICKRIO_KMS_MSTRKEY_ARN", "my-key"),
                ],
                "WICKRIO_KMS_MSTRKEY_ARN",
            ),
        ] {
            assert_eq!(parse(&pairs).unwrap_err().var, var, "{pairs:?}");
        }
    }

    #[test]
    fn kms_region_comes_from_the_arn_unless_set() {
        let arn = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd";
        let c = parse(&[("WICKRIO_S3_BUCKET_NAME", "bkt-1"), ("WICKRIO_KMS_MSTRKEY_ARN", arn)])
            .unwrap()
            .unwrap();
        let kms = c.kms.unwrap();
        assert_eq!((kms.key_arn.as_str(), kms.region.as_str()), (arn, "eu-west-1"));
        let c = parse(&[
            ("WICKRIO_S3_BUCKET_NAME", "bkt-1"),
            ("WICKRIO_KMS_MSTRKEY_ARN", arn),
            ("WICKRIO_KMS_REGION", "us-west-2"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.kms.unwrap().region, "us-west-2");
    }

    #[test]
    fn encryption_refuses_limits_above_the_gcm_cap() {
        assert!(check_encryptable(60 << 30, 60 << 30).is_ok());
        assert_eq!(check_encryptable(61 << 30, 1).unwrap_err().var, "WICKRIO_COMP_FILESIZE");
        assert_eq!(
            check_encryptable(1, 61 << 30).unwrap_err().var,
            "WICKRIO_INGEST_MAX_FILE"
        );
    }
}
