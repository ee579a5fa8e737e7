//! Everything the daemon reads from its environment, validated once at start-up.
//!
//! The variable names and defaults are the original bot's (`WICKRIO_*`), so an admin can reuse the
//! same `docker run -e ...` line. Every problem is reported as a [`ConfigError`] naming the variable,
//! what is wrong with its value and what is accepted; the binary exits with status 2 on one.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::error_chain::Chain;
use zeroize::Zeroizing;

mod aws_names;
mod dirs;
mod files;
mod ingest;
pub mod network;
pub mod reporting;
mod role;
pub mod secret;
mod settings;
mod storage;
pub use dirs::{check_private_dir, umask};
pub use ingest::IngestConfig;
pub use network::SqsConfig;
pub use network::{MatrixConfig, Network};
pub use reporting::ReportingConfig;
pub use role::assume_role;
pub use secret::SecretLocation;
pub use settings::{SETTINGS, Setting, unknown_settings};
pub use storage::DataKeyReuse;
pub use storage::Format;
pub use storage::KmsConfig;
pub use storage::LockMode;
pub use storage::ObjectLock;
pub use storage::S3Config;

/// A bad setting: which variable, what is wrong, what would be accepted.
#[derive(Debug, thiserror::Error)]
#[error("{var}: {problem}; {accepted}")]
pub struct ConfigError {
    pub var: &'static str,
    pub problem: String,
    pub accepted: String,
}

impl ConfigError {
    fn new(var: &'static str, problem: impl Into<String>, accepted: impl Into<String>) -> Self {
        Self {
            var,
            problem: problem.into(),
            accepted: accepted.into(),
        }
    }
}

/// A string that must never be printed: `Debug` shows `[redacted]` and the bytes are wiped on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(Zeroizing::new(value))
    }
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// How the spool lays out and rotates files.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    pub mesg_dest: PathBuf,
    pub file_dest: PathBuf,
    pub basename: String,
    /// Rotate once a file would grow past this many bytes.
    pub max_file_bytes: u64,
    /// Rotate this long after a file was opened; `None` is off.
    pub rotate_after: Option<std::time::Duration>,
    /// Refuse new data while free space is under this many bytes.
    pub min_free_bytes: u64,
    /// `Some` with per-period KMS keys: a message file (and a manifest) rotates at each period's
    /// end, so none spans two periods' keys.
    pub key_period: Option<crate::period::Granularity>,
}

/// Where the bot's identity lives and how its password is given or changed.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    pub state_dir: PathBuf,
    /// `WICKRIO_BOT_PASSWORD`: the initial password on first run, the generated one after.
    pub password: Option<Secret>,
    /// `WICKRIO_ROTATE_PASSWORD`: re-seal under this password at start-up.
    pub rotate_to: Option<Secret>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub bot_name: String,
    pub network: Network,
    pub spool: SpoolConfig,
    pub ingest: IngestConfig,
    pub identity: IdentityConfig,
    /// `None`: files stay on local disk.
    pub s3: Option<S3Config>,
    pub reporting: ReportingConfig,
    /// `WICKRIO_SECRET_UPDATE`: write a generated or rotated password into the secret (whose
    /// location the binary reads first, to fetch the settings).
    pub secret_update: bool,
    /// The topmost directory start-up created on the way to each of the bot's directories: started
    /// as root with `WICKRIO_RUN_AS`, these are handed over too, or the bot's user could not pass
    /// through them (made under umask 027, they are root's and closed to others).
    pub made_dirs: Vec<PathBuf>,
}

/// The log format is read on its own, before anything else, so that even configuration errors are
/// logged in the format the operator asked for.
pub fn log_format(env: impl Fn(&str) -> Option<String>) -> Result<LogFormat, ConfigError> {
    match env("WICKRIO_LOG_FORMAT").as_deref().map(str::trim) {
        None | Some("") | Some("text") => Ok(LogFormat::Text),
        Some("json") => Ok(LogFormat::Json),
        Some(other) => Err(ConfigError::new(
            "WICKRIO_LOG_FORMAT",
            format!("unknown format {other:?}"),
            "accepted: text, json",
        )),
    }
}

