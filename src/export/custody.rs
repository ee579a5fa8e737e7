//! The chain-of-custody report: what was asked, from where, by which tool and when; every file of
//! the archive read, with its SHA-256, manifest entry and check; the counts; and the SHA-256 of every
//! file the export wrote. `custody.json` is signed with the bot's Ed25519 key when it is available
//! (the signature covers `retention-bot custody v1\n` and the report's compact JSON without its
//! `signature` field); `custody.txt` says the same for a person.

use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer as _, Verifier as _, VerifyingKey};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::archive::{Kind, Read, Source};
use super::selection::Selection;
use super::{Counts, ExportError, Signing};
use crate::error_chain::Chain;

pub(crate) const CUSTODY_STEM: &str = "custody";
pub const CUSTODY_JSON: &str = "custody.json";
pub(crate) const CUSTODY_TXT: &str = "custody.txt";
const DOMAIN: &[u8] = b"retention-bot custody v1\n";

/// One file of the archive the export read.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SourceRecord {
    pub at: String,
    pub kind: Kind,
    /// Bytes stored (ciphertext and tag, when encrypted).
    pub stored_bytes: u64,
    /// SHA-256 of its content (decrypted), as read.
    pub sha256: Option<String>,
    pub manifest_seq: Option<u64>,
    /// The public key whose signed chain lists it.
    pub signed_by: Option<String>,
    /// `verified`, or what is wrong.
    pub result: String,
}

impl SourceRecord {
    pub fn of(source: &Source, location: &str) -> Self {
        Self {
            at: location.to_owned(),
            kind: source.kind,
            stored_bytes: source.stored,
            sha256: None,
            manifest_seq: source.entry.as_ref().map(|e| e.body.seq),
            signed_by: source.signer.clone(),
            result: String::new(),
        }
    }

    pub(crate) fn of_read(read: &Read, location: &str) -> Self {
        Self {
            sha256: read.sha256.clone(),
            result: match &read.problem {
                Some(why) => format!("UNREADABLE: {why}"),
                None => "read".into(),
            },
            ..Self::of(&read.source, location)
        }
    }
}

