//! Chain head records: the archive's completeness leaves the host.
//!
//! The chain proves that nothing was dropped *between* entries, but not that nothing was cut off the
//! end: deleting the newest manifest together with every file it lists leaves a shorter chain that
//! verifies. So each time a manifest closes, its last entry's `seq` and hash go out twice, to places
//! an attacker on the host cannot roll back: a small signed record uploaded like any other file (so
//! under Object Lock when that is configured), `chainhead_<manifest>.json`, and an SNS event. `verify`
//! then reports `TRUNCATED` when the archive ends before the newest head it finds (or is given).

use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::entry::{sign, verify};

/// Head record files are named `chainhead_<the manifest's name without .txt>.json`.
pub(crate) const HEAD_RECORD_PREFIX: &str = "chainhead_";
const HEAD_RECORD_SUFFIX: &str = ".json";
const HEAD_DOMAIN: &[u8] = b"retention-bot chain head v1\n";
/// The largest head record the bot writes (a manifest name of the bot's own making, a hash, a
/// time and a signature take a few hundred bytes): what a reader takes whole at most.
pub(crate) const MAX_HEAD_RECORD: u64 = 4 << 10;

/// The signed part: which entry was the chain's newest when `manifest` closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HeadBody {
    pub seq: u64,
    /// SHA-256 of that entry's line (what the next entry's `prev` holds).
    pub hash: String,
    pub manifest: String,
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HeadRecord {
    #[serde(flatten)]
    pub body: HeadBody,
    pub sig: String,
}

impl HeadRecord {
    pub fn sign(body: HeadBody, key: &SigningKey) -> Self {
        let sig = sign(HEAD_DOMAIN, &body, key);
        Self { body, sig }
    }

    pub fn verify(&self, key: &VerifyingKey) -> bool {
        verify(HEAD_DOMAIN, &self.body, &self.sig, key)
    }

    /// The record as its file holds it (one JSON line).
    pub fn to_line(&self) -> String {
        // A struct of strings and integers always serialises.
        serde_json::to_string(self).unwrap_or_default() + "\n"
    }
}

/// The record file's name for the manifest named `manifest`.
pub fn file_name(manifest: &str) -> String {
    let stem = manifest.strip_suffix(".txt").unwrap_or(manifest);
    format!("{HEAD_RECORD_PREFIX}{stem}{HEAD_RECORD_SUFFIX}")
}

/// The manifest a head record file (`chainhead_<stem>.json`) belongs to: `<stem>.txt`.
pub(crate) fn manifest_of(head: &str) -> String {
    let stem = head
        .strip_prefix(HEAD_RECORD_PREFIX)
        .and_then(|rest| rest.strip_suffix(HEAD_RECORD_SUFFIX))
        .unwrap_or(head);
    format!("{stem}.txt")
}

pub(crate) fn is_head_record(name: &str) -> bool {
    name.starts_with(HEAD_RECORD_PREFIX) && name.ends_with(HEAD_RECORD_SUFFIX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Entry, EntryBody};

    fn body() -> HeadBody {
        HeadBody {
            seq: 7,
            hash: "ab".repeat(32),
            manifest: "manifest_1_x_000001.txt".into(),
            at: "2026-11-26T08:00:00.000Z".into(),
        }
    }

    #[test]
    fn a_head_verifies_under_its_key_only_and_not_once_altered() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let other = SigningKey::from_bytes(&[8; 32]);
        let record = HeadRecord::sign(body(), &key);
        assert!(record.verify(&key.verifying_key()));
        assert!(!record.verify(&other.verifying_key()));
        let mut moved = record.clone();
        moved.body.seq = 9;
        assert!(!moved.verify(&key.verifying_key()));
        let parsed: HeadRecord = serde_json::from_str(record.to_line().trim()).unwrap();
        assert_eq!(parsed, record);
    }

    #[test]
    fn an_entry_signature_never_passes_for_a_head_and_names_are_recognised() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let entry = Entry::sign(
            EntryBody {
                seq: 1,
                name: "n".into(),
                kind: "message".into(),
                size: 0,
                sha256: String::new(),
                first_msg_ts: None,
                last_msg_ts: None,
                earliest_msg_ts: None,
                latest_msg_ts: None,
                kms_key: None,
                closed_at: String::new(),
                prev: String::new(),
            },
            &key,
        );
        let forged = HeadRecord {
            body: body(),
            sig: entry.sig,
        };
        assert!(!forged.verify(&key.verifying_key()));
        let name = file_name("manifest_20261126T080000000Z_abc_000001.txt");
        assert_eq!(name, "chainhead_manifest_20261126T080000000Z_abc_000001.json");
        assert!(is_head_record(&name) && !is_head_record("manifest_1.txt"));
        assert_eq!(manifest_of(&name), "manifest_20261126T080000000Z_abc_000001.txt");
    }
}
