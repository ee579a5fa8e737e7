//! `retention-bot verify`: a directory, or a bucket in place; text for a person (with a progress line
//! on a terminal), JSON for a scheduled job.

use std::io::IsTerminal as _;

use retention_bot::decrypt::{Archive, folder_prefix};
use retention_bot::manifest::verify::{BucketCheck, ObjectFacts, Report, read_public_key, verify_dir};

use super::progress::ProgressLine;
use super::*;
use retention_bot::error_chain::Chain;

#[derive(clap::Args)]
pub(super) struct Args {
    /// The archive: a directory holding the message files, attachments and manifests (e.g.
    /// /tmp/<botname>/compliance), searched recursively; or s3://BUCKET/PREFIX, checked in place
    /// (objects streamed and decrypted in memory, never written to disk).
    archive: String,
    /// The bot's public key file [default: $WICKRIO_STATE_DIR/public_key.txt, or
    /// /tmp/$WICKRIO_BOT_NAME/state/public_key.txt]. Repeat it for a folder several bots write
    /// to: each bot's entries are checked as a chain of their own.
    #[arg(long, value_name = "FILE")]
    public_key: Vec<PathBuf>,
    /// A chain head record kept elsewhere (a copy of one of the archive's chainhead_*.json): the
    /// archive must reach it (TRUNCATED otherwise). Repeatable; the head records in the archive are
    /// always checked.
    #[arg(long, value_name = "FILE")]
    head: Vec<PathBuf>,
    /// s3:// only: report every object retained by Object Lock for less than this many days after
    /// it was written, or not at all (SHORT RETENTION).
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u64).range(1..=36500))]
    min_retention_days: Option<u64>,
    /// s3:// only: the bucket's region.
    #[arg(long, env = "WICKRIO_S3_REGION", default_value = "us-east-1")]
    region: String,
    /// s3:// only: the KMS key's region [default: the bucket's].
    #[arg(long, env = "WICKRIO_KMS_REGION")]
    kms_region: Option<String>,
    /// Print one JSON report (for a scheduled job) instead of text.
    #[arg(long)]
    json: bool,
}

/// Exit status 0: no problem; 1: problems (each printed), or the archive could not be read; 2: bad
/// arguments or keys.
pub(super) fn run(args: Args, aws: &retention_bot::aws::Aws) -> ExitCode {
    let cannot = |why: String| {
        if args.json {
            say!(
                "{}",
                serde_json::json!({"archive": args.archive, "ok": false, "error": why})
            );
        } else {
            esay!("retention-bot verify: {why}");
        }
        ExitCode::FAILURE
    };
    let Some((paths, keys)) = keys("verify", args.public_key) else {
        return ExitCode::from(EXIT_CONFIG);
    };
    let (report, objects, bytes) = if let Some(location) = args.archive.strip_prefix("s3://") {
        let (bucket, prefix) = location.split_once('/').unwrap_or((location, ""));
        if bucket.is_empty() {
            esay!(
                "retention-bot verify: {:?} names no bucket: write s3://BUCKET/PREFIX",
                args.archive
            );
            return ExitCode::from(EXIT_CONFIG);
        }
        let archive = Archive {
            bucket: bucket.to_owned(),
            prefix: folder_prefix(prefix).unwrap_or_default(),
            region: args.region,
            kms_region: args.kms_region,
            aws: aws.clone(),
        };
        let Some(runtime) = tools::tool_runtime("verify") else {
            return ExitCode::FAILURE;
        };
        let check = BucketCheck {
            archive: &archive,
            keys: &keys,
            extra_heads: &args.head,
            min_retention_days: args.min_retention_days,
            in_flight: None,
        };
        let line = ProgressLine::new(!args.json && std::io::stderr().is_terminal());
        let checked = runtime.block_on(check.run(&|p| line.show(p)));
        line.clear();
        match checked {
            Ok(r) => (r.report, Some(r.objects), r.bytes),
            Err(e) => return cannot(retention_bot::error_chain::chain(&e)),
        }
    } else {
        if args.min_retention_days.is_some() {
            esay!("retention-bot verify: --min-retention-days applies to s3://BUCKET/PREFIX only");
            return ExitCode::from(EXIT_CONFIG);
        }
        match verify_dir(Path::new(&args.archive), &keys, &args.head) {
            Ok(report) => (report, None, 0),
            Err(e) => return cannot(format!("cannot read {}: {e}", args.archive, e = Chain(&e))),
        }
    };
    if args.json {
        print_json(&args.archive, &paths, &report, objects.as_deref(), bytes);
    } else {
        print_text(&args.archive, &paths, &report, objects.as_deref(), bytes);
    }
    if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `decrypt --public-key`: the restored directory, checked as `verify DIR` does.
pub(super) fn verify_dir_with(dir: &Path, public_keys: Vec<PathBuf>) -> ExitCode {
    let Some((paths, keys)) = keys("decrypt", public_keys) else {
        return ExitCode::from(EXIT_CONFIG);
    };
    match verify_dir(dir, &keys, &[]) {
        Ok(report) => {
            print_text(&dir.display().to_string(), &paths, &report, None, 0);
            if report.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            esay!(
                "retention-bot verify: cannot read {}: {e}",
                dir.display(),
                e = Chain(&e)
            );
            ExitCode::FAILURE
        }
    }
}

/// The key files (given, or the bot's own) and the keys they hold; `None` after saying why not,
/// in the name of `command` (`verify`, `export`...).
pub(super) fn keys(
    command: &str,
    public_keys: Vec<PathBuf>,
) -> Option<(Vec<PathBuf>, Vec<ed25519_dalek::VerifyingKey>)> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let paths = if public_keys.is_empty() {
        let default = env("WICKRIO_STATE_DIR")
            .map(|d| PathBuf::from(d).join(identity::PUBLIC_KEY_FILE))
            .or_else(|| {
                env("WICKRIO_BOT_NAME").map(|b| {
                    PathBuf::from("/tmp")
                        .join(b)
                        .join("state")
                        .join(identity::PUBLIC_KEY_FILE)
                })
            });
        let Some(default) = default else {
            esay!(
                "retention-bot {command}: no public key: pass --public-key FILE, or set WICKRIO_STATE_DIR or WICKRIO_BOT_NAME"
            );
            return None;
        };
        vec![default]
    } else {
        public_keys
    };
    let mut keys = Vec::with_capacity(paths.len());
    for path in &paths {
        match read_public_key(path) {
            Ok(k) => keys.push(k),
            Err(e) => {
                esay!("retention-bot {command}: {e}", e = Chain(&e));
                return None;
            }
        }
    }
    Some((paths, keys))
}

