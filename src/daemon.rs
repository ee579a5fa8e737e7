//! Wiring: the pipeline (spool → sink) shared by every command, the source on top of it for `run`
//! (the HTTP source, or the Matrix source with the HTTP server left for health and metrics), and
//! graceful shutdown on SIGTERM/SIGINT.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::{Config, Network};
use crate::identity::Identity;
use crate::manifest::ManifestWriter;
use crate::metrics::{Gauge, Metrics};
use crate::report::archive_check::ArchiveCheck;
use crate::report::watchdog::Watchdog;
use crate::report::{EventKind, Events};
use crate::serve::{self, Status};
use crate::shutdown::{self, Drain, Trigger};
use crate::sink::ManifestSink;
use crate::sink::{
    self,
    local::LocalSink,
    s3::{BotKeys, ContentMac, S3Sink},
};
use crate::source::Intake;
use crate::source::http::{self, HttpState};
use crate::source::matrix::MatrixSource;
use crate::source::sqs::SqsSource;

/// A source that captures by itself (rather than answer producers' requests): the HTTP server then
/// serves only health, readiness and metrics.
#[derive(Debug)]
pub enum Capture {
    /// `WICKRIO_NETWORK=matrix`: the logged-in Matrix source.
    Matrix(Box<MatrixSource>),
    /// `WICKRIO_NETWORK=sqs`: the queue, reached.
    Sqs(SqsSource),
}

/// The capture task: its end (an error, or stopped).
type CaptureTask = JoinHandle<anyhow::Result<()>>;
use crate::spool::Spool;

/// The spool and the sink task consuming its closed files.
pub struct Pipeline {
    pub spool: Spool,
    pub metrics: Arc<Metrics>,
    stop_sink: Trigger,
    sink_task: JoinHandle<()>,
}

impl Pipeline {
    /// Recovers what a previous run left open and starts the writer and the sink.
    /// Also starts the watchdog, which reports through `events` until shutdown.
    pub async fn start(
        config: &Config,
        metrics: Arc<Metrics>,
        identity: &Identity,
        events: &Events,
        aws: &crate::aws::Aws,
    ) -> anyhow::Result<Self> {
        crate::clock::start();
        let (closed_tx, closed_rx) = mpsc::unbounded_channel();
        let (stop_sink, stop_rx) = shutdown::channel();
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
                let bot = BotKeys {
                    tag: identity.public_key_hex().chars().take(8).collect(),
                    content_mac: ContentMac::new(identity.signing_key()),
                    signer: identity.signing_key().clone(),
                };
                let grace = config.ingest.shutdown_grace;
                let mut s3 = S3Sink::new(s3.clone(), bot, metrics.clone(), events.clone(), grace, aws).await;
                let (keys, discards) = (s3.key_ring(), s3.take_discards());
                tokio::spawn(sink::run(
                    ManifestSink::new(s3, manifest, events.clone()).with_keys(keys, discards),
                    closed_rx,
                    stop_rx,
                ))
            }
            None => tokio::spawn(sink::run(
                ManifestSink::new(LocalSink, manifest, events.clone()),
                closed_rx,
                stop_rx,
            )),
        };
        let (spool_config, m, e) = (config.spool.clone(), metrics.clone(), events.clone());
        let spool = tokio::task::spawn_blocking(move || Spool::start(spool_config, m, e, closed_tx))
            .await?
            .with_context(|| format!("cannot start the spool in {}", config.spool.mesg_dest.display()))?;
        let watchdog = Watchdog::new(
            metrics.clone(),
            events.clone(),
            config.reporting.watchdog_after,
            vec![config.spool.mesg_dest.clone(), config.spool.file_dest.clone()],
            config.spool.min_free_bytes,
        );
        tokio::spawn(watchdog.run(stop_sink.subscribe()));
        if let Some(check) = config.s3.as_ref().and_then(|s3| {
            ArchiveCheck::new(
                s3,
                identity.signing_key().verifying_key(),
                [config.spool.mesg_dest.clone(), config.spool.file_dest.clone()],
                config.identity.state_dir.clone(),
                metrics.clone(),
                events.clone(),
                aws,
            )
        }) {
            tokio::spawn(check.run(stop_sink.subscribe()));
        }
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
        self.stop_sink.fire();
        if let Err(e) = self.sink_task.await {
            tracing::error!(error = %crate::error_chain::Chain(&e), "sink task failed");
        }
    }
}