/// `WICKRIO_INGEST_ADDR` alone: `healthcheck` needs it without the rest (which creates directories).
pub fn ingest_addr(env: impl Fn(&str) -> Option<String>) -> Result<SocketAddr, ConfigError> {
    let text = env("WICKRIO_INGEST_ADDR")
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty());
    let text = text.unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    text.parse().map_err(|_| {
        ConfigError::new(
            "WICKRIO_INGEST_ADDR",
            format!("{text:?} is not an IP address with a port"),
            "e.g. 127.0.0.1:8080 or 0.0.0.0:8080",
        )
    })
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `env` (so tests need not touch the process environment) and checks
    /// that the destination directories exist or can be made, and are writable.
    pub fn from_lookup(env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| env(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());

        let bot_name = get("WICKRIO_BOT_NAME").ok_or_else(|| {
            ConfigError::new(
                "WICKRIO_BOT_NAME",
                "not set",
                "set it to the bot's name, e.g. -e WICKRIO_BOT_NAME=compliancebot",
            )
        })?;
        check_path_component("WICKRIO_BOT_NAME", &bot_name)?;
        let network = network::from_lookup(&get, &bot_name)?;

        let s3 = storage::s3_config(&get)?;
        let mut spool = files::spool_config(&get, &bot_name, s3.is_some())?;
        spool.key_period = s3.as_ref().and_then(|s3| s3.kms.as_ref()).and_then(|kms| kms.period);

        let ingest = ingest::ingest_config(&env, &get)?;
        if s3.as_ref().is_some_and(|s3| s3.kms.is_some()) {
            storage::check_encryptable(spool.max_file_bytes, ingest.max_file)?;
        }

        let reporting = reporting::from_lookup(&get)?;
        let secret_update = parse_bool(&get, "WICKRIO_SECRET_UPDATE")?;
        if secret_update && SecretLocation::from_env(&env)?.is_none() {
            return Err(ConfigError::new(
                "WICKRIO_SECRET_UPDATE",
                "is true, but AWS_SECRET_NAME is not set: there is no secret to write the password into",
                "set AWS_SECRET_NAME, or unset WICKRIO_SECRET_UPDATE",
            ));
        }
        let identity = files::identity_config(&env, &get, &bot_name)?;

        let made_dirs = [
            check_writable_dir("WICKRIO_STATE_DIR", &identity.state_dir)?,
            check_writable_dir("WICKRIO_COMP_MESGDEST", &spool.mesg_dest)?,
            check_writable_dir("WICKRIO_COMP_FILEDEST", &spool.file_dest)?,
        ]
        .into_iter()
        .flatten()
        .collect();

        Ok(Config {
            bot_name,
            network,
            spool,
            ingest,
            identity,
            s3,
            reporting,
            secret_update,
            made_dirs,
        })
    }
}

fn parse_bool(get: &impl Fn(&str) -> Option<String>, var: &'static str) -> Result<bool, ConfigError> {
    match get(var).map(|v| v.to_ascii_lowercase()).as_deref() {
        None | Some("false" | "0" | "no") => Ok(false),
        Some("true" | "1" | "yes") => Ok(true),
        Some(other) => Err(ConfigError::new(
            var,
            format!("{other:?} is not true or false"),
            "true or false",
        )),
    }
}

pub(super) fn parse_u64(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: u64,
) -> Result<u64, ConfigError> {
    match get(var) {
        None => Ok(default),
        Some(text) => text.parse().map_err(|_| {
            ConfigError::new(
                var,
                format!("{text:?} is not a whole number"),
                format!("a whole number such as {default}"),
            )
        }),
    }
}

/// A whole number within `range` (`unit` names what it counts, for the error's hint).
pub(super) fn parse_u64_in(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
    unit: &str,
) -> Result<u64, ConfigError> {
    let n = parse_u64(get, var, default)?;
    if range.contains(&n) {
        return Ok(n);
    }
    Err(ConfigError::new(
        var,
        format!("{n} is out of range"),
        format!("{} to {} {unit}, e.g. {default}", range.start(), range.end()),
    ))
}

