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
mod formats;
mod html;
mod output;
mod read;
mod rsmf;
pub mod selection;
mod timeline;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::aws::AwsFailure;
use crate::manifest::verify::{Progress, content_problem};
pub use archive::Catalogue;
pub use archive::Place;
pub use archive::Source;
use collect::{Collector, Rooms, Trust};
pub use custody::SourceRecord;
pub use formats::Formats;
use read::{Event, FileRead, MAX_LINE};
pub use selection::Selection;

/// Where the output is assembled, under `--out`.
pub(crate) const PARTIAL_DIR: &str = ".export-partial";
/// A file's result in the custody report when `--unsigned-source` took it as read.
pub(crate) const UNSIGNED_SOURCE: &str = "UNSIGNED SOURCE: no signed manifest entry lists it; taken into the output as read (--unsigned-source), its SHA-256 as read";

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Aws(#[from] AwsFailure),
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("--out {0} already holds files: give a new or empty directory (an export never mixes with another)")]
    OutNotEmpty(PathBuf),
    #[error("--strict: {0}; nothing was written")]
    Strict(String),
    #[error("{0}")]
    Selection(String),
}

/// What an export reads and what it was asked for.
pub struct Export {
    pub place: Arc<Place>,
    pub keys: Vec<VerifyingKey>,
    pub selection: Selection,
    pub strict: bool,
    pub formats: Formats,
    /// Files no signed manifest entry lists (an archive the original bot wrote) go into the main
    /// output, each said to be unsigned in the custody report.
    pub unsigned_source: bool,
}

/// The files an export will read, from the catalogue, and those the signed time spans rule out.
pub struct Plan {
    pub catalogue: Catalogue,
    /// With `--participant`: every file, read first for the rooms the participants are members of.
    pub rooms_from: Vec<usize>,
    pub to_read: Vec<usize>,
    pub skipped: usize,
    pub skipped_bytes: u64,
}

impl Plan {
    /// The bytes of the files read for the lines.
    pub fn bytes(&self) -> u64 {
        self.bytes_of(&self.to_read)
    }

    pub fn bytes_of(&self, files: &[usize]) -> u64 {
        files.iter().map(|i| self.catalogue.messages[*i].stored).sum()
    }
}

/// How the custody report is signed: with the bot's key, or not, and why.
pub enum Signing<'a> {
    Key(&'a SigningKey),
    Unsigned(String),
}

/// What an export produced, and what was wrong on the way (each problem also in the custody
/// report).
#[derive(Debug, Default)]
pub struct Exported {
    pub counts: Counts,
    pub problems: Vec<String>,
}

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
    /// RSMF files and transcript pages written.
    pub rsmf_files: usize,
    pub transcript_pages: usize,
}

impl Export {
    /// Reads the manifests and decides which files to read.
    pub async fn plan(&self) -> Result<Plan, ExportError> {
        let judge = selection::Judge::new(&self.selection).map_err(ExportError::Selection)?;
        let catalogue = self.place.catalogue(&self.keys, self.unsigned_source).await?;
        let mut plan = Plan {
            rooms_from: Vec::new(),
            to_read: Vec::new(),
            skipped: 0,
            skipped_bytes: 0,
            catalogue,
        };
        for (i, source) in plan.catalogue.messages.iter().enumerate() {
            let span = source.entry.as_ref().and_then(|e| e.msg_span());
            // Who is a member of a room shows in its control messages, whenever they were sent:
            // with --participant every file is read for that first.
            if judge.has_participants() {
                plan.rooms_from.push(i);
            }
            if judge.may_hold(span) {
                plan.to_read.push(i);
            } else {
                plan.skipped += 1;
                plan.skipped_bytes += source.stored;
            }
        }
        Ok(plan)
    }