fn entries(n: usize) -> String {
    format!("{n} entr{}", if n == 1 { "y" } else { "ies" })
}

fn print_text(archive: &str, paths: &[PathBuf], report: &Report, objects: Option<&[ObjectFacts]>, bytes: u64) {
    for shredded in &report.shredded {
        say!("{shredded}");
    }
    for p in &report.problems {
        say!("{p}");
    }
    if let Some(note) = report.versioning.and_then(|v| v.note()) {
        say!("NOTE: {note}");
    }
    if paths.len() > 1 {
        for (path, n) in paths.iter().zip(&report.entries_by_key) {
            say!("{}: {} signed with this key", path.display(), entries(*n));
        }
    }
    let mut summary = format!(
        "{archive}: {} manifest(s), {}",
        report.manifests,
        entries(report.entries)
    );
    if let Some(objects) = objects {
        let locked = |mode: &str| objects.iter().filter(|o| o.lock_mode.as_deref() == Some(mode)).count();
        let (compliance, governance) = (locked("COMPLIANCE"), locked("GOVERNANCE"));
        summary.push_str(&format!(
            ", {} object(s) ({:.1} MiB) read (Object Lock: {compliance} COMPLIANCE, {governance} GOVERNANCE, {} none)",
            objects.len(),
            bytes as f64 / f64::from(1 << 20),
            objects.len() - compliance - governance
        ));
    }
    say!("{summary}, {} problem(s)", report.problems.len());
}

fn print_json(archive: &str, paths: &[PathBuf], report: &Report, objects: Option<&[ObjectFacts]>, bytes: u64) {
    let value = serde_json::json!({
        "archive": archive,
        "ok": report.problems.is_empty(),
        "manifests": report.manifests,
        "entries": report.entries,
        "entries_by_key": paths.iter().zip(&report.entries_by_key).map(|(p, n)| {
            serde_json::json!({"public_key": p.display().to_string(), "entries": n})
        }).collect::<Vec<_>>(),
        "objects": objects,
        "bytes": bytes,
        "problems": report.problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "shredded": report.shredded,
        "versioning": report.versioning,
        "note": report.versioning.and_then(|v| v.note()),
    });
    say!("{value}");
}
