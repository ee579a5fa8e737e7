//! The shredding record: what `shred` destroyed, signed with the bot's key and kept in the bucket
//! beside the archive (`shredding_<period>.json`).
//!
//! It is the one object uploaded unencrypted, on purpose: it must stay readable after the key it
//! speaks of is gone, and under no key that a later shred could destroy. It holds no message: the
//! period's object keys and sizes, the KMS keys and their deletion dates, and the text of the
//! period's manifests and chain head records (file names, sizes, SHA-256 and time spans, each
//! entry signed by the bot), so that `verify` can still walk the chain through the shredded
//! period and report its objects as `SHREDDED` rather than as failures.
//!
//! Its layout lets a reader refuse a planted one cheaply: the first line is the signed header
//! (at most [`MAX_HEADER`] bytes), which names the number, length and SHA-256 of the lines after
//! it; a reader checks the signature before it takes more than that first line, and then takes no
//! more than the signed length. Every line is a JSON value, so `jq . shredding_2025-03.json` reads
//! it.
//!
//! Records the first `shred` wrote (v1: one pretty-printed JSON object, signed whole) are still
//! read, up to [`MAX_V1_RECORD`]: their signature can only be checked once the whole object is in
//! memory, so a planted object that looks like one costs at most that much.

use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::manifest::entry::{sign, verify};
use crate::period::Period;

const DOMAIN: &[u8] = b"retention-bot shredding v2\n";
const DOMAIN_V1: &[u8] = b"retention-bot shredding v1\n";
/// The largest v1 record a reader takes whole: a year of a busy bot's manifests (about 800 bytes a
/// file) fits many times over.
pub(crate) const MAX_V1_RECORD: usize = 64 << 20;
/// The longest header a reader takes: the bot writes a few hundred bytes (a prefix of at most 512
/// bytes, one key ARN per shredded key).
pub(crate) const MAX_HEADER: usize = 64 << 10;
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

/// What the lines after the header hold, as signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contents {
    pub lines: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// The signed header. Field order is the serialisation order, which signing relies on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShredBody {
    pub period: String,
    pub state: State,
    pub bucket: String,
    pub prefix: String,
    pub keys: Vec<ShreddedKey>,
    pub pending_days: u32,
    pub at: String,
    /// The signer's public key (hex), to tell which of several bots' keys signed it.
    pub public_key: String,
    pub contents: Contents,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Header {
    #[serde(flatten)]
    body: ShredBody,
    sig: String,
}

/// One line after the header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Line {
    Object(ShreddedObject),
    Kept(KeptText),
}

/// A whole record: the signed header and the contents it vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShredRecord {
    pub body: ShredBody,
    pub sig: String,
    pub objects: Vec<ShreddedObject>,
    pub kept: Vec<KeptText>,
}

impl ShredRecord {
    /// Signs `body` (its `contents` are filled in from `objects` and `kept`).
    pub fn sign(mut body: ShredBody, objects: Vec<ShreddedObject>, kept: Vec<KeptText>, key: &SigningKey) -> Self {
        let text = contents_text(&objects, &kept);
        body.contents = Contents {
            lines: (objects.len() + kept.len()) as u64,
            bytes: text.len() as u64,
            sha256: hex::encode(Sha256::digest(text.as_bytes())),
        };
        let sig = sign(DOMAIN, &body, key);
        Self {
            body,
            sig,
            objects,
            kept,
        }
    }

    pub fn verify(&self, key: &VerifyingKey) -> bool {
        verify(DOMAIN, &self.body, &self.sig, key)
    }

    /// The record as its object holds it: the header line, then the contents.
    pub fn to_json(&self) -> String {
        let header = Header {
            body: self.body.clone(),
            sig: self.sig.clone(),
        };
        // A struct of strings, integers and lists of them always serialises.
        let mut text = serde_json::to_string(&header).unwrap_or_default();
        text.push('\n');
        text.push_str(&contents_text(&self.objects, &self.kept));
        text
    }
}

fn contents_text(objects: &[ShreddedObject], kept: &[KeptText]) -> String {
    let lines = objects
        .iter()
        .cloned()
        .map(Line::Object)
        .chain(kept.iter().cloned().map(Line::Kept));
    let mut text = String::new();
    for line in lines {
        text.push_str(&serde_json::to_string(&line).unwrap_or_default());
        text.push('\n');
    }
    text
}

