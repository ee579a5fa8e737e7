//! Manifest entries: one signed, hash-chained JSON line per closed file.
//!
//! Each entry names a file, its size and SHA-256, the first and last `msg_ts` it holds (message
//! files), when it was closed, and the SHA-256 of the previous entry's line; the bot's Ed25519 key
//! signs the entry's JSON without its `sig` field. Anyone with the public key can then prove the
//! archive complete and unaltered: a deleted, altered, reordered or unlisted file shows.

use std::io::Read;
use std::path::Path;

use chrono::{DateTime, Utc};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::message::msg_time;

/// Manifest files are message-file-like: `manifest_<time>_<instance>_<seq>.txt` in `MESGDEST`.
pub(crate) const MANIFEST_BASENAME: &str = "manifest";
/// Whether a file (or object) name is a manifest's, closed or still open.
pub(crate) fn is_manifest_name(name: &str) -> bool {
    name.strip_prefix(MANIFEST_BASENAME)
        .is_some_and(|rest| rest.starts_with('_'))
        && (name.ends_with(crate::spool::naming::CLOSED_SUFFIX) || name.ends_with(crate::spool::naming::OPEN_SUFFIX))
}

/// A manifest closes after this many entries (or an hour, `stage`), so its size is bounded.
pub(crate) const MAX_ENTRIES: usize = 1000;
/// The longest `msg_ts` text an entry records; a longer one (a producer's odd string) is left out
/// of the entry, whose file then counts as holding any time.
pub(crate) const MAX_TS: usize = 64;
/// The longest entry line the bot writes: a file name of at most 255 bytes (each escaped at worst
/// as `\u00XX`), four times of at most [`MAX_TS`] bytes, a key ARN of at most 2,048 bytes, hashes
/// and a signature fit in well under half of it. The manifest stage refuses a longer one.
pub(crate) const MAX_ENTRY_LINE: usize = 8 << 10;
/// The largest manifest the bot writes (every entry, one of them written again after a failed
/// append, plus newlines): what a reader takes whole at most; anything larger was planted.
pub(crate) const MAX_MANIFEST: u64 = ((MAX_ENTRIES + 1) * (MAX_ENTRY_LINE + 1)) as u64;

/// Whether an entry records a file the bot removed unsent because its period was shredded before
/// it could be uploaded: no object is expected for it.
pub(crate) const DISCARDED: &str = "discarded";

/// The `prev` of the very first entry.
pub(crate) const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The signed part of an entry. Field order is the serialisation order, which signing relies on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntryBody {
    pub seq: u64,
    pub name: String,
    pub kind: String,
    pub size: u64,
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_msg_ts: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_msg_ts: Option<String>,
    /// The earliest and latest `msg_ts` in the file, which need not be its first and last lines (a
    /// producer may post older messages late): what tells `export` a file cannot hold a period.
    /// Entries written before these existed lack them, and such files are always read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub earliest_msg_ts: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_msg_ts: Option<String>,
    /// The KMS key the file is encrypted under: with a period template, the ARN the period's alias
    /// resolved to (what `shred` destroys); with one fixed key, that key as configured. `None` for
    /// a plain upload or local files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key: Option<String>,
    pub closed_at: String,
    pub prev: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    #[serde(flatten)]
    pub body: EntryBody,
    pub sig: String,
}

/// What an entry's signature covers, before the body's JSON: a signature over one kind of record
/// can never pass for another's.
const ENTRY_DOMAIN: &[u8] = b"retention-bot manifest v1\n";

impl Entry {
    pub fn sign(body: EntryBody, key: &SigningKey) -> Entry {
        let sig = sign(ENTRY_DOMAIN, &body, key);
        Entry { body, sig }
    }

    pub fn verify(&self, key: &VerifyingKey) -> bool {
        verify(ENTRY_DOMAIN, &self.body, &self.sig, key)
    }

    /// The span of times a message file's messages lie in, if its entry bounds them: from
    /// `earliest_msg_ts`/`latest_msg_ts`. `None` for an attachment, for an entry written before
    /// those fields existed, or for a time that does not parse: such a file may hold any time.
    pub(crate) fn msg_span(&self) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let earliest = msg_time(self.body.earliest_msg_ts.as_deref()?)?;
        let latest = msg_time(self.body.latest_msg_ts.as_deref()?)?;
        Some((earliest, latest))
    }

    /// A file removed unsent (its period shredded first): no object is expected for it.
    pub(crate) fn is_discarded(&self) -> bool {
        self.body.kind == DISCARDED
    }

    /// The line as written (without its newline).
    pub fn to_line(&self) -> String {
        // A struct of strings and integers always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }
}

fn signed_bytes(domain: &[u8], body: &impl Serialize) -> Vec<u8> {
    let mut bytes = domain.to_vec();
    // A struct of strings and integers always serialises.
    bytes.extend(serde_json::to_vec(body).unwrap_or_default());
    bytes
}

