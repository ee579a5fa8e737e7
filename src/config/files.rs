//! Where and how the bot keeps its files: the spool's directories and rotation, and the state
//! directory with the identity's passwords.

use std::path::PathBuf;

use super::{
    ConfigError, IdentityConfig, Secret, SpoolConfig, check_path_component, parse_minutes, parse_u64, storage,
};

/// `WICKRIO_COMP_*`: the original's names, defaults under `/tmp/<bot>/compliance`; with S3 and no
/// rotation set, files rotate often enough to reach the bucket.
pub(super) fn spool_config(
    get: &impl Fn(&str) -> Option<String>,
    bot_name: &str,
    s3: bool,
) -> Result<SpoolConfig, ConfigError> {
    let default_root = PathBuf::from("/tmp").join(bot_name).join("compliance");
    let mesg_dest = get("WICKRIO_COMP_MESGDEST").map_or_else(|| default_root.join("messages"), PathBuf::from);
    let file_dest = get("WICKRIO_COMP_FILEDEST").map_or_else(|| default_root.join("attachments"), PathBuf::from);
    let basename = get("WICKRIO_COMP_BASENAME").unwrap_or_else(|| "receivedMessages".to_owned());
    check_path_component("WICKRIO_COMP_BASENAME", &basename)?;
    if basename == "manifest" {
        return Err(ConfigError::new(
            "WICKRIO_COMP_BASENAME",
            "\"manifest\" is the name of the bot's manifest files",
            "any other name, e.g. receivedMessages",
        ));
    }
    if basename.starts_with("attachment_") {
        return Err(ConfigError::new(
            "WICKRIO_COMP_BASENAME",
            format!("{basename:?} begins like the bot's attachment names (attachment_<time>_...)"),
            "any other name, e.g. receivedMessages",
        ));
    }

    let size_kib = parse_u64(get, "WICKRIO_COMP_FILESIZE", 1_000_000_000)?;
    if size_kib == 0 {
        return Err(ConfigError::new(
            "WICKRIO_COMP_FILESIZE",
            "0 KiB would rotate on every line",
            "a whole number of KiB, at least 1",
        ));
    }
    let mut max_file_bytes = size_kib.checked_mul(1024).ok_or_else(|| {
        ConfigError::new(
            "WICKRIO_COMP_FILESIZE",
            format!("{size_kib} KiB is too large"),
            "at most 18014398509481983 KiB",
        )
    })?;
    let mut rotate_after = parse_minutes(get, "WICKRIO_COMP_TIMEROTATE")?;
    if s3 && get("WICKRIO_COMP_FILESIZE").is_none() {
        let (size, time) = storage::S3_DEFAULT_ROTATION;
        max_file_bytes = size;
        if get("WICKRIO_COMP_TIMEROTATE").is_none() {
            rotate_after = time;
            tracing::info!(
                "S3 is configured and neither WICKRIO_COMP_FILESIZE nor WICKRIO_COMP_TIMEROTATE is set: \
                     message files rotate (and upload) every 10 minutes or at 1 GiB"
            );
        }
    }
    let min_free_mb = parse_u64(get, "WICKRIO_COMP_MIN_FREE_MB", 512)?;
    Ok(SpoolConfig {
        mesg_dest,
        file_dest,
        basename,
        max_file_bytes,
        rotate_after,
        min_free_bytes: min_free_mb.saturating_mul(1 << 20),
        key_period: None,
    })
}

/// `WICKRIO_STATE_DIR` and the passwords (read untrimmed: a password may end in a space).
pub(super) fn identity_config(
    env: &impl Fn(&str) -> Option<String>,
    get: &impl Fn(&str) -> Option<String>,
    bot_name: &str,
) -> Result<IdentityConfig, ConfigError> {
    let state_dir =
        get("WICKRIO_STATE_DIR").map_or_else(|| PathBuf::from("/tmp").join(bot_name).join("state"), PathBuf::from);
    let password = env("WICKRIO_BOT_PASSWORD").filter(|p| !p.is_empty()).map(Secret::new);
    let rotate_to = env("WICKRIO_ROTATE_PASSWORD")
        .filter(|p| !p.is_empty())
        .map(Secret::new);
    if rotate_to.as_ref().is_some_and(|p| p.expose().chars().count() < 12) {
        return Err(ConfigError::new(
            "WICKRIO_ROTATE_PASSWORD",
            "the new password is too short",
            "at least 12 characters, different from the current password",
        ));
    }

    Ok(IdentityConfig {
        state_dir,
        password,
        rotate_to,
    })
}
