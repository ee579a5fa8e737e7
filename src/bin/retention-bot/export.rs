//! `retention-bot export` and `verify-export`: the command line of e-discovery. The export itself is
//! the library's (`retention_bot::export`); here are its flags, the bot's key for signing the custody
//! report, and what is printed.

use std::io::IsTerminal as _;

use retention_bot::decrypt::{Archive, folder_prefix};
use std::sync::Arc;

use retention_bot::export::{Export, ExportError, Exported, Formats, Place, Plan, Selection, Signing, custody};

use super::progress::ProgressLine;
use super::signing::{self, unsigned_reason};
use super::*;
use retention_bot::error_chain::Chain;

#[derive(clap::Args)]
pub(super) struct Args {
    /// The bucket holding the archive, read in place: objects are streamed, and decrypted in memory
    /// when encrypted (needs kms:Decrypt), never written to disk outside --out. The variable is
    /// passed over when --dir is given.
    #[arg(long, env = "WICKRIO_S3_BUCKET_NAME", required_unless_present = "dir")]
    bucket: Option<String>,
    /// With --bucket: the bot's folder in it.
    #[arg(long, env = "WICKRIO_S3_FOLDER_NAME", default_value = "", value_parser = folder_prefix)]
    prefix: String,
    /// With --bucket: the bucket's region.
    #[arg(long, env = "WICKRIO_S3_REGION", default_value = "us-east-1")]
    region: String,
    /// With --bucket: the KMS key's region [default: the bucket's].
    #[arg(long, env = "WICKRIO_KMS_REGION")]
    kms_region: Option<String>,
    /// A directory holding the archive instead (the bot's own destinations, or what `decrypt`
    /// restored), searched recursively.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    #[command(flatten)]
    selection: Selection,
    /// Where to write the export: a new or empty directory.
    #[arg(long, value_name = "DIR", required_unless_present = "dry_run")]
    out: Option<PathBuf>,
    /// The bot's public key file, which the archive's manifests are checked with [default:
    /// $WICKRIO_STATE_DIR/public_key.txt, or /tmp/$WICKRIO_BOT_NAME/state/public_key.txt].
    /// Repeat it for a folder several bots write to.
    #[arg(long, value_name = "FILE")]
    public_key: Vec<PathBuf>,
    /// Stop at the first problem (a file that fails its check, a broken chain, a missing
    /// attachment), writing nothing, instead of reporting it and marking what it touches.
    #[arg(long)]
    strict: bool,
    /// Print the files the export would read and their size, and stop (reads only the manifests).
    #[arg(long)]
    dry_run: bool,
    /// What to write: a comma list of jsonl (messages.jsonl), csv (messages.csv), rsmf (rsmf/: RSMF
    /// 2.0 files, one per conversation per day, for e-discovery review platforms) and html
    /// (transcript/: pages to read or print). Every file written is hashed in the custody report.
    #[arg(long, value_name = "LIST", default_value = "jsonl,csv", value_parser = Formats::parse)]
    format: Formats,
    /// Take files no signed manifest entry lists (an archive the original bot wrote: its local
    /// receivedMessages files, or the objects it uploaded) into the main output, each marked
    /// UNSIGNED SOURCE in the custody report with its SHA-256 as read. Without it such files go to
    /// unverified/.
    #[arg(long)]
    unsigned_source: bool,
}