/// Minutes, whole as in the original or decimal (`0.5` is 30 s); 0 means off.
fn parse_minutes(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
) -> Result<Option<std::time::Duration>, ConfigError> {
    let Some(text) = get(var) else {
        return Ok(None);
    };
    let minutes: f64 = text.parse().map_err(|_| {
        ConfigError::new(
            var,
            format!("{text:?} is not a number of minutes"),
            "minutes, e.g. 60, or 0.5 for 30 seconds; 0 turns time rotation off",
        )
    })?;
    if !minutes.is_finite() || !(0.0..=1e9).contains(&minutes) {
        return Err(ConfigError::new(
            var,
            format!("{text:?} is out of range"),
            "0 (off) up to 1000000000 minutes",
        ));
    }
    Ok((minutes > 0.0).then(|| std::time::Duration::from_secs_f64(minutes * 60.0)))
}

/// Sizes: a whole number of bytes, or with a `KiB`/`MiB`/`GiB` (or `K`/`M`/`G`) suffix.
pub(super) fn parse_size(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: u64,
) -> Result<u64, ConfigError> {
    let Some(text) = get(var) else {
        return Ok(default);
    };
    let bad = || {
        ConfigError::new(
            var,
            format!("{text:?} is not a size"),
            "a whole number of bytes, or with KiB, MiB or GiB, e.g. 16MiB",
        )
    };
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "K" | "KiB" | "KB" => 10,
        "M" | "MiB" | "MB" => 20,
        "G" | "GiB" | "GB" => 30,
        _ => return Err(bad()),
    };
    n.checked_mul(1 << shift).ok_or_else(bad)
}

fn check_path_component(var: &'static str, value: &str) -> Result<(), ConfigError> {
    let bad = value == "."
        || value == ".."
        || value.len() > 100
        || value.chars().any(|c| c == '/' || c == '\\' || c.is_control());
    if bad {
        return Err(ConfigError::new(
            var,
            format!("{value:?} cannot be used in a file name"),
            "1 to 100 characters without '/', '\\' or control characters, and not '.' or '..'",
        ));
    }
    Ok(())
}

