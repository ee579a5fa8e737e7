//! The manifest stage's seam with the sink: every closed file gets its signed entry (written by the
//! [`ManifestWriter`] on the blocking pool) before the inner sink takes it, closed manifests and their
//! chain head records follow the files they list, and each head also goes out as an event.

use std::sync::Arc;

use super::Sink;
use super::s3::Discards;
use crate::envelope::KeyRing;
use crate::error_chain::Chain;
use crate::events::{EventKind, Events};
use crate::manifest::head::HeadRecord;
use crate::manifest::stage::{ManifestError, ManifestWriter};
use crate::period::Period;
use crate::shred::{Shred, ShredWatch};
use crate::spool::{ClosedFile, FileKind};

/// Why a shredded period's file could not be recorded as discarded (it stays on disk).
#[derive(Debug, thiserror::Error)]
enum DiscardError {
    #[error("no shred watch")]
    NoWatch,
    #[error("no period in its name")]
    NoPeriod,
    #[error("cannot keep its entries")]
    Copy(#[from] crate::shred::KeepCopyError),
    #[error("the manifest writer is lost")]
    WriterLost,
    #[error("cannot write its `discarded` entry")]
    Manifest(#[from] ManifestError),
}

/// Wraps a sink: every file gets its manifest entry before the inner sink takes it.
pub(crate) struct ManifestSink<S> {
    inner: S,
    writer: Option<ManifestWriter>,
    events: Events,
    /// Files whose entry could not be written yet: they wait on local disk, never delivered unlisted,
    /// and are listed again with every later file (or at the next start).
    unlisted: Vec<ClosedFile>,
    /// With encryption: each entry names the KMS key its file goes under, so a file waits (in
    /// `unlisted`) while its period's key is missing.
    keys: Option<Arc<KeyRing>>,
    /// With per-period keys: files of shredded periods to record as discarded and remove.
    discards: Option<Discards>,
    /// Files of shredded periods waiting while the shred can be cancelled, or whose discarding
    /// failed: looked at again at every tick.
    shredded: Vec<ClosedFile>,
}

impl<S: Sink> ManifestSink<S> {
    pub fn new(inner: S, writer: ManifestWriter, events: Events) -> Self {
        Self {
            inner,
            writer: Some(writer),
            events,
            unlisted: Vec::new(),
            keys: None,
            discards: None,
            shredded: Vec::new(),
        }
    }

    /// Entries name the key of `keys` their file is encrypted under; with `discards`, a file of a
    /// shredded period is recorded as discarded and removed instead.
    pub(crate) fn with_keys(mut self, keys: Option<Arc<KeyRing>>, discards: Option<Discards>) -> Self {
        self.keys = keys;
        self.discards = discards;
        self
    }

    /// Runs `job` on the writer on the blocking pool. `None`: the writer was lost (a panic in `job`),
    /// which is logged; the archive then carries on unsigned rather than stopping.
    async fn with_writer<T: Send + 'static>(
        &mut self,
        job: impl FnOnce(&mut ManifestWriter) -> T + Send + 'static,
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
                Some(result)
            }
            Err(e) => {
                tracing::error!(error = %Chain(&e), "manifest writer failed; files are no longer listed in manifests");
                None
            }
        }
    }

    /// Lists `file` and delivers it (and the manifests closed meanwhile). If the entry cannot be
    /// written the file waits in `unlisted`.
    async fn list_and_deliver(&mut self, mut file: ClosedFile) {
        // A file listed before this start keeps the key its entry names.
        if let Some(keys) = self.keys.as_ref().filter(|_| file.kms_key.is_none()) {
            let name = file_name_of(&file);
            // A file of a shredded period goes under no key, whatever its alias names now.
            let watch = self.discards.as_ref().map(|d| d.watch.clone());
            if shred_of(watch, &name).await.is_some() {
                // Looked at again at the next tick: removed, kept waiting, or listed after all.
                return self.shredded.push(file);
            }
            match keys.key_for(&name).await {
                Ok(key) => file.kms_key = Some(key),
                Err(e) => {
                    tracing::warn!(file = %file.path.display(), error = %Chain(&e), "the file waits on local disk for its KMS key");
                    self.unlisted.push(file);
                    return;
                }
            }
        }
        let listed = file.clone();
        let outcome = self
            .with_writer(move |w| (w.record(&listed), w.take_closed(), w.take_published()))
            .await;
        let (recorded, manifests) = match outcome {
            Some((recorded, manifests, heads)) => {
                self.publish(heads);
                (Some(recorded), manifests)
            }
            None => (None, Vec::new()),
        };
        match recorded {
            Some(Ok(recorded)) => {
                file.sha256 = Some(recorded.sha256);
                self.inner.deliver(file).await;
            }
            Some(Err(e)) => {
                tracing::error!(error = %Chain(&e), file = %file.path.display(), "cannot write the manifest; the file waits on local disk until its entry can be written");
                self.unlisted.push(file);
            }
            // The writer is lost: the archive carries on unsigned rather than holding data back.
            None => self.inner.deliver(file).await,
        }
        for manifest in manifests {
            self.inner.deliver(manifest).await;
        }
    }

    /// Tells the operators each closed manifest's head: a copy off the host of how far the chain went.
    fn publish(&self, heads: Vec<HeadRecord>) {
        for head in heads {
            let body = &head.body;
            self.events.send(
                EventKind::ChainHead,
                format!(
                    "manifest chain head: entry {} (SHA-256 {}) closes {}; to prove later that the archive goes at least this far, keep this signed record as a file for retention-bot verify --head: {}",
                    body.seq,
                    body.hash,
                    body.manifest,
                    head.to_line().trim_end()
                ),
            );
        }
    }

    /// Closes the open manifest as `close` decides, then tells the heads and delivers whatever
    /// closed; `failed` is logged if closing failed.
    async fn close_and_deliver(
        &mut self,
        close: fn(&mut ManifestWriter) -> Result<(), ManifestError>,
        failed: &'static str,
    ) {
        let closed = self
            .with_writer(move |w| (close(w), w.take_closed(), w.take_published()))
            .await;
        if let Some((closing, manifests, heads)) = closed {
            if let Err(e) = closing {
                tracing::error!(error = %Chain(&e), "{failed}");
            }
            self.publish(heads);
            for manifest in manifests {
                self.inner.deliver(manifest).await;
            }
        }
    }

    /// A file of a shredded period: removed once KMS has deleted the key ([`Self::discard`]); kept
    /// waiting while the shred can still be cancelled; and if it is cancelled, delivered as any file.
    async fn handle_shredded(&mut self, file: ClosedFile) {
        let watch = self.discards.as_ref().map(|d| d.watch.clone());
        match shred_of(watch, &file_name_of(&file)).await {
            Some((_, _, shred)) if shred.keys_gone => self.discard(file, shred.record_at).await,
            Some((watch, period, shred)) => {
                watch.say_waiting(period, &shred);
                self.shredded.push(file);
            }
            None if file.kind == FileKind::Manifest || file.kms_key.is_some() => self.inner.deliver(file).await,
            // Listed with the other files waiting for their entry.
            None => self.unlisted.push(file),
        }
    }

    /// Records a file of a shredded period as discarded (a manifest or head record: copies it into
    /// a signed supplement of the period's record), then removes it; if that cannot be done the
    /// file stays, and is tried again at the next tick.
    async fn discard(&mut self, file: ClosedFile, record: String) {
        let path = file.path.clone();
        let recorded = if file.kind == FileKind::Manifest {
            keep_copy(self.discards.as_ref().map(|d| d.watch.clone()), &file).await
        } else {
            self.record_discarded(&file).await
        };
        let said = match recorded {
            Ok(said) => said,
            Err(e) => {
                tracing::error!(error = %Chain(&e), file = %path.display(), "cannot record a shredded period's file as discarded; it stays on disk and is tried again");
                return self.shredded.push(file);
            }
        };
        let removed = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || crate::durable::remove_durably(&path)).await
        };
        match removed {
            Ok(Ok(())) => {
                let message = format!(
                    "{} was removed unsent: its period was shredded while it waited on this bot's disk, and KMS has deleted its key (signed record {record}); {said}",
                    path.display()
                );
                crate::events::announce!(
                    self.events,
                    tracing::Level::WARN,
                    EventKind::ShreddedFileDiscarded,
                    message
                )
            }
            Ok(Err(e)) => {
                tracing::error!(file = %path.display(), error = %Chain(&e), "recorded as discarded, but cannot remove it; remove it by hand")
            }
            Err(e) => tracing::error!(error = %Chain(&e), "the removal task failed"),
        }
    }

    /// A `discarded` entry for a data file; what the event says of it.
    async fn record_discarded(&mut self, file: &ClosedFile) -> Result<String, DiscardError> {
        let file = file.clone();
        let outcome = self
            .with_writer(move |w| (w.record_discarded(&file), w.take_closed(), w.take_published()))
            .await;
        let Some((recorded, manifests, heads)) = outcome else {
            return Err(DiscardError::WriterLost);
        };
        self.publish(heads);
        for manifest in manifests {
            self.inner.deliver(manifest).await;
        }
        recorded
            .map(|_| "a `discarded` entry in the manifest chain says so".to_owned())
            .map_err(DiscardError::from)
    }

    /// Files the uploader handed back because their period was shredded, and those waiting on a
    /// shred.
    async fn take_shredded(&mut self) {
        let mut files = std::mem::take(&mut self.shredded);
        if let Some(discards) = &mut self.discards {
            while let Ok(file) = discards.files.try_recv() {
                files.push(file);
            }
        }
        for file in files {
            self.handle_shredded(file).await;
        }
    }

    async fn retry_unlisted(&mut self) {
        for file in std::mem::take(&mut self.unlisted) {
            self.list_and_deliver(file).await;
        }
    }
}

