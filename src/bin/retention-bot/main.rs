//! The `retention-bot` command: the daemon and its tools. `start` is the start-up `run` and
//! `import` share; `tools` the one-shot commands.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use retention_bot::config::{self, Config, LogFormat, Network, SETTINGS, SecretLocation, secret};
use retention_bot::daemon::{self, Pipeline};
use retention_bot::error_chain::Chain;
use retention_bot::identity::{self, PasswordChange, password::Terminal};
use retention_bot::lock::StateLock;
use retention_bot::log_repeats::RepeatedWarnings;
use retention_bot::metrics::{Counter, Metrics};
use retention_bot::privileges;
use retention_bot::report::{EventKind, Events, Reporter};
use retention_bot::source::{self, import, matrix::MatrixError};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

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

mod export;
mod progress;
mod shred;
mod signing;
mod start;
mod tools;
mod verify;

use start::start;

/// Exit status for a bad setting: the daemon did not start and changed nothing.
const EXIT_CONFIG: u8 = 2;
/// Exit status for a refused password: the daemon did not start and changed nothing.
const EXIT_LOGIN: u8 = 3;
/// Exit status of `verify-export` for an unsigned report whose files are all as it lists them.
const EXIT_UNSIGNED: u8 = 4;

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
    /// Check an archive against its signed manifests with the bots' public keys (no password
    /// needed): every signature, the hash chains, the signed chain heads, and every file's presence,
    /// size and SHA-256. Reports each missing, altered, reordered, truncated or unlisted file; exit
    /// status 1 if there is any. The archive is a directory or, checked in place without restoring
    /// it, s3://BUCKET/PREFIX.
    Verify {
        #[command(flatten)]
        args: verify::Args,
    },
    /// Download every object under a prefix and restore it under DIR: objects in the S3 Encryption
    /// Client V2 or V3 format are decrypted (the data key is unwrapped with KMS; needs kms:Decrypt),
    /// plain ones copied. Each file appears only once its GCM tag checked out. Exit status 1 if any object
    /// failed (each is reported) or, with --public-key, if the restored archive fails `verify`.
    Decrypt {
        #[command(flatten)]
        options: retention_bot::decrypt::Options,
        /// Afterwards, check the restored archive against its signed manifests with this key
        /// (repeat it for a folder several bots write to, as for `verify`).
        #[arg(long, value_name = "FILE")]
        public_key: Vec<PathBuf>,
    },
    /// Place (`on`) or lift (`off`) S3 Object Lock legal holds on the archive's objects: every object
    /// under the folder, or with --from/--to the files whose messages fall in that period (from the
    /// signed manifests; attachments by when they were closed) and the manifests listing them.
    /// Prints each object and a summary; running it again changes nothing. Needs a bucket with
    /// Object Lock and the operator policy iam/legal-hold.json (not the bot's). Exit status 1 if
    /// any object or manifest failed.
    LegalHold {
        #[command(flatten)]
        options: retention_bot::legal_hold::Options,
    },
    /// Find and produce messages for e-discovery: every message matching the selection (period,
    /// sender, participant, room, type, id, text), in msg_ts order with the edits, reactions and
    /// deletes that refer to them, and their attachments, read from a bucket in place or a directory,
    /// each file checked against its signed manifest entry as it streams. Writes messages.jsonl,
    /// messages.csv, attachments/, and a chain-of-custody report (custody.json, signed with the
    /// bot's key when its state directory and password are at hand, and custody.txt). Lines from a
    /// file that fails its check go to unverified/. Exit status 1 if there was any problem.
    Export {
        #[command(flatten)]
        args: export::Args,
    },
    /// Crypto-shred a period: with per-period KMS keys (WICKRIO_KMS_MSTRKEY_ARN=...:alias/name-{yyyy}-{mm}),
    /// schedule the deletion of the period's key, which makes every object of the period unreadable
    /// for good (backups and replicas too), and upload a signed record (shredding_<period>.json) so
    /// that `verify` reports those objects as SHREDDED. The key is the one the period's alias names,
    /// and only objects KMS says it protects count. Refuses, changing nothing, until a day after the
    /// period's end, while any of its objects is under Object Lock retention or a legal hold, when
    /// any manifest cannot be read, or when the key also protects another period's files. Needs the
    /// bot's state directory and password (to sign) and the operator policy iam/shred.json. Exit
    /// status 2 when refused, 1 on failure.
    Shred {
        #[command(flatten)]
        options: retention_bot::shred::Options,
    },
    /// Check an export before relying on it: custody.json's signature with the bot's public key,
    /// and every output file against the SHA-256 the report lists, naming every ALTERED, MISSING and
    /// UNLISTED file. Exit status 0 if signed and all as listed, 1 if anything differs or the
    /// signature is bad, 4 if all is as listed but the report is unsigned.
    VerifyExport {
        #[command(flatten)]
        args: export::CheckArgs,
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
    tune_malloc();
    let cli = Cli::parse();
    let format = match config::log_format(|k| std::env::var(k).ok()) {
        Ok(f) => f,
        Err(e) => {
            esay!("retention-bot: configuration error: {e}", e = Chain(&e));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    init_logging(format);
    // Before anything is created: the bot's files are not for other users to read.
    match config::umask(&|k| std::env::var(k).ok()) {
        Ok(mask) => drop(nix::sys::stat::umask(mask)),
        Err(e) => {
            esay!("retention-bot: configuration error: {e}", e = Chain(&e));
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    // Before any AWS client is built, the tools' included: each then assumes the role.
    let aws = match config::assume_role(&|k| std::env::var(k).ok().filter(|v| !v.is_empty())) {
        Ok(role) => retention_bot::aws::Aws::new(role),
        Err(e) => {
            esay!("retention-bot: configuration error: {e}", e = Chain(&e));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let command = cli.command.unwrap_or(Command::Run);
    match command {
        Command::Healthcheck => return tools::healthcheck(),
        Command::Verify { args } => return verify::run(args, &aws),
        Command::Decrypt {
            mut options,
            public_key,
        } => {
            options.archive.aws = aws;
            return tools::decrypt(&options, public_key);
        }
        Command::LegalHold { mut options } => {
            options.archive.aws = aws;
            return tools::legal_hold(&options);
        }
        Command::Export { args } => return export::run(args, &aws),
        Command::VerifyExport { args } => return export::check(args),
        Command::Shred { mut options } => {
            options.archive.aws = aws;
            return shred::run(&options);
        }
        _ => {}
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}", e = Chain(&e));
            return ExitCode::FAILURE;
        }
    };
    start(&runtime, command, stdout_reaches_someone(), &aws)
}

fn init_logging(format: LogFormat) {
    let levels = std::env::var("RUST_LOG").ok().filter(|l| !l.trim().is_empty());
    // matrix-sdk logs every sync at info and every refused request (including the expected refusal of
    // the generated password before a first run's password change) as an error; the bot reports what
    // matters itself. RUST_LOG naming a matrix_sdk target overrides this.
    // It also warns at every room key it cannot back up: the bot keeps no key backup (its store is the
    // copy), so that warning says nothing.
    let quiet_matrix = "matrix_sdk=warn,matrix_sdk_base=warn,matrix_sdk_crypto=warn,matrix_sdk::http_client=off,matrix_sdk_crypto::backups=error";
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
    // Any other warning that repeats is logged once, then once in a while with its count.
    let repeats = |json| RepeatedWarnings::new(retention_bot::log_repeats::WINDOW, std::io::stderr, json);
    match format {
        LogFormat::Text => builder.finish().with(repeats(false)).init(),
        LogFormat::Json => builder.json().finish().with(repeats(true)).init(),
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

/// glibc gives threads heaps of their own, up to eight per core, and keeps freed memory in them;
/// request bodies of a few hundred KiB, allocated and freed on every worker and blocking thread,
/// would leave holes in all of them. One heap per core, and buffers from 128 KiB up mapped on their
/// own and given back whole when freed. Measured under the ingest benchmark's attack mix with a
/// 64 MiB budget on 2 cores: peak RSS 110–146 MiB before, 96–99 MiB after (docs/benchmarks.md).
/// glibc's own variables (`MALLOC_ARENA_MAX`, `MALLOC_MMAP_THRESHOLD_`) still win. Set before any
/// thread starts.
#[allow(unsafe_code)]
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let arenas = nix::libc::c_int::try_from(cores).unwrap_or(nix::libc::c_int::MAX);
        let set = |var: &str| std::env::var_os(var).is_some();
        // SAFETY: mallopt sets a tunable; it takes no pointers.
        unsafe {
            if !set("MALLOC_ARENA_MAX") {
                nix::libc::mallopt(nix::libc::M_ARENA_MAX, arenas);
            }
            if !set("MALLOC_MMAP_THRESHOLD_") {
                nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, 128 << 10);
            }
        }
    }
}

/// Argon2 needs a 19 MiB working buffer at login; glibc keeps such freed memory in the process
/// unless asked to return it, which would triple the daemon's resident size for nothing. (The mmap
/// threshold is pinned at start: glibc otherwise raises it after the first large free, and the S3
/// sink's 8 MiB part buffers would pile up in per-thread heaps; measured: 128 MiB peak RSS
/// uploading 1 GiB.)
#[allow(unsafe_code)]
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap pages back to the OS; it takes no pointers.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}
