//! `retention-bot export`: finds and produces messages from the archive for a court, a regulator or
//! a data-subject request, with a chain-of-custody report.
//!
//! The signed manifests are read first ([`archive`]): their chains and heads are checked, and each
//! entry's time span says whether its file may hold the period asked for, so a narrow period reads
//! only the files it needs. Those files are then read several at a time, decrypted in memory, each
//! line judged ([`selection`]) and each file checked against its signed entry as it streams; the
//! lines kept are ordered ([`collect`]) and written out with the attachments they refer to, a CSV
//! view ([`csv`]), and `custody.json`/`custody.txt` ([`custody`]). Lines from a file that failed its
//! check, or that no entry lists, go to `unverified/`, never among the verified ones.
//!
//! Everything is written under `--out/.export-partial` and moved into place only at the end: an
//! export that fails (or `--strict` stops) leaves no half-written output behind.

pub mod archive;
mod attachments;
pub mod collect;
mod csv;
pub mod custody;
mod output;
pub mod selection;

use std::path::{Path, PathBuf};

use ed25519_dalek::{SigningKey, VerifyingKey};
use futures_util::StreamExt as _;
use sha2::{Digest, Sha256};

use crate::aws::AwsFailure;
use crate::decrypt::ObjectError;
use crate::manifest::verify::{Problem, Progress, content_problem};
pub use archive::{Catalogue, Place, Source};
use collect::{Collector, Judged, judge_line};
pub use custody::SourceRecord;
pub use selection::Selection;

/// Files read at once.
const AT_ONCE: usize = 4;
/// The longest line kept: a longer one (no message is) is skipped and reported.
const MAX_LINE: usize = 64 << 20;
/// Where the output is assembled, under `--out`.
pub const PARTIAL_DIR: &str = ".export-partial";

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Aws(#[from] AwsFailure),
    #[error("cannot read {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("cannot write {path}: {error}")]
    Write { path: PathBuf, error: std::io::Error },
    #[error("--out {0} already holds files: give a new or empty directory (an export never mixes with another)")]
    OutNotEmpty(PathBuf),
    #[error("--strict: {0}; nothing was written")]
    Strict(String),
    #[error("{0}")]
    Selection(String),
}

/// What an export reads and what it was asked for.
pub struct Export<'a> {
    pub place: &'a Place,
    pub keys: &'a [VerifyingKey],
    pub selection: &'a Selection,
    pub strict: bool,
}

/// The files an export will read, from the catalogue, and those the signed time spans rule out.
pub struct Plan {
    pub catalogue: Catalogue,
    pub to_read: Vec<usize>,
    pub skipped: usize,
    pub skipped_bytes: u64,
}

impl Plan {
    pub fn bytes(&self) -> u64 {
        self.to_read.iter().map(|i| self.catalogue.messages[*i].stored).sum()
    }
}

/// How the custody report is signed: with the bot's key, or not, and why.
pub enum Signing<'a> {
    Key(&'a SigningKey),
    Unsigned(String),
}

/// What an export produced.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Counts {
    /// Lines selected, in verified files.
    pub messages: usize,
    /// Edits, reactions and deletes kept because they refer to a selected message.
    pub related: usize,
    /// Lines (selected or related) from files that failed their check or no entry lists.
    pub unverified: usize,
    /// The same line found twice (a re-sent message): written once.
    pub duplicates: usize,
    pub attachments: usize,
    pub attachments_unverified: usize,
    pub attachments_missing: Vec<String>,
    pub files_read: usize,
    pub files_skipped: usize,
    pub bytes_read: u64,
}

/// What a file read showed: its plaintext's length and SHA-256, the lines that may belong, and
/// what went wrong.
struct FileRead {
    judged: Vec<Judged>,
    plain_len: u64,
    sha256: String,
    error: Option<ObjectError>,
    long_lines: usize,
}