/// Why a record was not taken. Nothing large was held for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RecordError {
    #[error("not a shredding record: its first line is longer than {MAX_HEADER} bytes (planted?)")]
    HeaderTooLong,
    #[error("not a shredding record: an old (v1) record over {MAX_V1_RECORD} bytes (planted?)")]
    V1TooLong,
    #[error("not a shredding record: {0}")]
    NotARecord(String),
    #[error("its header is not signed by any of the given bots' keys (forged, or another bot's)")]
    BadSignature,
    #[error("its contents are not the ones its signed header names ({0}): altered")]
    Altered(String),
}

/// Reads a record as its bytes arrive, checking the header's signature before anything past it is
/// kept, and keeping no more than the signed length.
pub(crate) struct RecordReader<'k> {
    keys: &'k [VerifyingKey],
    buf: Vec<u8>,
    header: Option<(ShredBody, String)>,
    hasher: Sha256,
    /// The object began as a v1 record does (`{` alone on its first line): taken whole.
    v1: bool,
}

impl<'k> RecordReader<'k> {
    pub fn new(keys: &'k [VerifyingKey]) -> Self {
        Self {
            keys,
            buf: Vec::new(),
            header: None,
            hasher: Sha256::new(),
            v1: false,
        }
    }

    /// Takes the next bytes. Fails as soon as the header is too long, not a record, or not signed
    /// by one of the keys, or the contents run past their signed length.
    pub(crate) fn feed(&mut self, mut chunk: &[u8]) -> Result<(), RecordError> {
        if self.buf.is_empty() && self.header.is_none() && chunk.starts_with(b"{\n") {
            self.v1 = true;
        }
        if self.v1 {
            if self.buf.len() + chunk.len() > MAX_V1_RECORD {
                return Err(RecordError::V1TooLong);
            }
            self.buf.extend_from_slice(chunk);
            return Ok(());
        }
        if self.header.is_none() {
            let Some(newline) = chunk.iter().position(|b| *b == b'\n') else {
                if self.buf.len() + chunk.len() > MAX_HEADER {
                    return Err(RecordError::HeaderTooLong);
                }
                self.buf.extend_from_slice(chunk);
                return Ok(());
            };
            if self.buf.len() + newline > MAX_HEADER {
                return Err(RecordError::HeaderTooLong);
            }
            self.buf.extend_from_slice(&chunk[..newline]);
            self.take_header()?;
            chunk = &chunk[newline + 1..];
        }
        let signed = self.header.as_ref().map_or(0, |(b, _)| b.contents.bytes);
        if (self.buf.len() + chunk.len()) as u64 > signed {
            return Err(RecordError::Altered(format!("more than the {signed} bytes signed")));
        }
        self.hasher.update(chunk);
        self.buf.extend_from_slice(chunk);
        Ok(())
    }

    fn take_header(&mut self) -> Result<(), RecordError> {
        let header: Header =
            serde_json::from_slice(&self.buf).map_err(|e| RecordError::NotARecord(crate::error_chain::chain(&e)))?;
        let record = ShredRecord {
            body: header.body,
            sig: header.sig,
            objects: Vec::new(),
            kept: Vec::new(),
        };
        if !self.keys.iter().any(|k| record.verify(k)) {
            return Err(RecordError::BadSignature);
        }
        self.buf = Vec::with_capacity(usize::try_from(record.body.contents.bytes.min(1 << 20)).unwrap_or(0));
        self.header = Some((record.body, record.sig));
        Ok(())
    }

    /// The whole record, once its contents checked out against the signed header.
    pub fn finish(self) -> Result<ShredRecord, RecordError> {
        if self.v1 {
            return read_v1(&self.buf, self.keys);
        }
        let Some((body, sig)) = self.header else {
            return Err(RecordError::NotARecord("it has no header line".into()));
        };
        let contents = &body.contents;
        if self.buf.len() as u64 != contents.bytes || hex::encode(self.hasher.finalize()) != contents.sha256 {
            return Err(RecordError::Altered(format!(
                "{} bytes of contents, signed as {} bytes with another SHA-256",
                self.buf.len(),
                contents.bytes
            )));
        }
        let mut record = ShredRecord {
            body,
            sig,
            objects: Vec::new(),
            kept: Vec::new(),
        };
        for line in self.buf.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            match serde_json::from_slice(line).map_err(|e| RecordError::Altered(crate::error_chain::chain(&e)))? {
                Line::Object(o) => record.objects.push(o),
                Line::Kept(k) => record.kept.push(k),
            }
        }
        if (record.objects.len() + record.kept.len()) as u64 != record.body.contents.lines {
            return Err(RecordError::Altered("another number of lines".into()));
        }
        Ok(record)
    }
}

