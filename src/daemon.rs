//! Wiring: the pipeline (spool → sink) shared by every command, the HTTP source on top of it for
//! `run`, and graceful shutdown on SIGTERM/SIGINT.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::identity::Identity;
use crate::metrics::Metrics;
use crate::sink::manifest::{ManifestSink, ManifestWriter};
use crate::sink::{self, local::LocalSink, s3::S3Sink};
use crate::source::http::{self, HttpState};
use crate::spool::Spool;

/// The spool and the sink task consuming its closed files.
pub struct Pipeline {
    pub spool: Spool,
    pub metrics: Arc<Metrics>,
    stop_sink: watch::Sender<bool>,
    sink_task: JoinHandle<()>,
}

impl Pipeline {
    /// Recovers what a previous run left open and starts the writer and the sink.
    pub async fn start(config: &Config, metrics: Arc<Metrics>, identity: &Identity) -> anyhow::Result<Self> {
        let (closed_tx, closed_rx) = mpsc::unbounded_channel();
        let (stop_sink, stop_rx) = watch::channel(false);
        let (spool, state, key) = (
            config.spool.clone(),
            config.identity.state_dir.clone(),
            identity.signing_key().clone(),
        );
        let (manifest, recovered) = tokio::task::spawn_blocking(move || ManifestWriter::open(&spool, &state, key))
            .await?
            .context("cannot open the manifest")?;
        for file in recovered {
            let _ = closed_tx.send(file);
        }
        let sink_task = match &config.s3 {
            Some(s3) => {
                // The first 8 hex digits of the public key: stable for this installation.
                let bot_tag = identity.public_key_hex().chars().take(8).collect();
                let grace = config.ingest.shutdown_grace;
                let s3 = S3Sink::new(s3.clone(), bot_tag, metrics.clone(), grace).await;
                tokio::spawn(sink::run(ManifestSink::new(s3, manifest), closed_rx, stop_rx))
            }
            None => tokio::spawn(sink::run(ManifestSink::new(LocalSink, manifest), closed_rx, stop_rx)),
        };
        let (spool_config, m) = (config.spool.clone(), metrics.clone());
        let spool = tokio::task::spawn_blocking(move || Spool::start(spool_config, m, closed_tx))
            .await?
            .with_context(|| format!("cannot start the spool in {}", config.spool.mesg_dest.display()))?;
        Ok(Self {
            spool,
            metrics,
            stop_sink,
            sink_task,
        })
    }

    /// Closes the open file and lets the sink take everything closed so far.
    pub async fn shutdown(self) {
        self.spool.close().await;
        let _ = self.stop_sink.send(true);
        if let Err(e) = self.sink_task.await {
            tracing::error!(error = %e, "sink task failed");
        }
    }
}

/// `retention-bot run`: serve the HTTP source until SIGTERM/SIGINT, then shut down gracefully.
pub async fn run(config: Config, metrics: Arc<Metrics>, identity: Identity) -> anyhow::Result<()> {
    // Installed first, so a stop request during start-up is honoured rather than fatal.
    let signal = shutdown_signal()?;
    let pipeline = Pipeline::start(&config, metrics, &identity).await?;
    let addr = config.ingest.addr;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (WICKRIO_INGEST_ADDR): is another process using it?"))?;
    let state = Arc::new(HttpState::new(
        pipeline.spool.clone(),
        pipeline.metrics.clone(),
        config.bot_name.clone(),
        config.ingest.clone(),
    ));
    let (stop_http, mut stop_rx) = watch::channel(false);
    let server = axum::serve(listener, http::router(state.clone()))
        .with_graceful_shutdown(async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        })
        .into_future();
    let mut server = tokio::spawn(server);
    tracing::info!(
        %addr,
        bot = %config.bot_name,
        messages = %config.spool.mesg_dest.display(),
        attachments = %config.spool.file_dest.display(),
        "retention-bot ready"
    );

    tokio::select! {
        signal = signal => tracing::info!(signal, "shutting down: refusing new data, finishing requests in flight"),
        result = &mut server => {
            result??;
            anyhow::bail!("the HTTP server stopped unexpectedly");
        }
    }

    // New ingest requests now get 503; wait (bounded) for those in flight, which are acknowledged
    // only once durable, then stop the listener.
    state.drain.start();
    let grace = config.ingest.shutdown_grace;
    if tokio::time::timeout(grace, state.drain.idle()).await.is_err() {
        tracing::warn!(
            grace_secs = grace.as_secs(),
            "requests still in flight after the grace period are cut off, unacknowledged"
        );
    }
    let _ = stop_http.send(true);
    if tokio::time::timeout(Duration::from_secs(2), &mut server).await.is_err() {
        server.abort();
    }
    pipeline.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// Installs SIGTERM and SIGINT handlers; the future resolves with the name of the first to arrive.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = &'static str>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot install a SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install a SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    })
}