impl Export<'_> {
    /// Reads the manifests and decides which files to read.
    pub async fn plan(&self) -> Result<Plan, ExportError> {
        let judge = selection::Judge::new(self.selection).map_err(ExportError::Selection)?;
        let catalogue = self.place.catalogue(self.keys).await?;
        let mut plan = Plan {
            to_read: Vec::new(),
            skipped: 0,
            skipped_bytes: 0,
            catalogue,
        };
        for (i, source) in plan.catalogue.messages.iter().enumerate() {
            let span = source.entry.as_ref().and_then(|e| e.msg_span());
            if judge.may_hold(span) {
                plan.to_read.push(i);
            } else {
                plan.skipped += 1;
                plan.skipped_bytes += source.stored;
            }
        }
        Ok(plan)
    }

    /// Reads the planned files and writes the export into `out`.
    pub async fn run(
        &self,
        plan: Plan,
        out: &Path,
        signing: Signing<'_>,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<Counts, ExportError> {
        let judge = selection::Judge::new(self.selection).map_err(ExportError::Selection)?;
        let staging = output::prepare(out)?;
        let result = self.produce(plan, &judge, &staging, signing, progress).await;
        match result {
            Ok(counts) => {
                output::publish(&staging, out)?;
                Ok(counts)
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staging);
                Err(e)
            }
        }
    }

    async fn produce(
        &self,
        plan: Plan,
        judge: &selection::Judge,
        staging: &Path,
        signing: Signing<'_>,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<Counts, ExportError> {
        let strict = |problems: &[Problem]| match problems.first() {
            Some(p) if self.strict => Err(ExportError::Strict(p.to_string())),
            _ => Ok(()),
        };
        strict(&plan.catalogue.problems)?;
        let work = staging.join(".lines");
        let write_err = |path: &Path| {
            let path = path.to_owned();
            move |error| ExportError::Write { path, error }
        };
        let mut collector = Collector::new(&work).map_err(write_err(&work))?;
        let sources = &plan.catalogue.messages;
        let mut done = Progress {
            objects: 0,
            objects_total: plan.to_read.len(),
            bytes: 0,
            bytes_total: plan.bytes(),
        };
        let mut records: Vec<Option<SourceRecord>> = vec![None; sources.len()];
        let mut read_problems = Vec::new();
        let mut verified = vec![false; sources.len()];
        let mut counts = Counts {
            files_skipped: plan.skipped,
            ..Counts::default()
        };
        let mut reads = futures_util::stream::iter(
            plan.to_read
                .iter()
                .map(|&i| async move { (i, self.read_file(&sources[i], judge).await) }),
        )
        .buffer_unordered(AT_ONCE);
        while let Some((i, read)) = reads.next().await {
            let source = &sources[i];
            let location = self.place.describe_file(&source.at);
            let problem = match (&source.entry, &read.error) {
                (None, _) => Some(format!("UNLISTED {location}: no signed manifest entry lists this file")),
                (Some(entry), Some(e)) => content_problem(entry, &location, Err(e)).map(|p| p.to_string()),
                (Some(entry), None) => {
                    content_problem(entry, &location, Ok((read.plain_len, &read.sha256))).map(|p| p.to_string())
                }
            };
            if let Some(p) = problem.as_ref().filter(|_| self.strict) {
                return Err(ExportError::Strict(p.clone()));
            }
            verified[i] = problem.is_none();
            let mut record = SourceRecord::of(source, &location);
            record.sha256 = read.error.is_none().then(|| read.sha256.clone());
            record.result = match (&problem, read.long_lines) {
                (Some(p), _) => p.clone(),
                (None, 0) => "verified".into(),
                (None, n) => format!("verified; {n} line(s) over {MAX_LINE} bytes skipped"),
            };
            records[i] = Some(record);
            read_problems.extend(problem);
            let number = u32::try_from(i).unwrap_or(u32::MAX);
            tokio::task::block_in_place(|| collector.add(number, read.judged)).map_err(write_err(&work))?;
            counts.files_read += 1;
            counts.bytes_read += source.stored;
            done.objects += 1;
            done.bytes += source.stored;
            progress(done);
        }
        drop(reads);

        let resolved =
            tokio::task::block_in_place(|| collector.resolve(&|i| verified[i as usize])).map_err(write_err(&work))?;
        counts.duplicates = resolved.duplicates;
        let written = tokio::task::block_in_place(|| output::write_lines(staging, &collector, &resolved))?;
        (counts.messages, counts.related, counts.unverified) = (written.selected, written.related, written.unverified);
        collector.remove().map_err(write_err(&work))?;

        let fetched = attachments::fetch(self.place, &plan.catalogue, &written.attachments, staging).await?;
        if let Some(p) = fetched.problems.first().filter(|_| self.strict) {
            return Err(ExportError::Strict(p.clone()));
        }
        counts.attachments = fetched.verified;
        counts.attachments_unverified = fetched.unverified;
        counts.attachments_missing = fetched.missing.clone();
        let mut all_records: Vec<SourceRecord> = plan
            .catalogue
            .records
            .iter()
            .map(|r| SourceRecord::of_read(r, &self.place.describe_file(&r.source.at)))
            .collect();
        all_records.extend(records.into_iter().flatten());
        all_records.extend(fetched.records);
        let mut problems: Vec<String> = plan.catalogue.problems.iter().map(ToString::to_string).collect();
        problems.extend(read_problems);
        problems.extend(fetched.problems);
        let report = custody::Report {
            archive: self.place.describe(),
            selection: self.selection,
            strict: self.strict,
            public_keys: self.keys.iter().map(|k| hex::encode(k.as_bytes())).collect(),
            sources: all_records,
            problems,
            counts: counts.clone(),
        };
        tokio::task::block_in_place(|| custody::write(staging, report, signing))?;
        Ok(counts)
    }

    /// Reads one file through: its lines judged, its plaintext hashed.
    async fn read_file(&self, source: &Source, judge: &selection::Judge) -> FileRead {
        let mut read = FileRead {
            judged: Vec::new(),
            plain_len: 0,
            sha256: String::new(),
            error: None,
            long_lines: 0,
        };
        let mut hasher = Sha256::new();
        let mut carry: Vec<u8> = Vec::new();
        let mut number = 0u32;
        let mut too_long = false;
        let mut take = |line: &[u8], read: &mut FileRead, too_long: bool| {
            number += 1;
            if too_long {
                read.long_lines += 1;
            } else if let Some(judged) = judge_line(judge, line, number) {
                read.judged.push(judged);
            }
        };
        let result: Result<(), ObjectError> = async {
            let mut reader = self.place.open(source).await?;
            while let Some(chunk) = reader.next().await? {
                hasher.update(&chunk);
                read.plain_len += chunk.len() as u64;
                let mut rest = &chunk[..];
                while let Some(end) = memchr::memchr(b'\n', rest) {
                    if carry.is_empty() {
                        take(&rest[..end], &mut read, too_long);
                    } else {
                        carry.extend_from_slice(&rest[..end]);
                        take(&carry, &mut read, too_long);
                        carry.clear();
                    }
                    too_long = false;
                    rest = &rest[end + 1..];
                }
                if carry.len() + rest.len() > MAX_LINE {
                    too_long = true;
                    carry.clear();
                } else if !too_long {
                    carry.extend_from_slice(rest);
                }
            }
            reader.finish()
        }
        .await;
        if !carry.is_empty() || too_long {
            take(&carry, &mut read, too_long);
        }
        read.sha256 = hex::encode(hasher.finalize());
        read.error = result.err();
        read
    }
}

impl Place {
    /// How a file is named in reports: its path, or its s3:// address.
    pub fn describe_file(&self, at: &str) -> String {
        match self {
            Place::Dir(_) => at.to_owned(),
            Place::Bucket { archive, .. } => format!("s3://{}/{at}", archive.bucket),
        }
    }
}
