//! `verify DIR`: the archive as a directory (a bot's own destinations, or a restored copy).

use std::collections::{HashMap, HashSet};
use std::io::BufReader;
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;

use super::chain::Chains;
use super::{Problem, Report};
use crate::manifest::entry::{Entry, MAX_MANIFEST, file_facts, is_manifest_name};
use crate::manifest::head::is_head_record;

/// Verifies the archive under `dir` against the public keys of the bots that write to it (one, or
/// several sharing a folder).
///
/// `extra_heads` are head record files kept elsewhere (`--head`), checked like those under `dir`.
pub fn verify_dir(dir: &Path, keys: &[VerifyingKey], extra_heads: &[PathBuf]) -> std::io::Result<Report> {
    // A path that does not exist (a typo, a volume not mounted) holds nothing to verify: said as
    // such, not as an I/O error.
    let (manifests, files, mut heads) = match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Default::default(),
        _ => scan(dir)?,
    };
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
    let mut chains = Chains::new(keys);
    for manifest in &manifests {
        let file = std::fs::File::open(manifest)?;
        let size = file.metadata()?.len();
        if size > MAX_MANIFEST {
            report.problems.push(Problem::Unreadable {
                at: manifest.display().to_string(),
                why: format!("{size} bytes, more than the {MAX_MANIFEST} a manifest can be (planted?); not read"),
            });
            continue;
        }
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut BufReader::new(file), &mut text)?;
        for (entry, _signer) in chains.take_all(&manifest.display().to_string(), &text, &mut report.problems) {
            if entry.is_discarded() {
                continue;
            }
            listed.insert(entry.body.name.clone());
            let copies = files.get(&entry.body.name).map(Vec::as_slice).unwrap_or_default();
            check_copies(&entry, copies, &mut report.problems)?;
        }
    }
    let heads = super::read_heads(&heads);
    chains.check_heads(heads, &mut report.problems);
    chains.check_every_key_signed(&mut report.problems);
    report.entries = chains.entries;
    report.entries_by_key = chains.entries_by_key;
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

/// Each place a file of a name lies.
pub(crate) type FilesByName = HashMap<String, Vec<PathBuf>>;

/// Every manifest under `dir` (in name order, which is the order they were written), every chain
/// head record, and every other file, by name, with each place a file of that name lies.
pub fn scan(dir: &Path) -> std::io::Result<(Vec<PathBuf>, FilesByName, Vec<PathBuf>)> {
    let mut manifests = Vec::new();
    let mut heads = Vec::new();
    let mut files: HashMap<String, Vec<PathBuf>> = HashMap::new();
    walk(dir, &mut |path| {
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            return;
        };
        if is_manifest_name(&name) {
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
                why: crate::error_chain::chain(&e),
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
