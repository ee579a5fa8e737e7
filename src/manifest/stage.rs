//! The manifest stage: before a closed file reaches its sink, a signed, hash-chained entry for it is
//! appended (and fsync'd) to the open manifest file. Manifests rotate like message files and are
//! delivered to the same sink, so they travel with the archive. The chain's head (last sequence
//! number and entry hash) lives in the state directory, so the chain continues across restarts even
//! when the sink has shipped every earlier manifest away; each closed manifest's head also leaves the
//! host, as a signed record shipped beside it and as an event (`head`).

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};

use super::entry::{Entry, EntryBody, GENESIS, MANIFEST_BASENAME, MAX_ENTRIES, MAX_ENTRY_LINE, file_facts, line_hash};
use super::head::{self, HeadBody, HeadRecord};
use crate::config::SpoolConfig;

use crate::durable;
use crate::error_chain::Chain;
use crate::spool::naming::{CLOSED_SUFFIX, Names, open_name};
use crate::spool::{ClosedFile, FileKind, recovery};

/// The chain head in the state directory: `{"seq": N, "hash": "..."}`.
pub(crate) const HEAD_FILE: &str = "manifest_head.json";

/// Why the manifest stage could not list a file, each naming the file to look at; the cause is kept
/// whole as `source()`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ManifestError {
    #[error("{path} is damaged (restore it from a backup)")]
    HeadDamaged {
        path: PathBuf,
        #[source]
        error: serde_json::Error,
    },
    #[error("cannot read or store the manifest chain head {path}")]
    Head {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("cannot hash {path} for its manifest entry")]
    Hash {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("cannot write manifest {path}")]
    Write {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error(
        "the manifest entry for {path} would be {len} bytes, more than the {MAX_ENTRY_LINE} readers take; check WICKRIO_KMS_MSTRKEY_ARN's length"
    )]
    EntryTooLong { path: PathBuf, len: usize },
    #[error("cannot recover the manifests and closed files under {dir}")]
    Recover {
        dir: PathBuf,
        #[source]
        error: std::io::Error,
    },
}

impl ManifestError {
    fn write(path: &Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |error| Self::Write {
            path: path.to_owned(),
            error,
        }
    }
}
/// A manifest is closed (and shipped) after MAX_ENTRIES entries or this long, whichever comes first.
const MAX_AGE: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Head {
    pub seq: u64,
    hash: String,
}

/// Appends manifest entries; blocking, so it runs on the blocking pool.
pub(crate) struct ManifestWriter {
    dir: PathBuf,
    head_path: PathBuf,
    head: Head,
    key: SigningKey,
    names: Names,
    open: Option<OpenManifest>,
    /// Files found at start-up that a manifest already lists, with their listed SHA-256: they get
    /// no second entry.
    already_listed: HashMap<PathBuf, String>,
    /// Manifests closed (full, or given up after a failed append), waiting for delivery.
    closed: Vec<ClosedFile>,
    /// An entry whose append failed: written first into the next manifest.
    pending: Option<Pending>,
    /// The head moved past what `manifest_head.json` holds.
    head_dirty: bool,
    /// Heads of manifests closed since the last call to `take_published`, for the operators' events.
    published: Vec<HeadRecord>,
    /// With per-period KMS keys, manifests rotate at each period's end.
    key_period: Option<crate::period::Granularity>,
}

/// A signed entry line not yet durably in a manifest, and the file it lists.
struct Pending {
    path: PathBuf,
    sha256: String,
    line: String,
}

struct OpenManifest {
    file: File,
    open_path: PathBuf,
    closed_path: PathBuf,
    entries: usize,
    /// Bytes of whole, fsync'd entries: a failed append is cut back to this.
    len: u64,
    opened: Instant,
}

/// What listing a file did.
pub(crate) struct Recorded {
    /// The file's SHA-256 as listed.
    pub sha256: String,
}

