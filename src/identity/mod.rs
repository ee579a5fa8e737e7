//! The bot's identity: the first-run password ritual, and the signing key that password unlocks.
//!
//! First run: the initial password (env, secret or prompt) is taken, a new password is generated and
//! printed once in the original's banner, and a new Ed25519 signing key is sealed under it. Every later
//! start needs the generated password; the initial one is refused with a message saying so.

pub mod password;
pub mod sealed;

use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;

use crate::config::{IdentityConfig, Secret};
use crate::metrics::{Counter, Metrics};
use password::{PasswordError, PasswordSource, Prompter};
use sealed::{SealError, SealedIdentity};

pub const IDENTITY_FILE: &str = "identity.json";
pub const PUBLIC_KEY_FILE: &str = "public_key.txt";

/// The unlocked identity. `Debug` shows only the public key.
pub struct Identity {
    signing_key: SigningKey,
    password: Secret,
    public_key_hex: String,
    change: Option<PasswordChange>,
    /// The password `change` replaced: the Matrix source changes the homeserver's password from it.
    previous: Option<Secret>,
}

/// A password that this start-up put in effect, which an operator (or the secret) must now hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordChange {
    /// First run: the banner's password.
    Generated,
    /// `WICKRIO_ROTATE_PASSWORD`.
    Rotated,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("public_key", &self.public_key_hex)
            .finish_non_exhaustive()
    }
}

/// A key for one purpose, derived from the bot's signing key: only the bot's password unlocks the
/// signing key, and unlike the password it survives rotation, so what it keys need not be re-keyed.
/// (The salt names the Matrix store, its first use: changing it would lock that store.)
pub(crate) fn derived_key(signing_key: &SigningKey, purpose: &str) -> zeroize::Zeroizing<[u8; 32]> {
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"retention-bot matrix"), signing_key.as_bytes());
    let mut key = zeroize::Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's limit of 8160, so `expand` cannot fail.
    let _ = hk.expand(purpose.as_bytes(), key.as_mut());
    key
}

impl Identity {
    pub fn signing_key(&self) -> &SigningKey {
        &self.signing_key
    }

    /// The password now in effect (generated or rotated): what the Secrets Manager write-back stores.
    pub fn password(&self) -> &Secret {
        &self.password
    }

    /// Whether this start-up generated or rotated the password.
    pub fn password_change(&self) -> Option<PasswordChange> {
        self.change
    }

    /// The password this start-up replaced (the initial one on first run, the old one on rotation).
    pub(crate) fn previous_password(&self) -> Option<&Secret> {
        self.previous.as_ref()
    }

    pub(crate) fn public_key_hex(&self) -> &str {
        &self.public_key_hex
    }
}

/// Why the bot refused to start. A refusal changes nothing on disk.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error(transparent)]
    Password(#[from] PasswordError),
    #[error(
        "this is the bot's initial password, which stopped working when the bot was first configured; start it with the password that first run generated (printed in the GENERATED PASSWORD banner)"
    )]
    InitialPassword,
    #[error("wrong password: it does not open the bot's identity in {0}")]
    WrongPassword(PathBuf),
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error(
        "cannot show the generated password on standard output, so nothing was sealed (the bot would be locked out for good); run the first start with standard output on a terminal or a log"
    )]
    Banner(#[source] std::io::Error),
}

impl LoginError {
    /// A refused password, as opposed to a broken state directory or file.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            LoginError::Password(_)
                | LoginError::InitialPassword
                | LoginError::WrongPassword(_)
                | LoginError::Banner(_)
        )
    }
}

/// Unlocks the identity, creating it on first run. `secret_password` is the Secrets Manager secret's
/// `password` key when one is configured; the banner goes to `out`.
pub fn login(
    config: &IdentityConfig,
    secret_password: Option<Secret>,
    prompter: &mut dyn Prompter,
    out: &mut dyn Write,
    metrics: &Metrics,
) -> Result<Identity, LoginError> {
    let result = unlock(config, secret_password, prompter, out);
    metrics.incr(if result.is_ok() {
        Counter::Logins
    } else {
        Counter::LoginFailures
    });
    result
}