    /// Reads the planned files and writes the export into `out` (a new or empty directory; on
    /// failure it is left as it was found).
    pub async fn run(
        &self,
        plan: Plan,
        out: &Path,
        signing: Signing<'_>,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<Exported, ExportError> {
        let judge = selection::Judge::new(&self.selection).map_err(ExportError::Selection)?;
        let (staging, created) = output::prepare(out)?;
        let result = self.produce(plan, judge, &staging, signing, progress).await;
        match result.and_then(|exported| output::publish(&staging, out).map(|()| exported)) {
            Ok(exported) => Ok(exported),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staging);
                if created {
                    let _ = std::fs::remove_dir(out);
                }
                Err(e)
            }
        }
    }

    async fn produce(
        &self,
        plan: Plan,
        judge: selection::Judge,
        staging: &Path,
        signing: Signing<'_>,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<Exported, ExportError> {
        if let Some(p) = plan.catalogue.problems.first().filter(|_| self.strict) {
            return Err(ExportError::Strict(p.to_string()));
        }
        let work = staging.join(".lines");
        let mut collector = Collector::new(&work).map_err(write_err(&work))?;
        let sources: Arc<[Source]> = plan.catalogue.messages.clone().into();
        let mut book = Book::new(&plan);
        self.read_lines(&mut book, judge, &sources, &plan, &mut collector, progress)
            .await?;
        let Book {
            records,
            mut problems,
            trust,
            mut counts,
            ..
        } = book;
        if let Some(p) = problems.iter().find(|_| self.strict) {
            return Err(ExportError::Strict(p.clone()));
        }

        let (written, timeline) = self.write_kept_lines(staging, collector, &trust, &mut counts)?;
        let fetched = attachments::fetch(&self.place, &plan.catalogue, &written.attachments, staging).await?;
        if let Some(p) = fetched.problems.first().filter(|_| self.strict) {
            return Err(ExportError::Strict(p.clone()));
        }
        counts.attachments = fetched.verified;
        counts.attachments_unverified = fetched.unverified;
        counts.attachments_missing = fetched.missing.clone();
        if let Some(timeline) = timeline {
            self.write_conversations(staging, timeline, &mut problems, &mut counts)?;
        }
        let mut all_records = self.catalogue_records(&plan.catalogue, records);
        all_records.extend(fetched.records);
        problems.extend(fetched.problems);
        let report = custody::Report {
            archive: self.place.describe(),
            selection: &self.selection,
            formats: self.formats,
            unsigned_source: self.unsigned_source,
            strict: self.strict,
            public_keys: self.keys.iter().map(|k| hex::encode(k.as_bytes())).collect(),
            sources: all_records,
            problems: problems.clone(),
            counts: counts.clone(),
        };
        tokio::task::block_in_place(|| custody::write(staging, report, signing))?;
        Ok(Exported { counts, problems })
    }

    /// Reads the planned files, the lines that may belong into `collector`: with --participant,
    /// every file first for the rooms the participants are members of. Apart from `produce` so
    /// that its phases read one by one.
    async fn read_lines(
        &self,
        book: &mut Book,
        judge: selection::Judge,
        sources: &Arc<[Source]>,
        plan: &Plan,
        collector: &mut Collector,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<(), ExportError> {
        let judge = match judge.has_participants() {
            true => {
                let finding = Arc::new((judge.clone(), Rooms::Finding));
                let rooms = self
                    .read_files(book, finding, sources, &plan.rooms_from, None, progress)
                    .await?;
                (judge, Rooms::Known(rooms))
            }
            false => (judge, Rooms::Known(HashSet::new())),
        };
        self.read_files(book, Arc::new(judge), sources, &plan.to_read, Some(collector), progress)
            .await?;
        Ok(())
    }

    /// Orders the lines kept and writes them out, handing the verified ones to the conversations'
    /// timeline when RSMF or the transcript is chosen; the collector's work file is removed. Apart
    /// from `produce` so that its phases read one by one.
    fn write_kept_lines(
        &self,
        staging: &Path,
        mut collector: Collector,
        trust: &[Trust],
        counts: &mut Counts,
    ) -> Result<(output::Written, Option<timeline::Timeline>), ExportError> {
        let work = staging.join(".lines");
        let resolved =
            tokio::task::block_in_place(|| collector.resolve(&|i| trust[i as usize])).map_err(write_err(&work))?;
        counts.duplicates = resolved.duplicates;
        let mut timeline = match self.formats.conversations() {
            true => {
                let path = staging.join(".timeline");
                Some(timeline::Timeline::new(&path).map_err(write_err(&path))?)
            }
            false => None,
        };
        let written = tokio::task::block_in_place(|| {
            output::write_lines(staging, &collector, &resolved, self.formats, timeline.as_mut())
        })?;
        (counts.messages, counts.related, counts.unverified) = (written.selected, written.related, written.unverified);
        collector.remove().map_err(write_err(&work))?;
        Ok((written, timeline))
    }

    /// Writes the chosen RSMF files and transcript from the conversations' `timeline`, and
    /// removes its work file. Apart from `produce` so that its phases read one by one.
    fn write_conversations(
        &self,
        staging: &Path,
        timeline: timeline::Timeline,
        problems: &mut Vec<String>,
        counts: &mut Counts,
    ) -> Result<(), ExportError> {
        let path = staging.join(".timeline");
        if timeline.left_out > 0 {
            let p = format!(
                "NO EVENT: {} line(s) of the output have no sender or no readable msg_ts, so no place in RSMF or the transcript (they are in messages.jsonl)",
                timeline.left_out
            );
            if self.strict {
                return Err(ExportError::Strict(p));
            }
            problems.push(p);
        }
        (counts.rsmf_files, counts.transcript_pages) = tokio::task::block_in_place(|| {
            let rsmf = if self.formats.rsmf {
                rsmf::write_all(staging, &timeline)?
            } else {
                0
            };
            let html = if self.formats.html {
                html::write_all(staging, &timeline)?
            } else {
                0
            };
            // One sync for the many files just written, and their directories.
            crate::durable::sync_filesystem(staging).map_err(write_err(staging))?;
            for dir in [rsmf::RSMF_DIR, html::TRANSCRIPT_DIR] {
                let dir = staging.join(dir);
                if dir.is_dir() {
                    crate::durable::sync_dir(&dir).map_err(write_err(&dir))?;
                }
            }
            Ok::<_, ExportError>((rsmf, html))
        })?;
        timeline.remove().map_err(write_err(&path))?;
        Ok(())
    }

    /// The custody report's records of the files the catalogue read (manifests and heads), the
    /// message files read (`records`) and the files of shredded periods, in that order. Apart from
    /// `produce` so that its phases read one by one.
    fn catalogue_records(&self, catalogue: &Catalogue, records: Vec<Option<SourceRecord>>) -> Vec<SourceRecord> {
        let mut all_records: Vec<SourceRecord> = catalogue
            .records
            .iter()
            .map(|r| SourceRecord::of_read(r, &self.place.describe_file(&r.source.at)))
            .collect();
        all_records.extend(records.into_iter().flatten());
        all_records.extend(catalogue.shredded.iter().map(|(source, why)| SourceRecord {
            result: why.clone(),
            ..SourceRecord::of(source, &self.place.describe_file(&source.at))
        }));
        all_records
    }
}

