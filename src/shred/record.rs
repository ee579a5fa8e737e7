//! The shredding record: what `shred` destroyed, signed with the bot's key and kept in the bucket
//! beside the archive (`shredding_<period>.json`).
//!
//! It is the one object uploaded unencrypted, on purpose: it must stay readable after the key it
//! speaks of is gone, and under no key that a later shred could destroy. It holds no message: the
//! period's object keys and sizes, the KMS keys and their deletion dates, and the text of the
//! period's manifests and chain head records (file names, sizes, SHA-256 and time spans, each
//! entry signed by the bot), so that `verify` can still walk the chain through the shredded
//! period and report its objects as `SHREDDED` rather than as failures.

use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::manifest::entry::{sign, verify};
use crate::period::Period;

const DOMAIN: &[u8] = b"retention-bot shredding v1\n";
/// The largest record a reader takes: a year of a busy bot's manifests (about 800 bytes a file)
/// fits many times over.
pub const MAX_RECORD: u64 = 1 << 30;
const PREFIX: &str = "shredding_";
const SUFFIX: &str = ".json";

/// Where a shred stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// The keys' deletion is scheduled (or done): the period's objects cannot be decrypted.
    Scheduled,
    /// `shred --cancel` took it back within the pending window; the keys are enabled again.
    Cancelled,
}

/// A KMS key the period's files are under, and when KMS deletes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShreddedKey {
    pub arn: String,
    pub deletion_date: Option<String>,
}

/// An object of the period, as listed when the shred was decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShreddedObject {
    pub key: String,
    pub size: u64,
}

/// The plaintext of a manifest or chain head record of the period, kept for `verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptText {
    pub key: String,
    pub text: String,
}

/// The signed part. Field order is the serialisation order, which signing relies on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShredBody {
    pub period: String,
    pub state: State,
    pub bucket: String,
    pub prefix: String,
    pub keys: Vec<ShreddedKey>,
    pub pending_days: u32,
    pub at: String,
    pub objects: Vec<ShreddedObject>,
    pub kept: Vec<KeptText>,
    /// The signer's public key (hex), to tell which of several bots' keys signed it.
    pub public_key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShredRecord {
    #[serde(flatten)]
    pub body: ShredBody,
    pub sig: String,
}

impl ShredRecord {
    pub fn sign(body: ShredBody, key: &SigningKey) -> Self {
        let sig = sign(DOMAIN, &body, key);
        Self { body, sig }
    }

    pub fn verify(&self, key: &VerifyingKey) -> bool {
        verify(DOMAIN, &self.body, &self.sig, key)
    }

    pub fn to_json(&self) -> String {
        // A struct of strings, integers and lists of them always serialises.
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }
}

/// The record's object name for `period`.
pub fn file_name(period: Period) -> String {
    format!("{PREFIX}{period}{SUFFIX}")
}

pub fn is_record_name(name: &str) -> bool {
    name.strip_prefix(PREFIX)
        .and_then(|rest| rest.strip_suffix(SUFFIX))
        .is_some_and(|period| Period::parse(period).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_verifies_only_as_signed_and_names_are_recognised() {
        let key = crate::identity::sealed::new_signing_key();
        let body = ShredBody {
            period: "2025-03".into(),
            state: State::Scheduled,
            bucket: "b".into(),
            prefix: "p".into(),
            keys: vec![ShreddedKey {
                arn: "arn:aws:kms:us-east-1:111122223333:key/k".into(),
                deletion_date: None,
            }],
            pending_days: 7,
            at: "2026-11-26T00:00:00Z".into(),
            objects: vec![ShreddedObject {
                key: "p/m.txt".into(),
                size: 3,
            }],
            kept: vec![],
            public_key: String::new(),
        };
        let record = ShredRecord::sign(body, &key);
        let parsed: ShredRecord = serde_json::from_str(&record.to_json()).unwrap();
        assert!(parsed.verify(&key.verifying_key()));
        let mut altered = parsed.clone();
        altered.body.state = State::Cancelled;
        assert!(!altered.verify(&key.verifying_key()));
        // A manifest entry's signature over the same bytes cannot pass: the domains differ.
        assert!(!crate::manifest::entry::verify(
            b"retention-bot manifest v1\n",
            &parsed.body,
            &parsed.sig,
            &key.verifying_key()
        ));
        assert_eq!(file_name(Period::parse("2025-03").unwrap()), "shredding_2025-03.json");
        assert!(is_record_name("shredding_2025.json"));
        assert!(!is_record_name("shredding_march.json"));
        assert!(
            crate::period::name_time("shredding_2025-03.json").is_none(),
            "a record belongs to no period"
        );
    }
}
