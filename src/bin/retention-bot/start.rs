//! `run` and `import`: the start-up both share, step by step, each refusal reported.

use super::*;
use retention_bot::aws::Aws;
use retention_bot::error_chain::Chain;

/// How long, at exit, queued events and the last metrics may take to publish.
const REPORT_FLUSH: Duration = Duration::from_secs(5);

/// `run` and `import`: the configuration (environment, then the Secrets Manager secret), the
/// reporters, login, then the pipeline. Every exit caused by an error is reported as a critical
/// event first, when the SNS topic is known.
pub(super) fn start(runtime: &tokio::runtime::Runtime, command: Command, stdout_open: bool, aws: &Aws) -> ExitCode {
    let env = |k: &str| std::env::var(k).ok();
    warn_unknown_settings();
    let settings = match SecretLocation::from_env(env) {
        Err(e) => {
            tracing::error!("configuration error: {e}", e = Chain(&e));
            return ExitCode::from(EXIT_CONFIG);
        }
        Ok(location) => Settings::read(runtime, location, aws),
    };
    let lookup = secret::layered(env, settings.values.as_ref());
    let reporting = match config::reporting::from_lookup(&lookup) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("configuration error: {e}", e = Chain(&e));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let metrics = Arc::new(Metrics::default());
    let reporter = runtime.block_on(Reporter::start(&reporting, metrics.clone(), aws));
    let events = reporter.events.clone();
    let started = Started {
        runtime,
        settings: &settings,
        metrics: &metrics,
        events: &events,
        aws,
    };
    let code = match started.run_command(command, &lookup, stdout_open) {
        Ok(code) => code,
        Err(refusal) => {
            tracing::error!("{}", refusal.message);
            events.send(refusal.kind, format!("not started: {}", refusal.message));
            ExitCode::from(refusal.code)
        }
    };
    runtime.block_on(reporter.close(REPORT_FLUSH));
    code
}

/// A variable that looks like a setting but is none is most likely a misspelt one.
fn warn_unknown_settings() {
    // vars_os: a variable that is not Unicode is not a reason to panic.
    let names = std::env::vars_os().map(|(k, _)| k.to_string_lossy().into_owned());
    for (name, closest) in config::unknown_settings(names) {
        match closest {
            Some(meant) => tracing::warn!("{name} is not a setting and is ignored; did you mean {meant}?"),
            None => tracing::warn!("{name} is not a setting and is ignored (retention-bot --help lists them)"),
        }
    }
}

/// The Secrets Manager secret, when one is named: its values, or why they could not be read (the
/// reporters start first either way, so that the refusal can be published).
struct Settings {
    location: Option<SecretLocation>,
    values: Option<secret::SecretValues>,
    error: Option<secret::SecretError>,
}

impl Settings {
    fn read(runtime: &tokio::runtime::Runtime, location: Option<SecretLocation>, aws: &Aws) -> Self {
        let Some(location) = location else {
            return Self {
                location: None,
                values: None,
                error: None,
            };
        };
        match runtime.block_on(secret::fetch(&location, aws)) {
            Ok(values) => {
                tracing::info!(secret = %location.name, region = %location.region, "settings read from Secrets Manager");
                values.log_sources(|k| std::env::var(k).ok());
                Self {
                    location: Some(location),
                    values: Some(values),
                    error: None,
                }
            }
            Err(e) => Self {
                location: Some(location),
                values: None,
                error: Some(e),
            },
        }
    }
}

/// Why the bot will not start: its exit status, the event that says so, and what to tell.
struct Refusal {
    code: u8,
    kind: EventKind,
    message: String,
}

impl Refusal {
    fn new(code: u8, kind: EventKind, message: impl Into<String>) -> Self {
        Self {
            code,
            kind,
            message: message.into(),
        }
    }

    fn config(e: impl std::error::Error) -> Self {
        Self::new(
            EXIT_CONFIG,
            EventKind::Fatal,
            format!("configuration error: {e}", e = Chain(&e)),
        )
    }
}

