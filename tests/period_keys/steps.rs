//! The phases of `each_period_has_its_own_key_a_missing_key_holds_files_back_and_shred_destroys_one_period`
//! (in `mod.rs`), one step each, so that a failure points at the phase it happened in.

use std::collections::{BTreeSet, HashMap};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_kms::types::KeyState;
use aws_sdk_s3::types::{ObjectLockLegalHold, ObjectLockLegalHoldStatus, ObjectLockRetention, ObjectLockRetentionMode};

use super::{
    BUCKET, CLOCK, FOLDER, TEMPLATE, TO_BOUNDARY, decrypt, event_messages, ids_in, key_state, key_with_alias,
    last_segment, period_of, post_messages, shred, verify, wrapping_keys,
};
use crate::common;
use common::aws::Moto;
use common::{Bot, metric, run_to_end, wait_for};

/// What the set-up leaves for the scenario: the running bot, the queue its events reach, March's
/// key, and when the bot was launched and when it was up (its clock runs out March from there).
pub(super) struct Started {
    pub(super) bot: Bot,
    pub(super) queue: String,
    pub(super) march_key: String,
    pub(super) launched: Instant,
    pub(super) up: Instant,
}

/// The locked bucket, the events' topic, March's key (April has none yet), and the bot started with
/// its clock seconds before March ends.
pub(super) async fn start(moto: &Moto) -> Started {
    moto.create_locked_bucket(BUCKET).await;
    let (topic, queue) = moto.topic_with_queue("period-events").await;
    let march_key = key_with_alias(moto, "alias/retention-2025-03").await;
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
    let bot = Bot::start(&env).await;
    let up = Instant::now();
    Started {
        bot,
        queue,
        march_key,
        launched,
        up,
    }
}

/// March's messages, posted while the bot's clock is still in March; their ids.
pub(super) async fn post_march(bot: &Bot, launched: Instant) -> BTreeSet<String> {
    let posted = post_messages(bot, 1..=4, "march.bin").await;
    assert!(
        launched.elapsed() < TO_BOUNDARY - Duration::from_secs(5),
        "the March messages must be in before the bot's month ends"
    );
    posted
}

/// Waits for the look-ahead to count April's key as missing.
pub(super) async fn look_ahead_misses_april_key(bot: &Bot) {
    wait_for(
        bot,
        "the look-ahead to miss April's key",
        Duration::from_secs(10),
        async || metric(bot, "KMS_Period_Keys_Missing").await == 1,
    )
    .await;
}

/// April's messages, posted once the bot's clock has passed the month's end; their ids.
pub(super) async fn post_april(bot: &Bot, up: Instant) -> BTreeSet<String> {
    tokio::time::sleep((up + TO_BOUNDARY + Duration::from_secs(1)).saturating_duration_since(Instant::now())).await;
    post_messages(bot, 101..=104, "april.bin").await
}

/// April's closed message files and attachments on the bot's local disk.
fn local_april(bot: &Bot) -> Vec<String> {
    let mut names = common::file_names(&bot.messages_dir());
    names.extend(common::file_names(&bot.attachments_dir()));
    names
        .into_iter()
        .filter(|n| n.contains("20250401") && n.ends_with(".txt") || n.starts_with("attachment_20250401"))
        .collect::<Vec<_>>()
}

