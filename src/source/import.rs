//! The import source: existing `receivedMessages` JSONL files (e.g. from the original bot) fed
//! through the same validation, spool and sink as live traffic. Unlike an HTTP request, a file is
//! not refused whole: each bad line is reported by file and line number and the good ones are kept.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use crate::message::{Lines, check_line, compact_json};
use crate::metrics::{Counter, Metrics};
use crate::spool::{Spool, SpoolError};

/// Hand the spool a batch once it holds this many bytes.
const BATCH_BYTES: usize = 4 << 20;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub imported: u64,
    pub rejected: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {path}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: stopped before line {line}, which and all later lines were not imported")]
    Spool {
        path: PathBuf,
        line: usize,
        source: SpoolError,
    },
}

/// Imports `files` in order. Rejected lines are written to `rejects` as `file:line: problem`.
/// Blocking: run it on a thread of its own.
pub fn import(
    files: &[PathBuf],
    spool: &Spool,
    metrics: &Metrics,
    rejects: &mut dyn Write,
) -> Result<ImportReport, ImportError> {
    let mut report = ImportReport::default();
    for path in files {
        import_file(path, spool, metrics, rejects, &mut report)?;
    }
    Ok(report)
}

fn import_file(
    path: &Path,
    spool: &Spool,
    metrics: &Metrics,
    rejects: &mut dyn Write,
    report: &mut ImportReport,
) -> Result<(), ImportError> {
    let read_err = |source| ImportError::Read {
        path: path.to_owned(),
        source,
    };
    let mut reader = BufReader::with_capacity(1 << 20, File::open(path).map_err(read_err)?);
    let mut batch = Lines::default();
    let mut batch_start = 1;
    let mut raw = Vec::new();
    let mut line = 0;
    let flush = |batch: &mut Lines, first_line: usize, report: &mut ImportReport| {
        let lines = std::mem::take(batch);
        let count = lines.count as u64;
        spool.append_blocking(lines).map_err(|source| ImportError::Spool {
            path: path.to_owned(),
            line: first_line,
            source,
        })?;
        report.imported += count;
        Ok(())
    };
    loop {
        raw.clear();
        if reader.read_until(b'\n', &mut raw).map_err(read_err)? == 0 {
            break;
        }
        line += 1;
        let text = raw.trim_ascii();
        if text.is_empty() {
            continue;
        }
        metrics.incr(Counter::MessagesRx);
        match check_line(text, line) {
            Ok(_) => {
                if batch.count == 0 {
                    batch_start = line;
                }
                compact_json(text, &mut batch.bytes);
                batch.bytes.push(b'\n');
                batch.count += 1;
            }
            Err(e) => {
                metrics.incr(Counter::MessagesRxFailed);
                report.rejected += 1;
                let _ = writeln!(
                    rejects,
                    "{}:{}",
                    path.display(),
                    crate::error_chain::chain(&e).trim_start_matches("line ")
                );
            }
        }
        if batch.bytes.len() >= BATCH_BYTES {
            flush(&mut batch, batch_start, report)?;
        }
    }
    if batch.count > 0 {
        flush(&mut batch, batch_start, report)?;
    }
    Ok(())
}