/// What the report says, before the output files' hashes and the signature.
pub struct Report<'a> {
    pub archive: String,
    pub selection: &'a Selection,
    pub formats: super::Formats,
    /// Files no signed entry lists were taken into the main output (`--unsigned-source`).
    pub unsigned_source: bool,
    pub strict: bool,
    pub public_keys: Vec<String>,
    pub sources: Vec<SourceRecord>,
    pub problems: Vec<String>,
    pub counts: Counts,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub(crate) struct OutputFile {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

/// Writes `custody.json` and `custody.txt` into `dir`, after hashing every other file there.
pub fn write(dir: &Path, report: Report<'_>, signing: Signing<'_>) -> Result<(), ExportError> {
    let outputs = hash_outputs(dir)?;
    let body = serde_json::json!({
        "format": "retention-bot custody v1",
        "tool": format!("retention-bot {}", env!("CARGO_PKG_VERSION")),
        "created_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "archive": report.archive,
        "selection": report.selection,
        "formats": report.formats,
        "unsigned_source": report.unsigned_source,
        "strict": report.strict,
        "public_keys": report.public_keys,
        "counts": report.counts,
        "problems": report.problems,
        "outputs": outputs,
        "sources": report.sources,
    });
    let Value::Object(mut doc) = body else {
        return Err(ExportError::Write {
            path: dir.join(CUSTODY_JSON),
            error: std::io::Error::other("the report is not a JSON object"),
        });
    };
    let signed_by = match &signing {
        Signing::Key(key) => Ok(hex::encode(key.verifying_key().as_bytes())),
        Signing::Unsigned(why) => Err(why.clone()),
    };
    // The text for a person, its SHA-256 under the signature.
    let text = text(&doc, &signed_by);
    doc.insert(
        "custody_txt_sha256".into(),
        hex::encode(Sha256::digest(text.as_bytes())).into(),
    );
    let signature = match &signing {
        Signing::Key(key) => serde_json::json!({
            "public_key": hex::encode(key.verifying_key().as_bytes()),
            "ed25519": hex::encode(key.sign(&signed_bytes(&doc)?).to_bytes()),
        }),
        Signing::Unsigned(why) => serde_json::json!({ "unsigned": why }),
    };
    doc.insert("signature".into(), signature);
    let json_path = dir.join(CUSTODY_JSON);
    let mut json = serde_json::to_vec_pretty(&doc).map_err(|e| ExportError::Write {
        path: json_path.clone(),
        error: e.into(),
    })?;
    json.push(b'\n');
    write_synced(&dir.join(CUSTODY_TXT), text.as_bytes())?;
    write_synced(&json_path, &json)
}

/// What the signature covers: the domain, then the report's compact JSON without `signature`,
/// keys in the order written (`check` refuses a report that names a key twice, so no reader can
/// see other values than those signed).
fn signed_bytes(doc: &Map<String, Value>) -> Result<Vec<u8>, ExportError> {
    let mut bytes = DOMAIN.to_vec();
    serde_json::to_writer(&mut bytes, doc).map_err(|e| ExportError::Write {
        path: PathBuf::from(CUSTODY_JSON),
        error: e.into(),
    })?;
    Ok(bytes)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), ExportError> {
    use std::io::Write as _;
    let err = |error| ExportError::Write {
        path: path.to_owned(),
        error,
    };
    let mut file = std::fs::File::create(path).map_err(err)?;
    file.write_all(bytes).map_err(err)?;
    file.sync_all().map_err(err)
}

/// Every file under `dir` but the custody report itself, by relative path, in order.
fn hash_outputs(dir: &Path) -> Result<Vec<OutputFile>, ExportError> {
    hash_each(dir)?
        .into_iter()
        .map(|(path, hashed)| hashed.map_err(|error| ExportError::Read { path, error }))
        .collect()
}

/// Every file under `dir` but the report itself, in path order, each hashed or why not: only
/// regular files are opened (a planted FIFO, device or link is named, never read).
fn hash_each(dir: &Path) -> Result<Vec<(PathBuf, std::io::Result<OutputFile>)>, ExportError> {
    let mut files = Vec::new();
    collect_files(dir, dir, &mut files)?;
    files.sort();
    Ok(files
        .into_iter()
        .map(|(relative, path)| {
            let hashed = crate::durable::open_regular(&path).and_then(|mut file| {
                let mut hasher = Sha256::new();
                let bytes = std::io::copy(&mut file, &mut hasher)?;
                Ok(OutputFile {
                    path: relative,
                    bytes,
                    sha256: hex::encode(hasher.finalize()),
                })
            });
            (path, hashed)
        })
        .collect())
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> Result<(), ExportError> {
    let err = |error| ExportError::Read {
        path: dir.to_owned(),
        error,
    };
    for entry in std::fs::read_dir(dir).map_err(err)? {
        let entry = entry.map_err(err)?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().map_err(err)?.is_dir() {
            collect_files(root, &path, out)?;
        } else if !(dir == root && (name == CUSTODY_JSON || name == CUSTODY_TXT)) {
            let relative = path.strip_prefix(root).unwrap_or(&path).display().to_string();
            out.push((relative, path));
        }
    }
    Ok(())
}

/// The report for a person.
fn text(doc: &Map<String, Value>, signed_by: &Result<String, String>) -> String {
    let s = |k: &str| {
        doc.get(k)
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .unwrap_or_default()
    };
    let mut out = String::new();
    out.push_str("CHAIN OF CUSTODY: retention-bot export\n\n");
    out.push_str(&format!(
        "Tool:      {}\nCreated:   {}\nArchive:   {}\n",
        s("tool"),
        s("created_at"),
        s("archive")
    ));
    out.push_str(&format!(
        "Selection: {}\nFormats:   {}\nStrict:    {}\n",
        s("selection"),
        s("formats"),
        s("strict")
    ));
    if doc.get("unsigned_source").and_then(Value::as_bool) == Some(true) {
        out.push_str(
            "UNSIGNED SOURCE: --unsigned-source took files no signed manifest entry lists (an archive the original bot wrote) into the main output; nothing proves they are complete or unaltered, and each such file is marked UNSIGNED SOURCE below with its SHA-256 as read\n",
        );
    }
    if let Some(Value::Array(keys)) = doc.get("public_keys") {
        for key in keys {
            out.push_str(&format!(
                "Public key (verifies the archive's manifests): {}\n",
                key.as_str().unwrap_or_default()
            ));
        }
    }
    match signed_by {
        Ok(key) => out.push_str(&format!(
            "Signed:    custody.json is signed by the bot's key {key} (Ed25519); it holds this text's SHA-256\n"
        )),
        Err(why) => out.push_str(&format!("Signed:    NO: {why}\n")),
    }
    out.push_str("\nCounts:\n");
    if let Some(Value::Object(counts)) = doc.get("counts") {
        for (k, v) in counts {
            out.push_str(&format!("  {k}: {v}\n"));
        }
    }
    let problems = doc
        .get("problems")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    out.push_str(&format!("\nProblems: {}\n", problems.len()));
    for p in &problems {
        out.push_str(&format!("  {}\n", p.as_str().unwrap_or_default()));
    }
    out.push_str("\nOutput files (SHA-256, bytes, path):\n");
    for f in doc.get("outputs").and_then(Value::as_array).into_iter().flatten() {
        out.push_str(&format!(
            "  {} {:>12} {}\n",
            f["sha256"].as_str().unwrap_or_default(),
            f["bytes"],
            f["path"].as_str().unwrap_or_default()
        ));
    }
    out.push_str("\nArchive files read (SHA-256 of content, manifest entry, result, location):\n");
    for f in doc.get("sources").and_then(Value::as_array).into_iter().flatten() {
        out.push_str(&format!(
            "  {} {:>8} {} {}\n",
            f["sha256"].as_str().unwrap_or("-"),
            f["manifest_seq"].as_u64().map_or("-".to_owned(), |s| format!("#{s}")),
            f["result"].as_str().unwrap_or_default(),
            f["at"].as_str().unwrap_or_default()
        ));
    }
    out
}

/// What checking an export found.
#[derive(Debug, PartialEq, Eq)]
pub struct Checked {
    pub signature: SignatureCheck,
    /// The files the report lists.
    pub files: usize,
    /// Every file that is not as the report lists it: `ALTERED`, `MISSING`, `UNLISTED`.
    pub problems: Vec<String>,
}

/// What the report's signature says.
#[derive(Debug, PartialEq, Eq)]
pub enum SignatureCheck {
    /// Signed by this public key (hex).
    Signed(String),
    /// Written unsigned (no key at hand when it was made), with the reason it gives: its hashes
    /// prove nothing against whoever could rewrite it.
    Unsigned(String),
    /// Signed, but not by any of the given keys, or altered since.
    Bad,
}

/// Checks an export directory: `custody.json`'s signature under one of `keys`, and every output
/// file it lists against its SHA-256 (and that no file is there that it does not list). Every
/// problem is found, not the first only. `Err` only when the report itself cannot be read.
pub fn check(dir: &Path, keys: &[VerifyingKey]) -> Result<Checked, String> {
    let path = dir.join(CUSTODY_JSON);
    let text = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display(), e = Chain(&e)))?;
    serde_json::from_slice::<NoDuplicates>(&text).map_err(|e| {
        format!(
            "{} is not a custody report as written: {e}",
            path.display(),
            e = Chain(&e)
        )
    })?;
    let mut doc: Map<String, Value> = serde_json::from_slice(&text)
        .map_err(|e| format!("{} is not a custody report: {e}", path.display(), e = Chain(&e)))?;
    let signature = check_signature(&mut doc, keys)?;
    let listed: Vec<OutputFile> = serde_json::from_value(doc.get("outputs").cloned().unwrap_or_default())
        .map_err(|e| format!("custody.json's outputs: {e}", e = Chain(&e)))?;
    let mut problems = Vec::new();
    let mut there = Vec::new();
    for (path, hashed) in hash_each(dir).map_err(|e| crate::error_chain::chain(&e))? {
        match hashed {
            Ok(file) => there.push(file),
            Err(e) => {
                let relative = path.strip_prefix(dir).unwrap_or(&path).display().to_string();
                problems.push(format!("UNREADABLE {relative}: {e}", e = Chain(&e)));
                // Listed or not, it is not as listed: named once, as unreadable.
                there.push(OutputFile {
                    path: relative,
                    bytes: 0,
                    sha256: String::new(),
                });
            }
        }
    }
    for want in &listed {
        match there.iter().find(|f| f.path == want.path) {
            None => problems.push(format!("MISSING {}: custody.json lists it", want.path)),
            // Unreadable: named as such above.
            Some(f) if f.sha256.is_empty() => {}
            Some(f) if f != want => problems.push(format!("ALTERED {}: its SHA-256 is not custody.json's", want.path)),
            Some(_) => {}
        }
    }
    match std::fs::read(dir.join(CUSTODY_TXT)) {
        Err(e) => problems.push(format!("MISSING {CUSTODY_TXT}: cannot read it: {e}", e = Chain(&e))),
        Ok(txt) => {
            if doc.get("custody_txt_sha256").and_then(Value::as_str) != Some(&hex::encode(Sha256::digest(&txt))) {
                problems.push(format!("ALTERED {CUSTODY_TXT}: its SHA-256 is not custody.json's"));
            }
        }
    }
    for extra in there
        .iter()
        .filter(|f| !f.sha256.is_empty() && !listed.iter().any(|w| w.path == f.path))
    {
        problems.push(format!("UNLISTED {}: custody.json does not list it", extra.path));
    }
    Ok(Checked {
        signature,
        files: listed.len(),
        problems,
    })
}