fn unlock(
    config: &IdentityConfig,
    secret_password: Option<Secret>,
    prompter: &mut dyn Prompter,
    out: &mut dyn Write,
) -> Result<Identity, LoginError> {
    let dir = &config.state_dir;
    let path = dir.join(IDENTITY_FILE);
    if !path.exists() {
        return first_run(config, secret_password, prompter, out);
    }
    let sealed = SealedIdentity::load(&path)?;
    let (given, source) = password::obtain(config.password.clone(), secret_password.clone(), false, prompter)?;
    let (key, current, source) = match sealed.unseal(&given, &path) {
        Ok(key) => (key, given, source),
        Err(SealError::WrongPassword) => match fallback(&sealed, &path, &given, secret_password.as_ref(), config) {
            Some(found) => found,
            None if sealed.is_initial_password(&given) => return Err(LoginError::InitialPassword),
            None => return Err(LoginError::WrongPassword(dir.clone())),
        },
        Err(e) => return Err(e.into()),
    };
    tracing::info!(from = %source, public_key = %sealed.public_key, "identity unlocked");
    let (current, change, previous) = match &config.rotate_to {
        Some(new) if *new != current => {
            sealed.reseal(&key, new)?.store(&path)?;
            tracing::info!("password rotated: the previous password no longer opens the bot's identity");
            (new.clone(), Some(PasswordChange::Rotated), Some(current))
        }
        Some(_) => {
            tracing::warn!("WICKRIO_ROTATE_PASSWORD equals the current password: nothing to rotate");
            (current, None, None)
        }
        None => (current, None, None),
    };
    Ok(Identity {
        public_key_hex: sealed.public_key,
        signing_key: key,
        password: current,
        change,
        previous,
    })
}

/// Passwords tried when the given one is refused. The secret's: with `WICKRIO_SECRET_UPDATE` the
/// secret holds the generated password while the `docker run` line may still carry the initial one
/// in `WICKRIO_BOT_PASSWORD`. Then `WICKRIO_ROTATE_PASSWORD`: a restart after a rotation, with the
/// old password still configured beside the new one.
fn fallback(
    sealed: &SealedIdentity,
    path: &Path,
    given: &Secret,
    secret_password: Option<&Secret>,
    config: &IdentityConfig,
) -> Option<(SigningKey, Secret, PasswordSource)> {
    let candidates = [
        (
            secret_password,
            PasswordSource::Secret,
            "WICKRIO_BOT_PASSWORD does not open the bot's identity but the secret's password does: remove WICKRIO_BOT_PASSWORD so the secret is used",
        ),
        (
            config.rotate_to.as_ref(),
            PasswordSource::Rotate,
            "WICKRIO_ROTATE_PASSWORD is already the bot's password; set the password source to it and remove WICKRIO_ROTATE_PASSWORD",
        ),
    ];
    for (candidate, source, advice) in candidates {
        if let Some(candidate) = candidate.filter(|c| *c != given)
            && let Ok(key) = sealed.unseal(candidate, path)
        {
            tracing::warn!("{advice}");
            return Some((key, candidate.clone(), source));
        }
    }
    None
}

fn first_run(
    config: &IdentityConfig,
    secret_password: Option<Secret>,
    prompter: &mut dyn Prompter,
    out: &mut dyn Write,
) -> Result<Identity, LoginError> {
    let dir = &config.state_dir;
    let (initial, source) = password::obtain(config.password.clone(), secret_password, true, prompter)?;
    tracing::info!(from = %source, "first run: generating the bot's password and signing key");
    if config.rotate_to.is_some() {
        tracing::warn!("WICKRIO_ROTATE_PASSWORD is ignored on the first run: the generated password is in effect");
    }
    let generated = password::generate();
    let key = sealed::new_signing_key();
    let sealed = SealedIdentity::seal(&key, &generated, sealed::hash_initial_password(&initial)?)?;
    // The banner first: a password nobody saw would lock the bot out for good, so if it cannot be
    // shown (standard output closed, a full disk under a log file), nothing is sealed.
    print_banner(out, &generated, &sealed.public_key, dir).map_err(LoginError::Banner)?;
    sealed::store_file(
        &dir.join(PUBLIC_KEY_FILE),
        format!("{}\n", sealed.public_key).as_bytes(),
    )?;
    // The identity file last: until it exists, a restart is still a first run.
    sealed.store(&dir.join(IDENTITY_FILE))?;
    Ok(Identity {
        public_key_hex: sealed.public_key,
        signing_key: key,
        password: generated,
        change: Some(PasswordChange::Generated),
        previous: Some(initial),
    })
}

/// The original's banner, then the public key as groups of four hex digits.
fn print_banner(out: &mut dyn Write, password: &Secret, public_key: &str, dir: &Path) -> std::io::Result<()> {
    let stars = "*".repeat(64);
    let groups: Vec<&str> = public_key
        .as_bytes()
        .chunks(4)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .collect();
    let key_lines: Vec<String> = groups.chunks(8).map(|line| line.join(" ")).collect();
    writeln!(
        out,
        "{stars}\n**** GENERATED PASSWORD ****\nDO NOT LOSE THIS PASSWORD, YOU WILL NEED TO ENTER IT EVERY TIME\nTO START THE BOT\n\"{}\"\n{stars}\n\nBot public signing key (also in {}):\n{}\n",
        password.expose(),
        dir.join(PUBLIC_KEY_FILE).display(),
        key_lines.join("\n"),
    )?;
    out.flush()
}
