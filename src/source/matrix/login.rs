//! Logging the bot into its homeserver, with the original's password ritual made real there: the
//! password the bot's identity put in effect (generated on first run, or rotated) becomes the account's
//! password on the homeserver, so the homeserver itself refuses the initial password afterwards.
//!
//! The local change happens first (the identity is sealed under the new password), the homeserver's
//! second. Between the two, the replaced password waits in `pending_password.json`, sealed with a key
//! derived from the bot's signing key, so a crash in between is finished at the next start instead of
//! locking the bot out of its account.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use ed25519_dalek::SigningKey;
use matrix_sdk::Client;
use matrix_sdk::ruma::api::client::uiaa::{AuthData, MatrixUserIdentifier, Password, UserIdentifier};
use matrix_sdk::ruma::api::error::ErrorKind;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::MatrixError;
use crate::config::Secret;
use crate::durable;
use crate::error_chain::Chain;
use crate::identity::derived_key;

const DEVICE_FILE: &str = "device_id";
const PENDING_FILE: &str = "pending_password.json";
/// The name the bot's device shows in other users' device lists.
const DEVICE_NAME: &str = "retention-bot";

/// The passphrase of matrix-sdk's SQLite state and crypto store.
pub(crate) fn store_passphrase(signing_key: &SigningKey) -> Secret {
    Secret::new(hex::encode(derived_key(signing_key, "store passphrase").as_ref()))
}

/// What the homeserver's password must be changed from, sealed until the change is confirmed.
#[derive(Serialize, Deserialize)]
struct PendingFile {
    nonce: String,
    sealed: String,
}

struct Pending {
    path: PathBuf,
    key: Zeroizing<[u8; 32]>,
}

impl Pending {
    fn new(dir: &Path, signing_key: &SigningKey) -> Self {
        Self {
            path: dir.join(PENDING_FILE),
            key: derived_key(signing_key, "pending password"),
        }
    }

    fn store(&self, old: &Secret) -> Result<(), MatrixError> {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).map_err(|e| MatrixError::state_from("no randomness for a nonce", e))?;
        let cipher = Aes256Gcm::new(self.key.as_ref().into());
        let sealed = cipher
            .encrypt(Nonce::from_slice(&nonce), old.expose().as_bytes())
            .map_err(|_| MatrixError::state("cannot seal the previous password"))?;
        let file = PendingFile {
            nonce: hex::encode(nonce),
            sealed: hex::encode(sealed),
        };
        let json = serde_json::to_vec(&file)
            .map_err(|e| MatrixError::state_from("cannot write the pending password change as JSON", e))?;
        durable::write_atomically(&self.path, &json).map_err(|e| MatrixError::io(&self.path, e))
    }

    fn load(&self) -> Result<Option<Secret>, MatrixError> {
        let text = match std::fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(MatrixError::io(&self.path, e)),
        };
        let damaged = || {
            MatrixError::state(format!(
                "{} is damaged: remove it, then set the bot's account password on the homeserver to the bot's password by hand",
                self.path.display()
            ))
        };
        let file: PendingFile = serde_json::from_slice(&text).map_err(|_| damaged())?;
        let (nonce, sealed) = (hex::decode(&file.nonce), hex::decode(&file.sealed));
        let (Ok(nonce), Ok(sealed)) = (nonce, sealed) else {
            return Err(damaged());
        };
        if nonce.len() != 12 {
            return Err(damaged());
        }
        let cipher = Aes256Gcm::new(self.key.as_ref().into());
        let plain = Zeroizing::new(
            cipher
                .decrypt(Nonce::from_slice(&nonce), sealed.as_slice())
                .map_err(|_| damaged())?,
        );
        let text = std::str::from_utf8(&plain).map_err(|_| damaged())?;
        Ok(Some(Secret::new(text.to_owned())))
    }

    fn clear(&self) -> Result<(), MatrixError> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => durable::sync_dir(self.path.parent().unwrap_or(Path::new(".")))
                .map_err(|e| MatrixError::io(&self.path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(MatrixError::io(&self.path, e)),
        }
    }
}

