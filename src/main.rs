//! The `retention-bot` command: the daemon and its tools.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use retention_bot::config::{self, Config, LogFormat, Network, SETTINGS, SecretLocation, secret};
use retention_bot::daemon::{self, Pipeline};
use retention_bot::identity::{self, PasswordChange, password::Terminal};
use retention_bot::lock::StateLock;
use retention_bot::metrics::{Counter, Metrics};
use retention_bot::privileges;
use retention_bot::report::{EventKind, Events, Reporter};
use retention_bot::source::{self, import, matrix::MatrixError};

/// A line on standard output. A reader that went away (`| head -1`) or a closed stdout is not worth
/// a panic: what was to be said is lost, and the exit status still tells.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// [`say!`] on standard error.
macro_rules! esay {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// Exit status for a bad setting: the daemon did not start and changed nothing.
const EXIT_CONFIG: u8 = 2;
/// Exit status for a refused password: the daemon did not start and changed nothing.
const EXIT_LOGIN: u8 = 3;

#[derive(Parser)]
#[command(
    name = "retention-bot",
    version,
    about = "Data retention daemon: captures every message and file into crash-safe rotating files",
    long_about = "Data retention daemon: captures every message and file into crash-safe rotating files.\n\n\
        Configured by environment variables (the AWS Wickr data retention bot's names), so the same \
        `docker run -e ...` line works, or by the same keys in a Secrets Manager secret (AWS_SECRET_NAME). Producers POST WickrIO-format messages to the HTTP source; each is \
        acknowledged (202) only once it is fsync'd. Exit status 2 means a setting was refused, 3 that the \
        password was.",
    after_long_help = settings_help()
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (the default when no command is given). Every setting is an environment
    /// variable: see "Environment" in `retention-bot --help`, or the README's settings table.
    Run,
    /// Feed existing receivedMessages JSONL files through the spool. Each bad line is reported as
    /// FILE:LINE on stderr and skipped; exit status 1 if any line was rejected.
    /// Refuses to run beside the daemon on the same state directory: POST the lines to it instead.
    Import {
        /// The files to import, in order (the original bot's receivedMessages*.txt files).
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Exit 0 if the daemon at WICKRIO_INGEST_ADDR answers GET /healthz (for container HEALTHCHECK).
    Healthcheck,
    /// Check an archive against its signed manifests with the bot's public key (no password
    /// needed): every signature, the hash chain, and every file's presence and SHA-256. Reports
    /// each missing, altered, reordered or unlisted file; exit status 1 if there is any.
    Verify {
        /// The archive: a directory holding the message files, attachments and manifests (e.g.
        /// /tmp/<botname>/compliance), searched recursively.
        dir: PathBuf,
        /// The bot's public key file [default: $WICKRIO_STATE_DIR/public_key.txt, or
        /// /tmp/$WICKRIO_BOT_NAME/state/public_key.txt].
        #[arg(long, value_name = "FILE")]
        public_key: Option<PathBuf>,
    },
    /// Download every object under a prefix and restore it under DIR: objects in the S3 Encryption
    /// Client V2 format are decrypted (the data key is unwrapped with KMS; needs kms:Decrypt), plain
    /// ones copied. Each file appears only once its GCM tag checked out. Exit status 1 if any object
    /// failed (each is reported) or, with --public-key, if the restored archive fails `verify`.
    Decrypt {
        /// The bucket the bot uploaded to.
        #[arg(long, env = "WICKRIO_S3_BUCKET_NAME")]
        bucket: String,
        /// Only objects under this folder.
        #[arg(long, env = "WICKRIO_S3_FOLDER_NAME", default_value = "")]
        prefix: String,
        /// The bucket's region.
        #[arg(long, env = "WICKRIO_S3_REGION", default_value = "us-east-1")]
        region: String,
        /// The KMS key's region [default: the bucket's].
        #[arg(long, env = "WICKRIO_KMS_REGION")]
        kms_region: Option<String>,
        /// Directory to restore into; attachments go to DIR/attachments.
        #[arg(long, value_name = "DIR")]
        dest: PathBuf,
        /// Afterwards, check the restored archive against its signed manifests with this key.
        #[arg(long, value_name = "FILE")]
        public_key: Option<PathBuf>,
    },
}

fn settings_help() -> String {
    let mut out = String::from("Environment:\n");
    for s in SETTINGS {
        out.push_str(&format!(
            "  {:<28} {}\n  {:<28} default: {}\n",
            s.name, s.meaning, "", s.default
        ));
    }
    out
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = match config::log_format(|k| std::env::var(k).ok()) {
        Ok(f) => f,
        Err(e) => {
            esay!("retention-bot: configuration error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    init_logging(format);
    // Before anything is created: the bot's files are not for other users to read.
    match config::umask(&|k| std::env::var(k).ok()) {
        Ok(mask) => drop(nix::sys::stat::umask(mask)),
        Err(e) => {
            esay!("retention-bot: configuration error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    let command = cli.command.unwrap_or(Command::Run);
    match command {
        Command::Healthcheck => return healthcheck(),
        Command::Verify { dir, public_key } => return verify(&dir, public_key),
        Command::Decrypt {
            bucket,
            prefix,
            region,
            kms_region,
            dest,
            public_key,
        } => {
            let prefix = match prefix.trim_matches('/') {
                "" => String::new(),
                p => format!("{p}/"),
            };
            let options = retention_bot::decrypt::Options {
                bucket,
                prefix,
                region,
                kms_region,
                dest,
            };
            return decrypt(&options, public_key);
        }
        _ => {}
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    start(&runtime, command, stdout_reaches_someone())
}

/// How long, at exit, queued events and the last metrics may take to publish.
const REPORT_FLUSH: Duration = Duration::from_secs(5);

/// `run` and `import`: the configuration (environment, then the Secrets Manager secret), the
/// reporters, login, then the pipeline. Every exit caused by an error is reported as a critical
/// event first, when the SNS topic is known.
fn start(runtime: &tokio::runtime::Runtime, command: Command, stdout_open: bool) -> ExitCode {
    let env = |k: &str| std::env::var(k).ok();
    warn_unknown_settings();
    let settings = match SecretLocation::from_env(env) {
        Err(e) => {
            tracing::error!("configuration error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
        Ok(location) => Settings::read(runtime, location),
    };
    let lookup = secret::layered(env, settings.values.as_ref());
    let reporting = match config::reporting::from_lookup(&lookup) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("configuration error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let metrics = Arc::new(Metrics::default());
    let reporter = runtime.block_on(Reporter::start(&reporting, metrics.clone()));
    let events = reporter.events.clone();
    let started = Started {
        runtime,
        settings: &settings,
        metrics: &metrics,
        events: &events,
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
    fn read(runtime: &tokio::runtime::Runtime, location: Option<SecretLocation>) -> Self {
        let Some(location) = location else {
            return Self {
                location: None,
                values: None,
                error: None,
            };
        };
        match runtime.block_on(secret::fetch(&location)) {
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

    fn config(e: impl std::fmt::Display) -> Self {
        Self::new(EXIT_CONFIG, EventKind::Fatal, format!("configuration error: {e}"))
    }
}

/// What start-up has set up once the reporters run.
struct Started<'a> {
    runtime: &'a tokio::runtime::Runtime,
    settings: &'a Settings,
    metrics: &'a Arc<Metrics>,
    events: &'a Events,
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
                format!("cannot use the settings secret: {e}"),
            ));
        }
        let config = Config::from_lookup(lookup).map_err(Refusal::config)?;
        let command_name = match command {
            Command::Import { .. } => "import",
            _ => "run",
        };
        let _lock = take_directories(&config, command_name)?;
        let identity = self.log_in(&config, stdout_open)?;
        release_freed_memory();
        let matrix = match (&config.network, &command) {
            (Network::Matrix(m), Command::Run) => Some(self.connect_matrix(m, &config, &identity)?),
            _ => None,
        };
        let (metrics, events) = (self.metrics.clone(), self.events);
        let result = self.runtime.block_on(async {
            match command {
                Command::Import { files } => run_import(&config, metrics, &identity, events, files).await,
                _ => daemon::run(config, metrics, identity, events.clone(), matrix)
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
            Refusal::new(code, EventKind::LoginFailed, format!("login refused: {e}"))
        })?;
        tracing::debug!(?identity, "logged in");
        if let Some(change) = identity.password_change() {
            self.runtime
                .block_on(announce_password(change, &identity, store_in, self.events));
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
                    format!("login refused by the Matrix homeserver: {e}"),
                )
            }
            e => Refusal::new(1, EventKind::Fatal, format!("cannot start the Matrix source: {e}")),
        })
    }
}

/// Before anything writes: one process per state directory (the lock, held until exit); then,
/// started as root with `WICKRIO_RUN_AS`, the directories handed to that user and root left; then
/// the directories' ownership and modes checked as the user the bot runs as.
fn take_directories(config: &Config, command_name: &'static str) -> Result<StateLock, Refusal> {
    let lock = StateLock::acquire(&config.identity.state_dir, command_name)
        .map_err(|e| Refusal::new(1, EventKind::Fatal, e.to_string()))?;
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
    privileges::drop_root(run_as, &handed).map_err(|e| Refusal::new(1, EventKind::Fatal, e.to_string()))?;
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
    match secret::store_password(location, identity.password()).await {
        Ok(()) => {
            tracing::info!(secret = %location.name, "the new password is stored in the secret's password key");
            events.send(
                kind,
                format!("{what}; it is stored in secret {:?} (key password)", location.name),
            );
        }
        Err(e) => {
            let message = format!(
                "{what}, but it could NOT be stored in the secret: {e}; copy it from the banner (or the new WICKRIO_ROTATE_PASSWORD) into the secret's password key by hand"
            );
            tracing::error!("{message}");
            events.send(EventKind::SecretUpdateFailed, message);
        }
    }
}

fn init_logging(format: LogFormat) {
    let levels = std::env::var("RUST_LOG").ok().filter(|l| !l.trim().is_empty());
    // matrix-sdk logs every sync at info and every refused request (including the expected refusal of
    // the generated password before a first run's password change) as an error; the bot reports what
    // matters itself. RUST_LOG naming a matrix_sdk target overrides this.
    let quiet_matrix = "matrix_sdk=warn,matrix_sdk_base=warn,matrix_sdk_crypto=warn,matrix_sdk::http_client=off";
    let directives = match levels {
        Some(l) if l.contains("matrix_sdk") => l,
        Some(l) => format!("{l},{quiet_matrix}"),
        None => format!("info,{quiet_matrix}"),
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&directives).unwrap_or_else(|_| "info".into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn run_import(
    config: &Config,
    metrics: Arc<Metrics>,
    identity: &identity::Identity,
    events: &Events,
    files: Vec<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let pipeline = Pipeline::start(config, metrics, identity, events).await?;
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

/// One GET over plain TCP. A full HTTP client for a single loopback request would add a dependency
/// tree to the binary for nothing; HTTP/1.0 without keep-alive keeps this to a few lines.
fn healthcheck() -> ExitCode {
    let mut addr = match config::ingest_addr(|k| std::env::var(k).ok()) {
        Ok(a) => a,
        Err(e) => {
            esay!("retention-bot: configuration error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let answer = (|| {
        let mut conn = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        conn.set_read_timeout(Some(Duration::from_secs(3)))?;
        conn.write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut head = String::new();
        conn.take(64).read_to_string(&mut head)?;
        Ok::<_, std::io::Error>(head)
    })();
    match answer {
        Ok(head) if head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200") => ExitCode::SUCCESS,
        Ok(head) => {
            esay!("unhealthy: {addr} answered {:?}", head.lines().next().unwrap_or(""));
            ExitCode::FAILURE
        }
        Err(e) => {
            esay!("unhealthy: cannot reach {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn decrypt(options: &retention_bot::decrypt::Options, public_key: Option<PathBuf>) -> ExitCode {
    use retention_bot::decrypt::Outcome;
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            esay!("retention-bot decrypt: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let summary = match runtime.block_on(retention_bot::decrypt::run(options)) {
        Ok(s) => s,
        Err(e) => {
            esay!("retention-bot decrypt: {e}");
            return ExitCode::FAILURE;
        }
    };
    let bucket = &options.bucket;
    for (key, outcome) in &summary.restored {
        let (verb, path) = match outcome {
            Outcome::Decrypted(p) => ("decrypted", p),
            Outcome::Copied(p) => ("copied", p),
            Outcome::AlreadyThere(p) => ("already there", p),
        };
        say!("{verb}: s3://{bucket}/{key} -> {}", path.display());
    }
    for (key, e) in &summary.failed {
        esay!("FAILED s3://{bucket}/{key}: {e}");
    }
    say!(
        "{} object(s) restored to {}, {} failed",
        summary.restored.len(),
        options.dest.display(),
        summary.failed.len()
    );
    let verified = match public_key {
        Some(key) => verify(&options.dest, Some(key)),
        None => ExitCode::SUCCESS,
    };
    if summary.failed.is_empty() {
        verified
    } else {
        ExitCode::FAILURE
    }
}

fn verify(dir: &std::path::Path, public_key: Option<PathBuf>) -> ExitCode {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let key_path = public_key
        .or_else(|| env("WICKRIO_STATE_DIR").map(|d| PathBuf::from(d).join(identity::PUBLIC_KEY_FILE)))
        .or_else(|| {
            env("WICKRIO_BOT_NAME").map(|b| {
                PathBuf::from("/tmp")
                    .join(b)
                    .join("state")
                    .join(identity::PUBLIC_KEY_FILE)
            })
        });
    let Some(key_path) = key_path else {
        esay!(
            "retention-bot verify: no public key: pass --public-key FILE, or set WICKRIO_STATE_DIR or WICKRIO_BOT_NAME"
        );
        return ExitCode::from(EXIT_CONFIG);
    };
    let key = match retention_bot::manifest::verify::read_public_key(&key_path) {
        Ok(k) => k,
        Err(e) => {
            esay!("retention-bot verify: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match retention_bot::manifest::verify::verify_dir(dir, &key) {
        Ok(report) => {
            for p in &report.problems {
                say!("{p}");
            }
            say!(
                "{}: {} manifest(s), {} entr{}, {} problem(s)",
                dir.display(),
                report.manifests,
                report.entries,
                if report.entries == 1 { "y" } else { "ies" },
                report.problems.len()
            );
            if report.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            esay!("retention-bot verify: cannot read {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}

/// Whether standard output reaches anyone. A parent that closed it leaves it as /dev/null (Rust's
/// runtime opens that in its place), and `> /dev/null` sends it there too: either way a first-run
/// banner written to it would be read by nobody.
fn stdout_reaches_someone() -> bool {
    let Ok(st) = nix::sys::stat::fstat(std::io::stdout()) else {
        return false;
    };
    let null = nix::sys::stat::makedev(1, 3);
    !((st.st_mode & nix::libc::S_IFMT) == nix::libc::S_IFCHR && st.st_rdev == null)
}

/// Where the first-run banner goes: standard output, or, when that reaches nobody, nowhere (an
/// error, so that nothing is sealed with a password nobody saw).
fn banner_out(stdout_open: bool) -> Box<dyn Write> {
    struct Closed;
    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "standard output is closed or /dev/null",
            ))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    if stdout_open {
        Box::new(std::io::stdout())
    } else {
        Box::new(Closed)
    }
}

/// Argon2 needs a 19 MiB working buffer at login; glibc keeps such freed memory in the process
/// unless asked to return it, which would triple the daemon's resident size for nothing. Then the
/// mmap threshold is pinned at 1 MiB: glibc otherwise raises it after the first large free, and the
/// S3 sink's 8 MiB part buffers, allocated and freed on several threads, would pile up in per-thread
/// heaps (measured: 128 MiB peak RSS uploading 1 GiB) instead of going back to the OS.
#[allow(unsafe_code)]
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap pages back to the OS; mallopt sets a tunable.
    // Neither takes pointers.
    unsafe {
        nix::libc::malloc_trim(0);
        nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}