/// What reading the files showed so far: each file's record, the problems, and what each file is
/// to the export; kept across the two readings of a `--participant` export.
struct Book {
    records: Vec<Option<SourceRecord>>,
    problems: Vec<String>,
    /// The problems already in `problems` (a file read twice says its problem once).
    said: HashSet<String>,
    trust: Vec<Trust>,
    counts: Counts,
    done: Progress,
}

impl Book {
    /// An empty book for the files of `plan`, its catalogue's problems said already; apart from
    /// `produce` so that its phases read one by one.
    fn new(plan: &Plan) -> Book {
        let files = plan.catalogue.messages.len();
        Book {
            records: vec![None; files],
            problems: plan.catalogue.problems.iter().map(ToString::to_string).collect(),
            said: HashSet::new(),
            trust: vec![Trust::Unverified; files],
            counts: Counts {
                // With --participant every file is read (first for the rooms): none skipped.
                files_skipped: if plan.rooms_from.is_empty() { plan.skipped } else { 0 },
                ..Counts::default()
            },
            done: Progress {
                objects: 0,
                objects_total: plan.rooms_from.len() + plan.to_read.len(),
                bytes: 0,
                bytes_total: plan.bytes_of(&plan.rooms_from) + plan.bytes(),
            },
        }
    }
}