/// Exit status 0: exported, no problem; 1: exported with problems (each in the custody report and
/// on stderr), or nothing exported (--strict, an unreadable archive); 2: bad arguments or keys;
/// 3: the bot's password was refused.
pub(super) fn run(args: Args, aws: &retention_bot::aws::Aws) -> ExitCode {
    let mut args = args;
    if let Err(code) = check_args(&mut args) {
        return code;
    }
    let Some((_, keys)) = verify::keys("export", args.public_key.clone()) else {
        return ExitCode::from(EXIT_CONFIG);
    };
    // Unlocked before anything is read: a refused password must not cost a whole export.
    let signing_key = if args.dry_run {
        Ok(None)
    } else {
        signing::signing_key(
            "export",
            "to sign the custody report; empty to leave it unsigned",
            "or unset it to export unsigned",
        )
    };
    let signing_key = match signing_key {
        Ok(k) => k,
        Err(code) => return code,
    };
    let Some(runtime) = tools::tool_runtime("export") else {
        return ExitCode::FAILURE;
    };
    let Some(place) = archive_place(&args, &runtime, aws) else {
        return ExitCode::from(EXIT_CONFIG);
    };
    let export = Export {
        place: Arc::new(place),
        keys,
        selection: args.selection,
        strict: args.strict,
        formats: args.format,
        unsigned_source: args.unsigned_source,
    };
    let plan = match runtime.block_on(export.plan()) {
        Ok(plan) => plan,
        Err(e) => {
            esay!("retention-bot export: {e}", e = Chain(&e));
            return ExitCode::FAILURE;
        }
    };
    if args.dry_run {
        print_plan(&export.place, &plan);
        return ExitCode::SUCCESS;
    }
    let Some(out) = args.out else {
        return ExitCode::from(EXIT_CONFIG);
    };
    let signing = match &signing_key {
        Some((key, _)) => Signing::Key(key),
        None => Signing::Unsigned(unsigned_reason()),
    };
    let line = ProgressLine::new(std::io::stderr().is_terminal());
    let done = runtime.block_on(export.run(plan, &out, signing, &|p| line.show(p)));
    line.clear();
    match done {
        Ok(exported) => report(&out, &exported, signing_key.as_ref().map(|(_, hex)| hex.as_str())),
        Err(e) => {
            esay!("retention-bot export: {e}", e = Chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// Settles the archive's flags against the environment and checks the arguments, before any key or
/// password is asked for: `Err` with the exit status when they are wrong. Apart from `run` so that
/// it stays short.
fn check_args(args: &mut Args) -> Result<(), ExitCode> {
    // clap counts a value from the environment as given, so these cannot be declared in conflict:
    // the bucket and folder of WICKRIO_S3_BUCKET_NAME/_FOLDER_NAME (the bot's own host) give way to
    // --dir; either on the command line beside --dir is a mistake. An empty variable is unset.
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if args.bucket.as_deref() == Some("") {
        args.bucket = None;
    }
    if args.dir.is_some() {
        let prefix_from_env = env("WICKRIO_S3_FOLDER_NAME").map(|p| folder_prefix(&p).unwrap_or_default());
        if args.bucket.is_some() && args.bucket != env("WICKRIO_S3_BUCKET_NAME") {
            esay!("retention-bot export: --bucket and --dir cannot be used together: the archive is one or the other");
            return Err(ExitCode::from(EXIT_CONFIG));
        }
        if !args.prefix.is_empty() && Some(&args.prefix) != prefix_from_env.as_ref() {
            esay!("retention-bot export: --prefix goes with --bucket, not --dir: point --dir at the folder itself");
            return Err(ExitCode::from(EXIT_CONFIG));
        }
    } else if args.bucket.is_none() {
        esay!("retention-bot export: no archive: give --bucket (or WICKRIO_S3_BUCKET_NAME) or --dir");
        return Err(ExitCode::from(EXIT_CONFIG));
    }
    let judge_check = retention_bot::export::selection::Judge::new(&args.selection);
    if let Err(e) = judge_check {
        esay!("retention-bot export: {e}");
        return Err(ExitCode::from(EXIT_CONFIG));
    }
    if let Some(out) = args.out.as_ref().filter(|_| !args.dry_run)
        && std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_some())
    {
        esay!("retention-bot export: {}", ExportError::OutNotEmpty(out.clone()));
        return Err(ExitCode::from(EXIT_CONFIG));
    }
    Ok(())
}

/// The archive the arguments name: a directory, or a bucket with its clients (made on `runtime`);
/// `None` when neither is given. Apart from `run` so that it stays short.
fn archive_place(args: &Args, runtime: &tokio::runtime::Runtime, aws: &retention_bot::aws::Aws) -> Option<Place> {
    let place = match (&args.bucket, &args.dir) {
        (_, Some(dir)) => Place::Dir(dir.clone()),
        (Some(bucket), None) => {
            let archive = Archive {
                bucket: bucket.clone(),
                prefix: args.prefix.clone(),
                region: args.region.clone(),
                kms_region: args.kms_region.clone(),
                aws: aws.clone(),
            };
            let (s3, kms) = runtime.block_on(archive.clients());
            Place::Bucket { archive, s3, kms }
        }
        (None, None) => return None,
    };
    Some(place)
}

fn print_plan(place: &Place, plan: &Plan) {
    for p in &plan.catalogue.problems {
        esay!("{p}");
    }
    for i in &plan.to_read {
        let source = &plan.catalogue.messages[*i];
        say!("{:>12} {}", source.stored, place.describe_file(&source.at));
    }
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    say!(
        "would read {} of {} message file(s), {:.1} MiB; {} skipped by their signed time spans ({:.1} MiB); plus the attachments selected file messages refer to; {} manifest(s) and head record(s) read",
        plan.to_read.len(),
        plan.catalogue.messages.len(),
        mib(plan.bytes()),
        plan.skipped,
        mib(plan.skipped_bytes),
        plan.catalogue.records.len()
    );
    if !plan.rooms_from.is_empty() {
        say!(
            "and before those, all {} message file(s) ({:.1} MiB) for the rooms --participant is a member of",
            plan.rooms_from.len(),
            mib(plan.bytes_of(&plan.rooms_from))
        );
    }
}

fn report(out: &Path, exported: &Exported, signed_by: Option<&str>) -> ExitCode {
    let (counts, problems) = (&exported.counts, &exported.problems);
    let custody = out.join(custody::CUSTODY_JSON);
    for p in problems {
        esay!("{p}");
    }
    say!(
        "exported {} message(s), {} related edit(s)/reaction(s)/delete(s) and {} attachment(s) to {}; read {} file(s) ({:.1} MiB), {} skipped by their signed time spans",
        counts.messages,
        counts.related,
        counts.attachments,
        out.display(),
        counts.files_read,
        counts.bytes_read as f64 / f64::from(1 << 20),
        counts.files_skipped,
    );
    if counts.rsmf_files > 0 {
        say!(
            "{} RSMF file(s) in {} (one per conversation and UTC day)",
            counts.rsmf_files,
            out.join("rsmf").display()
        );
    }
    if counts.transcript_pages > 0 {
        say!(
            "transcript: {} page(s); open {}",
            counts.transcript_pages,
            out.join("transcript/index.html").display()
        );
    }
    if counts.unverified + counts.attachments_unverified > 0 {
        say!(
            "UNVERIFIED: {} line(s) and {} attachment(s) from files that failed their check are in {}",
            counts.unverified,
            counts.attachments_unverified,
            out.join("unverified").display()
        );
    }
    match signed_by {
        Some(key) => say!("custody report {} signed by {key}", custody.display()),
        None => say!("custody report {} NOT SIGNED: {}", custody.display(), unsigned_reason()),
    }
    say!("{} problem(s)", problems.len());
    if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[derive(clap::Args)]
pub(super) struct CheckArgs {
    /// The export's directory (the --out of `retention-bot export`).
    dir: PathBuf,
    /// The public key the custody report must be signed with (the bot's public_key.txt).
    #[arg(long, value_name = "FILE", required = true)]
    public_key: Vec<PathBuf>,
}

/// `verify-export`: the signature of custody.json, and every file it lists. Exit status 0: signed
/// and every file as listed; 1: a problem or a bad signature; 4 ([`EXIT_UNSIGNED`]): every file as
/// listed, but the report is unsigned, so its hashes prove nothing against whoever could rewrite it.
pub(super) fn check(args: CheckArgs) -> ExitCode {
    let Some((_, keys)) = verify::keys("verify-export", args.public_key) else {
        return ExitCode::from(EXIT_CONFIG);
    };
    let dir = args.dir.display();
    let checked = match custody::check(&args.dir, &keys) {
        Ok(checked) => checked,
        Err(e) => {
            say!("{dir}: {e}");
            return ExitCode::FAILURE;
        }
    };
    for problem in &checked.problems {
        say!("{problem}");
    }
    let files = format!(
        "{} file(s) listed, {} problem(s)",
        checked.files,
        checked.problems.len()
    );
    match (&checked.signature, checked.problems.is_empty()) {
        (custody::SignatureCheck::Signed(by), true) => {
            say!("{dir}: custody report signed by {by}; {files}: each file as the report lists it");
            ExitCode::SUCCESS
        }
        (custody::SignatureCheck::Signed(by), false) => {
            say!("{dir}: custody report signed by {by}; {files}");
            ExitCode::FAILURE
        }
        (custody::SignatureCheck::Bad, _) => {
            say!("{dir}: BAD SIGNATURE: custody.json was altered, or not signed by any of the given keys; {files}");
            ExitCode::FAILURE
        }
        (custody::SignatureCheck::Unsigned(why), true) => {
            say!(
                "{dir}: UNSIGNED custody report ({why}); {files}: each file as the report lists it, which proves nothing against whoever could rewrite the report. Export again with the bot's state directory and password to sign it"
            );
            ExitCode::from(EXIT_UNSIGNED)
        }
        (custody::SignatureCheck::Unsigned(why), false) => {
            say!("{dir}: UNSIGNED custody report ({why}); {files}");
            ExitCode::FAILURE
        }
    }
}