/// A v1 record's signed part, as the first `shred` wrote it (field order is the signed order).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct V1Body {
    period: String,
    state: State,
    bucket: String,
    prefix: String,
    keys: Vec<ShreddedKey>,
    pending_days: u32,
    at: String,
    objects: Vec<ShreddedObject>,
    kept: Vec<KeptText>,
    public_key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct V1Record {
    #[serde(flatten)]
    body: V1Body,
    sig: String,
}

/// A whole v1 record, its signature checked, as the record it stands for (its `sig` the v1 one:
/// it is never written again as it is; a cancellation signs a new record).
fn read_v1(text: &[u8], keys: &[VerifyingKey]) -> Result<ShredRecord, RecordError> {
    let v1: V1Record =
        serde_json::from_slice(text).map_err(|e| RecordError::NotARecord(crate::error_chain::chain(&e)))?;
    if !keys.iter().any(|k| verify(DOMAIN_V1, &v1.body, &v1.sig, k)) {
        return Err(RecordError::BadSignature);
    }
    let b = v1.body;
    let contents = contents_text(&b.objects, &b.kept);
    Ok(ShredRecord {
        body: ShredBody {
            period: b.period,
            state: b.state,
            bucket: b.bucket,
            prefix: b.prefix,
            keys: b.keys,
            pending_days: b.pending_days,
            at: b.at,
            public_key: b.public_key,
            contents: Contents {
                lines: (b.objects.len() + b.kept.len()) as u64,
                bytes: contents.len() as u64,
                sha256: hex::encode(Sha256::digest(contents.as_bytes())),
            },
        },
        sig: v1.sig,
        objects: b.objects,
        kept: b.kept,
    })
}

/// The record's object name for `period`.
pub fn file_name(period: Period) -> String {
    format!("{PREFIX}{period}{SUFFIX}")
}

/// The name of a record a bot adds to a period's shred: the copy of its manifest (or head record)
/// named `file`, of the shredded period, that was still on its disk and can no longer go up
/// encrypted. The copy keeps the chain checkable, as the main record's copies do.
pub(crate) fn supplement_name(period: Period, file: &str) -> String {
    let stem = file.rsplit_once('.').map_or(file, |(stem, _)| stem);
    format!("{PREFIX}{period}_{stem}{SUFFIX}")
}

