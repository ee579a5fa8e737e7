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

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;

use super::entry::{Entry, GENESIS, MANIFEST_BASENAME, file_facts, line_hash};
use super::head::{HeadRecord, is_head_record};
use crate::spool::naming::{CLOSED_SUFFIX, OPEN_SUFFIX};

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
                "TRUNCATED: the archive ends at entry {last_seq}, but the signed chain head {head} says entry {head_seq} exists: the newest manifests (and the files they list) are missing"
            ),
            Problem::HeadMismatch { head, seq } => write!(
                f,
                "CHAIN BROKEN at entry {seq}: it is not the entry the signed chain head {head} names (the chain was rewritten from there)"
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
}

/// Reads the public key written at first run: 64 hex digits.
pub fn read_public_key(path: &Path) -> Result<VerifyingKey, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read public key {}: {e}", path.display()))?;
    let bytes: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("{} does not hold a 64-hex-digit Ed25519 public key", path.display()))?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| format!("{}: not a valid Ed25519 public key: {e}", path.display()))
}

/// Verifies the archive under `dir` against the public keys of the bots that write to it (one, or
/// several sharing a folder).
///
/// `extra_heads` are head record files kept elsewhere (`--head`), checked like those under `dir`.
pub fn verify_dir(dir: &Path, keys: &[VerifyingKey], extra_heads: &[PathBuf]) -> std::io::Result<Report> {
    let (manifests, files, mut heads) = scan(dir)?;
    heads.extend(extra_heads.iter().cloned());

    let mut report = Report {
        manifests: manifests.len(),
        entries_by_key: vec![0; keys.len()],
        ..Report::default()
    };
    if manifests.is_empty() {
        report.problems.push(Problem::NothingToVerify { dir: dir.to_owned() });
        return Ok(report);
    }
    let mut listed = HashSet::new();
    // Each key's last entry: its chain so far.
    let mut previous: Vec<Option<(u64, String)>> = vec![None; keys.len()];
    // Each key's entry hashes by sequence number, for the heads.
    let mut hashes: Vec<HashMap<u64, String>> = vec![HashMap::new(); keys.len()];
    for manifest in &manifests {
        let reader = BufReader::new(std::fs::File::open(manifest)?);
        for (i, line) in reader.split(b'\n').enumerate() {
            let line = line?;
            let at = format!("{}:{}", manifest.display(), i + 1);
            let line = match std::str::from_utf8(&line) {
                Ok(l) if l.trim().is_empty() => continue,
                Ok(l) => l,
                Err(e) => {
                    report.problems.push(Problem::Unreadable {
                        at,
                        why: format!("not UTF-8 ({e})"),
                    });
                    continue;
                }
            };
            let entry: Entry = match serde_json::from_str(line) {
                Ok(e) => e,
                Err(e) => {
                    report.problems.push(Problem::Unreadable { at, why: e.to_string() });
                    continue;
                }
            };
            // The same entry again, byte for byte: a manifest append that failed was written again
            // into the next manifest, and the failed one kept it after all. Nothing is hidden by it.
            let hash = line_hash(line);
            if previous.iter().flatten().any(|(_, h)| *h == hash) {
                continue;
            }
            report.entries += 1;
            let Some(signer) = keys.iter().position(|key| entry.verify(key)) else {
                report.problems.push(Problem::BadSignature { at });
                continue;
            };
            report.entries_by_key[signer] += 1;
            let seq = entry.body.seq;
            let (expected_seq, expected_prev) = match &previous[signer] {
                Some((s, h)) => (s + 1, h.as_str()),
                None => (1, GENESIS),
            };
            if seq != expected_seq || entry.body.prev != expected_prev {
                report.problems.push(Problem::ChainBroken { at, seq, expected_seq });
            }
            hashes[signer].insert(seq, hash.clone());
            previous[signer] = Some((seq, hash));
            listed.insert(entry.body.name.clone());
            let copies = files.get(&entry.body.name).map(Vec::as_slice).unwrap_or_default();
            check_copies(&entry, copies, &mut report.problems)?;
        }
    }
    check_heads(&heads, keys, &previous, &hashes, &mut report.problems);
    let mut unlisted: Vec<&PathBuf> = files
        .iter()
        .filter(|(n, _)| !listed.contains(*n))
        .flat_map(|(_, p)| p)
        .collect();
    unlisted.sort();
    report
        .problems
        .extend(unlisted.into_iter().map(|p| Problem::Unlisted { path: p.clone() }));
    Ok(report)
}

