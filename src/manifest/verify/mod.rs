//! `retention-bot verify DIR`: proves an archive complete and unaltered with the public key alone.
//!
//! Every manifest entry's signature is checked, then the hash chain (each entry names the hash of the
//! one before, so a dropped, inserted or reordered entry breaks it), then every listed file's presence,
//! size and SHA-256; finally every file no entry lists is reported.
//!
//! The archive's end is checked against the newest signed chain head record found under the directory
//! (or given with `--head`): an archive that stops short of it was cut off (`TRUNCATED`).
//!
//! Several bots may write to one folder (replicas behind a load balancer): each signs with its own key
//! and keeps its own chain. Given their public keys, each entry belongs to the key that signed it, and
//! each key's entries must form an unbroken chain of their own.

use std::fmt;
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;

mod bucket;
mod chain;
mod dir;
mod own;
mod shredded;
mod versions;

pub use bucket::BucketReport;
pub use bucket::InFlight;
pub use bucket::{BucketCheck, ObjectFacts, Progress};
pub(crate) use bucket::{bot_tag, content_problem};
pub(crate) use chain::Chains;
pub use dir::{scan, verify_dir};
pub(crate) use own::{head_of, head_versions, take_manifest};
pub(crate) use shredded::{ShredRecords, keys_deleted, newest_record, not_in_effect};
pub(crate) use versions::{Listing, ObjectReader, Versioning};
pub use versions::{Over, Version};

/// One thing wrong with the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    Unreadable {
        at: String,
        why: String,
    },
    BadSignature {
        at: String,
    },
    ChainBroken {
        at: String,
        seq: u64,
        expected_seq: u64,
    },
    Missing {
        name: String,
        seq: u64,
    },
    Altered {
        name: String,
        seq: u64,
        why: String,
    },
    Unlisted {
        path: PathBuf,
    },
    /// Several files under the archive carry a listed file's name: one may be a forgery.
    Duplicate {
        name: String,
        seq: u64,
        paths: Vec<PathBuf>,
    },
    /// No manifest at all: an empty directory, a wrong path, or a volume that is not mounted.
    NothingToVerify {
        dir: PathBuf,
    },
    /// With several keys, one signed no entry at all.
    NoEntries {
        key: String,
    },
    /// An object retained for less than `--min-retention-days` (or not at all).
    ShortRetention {
        at: String,
        why: String,
    },
    /// A signed chain head says the chain went further than the archive does.
    Truncated {
        head: String,
        last_seq: u64,
        head_seq: u64,
    },
    /// A signed chain head names an entry the archive holds, but with another hash: the chain was
    /// rewritten from there.
    HeadMismatch {
        head: String,
        seq: u64,
    },
    /// On a versioned bucket: a delete marker stands over the bot's version, which is still there
    /// (and is what was checked).
    Hidden {
        at: String,
        version: String,
        marker: String,
    },
    /// On a versioned bucket: a newer version with other content stands over the bot's version,
    /// which is still there (and is what was checked).
    Replaced {
        at: String,
        version: String,
        newer: String,
    },
    /// A signed shredding record whose key KMS does not hold pending deletion: the shred was
    /// cancelled outside `shred --cancel`, or an old record was put back.
    ShredNotInEffect {
        record: String,
        period: String,
        key: String,
        state: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Unreadable { at, why } => write!(f, "UNREADABLE {at}: {why}"),
            Problem::BadSignature { at } => {
                write!(
                    f,
                    "BAD SIGNATURE {at}: the entry was altered or not signed by this bot (no given public key verifies it)"
                )
            }
            Problem::ChainBroken { at, seq, expected_seq } => write!(
                f,
                "CHAIN BROKEN {at}: entry {seq} does not follow entry {} (entries were dropped, inserted or reordered)",
                expected_seq.saturating_sub(1)
            ),
            Problem::Missing { name, seq } => write!(f, "MISSING {name} (manifest entry {seq})"),
            Problem::Altered { name, seq, why } => write!(f, "ALTERED {name} (manifest entry {seq}): {why}"),
            Problem::Unlisted { path } => write!(f, "UNLISTED {}: no manifest entry lists this file", path.display()),
            Problem::Duplicate { name, seq, paths } => write!(
                f,
                "DUPLICATE {name} (manifest entry {seq}): {} files have this name ({}); each is checked, but only one is the archived file",
                paths.len(),
                paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Problem::Truncated {
                head,
                last_seq,
                head_seq,
            } => write!(
                f,
                "TRUNCATED: the archive ends at entry {last_seq}, but {head} says entry {head_seq} exists: the newest manifests (and the files they list) are missing"
            ),
            Problem::ShortRetention { at, why } => write!(f, "SHORT RETENTION {at}: {why}"),
            Problem::Hidden { at, version, marker } => write!(
                f,
                "HIDDEN {at}: a delete marker (version {marker}) hides the bot's version {version}, which is still in the bucket and was checked; readers and plain listings no longer see it (remove the marker: DeleteObject with its version id)"
            ),
            Problem::Replaced { at, version, newer } => write!(
                f,
                "REPLACED {at}: a newer version ({newer}) with other content stands over the bot's version {version}, which is still in the bucket and was checked; readers now get the newer one"
            ),
            Problem::NoEntries { key } => write!(
                f,
                "NO ENTRIES for public key {key}: no manifest entry is signed with it (that bot's whole archive is missing, or the key was given by mistake)"
            ),
            Problem::HeadMismatch { head, seq } => write!(
                f,
                "CHAIN BROKEN at entry {seq}: it is not the entry the signed chain head {head} names (the chain was rewritten from there)"
            ),
            Problem::ShredNotInEffect {
                record,
                period,
                key,
                state,
            } => write!(
                f,
                "SHRED NOT IN EFFECT {record}: it says the period {period} is shredded, but KMS key {key} is {state}, not pending deletion; the period's objects are checked as usual"
            ),
            Problem::NothingToVerify { dir } => write!(
                f,
                "NOTHING TO VERIFY: no manifest under {} (a wrong path, or a volume that is not mounted?); point verify at the directory holding the message files and manifests",
                dir.display()
            ),
        }
    }
}