/// A record's name: `shredding_<period>.json`, or a supplement's, `shredding_<period>_<file>.json`.
pub(crate) fn is_record_name(name: &str) -> bool {
    name.strip_prefix(PREFIX)
        .and_then(|rest| rest.strip_suffix(SUFFIX))
        .is_some_and(|rest| {
            let (period, label) = rest.split_once('_').unwrap_or((rest, "x"));
            Period::parse(period).is_ok()
                && !label.is_empty()
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_the_first_shred_wrote_is_still_read_and_checked() {
        let key = crate::identity::sealed::new_signing_key();
        let body = V1Body {
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
            kept: vec![KeptText {
                key: "p/manifest_1.txt".into(),
                text: "{}\n".into(),
            }],
            public_key: hex::encode(key.verifying_key().as_bytes()),
        };
        // As the first shred wrote it: pretty-printed, signed whole.
        let v1 = V1Record {
            sig: crate::manifest::entry::sign(DOMAIN_V1, &body, &key),
            body,
        };
        let text = serde_json::to_string_pretty(&v1).unwrap() + "\n";
        let keys = [key.verifying_key()];
        let read = |text: &str, keys: &[VerifyingKey]| {
            let mut reader = RecordReader::new(keys);
            for chunk in text.as_bytes().chunks(7) {
                reader.feed(chunk)?;
            }
            reader.finish()
        };
        let record = read(&text, &keys).unwrap();
        assert_eq!(
            (record.body.period.as_str(), record.objects.len(), record.kept.len()),
            ("2025-03", 1, 1)
        );
        let other = [crate::identity::sealed::new_signing_key().verifying_key()];
        assert_eq!(read(&text, &other).unwrap_err(), RecordError::BadSignature);
        let altered = text.replace("p/m.txt", "p/n.txt");
        assert_eq!(read(&altered, &keys).unwrap_err(), RecordError::BadSignature);
        let huge = format!("{{\n{}", " ".repeat(MAX_V1_RECORD));
        assert_eq!(read(&huge, &keys).unwrap_err(), RecordError::V1TooLong);
    }

    fn body() -> ShredBody {
        ShredBody {
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
            public_key: String::new(),
            contents: Contents {
                lines: 0,
                bytes: 0,
                sha256: String::new(),
            },
        }
    }

    fn signed(key: &SigningKey) -> ShredRecord {
        ShredRecord::sign(
            body(),
            vec![ShreddedObject {
                key: "p/m.txt".into(),
                size: 3,
            }],
            vec![KeptText {
                key: "p/manifest_1.txt".into(),
                text: "{\"seq\":1}\n".into(),
            }],
            key,
        )
    }

    fn read(bytes: &[u8], keys: &[VerifyingKey], cut: usize) -> Result<ShredRecord, RecordError> {
        let mut reader = RecordReader::new(keys);
        for chunk in bytes.chunks(cut) {
            reader.feed(chunk)?;
        }
        reader.finish()
    }

    #[test]
    fn a_record_reads_back_in_any_cut_and_verifies_only_as_signed() {
        let key = crate::identity::sealed::new_signing_key();
        let record = signed(&key);
        let text = record.to_json();
        for cut in [1, 7, 100, 1 << 20] {
            assert_eq!(read(text.as_bytes(), &[key.verifying_key()], cut).unwrap(), record);
        }
        let other = crate::identity::sealed::new_signing_key();
        assert_eq!(
            read(text.as_bytes(), &[other.verifying_key()], 100),
            Err(RecordError::BadSignature)
        );
        let mut altered = record.clone();
        altered.body.state = State::Cancelled;
        assert!(!altered.verify(&key.verifying_key()));
        // A manifest entry's signature over the same bytes cannot pass: the domains differ.
        assert!(!crate::manifest::entry::verify(
            b"retention-bot manifest v1\n",
            &record.body,
            &record.sig,
            &key.verifying_key()
        ));
    }

    #[test]
    fn altered_or_planted_contents_are_refused_before_much_is_held() {
        let key = crate::identity::sealed::new_signing_key();
        let keys = [key.verifying_key()];
        let text = signed(&key).to_json();
        // A line changed, a line added.
        let changed = text.replace("m.txt", "x.txt");
        assert!(matches!(
            read(changed.as_bytes(), &keys, 64),
            Err(RecordError::Altered(_))
        ));
        let longer = format!("{text}{{\"object\":{{\"key\":\"p/y\",\"size\":1}}}}\n");
        assert!(matches!(
            read(longer.as_bytes(), &keys, 64),
            Err(RecordError::Altered(_))
        ));
        // A big unsigned object fails within its first line's limit.
        let mut reader = RecordReader::new(&keys);
        let junk = vec![b'x'; 1 << 20];
        let fed: Result<(), RecordError> = junk.chunks(4096).try_for_each(|c| reader.feed(c));
        assert_eq!(fed, Err(RecordError::HeaderTooLong));
        assert!(reader.buf.len() <= MAX_HEADER);
        assert!(matches!(read(b"{}\n", &keys, 1), Err(RecordError::NotARecord(_))));
        assert!(matches!(read(b"", &keys, 1), Err(RecordError::NotARecord(_))));
    }

    #[test]
    fn names_are_recognised() {
        assert_eq!(file_name(Period::parse("2025-03").unwrap()), "shredding_2025-03.json");
        assert!(is_record_name("shredding_2025.json"));
        assert!(!is_record_name("shredding_march.json"));
        let supplement = supplement_name(
            Period::parse("2025-03").unwrap(),
            "manifest_20250331T000000000Z_0a0b0c0d0e0f_000002.txt",
        );
        assert_eq!(
            supplement,
            "shredding_2025-03_manifest_20250331T000000000Z_0a0b0c0d0e0f_000002.json"
        );
        assert!(is_record_name(&supplement));
        assert!(!is_record_name("shredding_2025-03_.json") && !is_record_name("shredding_2025-03_a b.json"));
        assert!(
            crate::period::name_time("shredding_2025-03.json").is_none(),
            "a record belongs to no period"
        );
    }
}