/// A manifest or head record of a shredded period: its text into a signed supplement of the
/// period's record.
async fn keep_copy(watch: Option<Arc<ShredWatch>>, file: &ClosedFile) -> Result<String, DiscardError> {
    let watch = watch.ok_or(DiscardError::NoWatch)?;
    let period = watch.period_of(&file_name_of(file)).ok_or(DiscardError::NoPeriod)?;
    let at = watch.keep_copy(period, &file.path).await?;
    Ok(format!("its entries are kept in the signed supplement {at}"))
}

fn file_name_of(file: &ClosedFile) -> String {
    file.path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The shred in effect of the (ended) period of the file named `name`, if there is one.
async fn shred_of(watch: Option<Arc<ShredWatch>>, name: &str) -> Option<(Arc<ShredWatch>, Period, Shred)> {
    let watch = watch?;
    let period = watch.ended_period_of(name)?;
    let shred = watch.shred_of(period).await?;
    Some((watch, period, shred))
}

impl<S: Sink + Send> Sink for ManifestSink<S> {
    async fn tick(&mut self) {
        self.take_shredded().await;
        if !self.unlisted.is_empty() {
            self.retry_unlisted().await;
        }
        self.close_and_deliver(
            ManifestWriter::close_past_period,
            "cannot close the last period's manifest; it is closed at the next start",
        )
        .await;
        self.inner.tick().await;
    }

    async fn deliver(&mut self, file: ClosedFile) {
        if file.kind == FileKind::Manifest {
            return self.inner.deliver(file).await;
        }
        self.retry_unlisted().await;
        self.list_and_deliver(file).await;
    }

    async fn finish(&mut self) {
        self.retry_unlisted().await;
        for file in &self.unlisted {
            tracing::error!(file = %file.path.display(), "left on local disk without a manifest entry; it is listed and delivered at the next start");
        }
        self.close_and_deliver(
            ManifestWriter::close,
            "cannot close the manifest; it is closed at the next start",
        )
        .await;
        self.inner.finish().await;
    }
}