/// Logs in as `user` with `password` (the bot's current one); `previous` is the password this start-up
/// replaced, if any. Reuses the device of earlier runs, so a restart is not a new device.
pub async fn log_in(
    client: &Client,
    dir: &Path,
    user: &str,
    password: &Secret,
    previous: Option<&Secret>,
    signing_key: &SigningKey,
) -> Result<(), MatrixError> {
    let pending = Pending::new(dir, signing_key);
    if let Some(old) = previous {
        pending.store(old)?;
    }
    let device_path = dir.join(DEVICE_FILE);
    let device = match std::fs::read_to_string(&device_path) {
        Ok(id) => Some(id.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(MatrixError::io(&device_path, e)),
    };
    match password_login(client, user, password, device.as_deref()).await {
        Ok(()) => {}
        Err(MatrixError::Refused(why)) => {
            let Some(old) = pending.load()? else {
                return Err(MatrixError::Refused(why));
            };
            password_login(client, user, &old, device.as_deref()).await?;
            change_password(client, &old, password).await?;
        }
        Err(e) => return Err(e),
    }
    // Done (or found done by an earlier run that stopped before clearing it).
    pending.clear()?;
    if let Some(id) = client.device_id()
        && device.as_deref() != Some(id.as_str())
    {
        durable::write_atomically(&device_path, id.as_str().as_bytes())
            .map_err(|e| MatrixError::io(&device_path, e))?;
        tracing::info!(device = %id, "new Matrix device created; later starts reuse it");
    }
    Ok(())
}

async fn password_login(
    client: &Client,
    user: &str,
    password: &Secret,
    device: Option<&str>,
) -> Result<(), MatrixError> {
    let mut backoff = Duration::from_secs(1);
    loop {
        let mut request = client
            .matrix_auth()
            .login_username(user, password.expose())
            .initial_device_display_name(DEVICE_NAME);
        if let Some(id) = device {
            request = request.device_id(id);
        }
        let err = match request.send().await {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        match err.client_api_error_kind() {
            Some(ErrorKind::Forbidden) => {
                return Err(MatrixError::Refused(format!(
                    "the homeserver refused the password for {user} ({err})",
                    err = Chain(&err)
                )));
            }
            Some(ErrorKind::UserDeactivated) => {
                return Err(MatrixError::Refused(format!("{user} is deactivated on the homeserver")));
            }
            _ => {
                tracing::warn!(error = %Chain(&err), retry_in_secs = backoff.as_secs(), "cannot log in to the homeserver; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(60));
            }
        }
    }
}

/// `POST /account/password` with user-interactive auth by the old password. Other devices' sessions
/// are revoked by the homeserver; this one stays.
async fn change_password(client: &Client, old: &Secret, new: &Secret) -> Result<(), MatrixError> {
    let user_id = client
        .user_id()
        .ok_or_else(|| MatrixError::state("logged in but no user ID"))?
        .to_string();
    let auth = AuthData::Password(Password::new(
        UserIdentifier::Matrix(MatrixUserIdentifier::new(user_id)),
        old.expose().to_owned(),
    ));
    client
        .account()
        .change_password(new.expose(), Some(auth))
        .await
        .map_err(|e| {
            MatrixError::Refused(format!(
                "the homeserver did not accept the bot's new password ({e}); its account still has the previous password", e = Chain(&e)))
        })?;
    tracing::info!(
        "the account's password on the homeserver is now the bot's password; the previous one is refused there"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_password_round_trips_only_under_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = crate::identity::sealed::new_signing_key();
        let pending = Pending::new(dir.path(), &key);
        assert!(pending.load().unwrap().is_none());
        pending.store(&Secret::new("initial-password".into())).unwrap();
        let raw = std::fs::read_to_string(dir.path().join(PENDING_FILE)).unwrap();
        assert!(!raw.contains("initial-password"), "stored in the clear: {raw}");
        assert_eq!(pending.load().unwrap().unwrap().expose(), "initial-password");
        let other = Pending::new(dir.path(), &crate::identity::sealed::new_signing_key());
        assert!(matches!(other.load(), Err(MatrixError::State { .. })));
        pending.clear().unwrap();
        assert!(pending.load().unwrap().is_none());
    }

    #[test]
    fn derived_keys_differ_by_purpose_and_bot() {
        let a = crate::identity::sealed::new_signing_key();
        let b = crate::identity::sealed::new_signing_key();
        assert_ne!(*derived_key(&a, "x"), *derived_key(&a, "y"));
        assert_ne!(*derived_key(&a, "x"), *derived_key(&b, "x"));
        assert_eq!(store_passphrase(&a), store_passphrase(&a));
    }
}