/// What start-up has set up once the reporters run.
struct Started<'a> {
    runtime: &'a tokio::runtime::Runtime,
    settings: &'a Settings,
    metrics: &'a Arc<Metrics>,
    events: &'a Events,
    aws: &'a Aws,
}

impl Started<'_> {
    fn run_command(
        &self,
        command: Command,
        lookup: &impl Fn(&str) -> Option<String>,
        stdout_open: bool,
    ) -> Result<ExitCode, Refusal> {
        if let Some(e) = &self.settings.error {
            return Err(Refusal::new(
                EXIT_CONFIG,
                EventKind::Fatal,
                format!("cannot use the settings secret: {e}", e = Chain(&e)),
            ));
        }
        let config = Config::from_lookup(lookup).map_err(Refusal::config)?;
        if let Some(s3) = &config.s3 {
            self.runtime
                .block_on(retention_bot::sink::s3::object_lock::check_at_start(s3, self.aws))
                .map_err(Refusal::config)?;
        }
        let command_name = match command {
            Command::Import { .. } => "import",
            _ => "run",
        };
        let _lock = take_directories(&config, command_name)?;
        let identity = self.log_in(&config, stdout_open)?;
        release_freed_memory();
        let capture = match (&config.network, &command) {
            (Network::Matrix(m), Command::Run) => Some(daemon::Capture::Matrix(Box::new(
                self.connect_matrix(m, &config, &identity)?,
            ))),
            (Network::Sqs(q), Command::Run) => {
                let connected = self.runtime.block_on(retention_bot::source::sqs::connect(
                    q,
                    config.ingest.max_body,
                    config.ingest.shutdown_grace,
                    self.aws,
                ));
                Some(daemon::Capture::Sqs(connected.map_err(Refusal::config)?))
            }
            _ => None,
        };
        let (metrics, events, aws) = (self.metrics.clone(), self.events, self.aws);
        let result = self.runtime.block_on(async {
            match command {
                Command::Import { files } => run_import(&config, metrics, &identity, events, files, aws).await,
                _ => daemon::run(config, metrics, identity, events.clone(), capture, aws)
                    .await
                    .map(|()| ExitCode::SUCCESS),
            }
        });
        Ok(result.unwrap_or_else(|e| {
            tracing::error!("{e:#}");
            events.send(EventKind::Fatal, format!("stopped on an error: {e:#}"));
            ExitCode::FAILURE
        }))
    }

    /// The first-run ritual or the password check; a generated or rotated password is announced.
    fn log_in(&self, config: &Config, stdout_open: bool) -> Result<identity::Identity, Refusal> {
        let secret_password = self.settings.values.as_ref().and_then(|s| s.password());
        let store_in = self.settings.location.as_ref().filter(|_| config.secret_update);
        let identity = identity::login(
            &config.identity,
            secret_password,
            &mut Terminal,
            // With the password going into the secret too, a banner nobody reads locks nobody out.
            &mut *banner_out(stdout_open || store_in.is_some()),
            self.metrics,
        )
        .map_err(|e| {
            let code = if e.is_refusal() { EXIT_LOGIN } else { 1 };
            Refusal::new(
                code,
                EventKind::LoginFailed,
                format!("login refused: {e}", e = Chain(&e)),
            )
        })?;
        tracing::debug!(?identity, "logged in");
        if let Some(change) = identity.password_change() {
            self.runtime
                .block_on(announce_password(change, &identity, store_in, self.events, self.aws));
        }
        Ok(identity)
    }

    fn connect_matrix(
        &self,
        matrix: &config::network::MatrixConfig,
        config: &Config,
        identity: &identity::Identity,
    ) -> Result<source::matrix::MatrixSource, Refusal> {
        let connected = self
            .runtime
            .block_on(source::matrix::connect(matrix, &config.identity.state_dir, identity));
        connected.map_err(|e| match e {
            MatrixError::Refused(_) => {
                self.metrics.incr(Counter::LoginFailures);
                Refusal::new(
                    EXIT_LOGIN,
                    EventKind::LoginFailed,
                    format!("login refused by the Matrix homeserver: {e}", e = Chain(&e)),
                )
            }
            e => Refusal::new(
                1,
                EventKind::Fatal,
                format!("cannot start the Matrix source: {e}", e = Chain(&e)),
            ),
        })
    }
}