/// `retention-bot run`: capture until SIGTERM/SIGINT, then shut down gracefully. `capture` is the
/// Matrix or SQS source; without one producers POST to the HTTP source.
pub async fn run(
    config: Config,
    metrics: Arc<Metrics>,
    identity: Identity,
    events: Events,
    capture: Option<Capture>,
    aws: &crate::aws::Aws,
) -> anyhow::Result<()> {
    // Installed first, so a stop request during start-up is honoured rather than fatal.
    let signal = shutdown_signal()?;
    let pipeline = Pipeline::start(&config, metrics, &identity, &events, aws).await?;
    let addr = config.ingest.addr;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (WICKRIO_INGEST_ADDR): is another process using it?"))?;
    let drain = Arc::new(Drain::default());
    let (stop_http, http_stop) = shutdown::channel();
    let (stop_capture, capture_stop) = shutdown::channel();
    let intake = Intake {
        spool: pipeline.spool.clone(),
        metrics: pipeline.metrics.clone(),
        max_file: config.ingest.max_file,
    };
    let mut capture: Option<CaptureTask> = capture.map(|source| {
        let (intake, events) = (intake.clone(), events.clone());
        match source {
            Capture::Matrix(s) => tokio::spawn(async move { Ok(s.capture(intake, events, capture_stop).await?) }),
            Capture::Sqs(s) => tokio::spawn(async move { Ok(s.capture(intake, events, capture_stop).await?) }),
        }
    });
    let app = routes(&config, &pipeline, intake, &drain, capture.is_none());
    // Headers are small: a client that cannot send them in a few seconds only holds a connection.
    let limits = serve::Limits {
        header_timeout: config.ingest.idle.min(serve::HEADER_TIMEOUT),
        max_connections: config.ingest.max_connections,
    };
    let mut server = tokio::spawn(serve::serve(listener, app, limits, pipeline.metrics.clone(), http_stop));
    tracing::info!(
        %addr,
        bot = %config.bot_name,
        messages = %config.spool.mesg_dest.display(),
        attachments = %config.spool.file_dest.display(),
        "retention-bot ready"
    );
    events.send(EventKind::Started, started_message(&config));

    tokio::select! {
        signal = signal => {
            tracing::info!(signal, "shutting down: refusing new data, finishing requests in flight");
            events.send(
                EventKind::Stopping,
                format!("stopping on {signal}: refusing new data, finishing requests in flight and uploads"),
            );
        }
        result = &mut server => {
            result?;
            anyhow::bail!("the HTTP server stopped unexpectedly");
        }
        result = capture_ended(&mut capture) => {
            pipeline.shutdown().await;
            result.context("the capture source stopped")??;
            anyhow::bail!("the capture source stopped unexpectedly");
        }
    }

    wind_down(&config, capture, stop_capture, &drain, stop_http, server).await;
    let metrics = pipeline.metrics.clone();
    pipeline.shutdown().await;
    tracing::info!("stopped");
    events.send(EventKind::Stopped, stopped_message(&metrics));
    Ok(())
}

/// The status routes, and the ingest routes unless the Matrix or SQS source captures instead.
fn routes(config: &Config, pipeline: &Pipeline, intake: Intake, drain: &Arc<Drain>, http_source: bool) -> axum::Router {
    let app = serve::status_routes(Arc::new(Status {
        spool: pipeline.spool.clone(),
        metrics: pipeline.metrics.clone(),
        bot_name: config.bot_name.clone(),
        drain: drain.clone(),
    }));
    if !http_source {
        return app;
    }
    let ingest = HttpState::new(intake, config.ingest.clone(), drain.clone());
    app.merge(http::router(Arc::new(ingest)))
}

/// The sources stop in order, each within the grace period: the Matrix or SQS capture, then the
/// requests in flight, then the listener.
async fn wind_down(
    config: &Config,
    mut capture: Option<CaptureTask>,
    stop_capture: Trigger,
    drain: &Drain,
    stop_http: Trigger,
    mut server: JoinHandle<()>,
) {
    // The Matrix source finishes the sync in hand (its position is saved only once it is durable); the
    // SQS source, the batches in hand (what cannot finish is given back to the queue).
    stop_capture.fire();
    if capture.is_some()
        && tokio::time::timeout(config.ingest.shutdown_grace, capture_ended(&mut capture))
            .await
            .is_err()
    {
        // Work it handed to the spool (an attachment and its line) still finishes: the spool waits.
        if let Some(task) = &capture {
            task.abort();
        }
        tracing::warn!(
            "capture cut off mid-work: a Matrix sync is read again at the next start, SQS messages return to the queue"
        );
    }
    // New ingest requests now get 503; wait (bounded) for those in flight, which are acknowledged
    // only once durable, then stop the listener.
    drain.start();
    let grace = config.ingest.shutdown_grace;
    if tokio::time::timeout(grace, drain.idle()).await.is_err() {
        tracing::warn!(
            grace_secs = grace.as_secs(),
            "requests still in flight after the grace period are cut off, unacknowledged"
        );
    }
    stop_http.fire();
    if tokio::time::timeout(Duration::from_secs(2), &mut server).await.is_err() {
        server.abort();
    }
}

/// What an operator wants to know when the bot has stopped: whether anything waits for S3.
fn stopped_message(metrics: &Metrics) -> String {
    match metrics.level(Gauge::S3BacklogFiles) {
        0 => "stopped: everything received is saved".to_owned(),
        n => format!(
            "stopped: everything received is saved; {n} file(s) ({} bytes) wait on local disk for their upload at the next start",
            metrics.level(Gauge::S3BacklogBytes)
        ),
    }
}

/// Resolves when the capture task ends; never, when there is none (the HTTP source).
async fn capture_ended(capture: &mut Option<CaptureTask>) -> Result<anyhow::Result<()>, tokio::task::JoinError> {
    match capture {
        Some(task) => task.await,
        None => std::future::pending().await,
    }
}

/// What an operator wants to know when the bot comes up: who, which version, where data goes.
fn started_message(config: &Config) -> String {
    let destination = match &config.s3 {
        Some(s3) => format!(
            "s3://{}/{} ({})",
            s3.bucket,
            s3.folder,
            match &s3.kms {
                Some(kms) => format!("encrypted with KMS key {}", kms.key_arn),
                None => "not encrypted client-side".to_owned(),
            }
        ),
        None => format!(
            "{} and {} (local disk)",
            config.spool.mesg_dest.display(),
            config.spool.file_dest.display()
        ),
    };
    let source = match &config.network {
        Network::Http => format!("HTTP source on {}", config.ingest.addr),
        Network::Sqs(q) => format!(
            "draining SQS queue {} (health and metrics on {})",
            q.queue_url, config.ingest.addr
        ),
        Network::Matrix(m) => format!(
            "capturing Matrix homeserver {} (health and metrics on {})",
            m.homeserver, config.ingest.addr
        ),
    };
    format!(
        "started: retention-bot {} logged in as {}; {source}; files go to {destination}",
        env!("CARGO_PKG_VERSION"),
        config.bot_name,
    )
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
