//! The bot's key material at rest: an Ed25519 signing key sealed with a key derived from the bot's
//! password (Argon2id, parameters stored beside the salt) under AES-256-GCM. The public key and the
//! KDF parameters are bound to the ciphertext as associated data, so editing them breaks the seal.

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::config::Secret;

/// OWASP's recommended Argon2id minimum (19 MiB, 2 passes): slow for a guesser, quick at start-up.
const M_COST_KIB: u32 = 19 * 1024;
const T_COST: u32 = 2;
const P_COST: u32 = 1;

/// What `identity.json` holds. Nothing in it is secret without the password.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SealedIdentity {
    pub version: u32,
    pub public_key: String,
    pub kdf: Kdf,
    pub cipher: String,
    pub nonce: String,
    pub sealed_signing_key: String,
    /// Argon2id hash (PHC string) of the first-run password, only so that a later start given it
    /// can say "that is the initial password" instead of a plain refusal.
    pub initial_password_hash: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Kdf {
    pub algorithm: String,
    pub m_cost_kib: u32,
    pub t_cost: u32,
    pub p_cost: u32,
    pub salt: String,
}

/// Why an identity could not be sealed, stored, loaded or opened. Each cause is kept as `source()`.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the password does not open the bot's identity")]
    WrongPassword,
    #[error("identity file {path} is damaged or not ours: {why}")]
    Corrupt { path: String, why: &'static str },
    #[error("identity file {path} is damaged or not ours: it is not a sealed identity's JSON")]
    NotJson {
        path: String,
        #[source]
        cause: serde_json::Error,
    },
    #[error("cannot read identity file {path}")]
    Read {
        path: String,
        #[source]
        cause: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: String,
        #[source]
        cause: std::io::Error,
    },
    #[error("the password's key derivation (Argon2id) failed")]
    Kdf(#[source] argon2::Error),
    #[error("the initial password's hash could not be made")]
    Hash(#[source] argon2::password_hash::Error),
    /// AES-GCM says nothing of why (its error is opaque): the step it failed at.
    #[error("the cipher (AES-256-GCM) failed to {0}")]
    Cipher(&'static str),
    #[error("the sealed identity could not be written as JSON")]
    Serialize(#[source] serde_json::Error),
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // The OS CSPRNG failing is a broken host: a start-up invariant.
    getrandom::fill(&mut b).expect("the operating system's random number generator failed");
    b
}

fn argon2(m: u32, t: u32, p: u32) -> Result<Argon2<'static>, SealError> {
    let params = Params::new(m, t, p, Some(32)).map_err(SealError::Kdf)?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

impl SealedIdentity {
    /// Seals `key` under `password`; `initial` is the first-run password to remember by hash.
    pub fn seal(key: &SigningKey, password: &Secret, initial_password_hash: String) -> Result<Self, SealError> {
        let salt = random::<16>();
        let kdf = Kdf {
            algorithm: "argon2id".into(),
            m_cost_kib: M_COST_KIB,
            t_cost: T_COST,
            p_cost: P_COST,
            salt: B64.encode(salt),
        };
        let public_key = hex::encode(key.verifying_key().as_bytes());
        let nonce = random::<12>();
        let derived = derive(&kdf, &salt, password)?;
        let cipher = Aes256Gcm::new(derived.as_ref().into());
        let aad = associated_data(&public_key, &kdf);
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: key.as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| SealError::Cipher("seal the signing key"))?;
        Ok(Self {
            version: 1,
            public_key,
            kdf,
            cipher: "aes-256-gcm".into(),
            nonce: B64.encode(nonce),
            sealed_signing_key: B64.encode(sealed),
            initial_password_hash,
        })
    }

    /// The same key under a new password, keeping the record of the initial one.
    pub(crate) fn reseal(&self, key: &SigningKey, new_password: &Secret) -> Result<Self, SealError> {
        Self::seal(key, new_password, self.initial_password_hash.clone())
    }

    pub fn unseal(&self, password: &Secret, path: &Path) -> Result<SigningKey, SealError> {
        let corrupt = |why: &'static str| SealError::Corrupt {
            path: path.display().to_string(),
            why,
        };
        if self.version != 1 || self.cipher != "aes-256-gcm" || self.kdf.algorithm != "argon2id" {
            return Err(corrupt("unknown version, cipher or KDF"));
        }
        let nonce = B64.decode(&self.nonce).map_err(|_| corrupt("nonce is not base64"))?;
        let sealed = B64
            .decode(&self.sealed_signing_key)
            .map_err(|_| corrupt("sealed key is not base64"))?;
        if nonce.len() != 12 {
            return Err(corrupt("nonce is not 12 bytes"));
        }
        let salt = B64.decode(&self.kdf.salt).map_err(|_| corrupt("salt is not base64"))?;
        let derived = derive(&self.kdf, &salt, password)?;
        let cipher = Aes256Gcm::new(derived.as_ref().into());
        let aad = associated_data(&self.public_key, &self.kdf);
        let seed = Zeroizing::new(
            cipher
                .decrypt(
                    Nonce::from_slice(&nonce),
                    Payload {
                        msg: &sealed,
                        aad: &aad,
                    },
                )
                .map_err(|_| SealError::WrongPassword)?,
        );
        let seed: &[u8; 32] = seed
            .as_slice()
            .try_into()
            .map_err(|_| corrupt("sealed key is not 32 bytes"))?;
        let key = SigningKey::from_bytes(seed);
        if hex::encode(key.verifying_key().as_bytes()) != self.public_key {
            return Err(corrupt("sealed key does not match the public key"));
        }
        Ok(key)
    }

    pub fn verifying_key(&self) -> Option<VerifyingKey> {
        let bytes: [u8; 32] = hex::decode(&self.public_key).ok()?.try_into().ok()?;
        VerifyingKey::from_bytes(&bytes).ok()
    }

    pub(crate) fn is_initial_password(&self, password: &Secret) -> bool {
        PasswordHash::new(&self.initial_password_hash).is_ok_and(|h| {
            Argon2::default()
                .verify_password(password.expose().as_bytes(), &h)
                .is_ok()
        })
    }

    pub fn load(path: &Path) -> Result<Self, SealError> {
        let path_text = || path.display().to_string();
        let text = std::fs::read(path).map_err(|cause| SealError::Read {
            path: path_text(),
            cause,
        })?;
        serde_json::from_slice(&text).map_err(|cause| SealError::NotJson {
            path: path_text(),
            cause,
        })
    }

    /// Temp file, fsync, rename over, fsync the directory: a crash leaves the old or the new file,
    /// never a mix.
    pub fn store(&self, path: &Path) -> Result<(), SealError> {
        let bytes = serde_json::to_vec_pretty(self).map_err(SealError::Serialize)?;
        store_file(path, &bytes)
    }
}

/// Hashes the initial password for [`SealedIdentity::is_initial_password`].
pub(crate) fn hash_initial_password(password: &Secret) -> Result<String, SealError> {
    let salt = SaltString::encode_b64(&random::<16>()).map_err(SealError::Hash)?;
    let hash = argon2(M_COST_KIB, T_COST, P_COST)?
        .hash_password(password.expose().as_bytes(), &salt)
        .map_err(SealError::Hash)?;
    Ok(hash.to_string())
}

pub(crate) fn new_signing_key() -> SigningKey {
    SigningKey::from_bytes(&Zeroizing::new(random::<32>()))
}

/// The key `password` derives under `kdf`'s costs and `salt` (the decoded `kdf.salt`).
fn derive(kdf: &Kdf, salt: &[u8], password: &Secret) -> Result<Zeroizing<[u8; 32]>, SealError> {
    let mut key = Zeroizing::new([0u8; 32]);
    argon2(kdf.m_cost_kib, kdf.t_cost, kdf.p_cost)?
        .hash_password_into(password.expose().as_bytes(), salt, key.as_mut())
        .map_err(SealError::Kdf)?;
    Ok(key)
}

fn associated_data(public_key: &str, kdf: &Kdf) -> Vec<u8> {
    format!(
        "retention-bot identity v1|{public_key}|{}|{}|{}|{}",
        kdf.m_cost_kib, kdf.t_cost, kdf.p_cost, kdf.salt
    )
    .into_bytes()
}

/// Writes a file of the identity atomically (mode 0600).
pub(super) fn store_file(path: &Path, bytes: &[u8]) -> Result<(), SealError> {
    crate::durable::write_atomically(path, bytes).map_err(|source| SealError::Write {
        path: path.display().to_string(),
        cause: source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_unseals_only_with_the_password() {
        let key = new_signing_key();
        let pw = Secret::new("correct horse battery".into());
        let initial = Secret::new("initial-password".into());
        let sealed = SealedIdentity::seal(&key, &pw, hash_initial_password(&initial).unwrap()).unwrap();
        let path = Path::new("identity.json");
        assert_eq!(sealed.unseal(&pw, path).unwrap().as_bytes(), key.as_bytes());
        assert!(matches!(sealed.unseal(&initial, path), Err(SealError::WrongPassword)));
        assert!(sealed.is_initial_password(&initial));
        assert!(!sealed.is_initial_password(&pw));
        let shown = serde_json::to_string(&sealed).unwrap();
        assert!(!shown.contains(&hex::encode(key.as_bytes())));
    }

    #[test]
    fn editing_the_parameters_breaks_the_seal() {
        let key = new_signing_key();
        let pw = Secret::new("pw-pw-pw-pw-pw".into());
        let mut sealed = SealedIdentity::seal(&key, &pw, String::new()).unwrap();
        sealed.kdf.t_cost = 3;
        assert!(sealed.unseal(&pw, Path::new("x")).is_err());
    }
}
