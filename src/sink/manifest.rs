//! The manifest stage: before a closed file reaches its sink, a signed, hash-chained entry for it is
//! appended (and fsync'd) to the open manifest file. Manifests rotate like message files and are
//! delivered to the same sink, so they travel with the archive. The chain's head (last sequence
//! number and entry hash) lives in the state directory, so the chain continues across restarts even
//! when the sink has shipped every earlier manifest away.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};

use super::Sink;
use crate::config::SpoolConfig;
use crate::identity::manifest::{Entry, EntryBody, GENESIS, MANIFEST_BASENAME, file_facts, line_hash};
use crate::identity::sealed::write_atomically;
use crate::spool::naming::{CLOSED_SUFFIX, Names, open_name};
use crate::spool::{ClosedFile, FileKind, disk, recovery};

const HEAD_FILE: &str = "manifest_head.json";
/// A manifest is closed (and shipped) after this many entries or this long, whichever comes first.
const MAX_ENTRIES: usize = 1000;
const MAX_AGE: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Head {
    seq: u64,
    hash: String,
}

/// Appends manifest entries; blocking, so it runs on the blocking pool.
pub struct ManifestWriter {
    dir: PathBuf,
    head_path: PathBuf,
    head: Head,
    key: SigningKey,
    names: Names,
    open: Option<OpenManifest>,
    /// Files found at start-up that a manifest already lists: they get no second entry.
    already_listed: HashSet<PathBuf>,
}

struct OpenManifest {
    file: File,
    open_path: PathBuf,
    closed_path: PathBuf,
    entries: usize,
    opened: Instant,
}

impl ManifestWriter {
    /// Loads the chain head and closes manifests a crash left open (taking the head from them if
    /// they hold entries the head file had not recorded yet). Returns every closed file still in the
    /// destinations, for the sink to take again (a sink that ships files away had not finished with
    /// them): first the manifests, then files already listed, which pass without a second entry, then
    /// files that no local manifest lists, which get their entry now (a crash between closing a file
    /// and listing it must not leave it unlisted). Run it before the spool's own recovery, which hands
    /// on the files it closes itself.
    pub fn open(config: &SpoolConfig, state_dir: &Path, key: SigningKey) -> std::io::Result<(Self, Vec<ClosedFile>)> {
        let dir = &config.mesg_dest;
        let head_path = state_dir.join(HEAD_FILE);
        let mut head = match std::fs::read(&head_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::other(format!(
                    "{} is damaged: {e}; restore it from a backup",
                    head_path.display()
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Head {
                seq: 0,
                hash: GENESIS.into(),
            },
            Err(e) => return Err(e),
        };
        let mut recovered = Vec::new();
        for (path, bytes) in recovery::close_abandoned(dir, MANIFEST_BASENAME)? {
            if let Some((entry, line)) = last_entry(&path)?
                && entry.body.seq > head.seq
            {
                head = Head {
                    seq: entry.body.seq,
                    hash: line_hash(&line),
                };
            }
            recovered.push(ClosedFile {
                path,
                kind: FileKind::Manifest,
                bytes,
            });
        }
        let waiting = closed_files(config, &recovered)?;
        let already_listed = waiting.listed.iter().map(|f| f.path.clone()).collect();
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
        };
        writer.store_head()?;
        Ok((writer, recovered))
    }

    /// Appends the entry for `file`; returns the manifest if that entry made it rotate.
    pub fn record(&mut self, file: &ClosedFile) -> std::io::Result<Option<ClosedFile>> {
        if self.already_listed.remove(&file.path) {
            return Ok(None);
        }
        let facts = file_facts(&file.path, file.kind == FileKind::Messages)?;
        let name = file
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let body = EntryBody {
            seq: self.head.seq + 1,
            name,
            kind: file.kind.as_str().to_owned(),
            size: facts.size,
            sha256: facts.sha256,
            first_msg_ts: facts.first_msg_ts,
            last_msg_ts: facts.last_msg_ts,
            closed_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            prev: self.head.hash.clone(),
        };
        let line = Entry::sign(body, &self.key).to_line();
        let open = self.ensure_open()?;
        open.file.write_all(format!("{line}\n").as_bytes())?;
        open.file.sync_data()?;
        open.entries += 1;
        let full = open.entries >= MAX_ENTRIES || open.opened.elapsed() >= MAX_AGE;
        self.head = Head {
            seq: self.head.seq + 1,
            hash: line_hash(&line),
        };
        self.store_head()?;
        if full { self.close() } else { Ok(None) }
    }

    /// Closes the open manifest, if any, for delivery.
    pub fn close(&mut self) -> std::io::Result<Option<ClosedFile>> {
        let Some(open) = self.open.take() else { return Ok(None) };
        open.file.sync_all()?;
        std::fs::rename(&open.open_path, &open.closed_path)?;
        disk::sync_dir(&self.dir)?;
        let bytes = open.file.metadata()?.len();
        tracing::info!(file = %open.closed_path.display(), entries = open.entries, "closed manifest");
        Ok(Some(ClosedFile {
            path: open.closed_path,
            kind: FileKind::Manifest,
            bytes,
        }))
    }

    fn ensure_open(&mut self) -> std::io::Result<&mut OpenManifest> {
        if self.open.is_none() {
            let closed_name = self.names.message_file(MANIFEST_BASENAME, chrono::Utc::now());
            let open_path = self.dir.join(open_name(&closed_name));
            let file = OpenOptions::new().append(true).create_new(true).open(&open_path)?;
            file.try_lock().map_err(|e| std::io::Error::other(e.to_string()))?;
            disk::sync_dir(&self.dir)?;
            let closed_path = self.dir.join(closed_name);
            self.open = Some(OpenManifest {
                file,
                open_path,
                closed_path,
                entries: 0,
                opened: Instant::now(),
            });
        }
        self.open
            .as_mut()
            .ok_or_else(|| std::io::Error::other("manifest not open"))
    }

    fn store_head(&self) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(&self.head).map_err(std::io::Error::other)?;
        write_atomically(&self.head_path, &bytes).map_err(std::io::Error::other)
    }
}

