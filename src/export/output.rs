//! The export's files: assembled under `--out/.export-partial`, moved into `--out` only once
//! complete.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::collect::{Collector, Resolved};
use super::selection::read_line;
use super::{ExportError, PARTIAL_DIR};

pub(crate) const MESSAGES: &str = "messages.jsonl";
pub(crate) const MESSAGES_CSV: &str = "messages.csv";
/// Lines and attachments that failed their check (or no signed entry lists): kept apart.
pub const UNVERIFIED: &str = "unverified";
pub(crate) const ATTACHMENTS: &str = "attachments";

fn write_error(path: &Path) -> impl Fn(std::io::Error) -> ExportError + '_ {
    move |error| ExportError::Write {
        path: path.to_owned(),
        error,
    }
}

/// A file made here, never one that is there already: two conversations whose names collide fail
/// the export rather than one overwriting the other.
pub(crate) fn create_new(path: &Path) -> Result<File, ExportError> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(write_error(path))
}

/// A conversation's name in file names: its id made safe, and a hash that keeps two ids apart.
pub(crate) fn conversation_stem(conversation: &str) -> String {
    let safe: String = conversation
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
        .take(60)
        .collect();
    format!("{safe}-{}", &hex::encode(Sha256::digest(conversation.as_bytes()))[..16])
}

/// Makes `out` (which must be new or empty) and the staging directory in it; says whether `out`
/// was made here (to be removed again if the export fails).
pub fn prepare(out: &Path) -> Result<(PathBuf, bool), ExportError> {
    let created = match std::fs::read_dir(out) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(ExportError::OutNotEmpty(out.to_owned()));
            }
            false
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(out).map_err(write_error(out))?;
            // Plaintext of the archive: for its owner only, whatever the umask.
            std::fs::set_permissions(out, std::fs::Permissions::from_mode(0o700)).map_err(write_error(out))?;
            true
        }
        Err(e) => return Err(write_error(out)(e)),
    };
    let staging = out.join(PARTIAL_DIR);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .map_err(write_error(&staging))?;
    Ok((staging, created))
}

/// Moves everything from the staging directory into `out`, custody report last: an `out` with a
/// custody report is a complete export.
pub fn publish(staging: &Path, out: &Path) -> Result<(), ExportError> {
    let mut names: Vec<_> = std::fs::read_dir(staging)
        .map_err(write_error(staging))?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    names.sort_by_key(|n| n.to_string_lossy().starts_with(super::custody::CUSTODY_STEM));
    for name in names {
        let to = out.join(&name);
        std::fs::rename(staging.join(&name), &to).map_err(write_error(&to))?;
    }
    std::fs::remove_dir(staging).map_err(write_error(staging))?;
    crate::durable::sync_dir(out).map_err(write_error(out))
}

/// What writing the lines found: the counts, and the attachments the lines refer to (archived
/// name, and whether a verified line refers to it).
#[derive(Debug, Default)]
pub struct Written {
    pub selected: usize,
    pub related: usize,
    pub unverified: usize,
    pub attachments: Vec<(String, bool)>,
}

/// One output's JSONL and CSV (each if chosen).
struct Pair {
    jsonl: Option<(BufWriter<File>, PathBuf)>,
    csv: Option<(super::csv::Writer<BufWriter<File>>, PathBuf)>,
}

impl Pair {
    fn create(dir: &Path, jsonl: bool, csv: bool) -> Result<Pair, ExportError> {
        std::fs::create_dir_all(dir).map_err(write_error(dir))?;
        let open = |name: &str| -> Result<(BufWriter<File>, PathBuf), ExportError> {
            let path = dir.join(name);
            let file = File::create(&path).map_err(write_error(&path))?;
            Ok((BufWriter::new(file), path))
        };
        Ok(Pair {
            jsonl: jsonl.then(|| open(MESSAGES)).transpose()?,
            csv: csv
                .then(|| open(MESSAGES_CSV))
                .transpose()?
                .map(|(w, path)| (super::csv::Writer::new(w), path)),
        })
    }

    fn write(
        &mut self,
        text: &[u8],
        fields: Option<&super::selection::Line<'_>>,
        trust: super::collect::Trust,
    ) -> Result<(), ExportError> {
        if let Some((out, path)) = &mut self.jsonl {
            out.write_all(text)
                .and_then(|()| out.write_all(b"\n"))
                .map_err(write_error(path))?;
        }
        if let (Some((out, path)), Some(fields)) = (&mut self.csv, fields) {
            out.row(fields, trust).map_err(write_error(path))?;
        }
        Ok(())
    }

    fn finish(self) -> Result<(), ExportError> {
        let sync = |w: BufWriter<File>, path: &Path| -> Result<(), ExportError> {
            let file = w.into_inner().map_err(|e| write_error(path)(e.into_error()))?;
            file.sync_all().map_err(write_error(path))
        };
        if let Some((w, path)) = self.jsonl {
            sync(w, &path)?;
        }
        if let Some((w, path)) = self.csv {
            let csv = w.into_inner().map_err(write_error(&path))?;
            sync(csv, &path)?;
        }
        Ok(())
    }
}

/// Writes the chosen `messages.jsonl` and `messages.csv` (and `unverified/messages.jsonl`, and its
/// `.csv` when CSV is chosen, when there are such lines) in the resolved order, and hands the
/// verified lines to the conversations' `timeline` (RSMF, the transcript) when there is one.
pub(crate) fn write_lines(
    staging: &Path,
    collector: &Collector,
    resolved: &Resolved,
    formats: super::Formats,
    mut timeline: Option<&mut super::timeline::Timeline>,
) -> Result<Written, ExportError> {
    let mut verified_out = Pair::create(staging, formats.jsonl, formats.csv)?;
    let mut unverified_out: Option<Pair> = None;
    let mut written = Written::default();
    let mut names = std::collections::BTreeMap::new();
    let work = staging.join(".lines");
    for line in &resolved.lines {
        let text = collector
            .line(line.offset, line.len)
            .map_err(|error| ExportError::Read {
                path: work.clone(),
                error,
            })?;
        let out = if line.trust.is_output() {
            match line.related {
                true => written.related += 1,
                false => written.selected += 1,
            }
            if let Some(timeline) = timeline.as_deref_mut() {
                let path = staging.join(".timeline");
                let unsigned = line.trust == super::collect::Trust::Unsigned;
                timeline.add(&text, unsigned).map_err(write_error(&path))?;
            }
            &mut verified_out
        } else {
            written.unverified += 1;
            match &mut unverified_out {
                Some(out) => out,
                None => unverified_out.insert(Pair::create(&staging.join(UNVERIFIED), true, formats.csv)?),
            }
        };
        let fields = read_line(&text);
        if let Some(name) = fields.as_ref().and_then(|f| f.attachment.as_ref()) {
            *names.entry(name.to_string()).or_insert(false) |= line.trust.is_output();
        }
        out.write(&text, fields.as_ref(), line.trust)?;
    }
    if let Some(timeline) = timeline {
        let path = staging.join(".timeline");
        timeline.finish().map_err(write_error(&path))?;
    }
    written.attachments = names.into_iter().collect();
    verified_out.finish()?;
    if let Some(out) = unverified_out {
        out.finish()?;
    }
    Ok(written)
}
