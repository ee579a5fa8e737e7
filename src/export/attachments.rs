//! The attachments the exported lines refer to, each read from the archive, checked against its
//! signed entry as it streams, and written under its archived name: to `attachments/` when it checks
//! out and a verified line refers to it, to `unverified/attachments/` when not.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt as _;

use super::ExportError;
use super::archive::{Catalogue, Place, Source};
use super::custody::SourceRecord;
use super::output::{ATTACHMENTS, UNVERIFIED};
use crate::decrypt::ObjectError;
use crate::manifest::verify::content_problem;

#[derive(Debug, Default)]
pub(crate) struct Fetched {
    pub verified: usize,
    pub unverified: usize,
    pub missing: Vec<String>,
    pub problems: Vec<String>,
    pub records: Vec<SourceRecord>,
}

/// A name that is a plain file name, which cannot climb out of the output directory.
fn safe_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.starts_with('.') && !name.contains(['/', '\0'])
}

pub async fn fetch(
    place: &Place,
    catalogue: &Catalogue,
    names: &[(String, bool)],
    staging: &Path,
) -> Result<Fetched, ExportError> {
    let mut fetched = Fetched::default();
    for (name, verified_ref) in names {
        if !safe_name(name) {
            fetched.problems.push(format!(
                "UNSAFE attachment name {name:?} in a selected message: not written (it could name a place outside --out)"
            ));
            continue;
        }
        let copies = catalogue
            .attachments
            .get(name)
            .or_else(|| catalogue.unsigned_attachments.get(name));
        let Some(copies) = copies else {
            fetched.problems.push(format!(
                "MISSING attachment {name}: a selected message refers to it, but no signed manifest entry lists it"
            ));
            fetched.missing.push(name.clone());
            continue;
        };
        let mut kept = false;
        for source in copies {
            let location = place.describe_file(&source.at);
            let (written, problem) = copy(place, source, &location, staging, name).await?;
            let mut record = SourceRecord::of(source, &location);
            record.sha256 = written.as_ref().map(|(_, sha)| sha.clone());
            record.result = match (&problem, &source.entry) {
                (Some(p), _) => p.clone(),
                (None, None) => super::UNSIGNED_SOURCE.into(),
                (None, Some(_)) => "verified".into(),
            };
            fetched.records.push(record);
            let Some((path, _)) = written else {
                fetched.problems.extend(problem);
                continue;
            };
            match problem {
                // Authentic, but only an unverified line asks for it.
                None if !verified_ref && !kept => {
                    move_to(&path, &staging.join(UNVERIFIED).join(ATTACHMENTS).join(name))?;
                    fetched.unverified += 1;
                    kept = true;
                }
                None if !kept => {
                    move_to(&path, &staging.join(ATTACHMENTS).join(name))?;
                    fetched.verified += 1;
                    kept = true;
                }
                None => remove(&path)?,
                Some(p) => {
                    let to = staging.join(UNVERIFIED).join(ATTACHMENTS).join(name);
                    if to.exists() {
                        remove(&path)?;
                    } else {
                        move_to(&path, &to)?;
                        fetched.unverified += 1;
                    }
                    fetched.problems.push(p);
                }
            }
        }
    }
    Ok(fetched)
}

/// Reads one copy into a work file: its path and SHA-256 (none if it could not be read at all),
/// and what is wrong with it.
async fn copy(
    place: &Place,
    source: &Source,
    location: &str,
    staging: &Path,
    name: &str,
) -> Result<(Option<(PathBuf, String)>, Option<String>), ExportError> {
    let work = staging.join(format!(".attachment-{name}"));
    let write_err = |error| ExportError::Write {
        path: work.clone(),
        error,
    };
    let mut out = tokio::fs::File::create(&work).await.map_err(write_err)?;
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    let read: Result<(), ObjectError> = async {
        let mut reader = place.open(source).await?;
        while let Some(chunk) = reader.next().await? {
            hasher.update(&chunk);
            len += chunk.len() as u64;
            out.write_all(&chunk).await.map_err(|error| ObjectError::Io {
                path: work.clone(),
                error,
            })?;
        }
        reader.finish()
    }
    .await;
    out.sync_all().await.map_err(write_err)?;
    drop(out);
    let sha256 = hex::encode(hasher.finalize());
    let problem = match (&source.entry, &read) {
        (Some(entry), Err(e)) => content_problem(entry, location, Err(e)).map(|p| p.to_string()),
        (Some(entry), Ok(())) => content_problem(entry, location, Ok((len, &sha256))).map(|p| p.to_string()),
        // No entry to check it against, but a failed read (a GCM tag, a cut-off object) is still
        // one: an unsigned attachment is taken only as it was written.
        (None, Err(e)) => Some(format!("UNREADABLE {location}: {e}", e = crate::error_chain::Chain(&e))),
        (None, Ok(())) => None,
    };
    match read {
        // Nothing of it could be read: no file.
        Err(ObjectError::S3(_) | ObjectError::Envelope(_)) => {
            remove(&work)?;
            Ok((None, problem))
        }
        _ => Ok((Some((work, sha256)), problem)),
    }
}

fn move_to(from: &Path, to: &Path) -> Result<(), ExportError> {
    let err = |error| ExportError::Write {
        path: to.to_owned(),
        error,
    };
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    std::fs::rename(from, to).map_err(err)
}

fn remove(path: &Path) -> Result<(), ExportError> {
    std::fs::remove_file(path).map_err(|error| ExportError::Write {
        path: path.to_owned(),
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_file_names_are_written() {
        assert!(safe_name("attachment_20260101000000000_scan.pdf"));
        for bad in ["", ".", "..", "../x", "a/b", ".hidden", "a\0b"] {
            assert!(!safe_name(bad), "{bad:?}");
        }
    }
}