/// The closed files found in the destinations at start-up.
struct Waiting {
    manifests: Vec<ClosedFile>,
    listed: Vec<ClosedFile>,
    unlisted: Vec<ClosedFile>,
}

/// Sorts the closed files in the destinations (except `known`, already accounted for) by whether a
/// manifest in `MESGDEST` lists them.
fn closed_files(config: &SpoolConfig, known: &[ClosedFile]) -> std::io::Result<Waiting> {
    let known: HashSet<&Path> = known.iter().map(|f| f.path.as_path()).collect();
    let mut listed_names = HashSet::new();
    let mut waiting = Waiting {
        manifests: Vec::new(),
        listed: Vec::new(),
        unlisted: Vec::new(),
    };
    for name in file_names(&config.mesg_dest)? {
        if name.starts_with(MANIFEST_BASENAME) && name.ends_with(CLOSED_SUFFIX) {
            let path = config.mesg_dest.join(&name);
            for line in BufReader::new(File::open(&path)?).lines() {
                if let Ok(entry) = serde_json::from_str::<Entry>(&line?) {
                    listed_names.insert(entry.body.name);
                }
            }
            if !known.contains(path.as_path()) {
                let bytes = std::fs::metadata(&path)?.len();
                waiting.manifests.push(ClosedFile {
                    path,
                    kind: FileKind::Manifest,
                    bytes,
                });
            }
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
            if !ours || known.contains(path.as_path()) {
                continue;
            }
            let bytes = std::fs::metadata(&path)?.len();
            if listed_names.contains(&name) {
                waiting.listed.push(ClosedFile { path, kind, bytes });
            } else {
                tracing::warn!(file = %path.display(), "closed file not listed in any manifest (a crash came between); listing it now");
                waiting.unlisted.push(ClosedFile { path, kind, bytes });
            }
        }
    }
    for files in [&mut waiting.manifests, &mut waiting.listed, &mut waiting.unlisted] {
        files.sort_by(|a, b| a.path.cmp(&b.path));
    }
    Ok(waiting)
}

fn file_names(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        if let Some(name) = entry?.file_name().to_str() {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

fn last_entry(path: &Path) -> std::io::Result<Option<(Entry, String)>> {
    let mut last = None;
    for line in BufReader::new(File::open(path)?).lines() {
        let line = line?;
        if let Ok(entry) = serde_json::from_str::<Entry>(&line) {
            last = Some((entry, line));
        }
    }
    Ok(last)
}

/// Wraps a sink: every file gets its manifest entry before the inner sink takes it.
pub struct ManifestSink<S> {
    inner: S,
    writer: Option<ManifestWriter>,
}

impl<S: Sink> ManifestSink<S> {
    pub fn new(inner: S, writer: ManifestWriter) -> Self {
        Self {
            inner,
            writer: Some(writer),
        }
    }

    /// Runs `job` on the writer on the blocking pool. A lost writer (a panic in `job`) is logged
    /// and the archive carries on unsigned rather than stopping.
    async fn with_writer<T: Send + 'static>(
        &mut self,
        job: impl FnOnce(&mut ManifestWriter) -> std::io::Result<T> + Send + 'static,
    ) -> Option<T> {
        let mut writer = self.writer.take()?;
        match tokio::task::spawn_blocking(move || {
            let r = job(&mut writer);
            (writer, r)
        })
        .await
        {
            Ok((writer, result)) => {
                self.writer = Some(writer);
                result
                    .inspect_err(|e| tracing::error!(error = %e, "cannot write the manifest"))
                    .ok()
            }
            Err(e) => {
                tracing::error!(error = %e, "manifest writer failed; files are no longer listed in manifests");
                None
            }
        }
    }
}

impl<S: Sink + Send> Sink for ManifestSink<S> {
    async fn deliver(&mut self, file: ClosedFile) {
        if file.kind == FileKind::Manifest {
            return self.inner.deliver(file).await;
        }
        let listed = file.clone();
        let rotated = self.with_writer(move |w| w.record(&listed)).await;
        // The file is delivered even if its entry could not be written: data is never held back;
        // `verify` will report it as unlisted.
        self.inner.deliver(file).await;
        if let Some(Some(manifest)) = rotated {
            self.inner.deliver(manifest).await;
        }
    }

    async fn finish(&mut self) {
        if let Some(Some(manifest)) = self.with_writer(ManifestWriter::close).await {
            self.inner.deliver(manifest).await;
        }
        self.inner.finish().await;
    }
}
