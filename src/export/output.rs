//! The export's files: assembled under `--out/.export-partial`, moved into `--out` only once
//! complete.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::collect::{Collector, Resolved};
use super::selection::read_line;
use super::{ExportError, PARTIAL_DIR};

pub const MESSAGES: &str = "messages.jsonl";
pub const MESSAGES_CSV: &str = "messages.csv";
/// Lines and attachments that failed their check (or no signed entry lists): kept apart.
pub const UNVERIFIED: &str = "unverified";
pub const ATTACHMENTS: &str = "attachments";

fn write_error(path: &Path) -> impl Fn(std::io::Error) -> ExportError + '_ {
    move |error| ExportError::Write {
        path: path.to_owned(),
        error,
    }
}

/// Makes `out` (which must be new or empty) and the staging directory in it.
pub fn prepare(out: &Path) -> Result<PathBuf, ExportError> {
    match std::fs::read_dir(out) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(ExportError::OutNotEmpty(out.to_owned()));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(out).map_err(write_error(out))?;
        }
        Err(e) => return Err(write_error(out)(e)),
    }
    let staging = out.join(PARTIAL_DIR);
    std::fs::create_dir(&staging).map_err(write_error(&staging))?;
    Ok(staging)
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

/// What writing the lines found: the unverified counts, and the attachments the lines refer to
/// (archived name, and whether a verified line refers to it).
#[derive(Debug, Default)]
pub struct Written {
    pub selected: usize,
    pub related: usize,
    pub unverified: usize,
    pub attachments: Vec<String>,
}

/// Writes `messages.jsonl`, `unverified/messages.jsonl` (when there are such lines) and
/// `messages.csv`, in the resolved order.
pub fn write_lines(staging: &Path, collector: &Collector, resolved: &Resolved) -> Result<Written, ExportError> {
    let create = |path: &Path| -> Result<BufWriter<File>, ExportError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(write_error(dir))?;
        }
        Ok(BufWriter::new(File::create(path).map_err(write_error(path))?))
    };
    let jsonl = staging.join(MESSAGES);
    let unverified_path = staging.join(UNVERIFIED).join(MESSAGES);
    let csv_path = staging.join(MESSAGES_CSV);
    let mut verified_out = create(&jsonl)?;
    let mut unverified_out: Option<BufWriter<File>> = None;
    let mut csv = super::csv::Writer::new(create(&csv_path)?);
    let mut written = Written::default();
    let mut names = std::collections::BTreeSet::new();
    let work = staging.join(".lines");
    for line in &resolved.lines {
        let text = collector
            .line(line.offset, line.len)
            .map_err(|error| ExportError::Read {
                path: work.clone(),
                error,
            })?;
        let (out, path) = if line.verified {
            match line.related {
                true => written.related += 1,
                false => written.selected += 1,
            }
            (&mut verified_out, &jsonl)
        } else {
            written.unverified += 1;
            if unverified_out.is_none() {
                unverified_out = Some(create(&unverified_path)?);
            }
            (unverified_out.as_mut().unwrap_or(&mut verified_out), &unverified_path)
        };
        out.write_all(&text)
            .and_then(|()| out.write_all(b"\n"))
            .map_err(write_error(path))?;
        if let Some(fields) = read_line(&text) {
            if let Some(name) = &fields.attachment {
                names.insert(name.to_string());
            }
            csv.row(&fields, line.verified).map_err(write_error(&csv_path))?;
        }
    }
    written.attachments = names.into_iter().collect();
    let finish = |w: BufWriter<File>, path: &Path| -> Result<(), ExportError> {
        let file = w.into_inner().map_err(|e| write_error(path)(e.into_error()))?;
        file.sync_all().map_err(write_error(path))
    };
    finish(verified_out, &jsonl)?;
    if let Some(w) = unverified_out {
        finish(w, &unverified_path)?;
    }
    finish(csv.into_inner().map_err(write_error(&csv_path))?, &csv_path)?;
    Ok(written)
}
