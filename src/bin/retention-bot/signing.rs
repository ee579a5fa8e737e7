//! The bot's signing key for the tools that sign what they write (`export`'s custody report,
//! `shred`'s record): unsealed from its state directory with its password.

use std::io::IsTerminal as _;
use std::path::PathBuf;

use retention_bot::identity::{self, sealed::SealedIdentity};

use super::*;
use retention_bot::error_chain::Chain;

/// The bot's state directory, as the daemon finds it.
pub(super) fn state_dir() -> Option<PathBuf> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    env("WICKRIO_STATE_DIR")
        .map(PathBuf::from)
        .or_else(|| env("WICKRIO_BOT_NAME").map(|b| PathBuf::from("/tmp").join(b).join("state")))
}

/// Why nothing can be signed: what is missing.
pub(super) fn unsigned_reason() -> String {
    match state_dir() {
        None => "no bot state directory (set WICKRIO_STATE_DIR or WICKRIO_BOT_NAME, with the bot's password in WICKRIO_BOT_PASSWORD, to sign)".into(),
        Some(dir) if !dir.join(identity::IDENTITY_FILE).exists() => {
            format!("no bot identity in {}", dir.display())
        }
        Some(_) => "no password given (set WICKRIO_BOT_PASSWORD, or run on a terminal to be asked)".into(),
    }
}

/// The bot's signing key and its public key (hex), when its state directory and password are at
/// hand; `Ok(None)` when not (see [`unsigned_reason`]); the exit code when the password was refused
/// or the identity cannot be read. `command` names the caller in errors, `purpose` ends the prompt,
/// and `otherwise` tells what to do instead of giving the right password.
#[allow(clippy::result_large_err)]
pub(super) fn signing_key(
    command: &str,
    purpose: &str,
    otherwise: &str,
) -> Result<Option<(ed25519_dalek::SigningKey, String)>, ExitCode> {
    let Some(path) = state_dir()
        .map(|d| d.join(identity::IDENTITY_FILE))
        .filter(|p| p.exists())
    else {
        return Ok(None);
    };
    let sealed = SealedIdentity::load(&path).map_err(|e| {
        // The error names the file.
        esay!("retention-bot {command}: {e}", e = Chain(&e));
        ExitCode::from(EXIT_CONFIG)
    })?;
    let password = match std::env::var("WICKRIO_BOT_PASSWORD").ok().filter(|p| !p.is_empty()) {
        Some(p) => config::Secret::new(p),
        None if std::io::stdin().is_terminal() => {
            match rpassword::prompt_password(format!("The bot's password ({purpose}): ")) {
                Ok(p) if !p.is_empty() => config::Secret::new(p),
                _ => return Ok(None),
            }
        }
        None => return Ok(None),
    };
    match sealed.unseal(&password, &path) {
        Ok(key) => {
            let public = hex::encode(key.verifying_key().as_bytes());
            Ok(Some((key, public)))
        }
        Err(e) => {
            esay!(
                "retention-bot {command}: the bot's password does not open {} ({e}); give the right one in WICKRIO_BOT_PASSWORD, {otherwise}",
                path.display(),
                e = Chain(&e)
            );
            Err(ExitCode::from(EXIT_LOGIN))
        }
    }
}
