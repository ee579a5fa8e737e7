//! `retention-bot shred`: the command line of crypto-shredding (the work is
//! `retention_bot::shred`'s). The record is signed with the bot's key, so the state directory and
//! password are needed unless it is a dry run.

use ed25519_dalek::{SigningKey, VerifyingKey};
use retention_bot::manifest::shred_record::{ShredRecord, State};
use retention_bot::shred::{self, Options, Plan, ShredError};

use super::signing::{self, signing_key, unsigned_reason};
use super::*;
use retention_bot::error_chain::Chain;

pub(super) fn run(options: &Options) -> ExitCode {
    let signer = if options.dry_run {
        None
    } else {
        match signing_key(
            "shred",
            "to sign the shredding record",
            "or run as the operator who has it",
        ) {
            Ok(Some((key, _))) => Some(key),
            Ok(None) => {
                esay!(
                    "retention-bot shred: the shredding record must be signed with the bot's key, and {}; nothing was changed",
                    unsigned_reason()
                );
                return ExitCode::from(EXIT_CONFIG);
            }
            Err(code) => return code,
        }
    };
    // Whose signed entries and chains count: the signer's, and the other bots' given.
    let Some(bots) = bots(options, signer.as_ref().map(SigningKey::verifying_key)) else {
        return ExitCode::from(EXIT_CONFIG);
    };
    let Some(runtime) = tools::tool_runtime("shred") else {
        return ExitCode::FAILURE;
    };
    let done = runtime.block_on(async {
        match &signer {
            Some(signer) if options.cancel => shred::cancel(options, signer).await.map(Some),
            _ => {
                let plan = shred::plan(options, &bots).await?;
                print_plan(options, &plan);
                let Some(signer) = &signer else {
                    return Ok(None);
                };
                let key = shred::schedule(options, &plan).await?;
                let wait = shred::settle_time();
                say!(
                    "KMS key {} is scheduled for deletion; waiting {} s (longer than a bot may still use a data key of it) before the period's objects are counted for the record",
                    key.arn,
                    wait.as_secs()
                );
                tokio::time::sleep(wait).await;
                shred::record(options, plan, key, signer).await.map(Some)
            }
        }
    });
    match done {
        Ok(Some((record, uploaded))) => report(&record, uploaded),
        Ok(None) => {
            say!("dry run: nothing was changed");
            ExitCode::SUCCESS
        }
        Err(e @ (ShredError::Aws(_) | ShredError::Envelope { .. })) => {
            esay!("retention-bot shred: {e}", e = Chain(&e));
            ExitCode::FAILURE
        }
        Err(e) => {
            // Refused: nothing was changed.
            esay!("retention-bot shred: {e}", e = Chain(&e));
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// The public keys whose signed entries and chains count: the signer's (or, for a dry run, the
/// state directory's), then each `--public-key`; `None` after saying why not.
fn bots(options: &Options, signer: Option<VerifyingKey>) -> Option<Vec<VerifyingKey>> {
    let mut paths = options.public_key.clone();
    if signer.is_none() && paths.is_empty() {
        let Some(dir) = signing::state_dir() else {
            esay!(
                "retention-bot shred: a dry run needs the bot's public key: pass --public-key FILE, or set WICKRIO_STATE_DIR"
            );
            return None;
        };
        paths.push(dir.join(retention_bot::identity::PUBLIC_KEY_FILE));
    }
    let mut bots: Vec<VerifyingKey> = signer.into_iter().collect();
    for path in &paths {
        match retention_bot::manifest::verify::read_public_key(path) {
            Ok(key) if !bots.contains(&key) => bots.push(key),
            Ok(_) => {}
            Err(e) => {
                esay!("retention-bot shred: {e}", e = Chain(&e));
                return None;
            }
        }
    }
    Some(bots)
}

fn print_plan(options: &Options, plan: &Plan) {
    let bytes: u64 = plan.objects.iter().map(|(.., n)| n).sum();
    say!(
        "period {}: {} object version(s), {bytes} bytes, under s3://{}/{}",
        options.period,
        plan.objects.len(),
        options.archive.bucket,
        options.archive.prefix
    );
    say!(
        "KMS says none of the {} object version(s) outside the period is under the key ({} S3 HEAD and {} KMS Decrypt calls)",
        plan.outside,
        plan.calls.0,
        plan.calls.1
    );
    say!(
        "KMS key {} ({}): deletion after {} days",
        plan.key,
        plan.key_state.as_ref().map_or("state unknown", |s| s.as_str()),
        options.pending_days
    );
    for (key, why) in &plan.left {
        say!("left out: s3://{}/{key}: {why}", options.archive.bucket);
    }
    for (key, why) in &plan.set_aside {
        say!(
            "set aside: s3://{}/{key} cannot be read ({why}); no bot's chain needs it (planted?)",
            options.archive.bucket
        );
    }
}

fn report(record: &ShredRecord, uploaded: Result<String, retention_bot::aws::AwsFailure>) -> ExitCode {
    let body = &record.body;
    for key in &body.keys {
        match (&body.state, &key.deletion_date) {
            (State::Scheduled, date) => say!(
                "SHREDDING {}: KMS deletes key {} on {}; its objects can no longer be decrypted",
                body.period,
                key.arn,
                date.as_deref().unwrap_or("(date not given)")
            ),
            (State::Cancelled, _) => say!(
                "CANCELLED {}: KMS key {} is kept and enabled again",
                body.period,
                key.arn
            ),
        }
    }
    match uploaded {
        Ok(location) => {
            say!("signed record: {location}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            esay!(
                "retention-bot shred: the keys are done as above, but the signed record could not be uploaded ({e}); keep it, and upload it as shredding_{}.json beside the archive:",
                body.period,
                e = Chain(&e)
            );
            say!("{}", record.to_json());
            ExitCode::FAILURE
        }
    }
}