#[derive(Debug, Default)]
pub struct Report {
    pub manifests: usize,
    pub entries: usize,
    /// Entries signed by each given key, in the keys' order.
    pub entries_by_key: Vec<usize>,
    pub problems: Vec<Problem>,
    /// Periods crypto-shredded on purpose (`shred`), whose objects are expected to be unreadable.
    pub shredded: Vec<Shredded>,
    /// A bucket's versioning: whether a deletion can be seen in it at all.
    pub versioning: Option<Versioning>,
}

/// A period a signed shredding record says was destroyed: its objects are reported, not checked.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Shredded {
    pub period: String,
    pub record: String,
    pub keys: Vec<String>,
    /// The period's objects still in the bucket (the record lists them).
    pub objects: usize,
    #[serde(skip)]
    pub objects_listed: Vec<String>,
}

impl fmt::Display for Shredded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SHREDDED {}: {} object(s) destroyed on purpose with KMS key(s) {} (signed record {}); expected, not a problem",
            self.period,
            self.objects,
            self.keys.join(", "),
            self.record
        )
    }
}

/// Head record files kept elsewhere (`--head`): where each is, and its text or why it is unreadable.
pub(crate) fn read_heads(paths: &[PathBuf]) -> Vec<(String, Result<String, String>)> {
    paths
        .iter()
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::read_to_string(p).map_err(|e| crate::error_chain::chain(&e)),
            )
        })
        .collect()
}

/// Why a public key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PublicKeyError {
    #[error("cannot read public key {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        cause: std::io::Error,
    },
    #[error("{} does not hold a 64-hex-digit Ed25519 public key", path.display())]
    NotHex { path: PathBuf },
    #[error("{}: not a valid Ed25519 public key", path.display())]
    NotAKey {
        path: PathBuf,
        #[source]
        cause: ed25519_dalek::SignatureError,
    },
}

/// Reads the public key written at first run: 64 hex digits.
pub fn read_public_key(path: &Path) -> Result<VerifyingKey, PublicKeyError> {
    let text = std::fs::read_to_string(path).map_err(|cause| PublicKeyError::Read {
        path: path.to_owned(),
        cause,
    })?;
    let bytes: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| PublicKeyError::NotHex { path: path.to_owned() })?;
    VerifyingKey::from_bytes(&bytes).map_err(|cause| PublicKeyError::NotAKey {
        path: path.to_owned(),
        cause,
    })
}
