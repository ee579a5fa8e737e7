//! The scheduled archive check (`WICKRIO_VERIFY_EVERY_HOURS`): every so often the daemon checks its
//! bucket in place as `retention-bot verify s3://` does, with its own public key, and tells the
//! operators the result (an event, `Archive_Checks` and the `Archive_Problems` gauge), so a broken
//! archive is found before an auditor finds it. What this bot has not uploaded yet (files on its disk,
//! manifests still open or waiting) is not counted against the bucket.

use std::collections::HashSet;
use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::VerifyingKey;

use crate::config::S3Config;
use crate::decrypt::{Archive, folder_prefix};
use crate::error_chain::Chain;
use crate::events::{EventKind, Events, announce};
use crate::manifest::stage::{HEAD_FILE, Head};
use crate::manifest::verify::{BucketCheck, InFlight};
use crate::manifest::{Entry, MANIFEST_BASENAME};
use crate::metrics::{Counter, Gauge, Metrics};
use crate::shutdown::Shutdown;

/// Problems named in an event; the rest are counted (`verify` lists them all).
const NAMED: usize = 3;

pub(crate) struct ArchiveCheck {
    archive: Archive,
    key: VerifyingKey,
    min_retention_days: Option<u64>,
    every: Duration,
    dirs: [PathBuf; 2],
    /// Where the bot keeps its chain head: the bucket must reach it, less what waits on disk.
    state_dir: PathBuf,
    metrics: Arc<Metrics>,
    events: Events,
}

impl ArchiveCheck {
    /// `None` unless the configuration asks for it.
    pub fn new(
        s3: &S3Config,
        key: VerifyingKey,
        dirs: [PathBuf; 2],
        state_dir: PathBuf,
        metrics: Arc<Metrics>,
        events: Events,
        aws: &crate::aws::Aws,
    ) -> Option<Self> {
        Some(Self {
            archive: Archive {
                bucket: s3.bucket.clone(),
                prefix: folder_prefix(&s3.folder).unwrap_or_default(),
                region: s3.region.clone(),
                kms_region: s3.kms.as_ref().map(|k| k.region.clone()),
                aws: aws.clone(),
            },
            key,
            min_retention_days: s3.object_lock.map(|lock| u64::from(lock.days)),
            every: s3.verify_every?,
            dirs,
            state_dir,
            metrics,
            events,
        })
    }

    /// Checks every `every`, the first one `every` after start-up, until shutdown.
    pub async fn run(self, mut stop: Shutdown) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.every) => self.check_once().await,
                () = stop.recv() => break,
            }
        }
    }

    async fn check_once(&self) {
        let location = format!("s3://{}/{}", self.archive.bucket, self.archive.prefix);
        let (dirs, state_dir) = (self.dirs.clone(), self.state_dir.clone());
        let in_flight = match tokio::task::spawn_blocking(move || in_flight(&dirs, &state_dir)).await {
            Ok(Ok(f)) => f,
            Ok(Err(e)) => {
                return self.incomplete(
                    &location,
                    &format!("cannot read the local destinations: {e}", e = Chain(&e)),
                );
            }
            Err(e) => return self.incomplete(&location, &format!("the local scan failed: {e}", e = Chain(&e))),
        };
        let check = BucketCheck {
            archive: &self.archive,
            keys: std::slice::from_ref(&self.key),
            extra_heads: &[],
            min_retention_days: self.min_retention_days,
            in_flight: Some(&in_flight),
        };
        let found = match check.run(&|_| {}).await {
            Ok(found) => found,
            Err(e) => return self.incomplete(&location, &crate::error_chain::chain(&e)),
        };
        let problems = &found.report.problems;
        self.metrics.incr(Counter::ArchiveChecks);
        self.metrics.set(Gauge::ArchiveProblems, problems.len() as u64);
        if problems.is_empty() {
            let note = found.report.versioning.and_then(|v| v.note());
            announce!(
                self.events,
                tracing::Level::INFO,
                EventKind::ArchiveCheckPassed,
                format!(
                    "archive check passed: {location}: {} manifest(s), {} entries, {} object(s) verified, the chain as far as this bot's own head{}",
                    found.report.manifests,
                    found.report.entries,
                    found.objects.len(),
                    note.map(|n| format!("; note: {n}")).unwrap_or_default()
                )
            );
        } else {
            let named: Vec<String> = problems.iter().take(NAMED).map(ToString::to_string).collect();
            announce!(
                self.events,
                tracing::Level::ERROR,
                EventKind::ArchiveCheckFailed,
                format!(
                    "archive check FAILED: {location}: {} problem(s): {}{}; run `retention-bot verify {location}` for every one",
                    problems.len(),
                    named.join("; "),
                    if problems.len() > NAMED { "; ..." } else { "" }
                )
            );
        }
    }

    fn incomplete(&self, location: &str, why: &str) {
        announce!(
            self.events,
            tracing::Level::WARN,
            EventKind::ArchiveCheckIncomplete,
            format!("archive check of {location} could not run to the end: {why}; it runs again at the next interval")
        );
    }
}

/// The files on this host and the names its manifests list: what has not reached the bucket yet;
/// and the entry the bucket must reach: the chain head, read first (every entry up to it is then in
/// a local manifest or already uploaded), less the entries local manifests hold.
fn in_flight(dirs: &[PathBuf; 2], state_dir: &Path) -> std::io::Result<InFlight> {
    let head = match std::fs::read(state_dir.join(HEAD_FILE)) {
        Ok(bytes) => serde_json::from_slice::<Head>(&bytes)
            .map(|h| h.seq)
            .map_err(std::io::Error::other)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e),
    };
    let mut found = InFlight::default();
    let mut first_local: Option<u64> = None;
    for dir in dirs {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if !entry.file_type()?.is_file() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            // Open files carry `.open`: they are listed and uploaded under the closed name.
            let closed = name.strip_suffix(".open").unwrap_or(&name).to_owned();
            if closed.starts_with(&format!("{MANIFEST_BASENAME}_")) {
                listed_by(&entry.path(), &mut found.listed, &mut first_local);
            }
            found.files.insert(closed);
        }
    }
    found.reach = Some(first_local.map_or(head, |first| head.min(first.saturating_sub(1))));
    Ok(found)
}

/// Adds the names a local manifest lists (its readable lines; a torn last line is skipped), and
/// lowers `first` to its first entry.
fn listed_by(manifest: &Path, names: &mut HashSet<String>, first: &mut Option<u64>) {
    let Ok(file) = std::fs::File::open(manifest) else {
        return;
    };
    for line in std::io::BufReader::new(file).lines().map_while(Result::ok) {
        if let Ok(entry) = serde_json::from_str::<Entry>(&line) {
            *first = Some(first.map_or(entry.body.seq, |f| f.min(entry.body.seq)));
            names.insert(entry.body.name);
        }
    }
}
