//! The sink: what happens to a closed file. The spool hands every closed file (message files and
//! attachments) over a channel; a sink task consumes it. A new destination (S3) is a new [`Sink`]
//! implementation and touches nothing upstream.
//! `local` keeps files where they are; `s3` uploads them; the manifest stage (`crate::manifest`)
//! wraps either.

pub mod local;
mod manifest_stage;
pub mod s3;

use std::future::Future;

use tokio::sync::mpsc;

use crate::spool::ClosedFile;
pub(crate) use manifest_stage::ManifestSink;

/// How often [`Sink::tick`] runs.
const TICK: std::time::Duration = std::time::Duration::from_secs(5);

/// A destination for closed files.
pub trait Sink: Send + 'static {
    /// Takes ownership of a closed file. Runs one file at a time, in closing order.
    fn deliver(&mut self, file: ClosedFile) -> impl Future<Output = ()> + Send;

    /// Called every few seconds between deliveries, for work that waits on time (files held back
    /// until their key exists, a manifest due to close at a period's end).
    fn tick(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Called once at shutdown, after the last delivery.
    fn finish(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Feeds closed files to `sink` until `stop` turns true, then delivers whatever is already queued
/// (the spool closes its open file before the stop is given) and returns.
pub async fn run<S: Sink>(
    mut sink: S,
    mut files: mpsc::UnboundedReceiver<ClosedFile>,
    mut stop: crate::shutdown::Shutdown,
) {
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            file = files.recv() => match file {
                Some(file) => sink.deliver(file).await,
                None => break,
            },
            _ = ticks.tick() => sink.tick().await,
            () = stop.recv() => break,
        }
    }
    while let Ok(file) = files.try_recv() {
        sink.deliver(file).await;
    }
    sink.finish().await;
}