/// Checks each key's chain against the heads it signed: the newest must not lie beyond the chain's
/// end, and every head must name an entry the chain holds as it is.
fn check_heads(
    heads: &[PathBuf],
    keys: &[VerifyingKey],
    previous: &[Option<(u64, String)>],
    hashes: &[HashMap<u64, String>],
    problems: &mut Vec<Problem>,
) {
    // Per key: the newest head, and where it is.
    let mut newest: Vec<Option<(u64, String)>> = vec![None; keys.len()];
    for path in heads {
        let at = path.display().to_string();
        let record = std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|text| serde_json::from_str::<HeadRecord>(text.trim()).map_err(|e| e.to_string()));
        let record = match record {
            Ok(r) => r,
            Err(why) => {
                problems.push(Problem::Unreadable { at, why });
                continue;
            }
        };
        let Some(signer) = keys.iter().position(|key| record.verify(key)) else {
            problems.push(Problem::BadSignature { at });
            continue;
        };
        let seq = record.body.seq;
        match hashes[signer].get(&seq) {
            Some(hash) if *hash != record.body.hash => problems.push(Problem::HeadMismatch { head: at.clone(), seq }),
            _ => {}
        }
        if newest[signer].as_ref().is_none_or(|(s, _)| seq > *s) {
            newest[signer] = Some((seq, at));
        }
    }
    for (signer, head) in newest.into_iter().enumerate() {
        let last_seq = previous[signer].as_ref().map_or(0, |(s, _)| *s);
        if let Some((head_seq, head)) = head
            && head_seq > last_seq
        {
            problems.push(Problem::Truncated {
                head,
                last_seq,
                head_seq,
            });
        }
    }
}

/// Each place a file of a name lies.
type FilesByName = HashMap<String, Vec<PathBuf>>;

/// Every manifest under `dir` (in name order, which is the order they were written), every chain
/// head record, and every other file, by name, with each place a file of that name lies.
fn scan(dir: &Path) -> std::io::Result<(Vec<PathBuf>, FilesByName, Vec<PathBuf>)> {
    let mut manifests = Vec::new();
    let mut heads = Vec::new();
    let mut files: HashMap<String, Vec<PathBuf>> = HashMap::new();
    walk(dir, &mut |path| {
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            return;
        };
        let is_manifest = name
            .strip_prefix(MANIFEST_BASENAME)
            .is_some_and(|rest| rest.starts_with('_'))
            && (name.ends_with(CLOSED_SUFFIX) || name.ends_with(OPEN_SUFFIX));
        if is_manifest {
            manifests.push(path.to_owned());
        } else if is_head_record(&name) {
            heads.push(path.to_owned());
        } else if !name.starts_with('.') && !name.ends_with(".open") {
            files.entry(name).or_default().push(path.to_owned());
        }
    })?;
    manifests.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok((manifests, files, heads))
}

/// The file an entry lists: there, once, and the same.
fn check_copies(entry: &Entry, copies: &[PathBuf], problems: &mut Vec<Problem>) -> std::io::Result<()> {
    let (name, seq) = (&entry.body.name, entry.body.seq);
    if copies.len() > 1 {
        let mut paths = copies.to_vec();
        paths.sort();
        problems.push(Problem::Duplicate {
            name: name.clone(),
            seq,
            paths,
        });
    }
    if copies.is_empty() {
        problems.push(Problem::Missing {
            name: name.clone(),
            seq,
        });
    }
    for copy in copies {
        check_file(entry, copy, problems)?;
    }
    Ok(())
}

fn check_file(entry: &Entry, path: &Path, problems: &mut Vec<Problem>) -> std::io::Result<()> {
    let (name, seq) = (entry.body.name.clone(), entry.body.seq);
    // One copy that cannot be read (a FIFO, no permission) is that copy's problem, not the run's end.
    let facts = match crate::durable::open_regular(path).and_then(|_| file_facts(path, false)) {
        Ok(facts) => facts,
        Err(e) => {
            problems.push(Problem::Unreadable {
                at: path.display().to_string(),
                why: e.to_string(),
            });
            return Ok(());
        }
    };
    let at = |why: String| Problem::Altered {
        name: format!("{name} ({})", path.display()),
        seq,
        why,
    };
    if facts.size != entry.body.size {
        problems.push(at(format!("{} bytes, listed as {}", facts.size, entry.body.size)));
    } else if facts.sha256 != entry.body.sha256 {
        problems.push(at("content differs (SHA-256 mismatch)".into()));
    }
    Ok(())
}

fn walk(dir: &Path, found: &mut dyn FnMut(&Path)) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(&entry.path(), found)?;
        } else if kind.is_file() {
            found(&entry.path());
        }
    }
    Ok(())
}