impl Export {
    /// Reads `files` with `judge`, each line that may belong into `collector` (none comes while the
    /// rooms are being found), each file's check into `book`. Returns the rooms the files whose
    /// lines count (signed, or taken by --unsigned-source) show participants to be members of.
    ///
    /// A file read twice (--participant) counts as failed if either reading failed, and the first
    /// failure's record stays.
    async fn read_files(
        &self,
        book: &mut Book,
        judge: Arc<(selection::Judge, Rooms)>,
        sources: &Arc<[Source]>,
        files: &[usize],
        mut collector: Option<&mut Collector>,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<HashSet<std::num::NonZeroU64>, ExportError> {
        let mut rooms = HashSet::new();
        let (events, received) = read::channel();
        let reading = tokio::spawn(read::read_all(
            self.place.clone(),
            judge,
            sources.clone(),
            files.to_vec(),
            events,
        ));
        // Stops the readers when this returns early (--strict, a write error).
        let _stop = AbortOnDrop(reading.abort_handle());
        while let Ok(event) = received.recv_async().await {
            let (i, read) = match event {
                Event::Line(file, judged) => {
                    if let Some(collector) = collector.as_deref_mut() {
                        tokio::task::block_in_place(|| collector.add(file, judged))
                            .map_err(write_err(collector.path()))?;
                    }
                    continue;
                }
                Event::Done(file, read) => (file as usize, read),
            };
            let source = &sources[i];
            let location = self.place.describe_file(&source.at);
            // With --unsigned-source a file no entry lists counts as read (the report says so).
            let unsigned = self.unsigned_source && source.entry.is_none() && read.error.is_none();
            let problem = file_problem(source, &location, &read).filter(|_| !unsigned);
            if let Some(p) = problem.as_ref().filter(|_| self.strict) {
                return Err(ExportError::Strict(p.clone()));
            }
            let trust = match (&problem, unsigned) {
                (Some(_), _) => Trust::Unverified,
                (None, true) => Trust::Unsigned,
                (None, false) => Trust::Signed,
            };
            if trust.is_output() {
                rooms.extend(read.rooms.iter().copied());
            }
            let mut record = SourceRecord::of(source, &location);
            record.sha256 = read.error.is_none().then(|| read.sha256.clone());
            record.result = match (&problem, unsigned) {
                (Some(p), _) => p.clone(),
                (None, true) => UNSIGNED_SOURCE.into(),
                (None, false) => "verified".into(),
            };
            let first_failed = book.records[i].is_some() && book.trust[i] == Trust::Unverified;
            if book.records[i].is_none() {
                book.counts.files_read += 1;
            }
            if !first_failed {
                (book.records[i], book.trust[i]) = (Some(record), trust);
            }
            // A file no entry lists is a problem the catalogue already named (unless
            // --unsigned-source took it): said once, its record says it too.
            let said_already = source.entry.is_none() && !self.unsigned_source && read.error.is_none();
            for p in problem
                .into_iter()
                .filter(|_| !said_already)
                .chain(line_problems(&location, &read))
            {
                if book.said.insert(p.clone()) {
                    book.problems.push(p);
                }
            }
            book.counts.bytes_read += source.stored;
            book.done.objects += 1;
            book.done.bytes += source.stored;
            progress(book.done);
        }
        Ok(rooms)
    }
}

fn write_err(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError {
    let path = path.to_owned();
    move |error| ExportError::Write { path, error }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What is wrong with a file read against its signed entry (or that it has none).
fn file_problem(source: &Source, location: &str, read: &FileRead) -> Option<String> {
    match (&source.entry, &read.error) {
        (None, Some(e)) => Some(format!(
            "UNREADABLE {location}: {e} (and no signed manifest entry lists this file)",
            e = crate::error_chain::Chain(&e)
        )),
        (None, None) => Some(format!("UNLISTED {location}: no signed manifest entry lists this file")),
        (Some(entry), Some(e)) => content_problem(entry, location, Err(e)).map(|p| p.to_string()),
        (Some(entry), None) => {
            content_problem(entry, location, Ok((read.plain_len, &read.sha256))).map(|p| p.to_string())
        }
    }
}

/// Lines of a file that could not be judged: skipped, and said.
fn line_problems(location: &str, read: &FileRead) -> Vec<String> {
    let mut problems = Vec::new();
    if read.long_lines > 0 {
        problems.push(format!(
            "LONG LINES {location}: {} line(s) over {MAX_LINE} bytes skipped (no message is that long)",
            read.long_lines
        ));
    }
    if read.not_json > 0 {
        problems.push(format!(
            "NOT JSON {location}: {} line(s) are not JSON objects, so no message; skipped",
            read.not_json
        ));
    }
    problems
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