/// Makes the directory if needed and proves it writable by creating and removing a probe file, so
/// that a read-only mount fails at start-up rather than at the first message. Returns the topmost
/// directory it created, if any.
fn check_writable_dir(var: &'static str, dir: &Path) -> Result<Option<PathBuf>, ConfigError> {
    let accepted = "a directory this user can create files in (check the volume mount and its owner)";
    let made = dir
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && std::fs::symlink_metadata(a).is_err())
        .last()
        .map(Path::to_owned);
    std::fs::create_dir_all(dir).map_err(|e| {
        ConfigError::new(
            var,
            format!("cannot create directory {}: {e}", dir.display(), e = Chain(&e)),
            accepted,
        )
    })?;
    let mut nonce = [0u8; 8];
    let _ = getrandom::fill(&mut nonce);
    let probe = dir.join(format!(
        ".write-probe-{}-{}",
        std::process::id(),
        u64::from_le_bytes(nonce)
    ));
    std::fs::File::create(&probe)
        .and_then(|_| std::fs::remove_file(&probe))
        .map_err(|e| {
            ConfigError::new(
                var,
                format!("directory {} is not writable: {e}", dir.display(), e = Chain(&e)),
                accepted,
            )
        })?;
    Ok(made)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    fn with_dirs<'a>(dir: &'a Path, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, String)> {
        let mut v = vec![
            ("WICKRIO_BOT_NAME", "bot".to_owned()),
            ("WICKRIO_COMP_MESGDEST", dir.join("m").display().to_string()),
            ("WICKRIO_COMP_FILEDEST", dir.join("f").display().to_string()),
            ("WICKRIO_STATE_DIR", dir.join("s").display().to_string()),
        ];
        v.extend(extra.iter().map(|(k, val)| (*k, val.to_string())));
        v
    }

    fn parse(pairs: Vec<(&str, String)>) -> Result<Config, ConfigError> {
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Config::from_lookup(lookup(&pairs))
    }

    #[test]
    fn a_bounded_number_names_its_range_and_unit() {
        let get = lookup(&[("N", "0"), ("M", "7"), ("X", "seven")]);
        let e = parse_u64_in(&get, "N", 5, 1..=10, "seconds").unwrap_err();
        assert_eq!(e.to_string(), "N: 0 is out of range; 1 to 10 seconds, e.g. 5");
        assert_eq!(parse_u64_in(&get, "M", 5, 1..=10, "seconds").unwrap(), 7);
        assert_eq!(parse_u64_in(&get, "unset", 5, 1..=10, "seconds").unwrap(), 5);
        let e = parse_u64_in(&get, "X", 5, 1..=10, "seconds").unwrap_err();
        assert!(e.to_string().contains("\"seven\" is not a whole number"), "{e}");
    }

    /// The table `--help` and the README print says what the code does: setting each variable to
    /// the default the table gives changes nothing.
    #[test]
    fn the_settings_table_gives_the_code_defaults() {
        let bot = format!("settings-table-{}", std::process::id());
        let root = PathBuf::from("/tmp").join(&bot);
        let parse_with = |extra: Option<(&str, String)>| {
            let mut pairs = vec![("WICKRIO_BOT_NAME", bot.clone())];
            pairs.extend(extra);
            let mut c = parse(pairs).map_err(|e| e.to_string())?;
            c.made_dirs.clear();
            Ok::<String, String>(format!("{c:?}"))
        };
        let plain = parse_with(None).unwrap();
        let mut checked = 0;
        for s in SETTINGS.iter().filter(|s| !s.default.starts_with('(')) {
            // "0 (off; 10 with S3)": the value before any remark.
            let value = s.default.split(" (").next().unwrap().replace("<botname>", &bot);
            let with = parse_with(Some((s.name, value.clone())));
            assert_eq!(with.as_ref(), Ok(&plain), "{}={value} is not the default", s.name);
            checked += 1;
        }
        assert_eq!(
            log_format(|_| None).unwrap(),
            log_format(|_| Some("text".into())).unwrap()
        );
        assert_eq!(umask(&|_| None).unwrap(), umask(&|_| Some("027".into())).unwrap());
        std::fs::remove_dir_all(&root).unwrap();
        assert!(checked >= 20, "only {checked} settings with a plain default");
    }

    #[test]
    fn defaults_follow_the_original() {
        let dir = tempfile::tempdir().unwrap();
        let c = parse(with_dirs(dir.path(), &[])).unwrap();
        assert_eq!(c.spool.basename, "receivedMessages");
        assert_eq!(c.spool.max_file_bytes, 1_000_000_000 * 1024);
        assert_eq!(c.spool.rotate_after, None);
        assert_eq!(c.ingest.addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.ingest.max_body, 16 << 20);
    }

    #[test]
    fn the_topmost_directory_start_up_made_is_remembered_for_the_hand_over() {
        let dir = tempfile::tempdir().unwrap();
        let mut pairs = with_dirs(dir.path(), &[]);
        pairs.retain(|(k, _)| *k != "WICKRIO_COMP_MESGDEST");
        pairs.push((
            "WICKRIO_COMP_MESGDEST",
            dir.path().join("compliance/messages").display().to_string(),
        ));
        let c = parse(pairs.clone()).unwrap();
        let mut made = c.made_dirs.clone();
        made.sort();
        let want = ["compliance", "f", "s"].map(|d| dir.path().join(d));
        assert_eq!(made, want);
        // A second start made nothing.
        assert!(parse(pairs).unwrap().made_dirs.is_empty());
    }

    #[test]
    fn s3_rotates_regularly_unless_told_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let s3 = ("WICKRIO_S3_BUCKET_NAME", "bkt-1");
        let c = parse(with_dirs(dir.path(), &[s3])).unwrap();
        assert_eq!(c.spool.max_file_bytes, 1 << 30);
        assert_eq!(c.spool.rotate_after, Some(std::time::Duration::from_secs(600)));
        let c = parse(with_dirs(dir.path(), &[s3, ("WICKRIO_COMP_TIMEROTATE", "0")])).unwrap();
        assert_eq!((c.spool.max_file_bytes, c.spool.rotate_after), (1 << 30, None));
        let c = parse(with_dirs(dir.path(), &[s3, ("WICKRIO_COMP_FILESIZE", "2048")])).unwrap();
        assert_eq!((c.spool.max_file_bytes, c.spool.rotate_after), (2 << 20, None));
        let kms = ("WICKRIO_KMS_MSTRKEY_ARN", "arn:aws:kms:us-east-1:123456789012:key/k");
        let e = parse(with_dirs(
            dir.path(),
            &[s3, kms, ("WICKRIO_COMP_FILESIZE", "1000000000")],
        ))
        .unwrap_err();
        assert_eq!(e.var, "WICKRIO_COMP_FILESIZE");
    }

    #[test]
    fn missing_bot_name_is_named() {
        let err = Config::from_lookup(lookup(&[])).unwrap_err();
        assert_eq!(err.var, "WICKRIO_BOT_NAME");
    }

    #[test]
    fn bad_numbers_name_the_variable() {
        let dir = tempfile::tempdir().unwrap();
        for (var, value) in [
            ("WICKRIO_COMP_FILESIZE", "ten"),
            ("WICKRIO_COMP_FILESIZE", "0"),
            ("WICKRIO_COMP_TIMEROTATE", "-5"),
            ("WICKRIO_COMP_TIMEROTATE", "soon"),
            ("WICKRIO_INGEST_MAX_BODY", "12 parsecs"),
            ("WICKRIO_INGEST_ADDR", "localhost"),
            ("WICKRIO_COMP_BASENAME", "../x"),
            ("WICKRIO_COMP_BASENAME", "manifest"),
            ("WICKRIO_COMP_BASENAME", "attachment_x"),
            ("WICKRIO_INGEST_MAX_BUFFER", "1KiB"),
        ] {
            let err = parse(with_dirs(dir.path(), &[(var, value)])).unwrap_err();
            assert_eq!(err.var, var, "{value}");
        }
    }

    #[test]
    fn non_loopback_needs_a_token() {
        let dir = tempfile::tempdir().unwrap();
        let err = parse(with_dirs(dir.path(), &[("WICKRIO_INGEST_ADDR", "0.0.0.0:8080")])).unwrap_err();
        assert_eq!(err.var, "WICKRIO_INGEST_TOKEN");
        let ok = parse(with_dirs(
            dir.path(),
            &[
                ("WICKRIO_INGEST_ADDR", "0.0.0.0:8080"),
                ("WICKRIO_INGEST_TOKEN", "0123456789abcdef"),
            ],
        ));
        assert!(ok.is_ok());
    }

    #[test]
    fn sizes_accept_suffixes() {
        let dir = tempfile::tempdir().unwrap();
        let c = parse(with_dirs(
            dir.path(),
            &[("WICKRIO_INGEST_MAX_BODY", "2MiB"), ("WICKRIO_INGEST_MAX_FILE", "3G")],
        ))
        .unwrap();
        assert_eq!(c.ingest.max_body, 2 << 20);
        assert_eq!(c.ingest.max_file, 3 << 30);
    }

    #[test]
    fn time_rotation_takes_whole_or_decimal_minutes() {
        let dir = tempfile::tempdir().unwrap();
        let c = parse(with_dirs(dir.path(), &[("WICKRIO_COMP_TIMEROTATE", "60")])).unwrap();
        assert_eq!(c.spool.rotate_after, Some(std::time::Duration::from_secs(3600)));
        let c = parse(with_dirs(dir.path(), &[("WICKRIO_COMP_TIMEROTATE", "0.05")])).unwrap();
        assert_eq!(c.spool.rotate_after, Some(std::time::Duration::from_secs(3)));
    }

    #[test]
    fn token_never_shows_in_debug() {
        let dir = tempfile::tempdir().unwrap();
        let c = parse(with_dirs(
            dir.path(),
            &[("WICKRIO_INGEST_TOKEN", "sup3r-s3cret-t0ken-value")],
        ))
        .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("sup3r"), "{shown}");
        assert!(shown.contains("[redacted]"));
    }
}