/// The hex Ed25519 signature of `domain` and `body`'s JSON.
pub(crate) fn sign(domain: &[u8], body: &impl Serialize, key: &SigningKey) -> String {
    hex::encode(key.sign(&signed_bytes(domain, body)).to_bytes())
}

/// Whether `sig` (hex) signs `domain` and `body`'s JSON under `key`.
pub(crate) fn verify(domain: &[u8], body: &impl Serialize, sig: &str, key: &VerifyingKey) -> bool {
    let Some(sig) = hex::decode(sig).ok().and_then(|b| Signature::from_slice(&b).ok()) else {
        return false;
    };
    key.verify(&signed_bytes(domain, body), &sig).is_ok()
}

/// SHA-256 of an entry's line: what the next entry's `prev` holds.
pub fn line_hash(line: &str) -> String {
    hex::encode(Sha256::digest(line.as_bytes()))
}

/// What a file holds, for its entry: size and SHA-256, and for message files the `msg_ts` of the
/// first and last line, and the earliest and latest. Streams the file.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct FileFacts {
    pub size: u64,
    pub sha256: String,
    pub first_msg_ts: Option<String>,
    pub last_msg_ts: Option<String>,
    pub earliest_msg_ts: Option<String>,
    pub latest_msg_ts: Option<String>,
}

pub(crate) fn file_facts(path: &Path, message_lines: bool) -> std::io::Result<FileFacts> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut facts = FileFacts::default();
    if !message_lines {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            facts.size += n as u64;
        }
    } else {
        // The earliest and latest times seen, each with its text as written.
        type Seen = (DateTime<Utc>, String);
        let mut span: Option<(Seen, Seen)> = None;
        // A time too long to record leaves the span open: the file may hold any time.
        let mut unbounded = false;
        let last = crate::durable::for_each_line(file, |line| {
            hasher.update(line);
            facts.size += line.len() as u64;
            let ts = msg_ts(line);
            if facts.first_msg_ts.is_none() && facts.size == line.len() as u64 {
                facts.first_msg_ts = ts.clone().filter(|t| t.len() <= MAX_TS);
            }
            if let Some((ts, time)) = ts.and_then(|ts| msg_time(&ts).map(|t| (ts, t))) {
                unbounded |= ts.len() > MAX_TS;
                span = Some(match span.take() {
                    None => ((time, ts.clone()), (time, ts)),
                    Some((lo, hi)) => (
                        if time < lo.0 { (time, ts.clone()) } else { lo },
                        if time > hi.0 { (time, ts) } else { hi },
                    ),
                });
            }
        })?;
        facts.last_msg_ts = msg_ts(&last).filter(|t| t.len() <= MAX_TS);
        if let Some(((_, earliest), (_, latest))) = span.filter(|_| !unbounded) {
            (facts.earliest_msg_ts, facts.latest_msg_ts) = (Some(earliest), Some(latest));
        }
    }
    facts.sha256 = hex::encode(hasher.finalize());
    Ok(facts)
}

fn msg_ts(line: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Ts {
        msg_ts: String,
    }
    serde_json::from_slice::<Ts>(line).ok().map(|t| t.msg_ts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(seq: u64) -> EntryBody {
        EntryBody {
            seq,
            name: "f.txt".into(),
            kind: "messages".into(),
            size: 3,
            sha256: "ab".into(),
            first_msg_ts: Some("1.0".into()),
            last_msg_ts: Some("2.0".into()),
            earliest_msg_ts: Some("1.0".into()),
            latest_msg_ts: Some("2.0".into()),
            kms_key: None,
            closed_at: "2026-11-22T00:00:00Z".into(),
            prev: GENESIS.into(),
        }
    }

    #[test]
    fn signatures_cover_every_field_and_survive_a_round_trip() {
        let key = crate::identity::sealed::new_signing_key();
        let entry = Entry::sign(body(1), &key);
        let parsed: Entry = serde_json::from_str(&entry.to_line()).unwrap();
        assert!(parsed.verify(&key.verifying_key()));
        let mut altered = parsed.clone();
        altered.body.size = 4;
        assert!(!altered.verify(&key.verifying_key()));
        let other = crate::identity::sealed::new_signing_key();
        assert!(!parsed.verify(&other.verifying_key()));
    }

    #[test]
    fn facts_of_a_message_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.txt");
        // Out of order, as a late producer leaves it; "10.0" is later than "9.5" as a time, not as text.
        std::fs::write(
            &p,
            "{\"msg_ts\":\"9.5\"}\n{\"msg_ts\":\"10.0\"}\n{\"msg_ts\":\"1.5\"}\n",
        )
        .unwrap();
        let f = file_facts(&p, true).unwrap();
        assert_eq!(
            (f.first_msg_ts.as_deref(), f.last_msg_ts.as_deref()),
            (Some("9.5"), Some("1.5"))
        );
        assert_eq!(
            (f.earliest_msg_ts.as_deref(), f.latest_msg_ts.as_deref()),
            (Some("1.5"), Some("10.0"))
        );
        assert_eq!(f.size, 52);
        assert_eq!(f.sha256, file_facts(&p, false).unwrap().sha256);
    }
}
