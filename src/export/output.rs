//! The export's files: assembled under `--out/.export-partial`, moved into `--out` only once
//! complete.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
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

/// One output's JSONL and CSV.
struct Pair {
    jsonl: (BufWriter<File>, PathBuf),
    csv: (super::csv::Writer<BufWriter<File>>, PathBuf),
}

impl Pair {
    fn create(dir: &Path) -> Result<Pair, ExportError> {
        std::fs::create_dir_all(dir).map_err(write_error(dir))?;
        let open = |name: &str| -> Result<(BufWriter<File>, PathBuf), ExportError> {
            let path = dir.join(name);
            let file = File::create(&path).map_err(write_error(&path))?;
            Ok((BufWriter::new(file), path))
        };
        let (csv, csv_path) = open(MESSAGES_CSV)?;
        Ok(Pair {
            jsonl: open(MESSAGES)?,
            csv: (super::csv::Writer::new(csv), csv_path),
        })
    }

    fn finish(self) -> Result<(), ExportError> {
        let sync = |w: BufWriter<File>, path: &Path| -> Result<(), ExportError> {
            let file = w.into_inner().map_err(|e| write_error(path)(e.into_error()))?;
            file.sync_all().map_err(write_error(path))
        };
        sync(self.jsonl.0, &self.jsonl.1)?;
        let csv = self.csv.0.into_inner().map_err(write_error(&self.csv.1))?;
        sync(csv, &self.csv.1)
    }
}

/// Writes `messages.jsonl` and `messages.csv`, and `unverified/messages.jsonl` and `.csv` when
/// there are such lines, in the resolved order.
pub fn write_lines(staging: &Path, collector: &Collector, resolved: &Resolved) -> Result<Written, ExportError> {
    let mut verified_out = Pair::create(staging)?;
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
        let out = if line.verified {
            match line.related {
                true => written.related += 1,
                false => written.selected += 1,
            }
            &mut verified_out
        } else {
            written.unverified += 1;
            match &mut unverified_out {
                Some(out) => out,
                None => unverified_out.insert(Pair::create(&staging.join(UNVERIFIED))?),
            }
        };
        out.jsonl
            .0
            .write_all(&text)
            .and_then(|()| out.jsonl.0.write_all(b"\n"))
            .map_err(write_error(&out.jsonl.1))?;
        if let Some(fields) = read_line(&text) {
            if let Some(name) = &fields.attachment {
                *names.entry(name.to_string()).or_insert(false) |= line.verified;
            }
            out.csv.0.row(&fields, line.verified).map_err(write_error(&out.csv.1))?;
        }
    }
    written.attachments = names.into_iter().collect();
    verified_out.finish()?;
    if let Some(out) = unverified_out {
        out.finish()?;
    }
    Ok(written)
}