/// March's files go up while April's wait on local disk, and the missing key is an event.
pub(super) async fn april_waits_for_its_key(moto: &Moto, bot: &Bot, queue: &str) {
    wait_for(
        bot,
        "a closed April message file and the April attachment",
        Duration::from_secs(20),
        async || {
            let names = local_april(bot);
            names.iter().any(|n| n.starts_with("attachment_")) && names.iter().any(|n| !n.starts_with("attachment_"))
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(!local_april(bot).is_empty(), "April's files must wait for their key");
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
    let events = event_messages(moto, queue).await;
    assert!(
        events
            .iter()
            .any(|m| m.contains("period 2025-04") && m.contains("alias/retention-2025-04 does not exist")),
        "{events:?}"
    );
}

/// Stops the bot while April's files wait and starts it again with its clock in April: none is
/// uploaded at the stop, and all are still there after the start.
pub(super) async fn restart_while_april_waits(moto: &Moto, bot: &mut Bot) {
    assert!(bot.stop().await.success(), "{}", bot.log_text());
    let waiting = local_april(bot);
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
}

/// Makes April's key as the operator would and waits for the waiting files to go up; its ARN.
pub(super) async fn april_key_made(moto: &Moto, bot: &Bot) -> String {
    let april_key = key_with_alias(moto, "alias/retention-2025-04").await;
    // (A manifest that waited too retries on the uploader's back-off, at most a minute apart.)
    wait_for(bot, "April's files to go up", Duration::from_secs(90), async || {
        local_april(bot).is_empty()
    })
    .await;
    april_key
}

/// Checks each object's wrapping key as KMS says, then restores the archive: it verifies, every
/// manifest entry names its file's key, and each period's files hold exactly `posted`'s messages.
pub(super) async fn check_keys_and_restored(
    moto: &Moto,
    bot: &Bot,
    march_key: &str,
    april_key: &str,
    posted: &HashMap<&str, BTreeSet<String>>,
) {
    let expected = |name: &str| match period_of(name) {
        "2025-03" => march_key.to_owned(),
        _ => april_key.to_owned(),
    };
    let wrapped = wrapping_keys(moto).await;
    assert!(wrapped.iter().any(|(k, _)| k.contains("20250401")));
    for (key, kms_key) in &wrapped {
        assert_eq!(kms_key, &expected(last_segment(key)), "{key}");
    }
    // Restored: the archive verifies, every entry names its file's key, and each period's files
    // hold exactly that period's messages.
    let restored = bot.root.join("restored");
    let (code, out) = decrypt(moto, &restored);
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
    assert_eq!(found, *posted);
}

/// `shred` refuses a period not over; a planted manifest is set aside when unreadable, and steers
/// nothing when readable but unsigned; March's key stays enabled.
pub(super) async fn shred_refuses_early_and_ignores_planted(moto: &Moto, bot: &Bot, march_key: &str) {
    let (code, out) = shred(moto, bot, &["--period", "2099-01"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("may be shredded from 2099-02-02"), "{out}");
    // A planted manifest that cannot be read, which no bot's chain needs, is set aside and named (a
    // bot's own would break its chain, and refuse). An entry no bot signed steers nothing (KMS
    // answers for the data): it neither refuses nor allows.
    let planted = format!("{FOLDER}/manifest_20250215T000000000Z_0a0b0c0d0e0f_000001.txt");
    let bogus_envelope = HashMap::from([("x-amz-key-v2".to_owned(), "AAEC".to_owned())]);
    moto.put_raw(BUCKET, &planted, b"not a manifest".to_vec(), bogus_envelope)
        .await;
    let (code, out) = shred(moto, bot, &["--period", "2025-03", "--dry-run"]);
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
    let (code, out) = shred(moto, bot, &["--period", "2025-03", "--dry-run"]);
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
    assert_eq!(key_state(moto, march_key).await, KeyState::Enabled);
}

/// The March object put under a legal hold, and when the other's retention runs out.
pub(super) struct Held {
    held: String,
    until: SystemTime,
}

/// Turns the legal hold on `key` on or off.
async fn legal_hold(s3: &aws_sdk_s3::Client, key: &str, status: ObjectLockLegalHoldStatus) {
    let hold = ObjectLockLegalHold::builder().status(status).build();
    let put = s3.put_object_legal_hold().bucket(BUCKET).key(key).legal_hold(hold);
    put.send().await.unwrap();
}

/// Puts one March object under a legal hold and another under retention: `shred` names both and
/// leaves March's key enabled.
pub(super) async fn shred_refuses_held_objects(moto: &Moto, bot: &Bot, march_key: &str) -> Held {
    let march_objects: Vec<String> = moto
        .keys(BUCKET)
        .await
        .into_iter()
        .filter(|k| last_segment(k).contains("20250331"))
        .collect();
    let s3 = moto.s3().await;
    let (held, retained) = (&march_objects[0], &march_objects[1]);
    legal_hold(&s3, held, ObjectLockLegalHoldStatus::On).await;
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
    let (code, out) = shred(moto, bot, &["--period", "2025-03", "--pending-days", "7"]);
    assert_eq!(code, Some(2), "{out}");
    let line_of = |key: &str| out.lines().find(|l| l.contains(key)).unwrap_or_default().to_owned();
    assert!(line_of(held).contains("under a legal hold"), "{out}");
    assert!(line_of(retained).contains("under GOVERNANCE retention until"), "{out}");
    assert_eq!(key_state(moto, march_key).await, KeyState::Enabled);
    Held {
        held: held.clone(),
        until,
    }
}

/// Lifts the hold and waits out the retention; then a dry run changes nothing and the shred
/// schedules March's key (only March's) for deletion.
pub(super) async fn shred_march_once_released(moto: &Moto, bot: &Bot, held: &Held, march_key: &str, april_key: &str) {
    legal_hold(&moto.s3().await, &held.held, ObjectLockLegalHoldStatus::Off).await;
    let until = held.until;
    tokio::time::sleep(until.duration_since(SystemTime::now()).unwrap_or_default() + Duration::from_secs(1)).await;
    let (code, out) = shred(moto, bot, &["--period", "2025-03", "--dry-run"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(march_key) && out.contains("dry run: nothing was changed"),
        "{out}"
    );
    assert!(!out.contains(april_key), "{out}");
    assert_eq!(key_state(moto, march_key).await, KeyState::Enabled);
    let (code, out) = shred(moto, bot, &["--period", "2025-03", "--pending-days", "7"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!("SHREDDING 2025-03: KMS deletes key {march_key}")),
        "{out}"
    );
    assert_eq!(key_state(moto, march_key).await, KeyState::PendingDeletion);
    assert_eq!(key_state(moto, april_key).await, KeyState::Enabled);
}

/// After the shred, `decrypt` fails on each March object and on no April one, and `verify` passes,
/// reporting March as shredded.
pub(super) async fn march_no_longer_decrypts(moto: &Moto, bot: &Bot) {
    let (code, out) = decrypt(moto, &bot.root.join("after-shred"));
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
    let (code, out) = verify(moto, bot);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("SHREDDED 2025-03"), "{out}");
}

/// `export` after the shred: exactly April's messages (`april`), and March's message file and
/// attachment in the custody report as shredded.
pub(super) fn export_reads_around_shredded_period(moto: &Moto, bot: &Bot, april: &BTreeSet<String>) {
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
    assert_eq!(ids_in(&out_dir.join("messages.jsonl")), *april);
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
}

/// Plants April's shredding record, forged from March's: `verify` fails on its signature and does
/// not report April shredded. The forged record is removed afterwards.
pub(super) async fn forged_record_hides_nothing(moto: &Moto, bot: &Bot) {
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
    let (code, out) = verify(moto, bot);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("BAD SIGNATURE s3://{BUCKET}/{forged_key}")),
        "{out}"
    );
    assert!(!out.contains("SHREDDED 2025-04"), "{out}");
    let s3 = moto.s3().await;
    s3.delete_object().bucket(BUCKET).key(&forged_key).send().await.unwrap();
}

/// `shred --cancel` within the window: March's key is enabled again, March decrypts, and `verify`
/// reports nothing shredded.
pub(super) async fn cancel_restores_march(moto: &Moto, bot: &Bot, march_key: &str) {
    let (code, out) = shred(moto, bot, &["--period", "2025-03", "--cancel"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(key_state(moto, march_key).await, KeyState::Enabled);
    let (code, out) = decrypt(moto, &bot.root.join("after-cancel"));
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = verify(moto, bot);
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("SHREDDED"), "{out}");
}