/// Before anything writes: one process per state directory (the lock, held until exit); then,
/// started as root with `WICKRIO_RUN_AS`, the directories handed to that user and root left; then
/// the directories' ownership and modes checked as the user the bot runs as.
fn take_directories(config: &Config, command_name: &'static str) -> Result<StateLock, Refusal> {
    let lock = StateLock::acquire(&config.identity.state_dir, command_name)
        .map_err(|e| Refusal::new(1, EventKind::Fatal, retention_bot::error_chain::chain(&e)))?;
    let run_as = privileges::parse_run_as(std::env::var("WICKRIO_RUN_AS").ok().as_deref()).map_err(Refusal::config)?;
    let own = [
        config.identity.state_dir.as_path(),
        config.spool.mesg_dest.as_path(),
        config.spool.file_dest.as_path(),
    ];
    let handed: Vec<&Path> = own
        .iter()
        .copied()
        .chain(config.made_dirs.iter().map(PathBuf::as_path))
        .collect();
    privileges::drop_root(run_as, &handed)
        .map_err(|e| Refusal::new(1, EventKind::Fatal, retention_bot::error_chain::chain(&e)))?;
    let vars = ["WICKRIO_STATE_DIR", "WICKRIO_COMP_MESGDEST", "WICKRIO_COMP_FILEDEST"];
    for (var, dir) in vars.into_iter().zip(own) {
        config::check_private_dir(var, dir).map_err(Refusal::config)?;
    }
    Ok(lock)
}

/// Tells the operators a password was generated or rotated, and with `WICKRIO_SECRET_UPDATE` writes
/// it into the secret, so nobody has to copy it out of the logs.
async fn announce_password(
    change: PasswordChange,
    identity: &identity::Identity,
    store_in: Option<&SecretLocation>,
    events: &Events,
    aws: &Aws,
) {
    let (kind, what) = match change {
        PasswordChange::Generated => (
            EventKind::PasswordGenerated,
            "first run: the bot generated its password",
        ),
        PasswordChange::Rotated => (EventKind::PasswordRotated, "password rotated"),
    };
    let Some(location) = store_in else {
        events.send(
            kind,
            format!("{what}; the previous password no longer works; keep the new one safe (it is not in this event)"),
        );
        return;
    };
    match secret::store_password(location, identity.password(), aws).await {
        Ok(()) => {
            tracing::info!(secret = %location.name, "the new password is stored in the secret's password key");
            events.send(
                kind,
                format!("{what}; it is stored in secret {:?} (key password)", location.name),
            );
        }
        Err(e) => {
            let message = format!(
                "{what}, but it could NOT be stored in the secret: {e}; copy it from the banner (or the new WICKRIO_ROTATE_PASSWORD) into the secret's password key by hand",
                e = Chain(&e)
            );
            tracing::error!("{message}");
            events.send(EventKind::SecretUpdateFailed, message);
        }
    }
}

async fn run_import(
    config: &Config,
    metrics: Arc<Metrics>,
    identity: &identity::Identity,
    events: &Events,
    files: Vec<PathBuf>,
    aws: &Aws,
) -> anyhow::Result<ExitCode> {
    let pipeline = Pipeline::start(config, metrics, identity, events, aws).await?;
    let (spool, metrics) = (pipeline.spool.clone(), pipeline.metrics.clone());
    let outcome =
        tokio::task::spawn_blocking(move || import::import(&files, &spool, &metrics, &mut std::io::stderr().lock()))
            .await;
    pipeline.shutdown().await;
    let report = outcome??;
    tracing::info!(
        imported = report.imported,
        rejected = report.rejected,
        "import finished"
    );
    say!("imported {} message(s), rejected {}", report.imported, report.rejected);
    Ok(if report.rejected == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
