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

use crate::common;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_kms::types::KeyState;
use aws_sdk_s3::types::{ObjectLockLegalHold, ObjectLockLegalHoldStatus, ObjectLockRetention, ObjectLockRetentionMode};
use base64::Engine as _;
use common::aws::Moto;
use common::{Bot, attachment_form, file_message, metric, run_to_end, text_message, wait_for};

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
    moto.create_locked_bucket(BUCKET).await;
    let (topic, queue) = moto.topic_with_queue("period-events").await;
    let march_key = key_with_alias(&moto, "alias/retention-2025-03").await;
    let mut env = moto.env();
    for (k, v) in [
        ("WICKRIO_S3_BUCKET_NAME", BUCKET),
        ("WICKRIO_S3_FOLDER_NAME", FOLDER),
        ("WICKRIO_KMS_MSTRKEY_ARN", TEMPLATE),
        ("WICKRIO_SNS_TOPIC_ARN", &topic),
        ("WICKRIO_COMP_TIMEROTATE", "0.05"),
        ("RETENTION_BOT_TEST_CLOCK", CLOCK),
    ] {
        env.push((k.to_owned(), v.to_owned()));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let launched = Instant::now();
    let mut bot = Bot::start(&env).await;
    let up = Instant::now();

    // March: messages 1..=4 and an attachment, well before the month's end.
    let mut posted: HashMap<&str, BTreeSet<String>> = HashMap::new();
    posted.insert("2025-03", post_messages(&bot, 1..=4, "march.bin").await);
    assert!(
        launched.elapsed() < TO_BOUNDARY - Duration::from_secs(5),
        "the March messages must be in before the bot's month ends"
    );

    // The coming period has no key: the look-ahead (a day ahead) says so at once.
    wait_for(
        &bot,
        "the look-ahead to miss April's key",
        Duration::from_secs(10),
        async || metric(&bot, "KMS_Period_Keys_Missing").await == 1,
    )
    .await;

    // April: messages 101..=104 and an attachment, after the boundary.
    tokio::time::sleep((up + TO_BOUNDARY + Duration::from_secs(1)).saturating_duration_since(Instant::now())).await;
    posted.insert("2025-04", post_messages(&bot, 101..=104, "april.bin").await);

    // March's files go up; April's wait, closed, on local disk.
    let local_april = |bot: &Bot| {
        let mut names = common::file_names(&bot.messages_dir());
        names.extend(common::file_names(&bot.attachments_dir()));
        names
            .into_iter()
            .filter(|n| n.contains("20250401") && n.ends_with(".txt") || n.starts_with("attachment_20250401"))
            .collect::<Vec<_>>()
    };
    wait_for(
        &bot,
        "a closed April message file and the April attachment",
        Duration::from_secs(20),
        async || {
            let names = local_april(&bot);
            names.iter().any(|n| n.starts_with("attachment_")) && names.iter().any(|n| !n.starts_with("attachment_"))
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(!local_april(&bot).is_empty(), "April's files must wait for their key");
    let uploaded = moto.keys(BUCKET).await;
    assert!(
        uploaded.iter().any(|k| k.contains("attachment_20250331")),
        "{uploaded:?}"
    );
    for key in &uploaded {
        assert_eq!(
            period_of(last_segment(key)),
            "2025-03",
            "uploaded without its key: {key}"
        );
    }
    let events = event_messages(&moto, &queue).await;
    assert!(
        events
            .iter()
            .any(|m| m.contains("period 2025-04") && m.contains("alias/retention-2025-04 does not exist")),
        "{events:?}"
    );

    // A stop while they wait loses nothing: they are still there, closed, at the next start (the
    // bot's clock then starts in April).
    assert!(bot.stop().await.success(), "{}", bot.log_text());
    let waiting = local_april(&bot);
    assert!(!waiting.is_empty());
    assert!(
        moto.keys(BUCKET).await.iter().all(|k| !k.contains("20250401")),
        "nothing of April went up at the stop"
    );
    bot.set_env("RETENTION_BOT_TEST_CLOCK", "2025-04-01T00:01:00Z");
    bot.spawn().await;
    for name in &waiting {
        let dir = if name.starts_with("attachment_") {
            bot.attachments_dir()
        } else {
            bot.messages_dir()
        };
        assert!(dir.join(name).exists(), "{name} is gone after the restart");
    }

    // The operator makes April's key: the waiting files go up under it.
    let april_key = key_with_alias(&moto, "alias/retention-2025-04").await;
    // (A manifest that waited too retries on the uploader's back-off, at most a minute apart.)
    wait_for(&bot, "April's files to go up", Duration::from_secs(90), async || {
        local_april(&bot).is_empty()
    })
    .await;
    assert!(bot.stop().await.success(), "{}", bot.log_text());

    // Every object is under its period's key, as KMS itself says.
    let expected = |name: &str| match period_of(name) {
        "2025-03" => march_key.clone(),
        _ => april_key.clone(),
    };
    let wrapped = wrapping_keys(&moto).await;
    assert!(wrapped.iter().any(|(k, _)| k.contains("20250401")));
    for (key, kms_key) in &wrapped {
        assert_eq!(kms_key, &expected(last_segment(key)), "{key}");
    }
    // Restored: the archive verifies, every entry names its file's key, and each period's files
    // hold exactly that period's messages.
    let restored = bot.root.join("restored");
    let (code, out) = decrypt(&moto, &restored);
    assert_eq!(code, Some(0), "{out}");
    let mut found: HashMap<&str, BTreeSet<String>> = HashMap::new();
    for name in common::file_names(&restored) {
        let path = restored.join(&name);
        if name.starts_with("manifest_") {
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                let entry: serde_json::Value = serde_json::from_str(line).unwrap();
                let listed = entry["name"].as_str().unwrap();
                assert_eq!(entry["kms_key"].as_str(), Some(expected(listed).as_str()), "{line}");
            }
        } else if name.starts_with("receivedMessages_") {
            found.entry(period_of(&name)).or_default().extend(ids_in(&path));
        }
    }
    assert_eq!(found, posted);

    // shred: a period not over is refused.
    let (code, out) = shred(&moto, &bot, &["--period", "2099-01"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("may be shredded from 2099-02-02"), "{out}");
    // A planted manifest that cannot be read, which no bot's chain needs, is set aside and named (a
    // bot's own would break its chain, and refuse). An entry no bot signed steers nothing (KMS
    // answers for the data): it neither refuses nor allows.
    let planted = format!("{FOLDER}/manifest_20250215T000000000Z_0a0b0c0d0e0f_000001.txt");
    let bogus_envelope = HashMap::from([("x-amz-key-v2".to_owned(), "AAEC".to_owned())]);
    moto.put_raw(BUCKET, &planted, b"not a manifest".to_vec(), bogus_envelope)
        .await;
    let (code, out) = shred(&moto, &bot, &["--period", "2025-03", "--dry-run"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!("set aside: s3://{BUCKET}/{planted} cannot be read")),
        "{out}"
    );
    let entry = serde_json::json!({
        "seq": 1, "name": "receivedMessages_20250215T000000000Z_0a0b0c0d0e0f_000002.txt", "kind": "messages",
        "size": 1, "sha256": "00", "kms_key": march_key, "closed_at": "2025-02-15T00:00:01Z",
        "prev": "0", "sig": "00",
    });
    moto.put_raw(BUCKET, &planted, format!("{entry}\n").into_bytes(), HashMap::new())
        .await;
    let (code, out) = shred(&moto, &bot, &["--period", "2025-03", "--dry-run"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("too"), "{out}");
    moto.s3()
        .await
        .delete_object()
        .bucket(BUCKET)
        .key(&planted)
        .send()
        .await
        .unwrap();
    assert_eq!(key_state(&moto, &march_key).await, KeyState::Enabled);

    // Held objects are named, and nothing changes.
    let march_objects: Vec<String> = moto
        .keys(BUCKET)
        .await
        .into_iter()
        .filter(|k| last_segment(k).contains("20250331"))
        .collect();
    let s3 = moto.s3().await;
    let (held, retained) = (&march_objects[0], &march_objects[1]);
    let hold = async |status| {
        let hold = ObjectLockLegalHold::builder().status(status).build();
        let put = s3.put_object_legal_hold().bucket(BUCKET).key(held).legal_hold(hold);
        put.send().await.unwrap();
    };
    hold(ObjectLockLegalHoldStatus::On).await;
    let until = SystemTime::now() + Duration::from_secs(15);
    s3.put_object_retention()
        .bucket(BUCKET)
        .key(retained)
        .retention(
            ObjectLockRetention::builder()
                .mode(ObjectLockRetentionMode::Governance)
                .retain_until_date(until.into())
                .build(),
        )
        .send()
        .await
        .unwrap();
    let (code, out) = shred(&moto, &bot, &["--period", "2025-03", "--pending-days", "7"]);
    assert_eq!(code, Some(2), "{out}");
    let line_of = |key: &str| out.lines().find(|l| l.contains(key)).unwrap_or_default().to_owned();
    assert!(line_of(held).contains("under a legal hold"), "{out}");
    assert!(line_of(retained).contains("under GOVERNANCE retention until"), "{out}");
    assert_eq!(key_state(&moto, &march_key).await, KeyState::Enabled);

    // Once the hold is lifted and the retention has run out: a dry run, then the shred.
    hold(ObjectLockLegalHoldStatus::Off).await;
    tokio::time::sleep(until.duration_since(SystemTime::now()).unwrap_or_default() + Duration::from_secs(1)).await;
    let (code, out) = shred(&moto, &bot, &["--period", "2025-03", "--dry-run"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&march_key) && out.contains("dry run: nothing was changed"),
        "{out}"
    );
    assert!(!out.contains(&april_key), "{out}");
    assert_eq!(key_state(&moto, &march_key).await, KeyState::Enabled);
    let (code, out) = shred(&moto, &bot, &["--period", "2025-03", "--pending-days", "7"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!("SHREDDING 2025-03: KMS deletes key {march_key}")),
        "{out}"
    );
    assert_eq!(key_state(&moto, &march_key).await, KeyState::PendingDeletion);
    assert_eq!(key_state(&moto, &april_key).await, KeyState::Enabled);

    // March no longer decrypts; April does; verify passes, reporting March as shredded.
    let (code, out) = decrypt(&moto, &bot.root.join("after-shred"));
    assert_eq!(code, Some(1), "{out}");
    for key in moto.keys(BUCKET).await {
        let name = last_segment(&key);
        if name.contains("20250331") {
            assert!(
                out.contains(&format!("FAILED s3://{BUCKET}/{key}")),
                "{key} still decrypts: {out}"
            );
        } else if name.contains("20250401") {
            assert!(!out.contains(&format!("FAILED s3://{BUCKET}/{key}")), "{key}: {out}");
        }
    }
    assert!(out.contains("pending deletion"), "{out}");
    let (code, out) = verify(&moto, &bot);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("SHREDDED 2025-03"), "{out}");

    // export reads around the shredded period: April's messages, March's files in the custody
    // report as shredded, and no problem.
    let out_dir = bot.root.join("export");
    let (code, out) = run_to_end(
        Command::new(common::BIN)
            .args(["export", "--bucket", BUCKET, "--prefix", FOLDER, "--public-key"])
            .arg(bot.root.join("state/public_key.txt"))
            .arg("--out")
            .arg(&out_dir)
            .env_clear()
            .envs(moto.env()),
    );
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(ids_in(&out_dir.join("messages.jsonl")), posted["2025-04"]);
    let custody: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("custody.json")).unwrap()).unwrap();
    let shredded: Vec<&str> = custody["sources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| {
            s["result"]
                .as_str()
                .unwrap()
                .starts_with("SHREDDED: the period 2025-03")
        })
        .map(|s| s["at"].as_str().unwrap())
        .collect();
    assert!(
        shredded.iter().any(|at| at.contains("attachment_20250331")),
        "{custody}"
    );
    assert!(
        shredded.iter().any(|at| at.contains("receivedMessages_20250331")),
        "{custody}"
    );

    // A forged record (April's, made from March's, so its signature does not hold) hides nothing.
    let (record, _) = moto.object(BUCKET, &format!("{FOLDER}/shredding_2025-03.json")).await;
    let april_objects: Vec<String> = moto
        .keys(BUCKET)
        .await
        .into_iter()
        .filter(|k| last_segment(k).contains("20250401"))
        .collect();
    let record = String::from_utf8(record).unwrap();
    let (header, _) = record.split_once('\n').unwrap();
    let mut forged: serde_json::Value = serde_json::from_str(header).unwrap();
    forged["period"] = "2025-04".into();
    let contents: String = april_objects
        .iter()
        .map(|k| format!("{}\n", serde_json::json!({"object": {"key": k, "size": 1}})))
        .collect();
    let forged_key = format!("{FOLDER}/shredding_2025-04.json");
    moto.put_raw(
        BUCKET,
        &forged_key,
        format!("{forged}\n{contents}").into_bytes(),
        HashMap::new(),
    )
    .await;
    let (code, out) = verify(&moto, &bot);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("BAD SIGNATURE s3://{BUCKET}/{forged_key}")),
        "{out}"
    );
    assert!(!out.contains("SHREDDED 2025-04"), "{out}");
    s3.delete_object().bucket(BUCKET).key(&forged_key).send().await.unwrap();

    // Cancelled within the window: the key is enabled again and March decrypts.
    let (code, out) = shred(&moto, &bot, &["--period", "2025-03", "--cancel"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(key_state(&moto, &march_key).await, KeyState::Enabled);
    let (code, out) = decrypt(&moto, &bot.root.join("after-cancel"));
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = verify(&moto, &bot);
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("SHREDDED"), "{out}");
}