impl ManifestWriter {
    /// Loads the chain head and closes manifests a crash left open (taking the head from them if
    /// they hold entries the head file had not recorded yet). Returns every closed file still in the
    /// destinations, for the sink to take again (a sink that ships files away had not finished with
    /// them): first the manifests, then files already listed, which pass without a second entry, then
    /// files that no local manifest lists, which get their entry now (a crash between closing a file
    /// and listing it must not leave it unlisted). Run it before the spool's own recovery, which hands
    /// on the files it closes itself.
    pub fn open(
        config: &SpoolConfig,
        state_dir: &Path,
        key: SigningKey,
    ) -> Result<(Self, Vec<ClosedFile>), ManifestError> {
        let dir = &config.mesg_dest;
        let head_path = state_dir.join(HEAD_FILE);
        let mut head = match std::fs::read(&head_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|error| ManifestError::HeadDamaged {
                path: head_path.clone(),
                error,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Head {
                seq: 0,
                hash: GENESIS.into(),
            },
            Err(error) => {
                return Err(ManifestError::Head { path: head_path, error });
            }
        };
        let recover = |error| ManifestError::Recover {
            dir: dir.to_owned(),
            error,
        };
        let mut recovered = Vec::new();
        for (path, bytes) in recovery::close_abandoned(dir, MANIFEST_BASENAME).map_err(recover)? {
            recovered.push(ClosedFile::new(path, FileKind::Manifest, bytes));
        }
        let waiting = closed_files(config, &recovered).map_err(recover)?;
        // The head file may lag the manifests (a crash, or a failed write, between an entry and the
        // head): the newest entry found anywhere wins, so a sequence number is never used twice.
        if let Some(newest) = &waiting.newest
            && newest.seq > head.seq
        {
            tracing::warn!(
                seq = newest.seq,
                "the manifest chain head was behind the manifests; continuing from the newest entry"
            );
            head = newest.clone();
        }
        let already_listed = waiting
            .listed
            .iter()
            .filter_map(|f| Some((f.path.clone(), f.sha256.clone()?)))
            .collect();
        recovered.extend(waiting.manifests);
        recovered.extend(waiting.listed);
        recovered.extend(waiting.unlisted);
        let writer = Self {
            already_listed,
            dir: dir.to_owned(),
            head_path,
            head,
            key,
            names: Names::new(),
            open: None,
            closed: Vec::new(),
            pending: None,
            head_dirty: true,
            published: Vec::new(),
            key_period: config.key_period,
        };
        let mut writer = writer;
        writer.store_head()?;
        Ok((writer, recovered))
    }

    /// Appends the entry for `file`. An append that fails leaves no new entry behind for sure: the
    /// entry's line is kept and written again, the very same bytes with the same sequence number, at
    /// the head of the next manifest, before anything else. If the failed manifest held it after all
    /// (a crash, with a device that kept what it said it had lost), `verify` finds the same entry
    /// twice, which it accepts; never two different entries with one number, and never a gap.
    pub fn record(&mut self, file: &ClosedFile) -> Result<Recorded, ManifestError> {
        self.close_past_period()?;
        self.flush_pending()?;
        if let Some(sha256) = self.already_listed.remove(&file.path) {
            return Ok(Recorded { sha256 });
        }
        self.append_entry(file, file.kind.as_str())
    }

    /// Appends a `discarded` entry for `file`: the bot removes it unsent, its period shredded
    /// while it waited (whether or not an entry already lists it).
    pub(crate) fn record_discarded(&mut self, file: &ClosedFile) -> Result<Recorded, ManifestError> {
        self.close_past_period()?;
        self.flush_pending()?;
        self.already_listed.remove(&file.path);
        self.append_entry(file, super::entry::DISCARDED)
    }

    fn append_entry(&mut self, file: &ClosedFile, kind: &str) -> Result<Recorded, ManifestError> {
        let facts = file_facts(&file.path, file.kind == FileKind::Messages).map_err(|error| ManifestError::Hash {
            path: file.path.clone(),
            error,
        })?;
        let name = file
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let body = EntryBody {
            seq: self.head.seq + 1,
            name,
            kind: kind.to_owned(),
            size: facts.size,
            sha256: facts.sha256.clone(),
            first_msg_ts: facts.first_msg_ts,
            last_msg_ts: facts.last_msg_ts,
            earliest_msg_ts: facts.earliest_msg_ts,
            latest_msg_ts: facts.latest_msg_ts,
            kms_key: file.kms_key.clone(),
            closed_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            prev: self.head.hash.clone(),
        };
        let line = Entry::sign(body, &self.key).to_line();
        // Readers take a manifest whole only up to what the bot writes: an entry stays within it.
        if line.len() > MAX_ENTRY_LINE {
            return Err(ManifestError::EntryTooLong {
                path: file.path.clone(),
                len: line.len(),
            });
        }
        let pending = Pending {
            path: file.path.clone(),
            sha256: facts.sha256.clone(),
            line,
        };
        self.append(pending)?;
        Ok(Recorded { sha256: facts.sha256 })
    }

    /// Writes the entry that a failed append left over, if any; its file then counts as listed.
    fn flush_pending(&mut self) -> Result<(), ManifestError> {
        match self.pending.take() {
            Some(pending) => {
                let (path, sha256) = (pending.path.clone(), pending.sha256.clone());
                self.append(pending)?;
                self.already_listed.insert(path, sha256);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Appends one entry and moves the head past it; on failure keeps it as `pending`.
    fn append(&mut self, entry: Pending) -> Result<(), ManifestError> {
        // The head must be stored before the chain grows: with S3 the manifests leave the host,
        // and the stored head is then all the next start knows.
        if self.head_dirty {
            self.store_head()?;
        }
        let text = format!("{}\n", entry.line);
        let open = self.ensure_open()?;
        if let Err(e) = open
            .file
            .write_all(text.as_bytes())
            .and_then(|()| open.file.sync_data())
        {
            // Never appended to again (after a failed fsync its pages cannot be trusted).
            let path = open.open_path.clone();
            let cut = open.file.set_len(open.len).is_ok();
            self.give_up_open(cut);
            self.pending = Some(entry);
            return Err(ManifestError::write(&path)(e));
        }
        open.len += text.len() as u64;
        open.entries += 1;
        let full = open.entries >= MAX_ENTRIES || open.opened.elapsed() >= MAX_AGE;
        self.head = Head {
            seq: self.head.seq + 1,
            hash: line_hash(&entry.line),
        };
        self.head_dirty = true;
        if let Err(e) = self.store_head() {
            tracing::error!(error = %Chain(&e), "cannot store the manifest chain head; manifests are held back until it is stored");
        }
        if full && let Err(e) = self.close() {
            tracing::error!(error = %Chain(&e), "cannot close a full manifest; it is closed by recovery at the next start")
        }
        Ok(())
    }

    /// Stops using the open manifest after a failed append: closed if it was cut back to whole
    /// entries and closing works (an empty one is removed), else left for recovery at the next start,
    /// which cuts a torn line. The next entry opens a new one.
    fn give_up_open(&mut self, cut_back: bool) {
        let Some(open) = self.open.as_ref() else { return };
        if !cut_back {
            tracing::error!(file = %open.open_path.display(), "cannot cut back a failed manifest entry; the manifest is left for recovery at the next start");
            self.open = None;
            return;
        }
        if open.len == 0 {
            let path = open.open_path.clone();
            self.open = None;
            let _ = std::fs::remove_file(&path).and_then(|()| durable::sync_dir(&self.dir));
            return;
        }
        // Delivered like a rotated one.
        if let Err(e) = self.close() {
            tracing::error!(error = %Chain(&e), "cannot close the manifest either; it is closed by recovery at the next start");
            self.open = None;
        }
    }

    /// The manifests closed since the last call, for delivery; none while the chain head is not
    /// stored (a manifest that left the host with its entries unrecorded could let a later start
    /// number entries again).
    pub(crate) fn take_closed(&mut self) -> Vec<ClosedFile> {
        if self.head_dirty && self.store_head().is_err() {
            return Vec::new();
        }
        std::mem::take(&mut self.closed)
    }

    /// Closes the open manifest if it was opened in an earlier key period than now's: a manifest is
    /// encrypted under its own period's key, and must not list the next period's files (shredding
    /// one period must leave the next one's entries readable).
    pub(crate) fn close_past_period(&mut self) -> Result<(), ManifestError> {
        let (Some(granularity), Some(open)) = (self.key_period, &self.open) else {
            return Ok(());
        };
        let name = open
            .closed_path
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        let opened_in = crate::period::name_time(&name).map(|t| granularity.period_of(t));
        if opened_in.is_some_and(|p| !p.contains(crate::clock::now())) {
            self.close()?;
        }
        Ok(())
    }

    /// The heads of the manifests closed since the last call.
    pub(crate) fn take_published(&mut self) -> Vec<HeadRecord> {
        std::mem::take(&mut self.published)
    }

    /// Closes the open manifest, if any, for delivery (with `take_closed`), and writes its head record
    /// beside it.
    pub fn close(&mut self) -> Result<(), ManifestError> {
        let Some(open) = self.open.take() else { return Ok(()) };
        let failed = ManifestError::write(&open.open_path);
        let bytes = open
            .file
            .sync_all()
            .and_then(|()| std::fs::rename(&open.open_path, &open.closed_path))
            .and_then(|()| durable::sync_dir(&self.dir))
            .and_then(|()| open.file.metadata())
            .map_err(failed)?
            .len();
        tracing::info!(file = %open.closed_path.display(), entries = open.entries, "closed manifest");
        let manifest_name = open
            .closed_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.closed
            .push(ClosedFile::new(open.closed_path, FileKind::Manifest, bytes));
        self.write_head_record(manifest_name);
        Ok(())
    }

    /// Signs the chain's head as of the manifest just closed and writes it beside the manifest for
    /// delivery. Best effort: without it the archive is as before, and the next manifest's head
    /// covers this one's entries.
    fn write_head_record(&mut self, manifest: String) {
        let body = HeadBody {
            seq: self.head.seq,
            hash: self.head.hash.clone(),
            manifest,
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        };
        let path = self.dir.join(head::file_name(&body.manifest));
        let record = HeadRecord::sign(body, &self.key);
        let line = record.to_line();
        match durable::write_atomically(&path, line.as_bytes()) {
            Ok(()) => {
                self.closed
                    .push(ClosedFile::new(path, FileKind::Manifest, line.len() as u64));
                self.published.push(record);
            }
            Err(e) => {
                tracing::error!(file = %path.display(), error = %Chain(&e), "cannot write the chain head record; the next manifest's covers its entries")
            }
        }
    }

    fn ensure_open(&mut self) -> Result<&mut OpenManifest, ManifestError> {
        if self.open.is_none() {
            let closed_name = self.names.message_file(MANIFEST_BASENAME, crate::clock::now());
            let open_path = self.dir.join(open_name(&closed_name));
            let file = OpenOptions::new()
                .append(true)
                .create_new(true)
                .open(&open_path)
                .and_then(|file| {
                    file.try_lock().map_err(std::io::Error::from)?;
                    durable::sync_dir(&self.dir)?;
                    Ok(file)
                })
                .map_err(ManifestError::write(&open_path))?;
            let closed_path = self.dir.join(closed_name);
            self.open = Some(OpenManifest {
                file,
                open_path,
                closed_path,
                entries: 0,
                len: 0,
                opened: Instant::now(),
            });
        }
        self.open.as_mut().ok_or_else(|| ManifestError::Write {
            path: self.dir.clone(),
            error: std::io::Error::other("manifest not open"),
        })
    }

    fn store_head(&mut self) -> Result<(), ManifestError> {
        let bytes = serde_json::to_vec(&self.head).map_err(std::io::Error::other);
        bytes
            .and_then(|bytes| durable::write_atomically(&self.head_path, &bytes))
            .map_err(|error| ManifestError::Head {
                path: self.head_path.clone(),
                error,
            })?;
        self.head_dirty = false;
        Ok(())
    }
}

/// The closed files found in the destinations at start-up.
struct Waiting {
    manifests: Vec<ClosedFile>,
    /// With the SHA-256 their entry lists.
    listed: Vec<ClosedFile>,
    unlisted: Vec<ClosedFile>,
    /// The newest entry in any local manifest.
    newest: Option<Head>,
}

/// Sorts the closed files in the destinations (except `known`, already accounted for, whose entries
/// are read too) by whether a manifest in `MESGDEST` lists them.
fn closed_files(config: &SpoolConfig, known: &[ClosedFile]) -> std::io::Result<Waiting> {
    let known_paths: HashSet<&Path> = known.iter().map(|f| f.path.as_path()).collect();
    let mut listed_names = HashMap::new();
    let mut waiting = Waiting {
        manifests: Vec::new(),
        listed: Vec::new(),
        unlisted: Vec::new(),
        newest: None,
    };
    for name in file_names(&config.mesg_dest)? {
        if name.starts_with(MANIFEST_BASENAME) && name.ends_with(CLOSED_SUFFIX) {
            let path = config.mesg_dest.join(&name);
            for line in BufReader::new(durable::open_regular(&path)?).lines() {
                let line = line?;
                if let Ok(entry) = serde_json::from_str::<Entry>(&line) {
                    if waiting.newest.as_ref().is_none_or(|h| entry.body.seq > h.seq) {
                        waiting.newest = Some(Head {
                            seq: entry.body.seq,
                            hash: line_hash(&line),
                        });
                    }
                    listed_names.insert(entry.body.name, (entry.body.sha256, entry.body.kms_key));
                }
            }
            if !known_paths.contains(path.as_path()) {
                let bytes = std::fs::metadata(&path)?.len();
                waiting.manifests.push(ClosedFile::new(path, FileKind::Manifest, bytes));
            }
        } else if let Some(stem) = name
            .strip_prefix(head::HEAD_RECORD_PREFIX)
            .and_then(|n| n.strip_suffix(".tmp"))
        {
            // A head record a crash interrupted: written again when its manifest's successor closes.
            tracing::warn!(file = %name, manifest = stem, "removing an unfinished chain head record");
            let _ = std::fs::remove_file(config.mesg_dest.join(&name));
        } else if head::is_head_record(&name) {
            let path = config.mesg_dest.join(&name);
            let bytes = std::fs::metadata(&path)?.len();
            waiting.manifests.push(ClosedFile::new(path, FileKind::Manifest, bytes));
        }
    }
    let message_prefix = format!("{}_", config.basename);
    for (dir, kind) in [
        (&config.mesg_dest, FileKind::Messages),
        (&config.file_dest, FileKind::Attachment),
    ] {
        for name in file_names(dir)? {
            let ours = match kind {
                FileKind::Messages => name.starts_with(&message_prefix) && name.ends_with(CLOSED_SUFFIX),
                _ => name.starts_with("attachment_"),
            };
            let path = dir.join(&name);
            if !ours || known_paths.contains(path.as_path()) {
                continue;
            }
            let bytes = std::fs::metadata(&path)?.len();
            let mut file = ClosedFile::new(path, kind, bytes);
            // Listed: it goes up as its entry says, under the key the entry names (never one an
            // alias names now: the period may have been shredded since).
            if let Some((sha256, kms_key)) = listed_names.get(&name) {
                file.sha256 = Some(sha256.clone());
                file.kms_key.clone_from(kms_key);
                waiting.listed.push(file);
            } else {
                tracing::warn!(file = %file.path.display(), "closed file not listed in any manifest (a crash came between); listing it now");
                waiting.unlisted.push(file);
            }
        }
    }
    for files in [&mut waiting.manifests, &mut waiting.listed, &mut waiting.unlisted] {
        files.sort_by(|a, b| a.path.cmp(&b.path));
    }
    Ok(waiting)
}

/// The names of the regular files in `dir`. Anything else found under an archive name (a link to
/// a file elsewhere, a FIFO) is left alone with a warning: it must never be listed or shipped.
fn file_names(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.file_type()?.is_file() {
            if !entry.file_type()?.is_dir() {
                tracing::warn!(file = %entry.path().display(), "not a regular file; left alone");
            }
            continue;
        }
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}
