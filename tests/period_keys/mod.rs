//! Per-period KMS keys and crypto-shredding against moto made strict where AWS KMS is (a key pending
//! deletion refuses to decrypt: `tests/python/strict_moto.py`). The bot's clock starts seconds before
//! a month's end (`RETENTION_BOT_TEST_CLOCK`), so one run writes two periods:
//!
//! - each period's files go under that period's key (the wrapped data key of every object is KMS's
//!   answer for that key, and every manifest entry names it), and no file holds messages of both;
//! - the coming period's missing key raises the event and the gauge, and its files wait on local
//!   disk, never uploaded, until the key appears;
//! - `shred` refuses a period not over, and one whose objects are under a legal hold or retention
//!   (naming them), then schedules the key's deletion: the period's objects no longer decrypt while
//!   the other period's do, `verify` reports them SHREDDED and passes, and `--cancel` undoes it.
//!
//! `others` has the bot creating its own keys, and a shred refused for an alias pointed at the key
//! an older archive is under.

mod others;
mod steps;

use crate::common;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use aws_sdk_kms::types::KeyState;
use base64::Engine as _;
use common::aws::Moto;
use common::{Bot, attachment_form, file_message, run_to_end, text_message};
use steps::Started;

pub(super) const BUCKET: &str = "periods";
pub(super) const FOLDER: &str = "archive";
pub(super) const TEMPLATE: &str = "arn:aws:kms:us-east-1:123456789012:alias/retention-{yyyy}-{mm}";
/// The bot's clock starts here: the month ends 25 seconds later.
const CLOCK: &str = "2025-03-31T23:59:35Z";
const TO_BOUNDARY: Duration = Duration::from_secs(25);

/// A key with an alias, as an operator makes one; its ARN.
pub(super) async fn key_with_alias(moto: &Moto, alias: &str) -> String {
    let arn = moto.create_key().await;
    moto.kms()
        .await
        .create_alias()
        .alias_name(alias)
        .target_key_id(&arn)
        .send()
        .await
        .unwrap();
    arn
}

pub(super) async fn key_state(moto: &Moto, arn: &str) -> KeyState {
    let out = moto.kms().await.describe_key().key_id(arn).send().await.unwrap();
    out.key_metadata.unwrap().key_state.unwrap()
}

/// The period (`2025-03`) of a bot file name's time.
fn period_of(name: &str) -> &'static str {
    if name.contains("20250331") {
        "2025-03"
    } else if name.contains("20250401") {
        "2025-04"
    } else {
        panic!("{name} is named in neither period")
    }
}

fn last_segment(key: &str) -> &str {
    key.rsplit('/').next().unwrap()
}

/// The KMS key each object's wrapped data key belongs to, as KMS says when it unwraps it.
pub(super) async fn wrapping_keys(moto: &Moto) -> Vec<(String, String)> {
    let kms = moto.kms().await;
    let mut out = Vec::new();
    for key in moto.keys(BUCKET).await {
        if last_segment(&key).starts_with("shredding_") {
            continue;
        }
        let (_, meta) = moto.object(BUCKET, &key).await;
        let wrapped = base64::engine::general_purpose::STANDARD
            .decode(&meta["x-amz-key-v2"])
            .unwrap();
        let answer = kms
            .decrypt()
            .ciphertext_blob(wrapped.into())
            .encryption_context("aws:x-amz-cek-alg", "AES/GCM/NoPadding")
            .send()
            .await
            .unwrap();
        out.push((key, answer.key_id.unwrap()));
    }
    out
}

/// `decrypt` of the bucket into `dest`: (exit code, output).
fn decrypt(moto: &Moto, dest: &Path) -> (Option<i32>, String) {
    run_to_end(
        Command::new(common::BIN)
            .args(["decrypt", "--bucket", BUCKET, "--prefix", FOLDER, "--dest"])
            .arg(dest)
            .env_clear()
            .envs(moto.env()),
    )
}

/// The bots' bound on a reused data key in these tests (seconds): `shred` waits a little longer.
pub(super) const KEY_FRESHNESS: &str = "2";