/// The report's signature, taken out of `doc` (what remains is what was signed), checked under `keys`.
fn check_signature(doc: &mut Map<String, Value>, keys: &[VerifyingKey]) -> Result<SignatureCheck, String> {
    let signature = doc.remove("signature").unwrap_or(Value::Null);
    let unsigned = signature
        .as_object()
        .filter(|o| o.len() == 1)
        .and_then(|o| o.get("unsigned"))
        .and_then(Value::as_str);
    Ok(match (unsigned, signature.get("ed25519").and_then(Value::as_str)) {
        // Unsigned only as the exporter writes it: `{"unsigned": why}`. Anything else without a
        // signature that verifies (none, a malformed one) is a bad signature, not a lesser state
        // someone who altered a signed report could step down to.
        (Some(why), _) => SignatureCheck::Unsigned(why.to_owned()),
        (None, None) => SignatureCheck::Bad,
        (None, Some(sig_hex)) => {
            let sig = hex::decode(sig_hex).ok().and_then(|b| Signature::from_slice(&b).ok());
            let signed = signed_bytes(doc).map_err(|e| crate::error_chain::chain(&e))?;
            match sig.and_then(|sig| keys.iter().find(|k| k.verify(&signed, &sig).is_ok())) {
                Some(signer) => SignatureCheck::Signed(hex::encode(signer.as_bytes())),
                None => SignatureCheck::Bad,
            }
        }
    })
}