/// `retention-bot shred` with the bot's state directory and password (it signs its record).
pub(super) fn shred(moto: &Moto, bot: &Bot, args: &[&str]) -> (Option<i32>, String) {
    let mut env = bot.env.clone();
    env.retain(|(k, _)| k == "WICKRIO_STATE_DIR" || k == "WICKRIO_BOT_PASSWORD");
    run_to_end(
        Command::new(common::BIN)
            .args(["shred", "--bucket", BUCKET, "--prefix", FOLDER])
            .args(args)
            .env_clear()
            .envs(moto.env())
            .env("WICKRIO_KMS_MSTRKEY_ARN", TEMPLATE)
            .env("RETENTION_BOT_TEST_KEY_FRESHNESS_SECS", KEY_FRESHNESS)
            .envs(env),
    )
}

fn verify(moto: &Moto, bot: &Bot) -> (Option<i32>, String) {
    run_to_end(
        Command::new(common::BIN)
            .args(["verify", &format!("s3://{BUCKET}/{FOLDER}"), "--public-key"])
            .arg(bot.root.join("state/public_key.txt"))
            .env_clear()
            .envs(moto.env()),
    )
}

/// Posts text messages `ids` and a file message with an attachment named `file`; their ids.
pub(super) async fn post_messages(bot: &Bot, ids: std::ops::RangeInclusive<usize>, file: &str) -> BTreeSet<String> {
    let mut posted = BTreeSet::new();
    for id in ids {
        assert_eq!(bot.post("application/json", text_message(id)).await.status(), 202);
        posted.insert(format!("{id:032x}"));
    }
    let part = reqwest::multipart::Part::bytes(vec![7u8; 5000]).file_name(file.to_owned());
    let r = bot.post_form(attachment_form(&file_message(file), part)).await;
    assert_eq!(r.status(), 202);
    // file_message's id.
    posted.insert("f1".into());
    posted
}

/// The messages of the events in the queue (taken from it).
pub(super) async fn event_messages(moto: &Moto, queue: &str) -> Vec<String> {
    let events = moto.drain_queue(queue).await;
    events
        .iter()
        .map(|e| e["message"].as_str().unwrap().to_owned())
        .collect()
}

/// The message ids in a restored message file.
fn ids_in(path: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["message_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_period_has_its_own_key_a_missing_key_holds_files_back_and_shred_destroys_one_period() {
    let moto = Moto::start_strict().await;
    let Started {
        mut bot,
        queue,
        march_key,
        launched,
        up,
    } = steps::start(&moto).await;

    // March: messages 1..=4 and an attachment, well before the month's end.
    let mut posted: HashMap<&str, BTreeSet<String>> = HashMap::new();
    posted.insert("2025-03", steps::post_march(&bot, launched).await);

    // The coming period has no key: the look-ahead (a day ahead) says so at once.
    steps::look_ahead_misses_april_key(&bot).await;

    // April: messages 101..=104 and an attachment, after the boundary.
    posted.insert("2025-04", steps::post_april(&bot, up).await);

    // March's files go up; April's wait, closed, on local disk.
    steps::april_waits_for_its_key(&moto, &bot, &queue).await;

    // A stop while they wait loses nothing: they are still there, closed, at the next start (the
    // bot's clock then starts in April).
    steps::restart_while_april_waits(&moto, &mut bot).await;

    // The operator makes April's key: the waiting files go up under it.
    let april_key = steps::april_key_made(&moto, &bot).await;
    assert!(bot.stop().await.success(), "{}", bot.log_text());

    // Every object is under its period's key, as KMS itself says; restored, each period's files
    // hold exactly that period's messages.
    steps::check_keys_and_restored(&moto, &bot, &march_key, &april_key, &posted).await;

    // shred: a period not over is refused, and planted manifests neither refuse nor allow.
    steps::shred_refuses_early_and_ignores_planted(&moto, &bot, &march_key).await;

    // Held objects are named, and nothing changes.
    let held = steps::shred_refuses_held_objects(&moto, &bot, &march_key).await;

    // Once the hold is lifted and the retention has run out: a dry run, then the shred.
    steps::shred_march_once_released(&moto, &bot, &held, &march_key, &april_key).await;

    // March no longer decrypts; April does; verify passes, reporting March as shredded.
    steps::march_no_longer_decrypts(&moto, &bot).await;

    // export reads around the shredded period: April's messages, March's files in the custody
    // report as shredded, and no problem.
    steps::export_reads_around_shredded_period(&moto, &bot, &posted["2025-04"]);

    // A forged record (April's, made from March's, so its signature does not hold) hides nothing.
    steps::forged_record_hides_nothing(&moto, &bot).await;

    // Cancelled within the window: the key is enabled again and March decrypts.
    steps::cancel_restores_march(&moto, &bot, &march_key).await;
}