/// A JSON document read only to refuse one whose objects name a key twice: serde_json keeps the
/// last, another reader (or a person) may take the first.
struct NoDuplicates;

impl<'de> serde::Deserialize<'de> for NoDuplicates {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NoDuplicatesVisitor)
    }
}

struct NoDuplicatesVisitor;

impl<'de> serde::de::Visitor<'de> for NoDuplicatesVisitor {
    type Value = NoDuplicates;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<NoDuplicates, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(serde::de::Error::custom(format!("key `{key}` appears twice")));
            }
            map.next_value::<NoDuplicates>()?;
        }
        Ok(NoDuplicates)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<NoDuplicates, A::Error> {
        while seq.next_element::<NoDuplicates>()?.is_some() {}
        Ok(NoDuplicates)
    }
    fn visit_bool<E>(self, _: bool) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_i64<E>(self, _: i64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_u64<E>(self, _: u64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_f64<E>(self, _: f64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_str<E>(self, _: &str) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_unit<E>(self) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_report_checks_out_and_any_change_shows() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("messages.jsonl"), "{}\n").unwrap();
        let key = crate::identity::sealed::new_signing_key();
        let selection = Selection::default();
        write(dir.path(), report(&selection, &key), Signing::Key(&key)).unwrap();
        let keys = [key.verifying_key()];
        let signed = SignatureCheck::Signed(hex::encode(key.verifying_key().as_bytes()));
        let checked = check(dir.path(), &keys).unwrap();
        assert_eq!(
            (checked.signature, checked.files, checked.problems.len()),
            (signed, 1, 0)
        );
        let other = crate::identity::sealed::new_signing_key().verifying_key();
        assert_eq!(check(dir.path(), &[other]).unwrap().signature, SignatureCheck::Bad);

        std::fs::write(dir.path().join("messages.jsonl"), "{}\n{}\n").unwrap();
        assert_eq!(
            check(dir.path(), &keys).unwrap().problems,
            ["ALTERED messages.jsonl: its SHA-256 is not custody.json's"]
        );
        std::fs::write(dir.path().join("messages.jsonl"), "{}\n").unwrap();
        let path = dir.path().join(CUSTODY_JSON);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("s3://b/p/", "s3://b/q/")).unwrap();
        assert_eq!(check(dir.path(), &keys).unwrap().signature, SignatureCheck::Bad);
        // A second "archive" before the signed one: what serde_json keeps is signed, what a
        // first-key reader sees is not.
        std::fs::write(
            &path,
            text.replacen("  \"archive\"", "  \"archive\": \"s3://evil/\",\n  \"archive\"", 1),
        )
        .unwrap();
        assert!(check(dir.path(), &keys).unwrap_err().contains("appears twice"));
        std::fs::write(&path, &text).unwrap();
        assert!(check(dir.path(), &keys).unwrap().problems.is_empty());
        let txt = dir.path().join(CUSTODY_TXT);
        std::fs::write(&txt, "CHAIN OF CUSTODY: all fine\n").unwrap();
        assert_eq!(
            check(dir.path(), &keys).unwrap().problems,
            ["ALTERED custody.txt: its SHA-256 is not custody.json's"]
        );
    }

    fn report<'a>(selection: &'a Selection, key: &ed25519_dalek::SigningKey) -> Report<'a> {
        Report {
            archive: "s3://b/p/".into(),
            selection,
            strict: false,
            formats: super::super::Formats::default(),
            unsigned_source: false,
            public_keys: vec![hex::encode(key.verifying_key().as_bytes())],
            sources: Vec::new(),
            problems: Vec::new(),
            counts: Counts::default(),
        }
    }

    /// Every problem is named, not the first only; an unsigned report is still checked against
    /// its hashes, and says it is unsigned.
    #[test]
    fn every_problem_is_named_and_an_unsigned_report_is_checked_against_its_hashes() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["messages.jsonl", "messages.csv"] {
            std::fs::write(dir.path().join(name), "x\n").unwrap();
        }
        let key = crate::identity::sealed::new_signing_key();
        let selection = Selection::default();
        let why = "no state directory at hand".to_owned();
        write(dir.path(), report(&selection, &key), Signing::Unsigned(why.clone())).unwrap();
        let checked = check(dir.path(), &[key.verifying_key()]).unwrap();
        assert_eq!(checked.signature, SignatureCheck::Unsigned(why));
        assert!(checked.problems.is_empty(), "{:?}", checked.problems);

        std::fs::write(dir.path().join("messages.jsonl"), "y\n").unwrap();
        std::fs::remove_file(dir.path().join("messages.csv")).unwrap();
        std::fs::write(dir.path().join("planted.txt"), "z\n").unwrap();
        let problems = check(dir.path(), &[key.verifying_key()]).unwrap().problems;
        assert_eq!(
            problems,
            [
                "MISSING messages.csv: custody.json lists it",
                "ALTERED messages.jsonl: its SHA-256 is not custody.json's",
                "UNLISTED planted.txt: custody.json does not list it",
            ],
            "{problems:?}"
        );

        // A planted FIFO is named, never opened (opening it would wait for a writer for ever).
        nix::unistd::mkfifo(&dir.path().join("pipe"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let problems = check(dir.path(), &[key.verifying_key()]).unwrap().problems;
        assert!(
            problems.iter().any(|p| p.starts_with("UNREADABLE pipe: ")),
            "{problems:?}"
        );
        assert_eq!(problems.len(), 4, "{problems:?}");
    }

    /// Unsigned only as the exporter writes it; a report stripped of its signature, or given a
    /// malformed one, is a bad signature (exit 1), not an unsigned report (exit 4).
    #[test]
    fn a_removed_or_malformed_signature_is_bad_not_unsigned() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("messages.jsonl"), "{}\n").unwrap();
        let key = crate::identity::sealed::new_signing_key();
        let selection = Selection::default();
        write(dir.path(), report(&selection, &key), Signing::Key(&key)).unwrap();
        let path = dir.path().join(CUSTODY_JSON);
        let mut doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        for signature in [
            Value::Null,
            serde_json::json!("x"),
            serde_json::json!({"ed25519": null}),
            serde_json::json!({"ed25519": 123}),
            serde_json::json!({"unsigned": "why", "ed25519": "00"}),
        ] {
            match &signature {
                Value::Null => doc.as_object_mut().unwrap().remove("signature"),
                _ => doc
                    .as_object_mut()
                    .unwrap()
                    .insert("signature".into(), signature.clone()),
            };
            std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
            let checked = check(dir.path(), &[key.verifying_key()]).unwrap();
            assert_eq!(checked.signature, SignatureCheck::Bad, "{signature}");
        }
    }
}
