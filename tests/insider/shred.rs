//! `shred` against a bucket writer, with moto made strict on KMS key states
//! (`tests/python/strict_moto.py`): a shred that cannot destroy another period whatever was hidden
//! or deleted, a period that stays shredded when a backlog comes back, a reused data key that stops
//! within its bound, shredded ciphertext deleted without a lasting alarm, and a cancel from a saved
//! record; and planted records and manifests that cost their reader little memory.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use aws_sdk_kms::types::KeyState;

use super::{FOLDER, bot_env, named, refs, verify};
use crate::common::aws::Moto;
use crate::common::{self, Bot, attachment_form, file_message, metric, run_to_end, text_message, wait_for};
use crate::period_keys::{KEY_FRESHNESS, key_state, key_with_alias};

/// The short form of the template (its region from the settings).
const TEMPLATE: &str = "alias/retention-{yyyy}-{mm}";

/// `retention-bot shred` signed with `bot`'s key; `extra` environment on top.
fn shred(moto: &Moto, bucket: &str, bot: &Bot, args: &[&str]) -> (Option<i32>, String) {
    let mut env = bot.env.clone();
    env.retain(|(k, _)| k == "WICKRIO_STATE_DIR" || k == "WICKRIO_BOT_PASSWORD");
    run_to_end(
        Command::new(common::BIN)
            .args(["shred", "--bucket", bucket, "--prefix", FOLDER])
            .args(args)
            .env_clear()
            .envs(moto.env())
            .env("WICKRIO_KMS_MSTRKEY_ARN", TEMPLATE)
            .env("WICKRIO_KMS_REGION", "us-east-1")
            .env("RETENTION_BOT_TEST_KEY_FRESHNESS_SECS", KEY_FRESHNESS)
            .envs(env),
    )
}

/// A bot on `bucket` with per-period keys, its clock at `clock`.
async fn period_bot(moto: &Moto, bucket: &str, clock: &str, extra: &[(&str, &str)]) -> Bot {
    let mut settings = vec![
        ("WICKRIO_KMS_MSTRKEY_ARN", TEMPLATE),
        ("WICKRIO_KMS_REGION", "us-east-1"),
        ("RETENTION_BOT_TEST_CLOCK", clock),
        ("RETENTION_BOT_TEST_KEY_FRESHNESS_SECS", KEY_FRESHNESS),
    ];
    settings.extend_from_slice(extra);
    let env = bot_env(moto, bucket, &settings);
    Bot::start(&refs(&env)).await
}

async fn post_run(bot: &Bot, n: usize) {
    assert_eq!(bot.post("application/json", text_message(n)).await.status(), 202);
    let part = reqwest::multipart::Part::bytes(vec![n as u8; 9_000]).file_name("note.pdf");
    let r = bot.post_form(attachment_form(&file_message("note.pdf"), part)).await;
    assert_eq!(r.status(), 202);
}

#[tokio::test(flavor = "multi_thread")]
async fn shred_cannot_destroy_another_period_whose_manifests_are_hidden_or_gone() {
    const BUCKET: &str = "shred-hidden";
    let moto = Moto::start_strict().await;
    moto.create_versioned_bucket(BUCKET).await;
    // The operator's slip: October's and November's aliases name one key.
    let key = key_with_alias(&moto, "alias/retention-2025-10").await;
    moto.kms()
        .await
        .create_alias()
        .alias_name("alias/retention-2025-11")
        .target_key_id(&key)
        .send()
        .await
        .unwrap();
    // One bot wrote October, another November (each its own chain and key).
    let mut october = period_bot(&moto, BUCKET, "2025-10-15T00:00:00Z", &[]).await;
    post_run(&october, 1).await;
    assert!(october.stop().await.success(), "{}", october.log_text());
    let mut november = period_bot(&moto, BUCKET, "2025-11-15T00:00:00Z", &[]).await;
    post_run(&november, 2).await;
    assert!(november.stop().await.success(), "{}", november.log_text());
    let refused = |out: &str| {
        out.contains(&format!("KMS key {key} protects"))
            && out.contains("of the period 2025-10, too")
            && out.contains("nothing was changed")
    };
    let (code, out) = shred(&moto, BUCKET, &november, &["--period", "2025-11"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(refused(&out), "{out}");

    // October's manifests and heads hidden under delete markers: still refused.
    let october_records: Vec<String> = moto
        .keys(BUCKET)
        .await
        .into_iter()
        .filter(|k| k.contains("/manifest_202510") || k.contains("/chainhead_manifest_202510"))
        .collect();
    assert_eq!(october_records.len(), 2, "{october_records:?}");
    for k in &october_records {
        moto.hide(BUCKET, k).await;
    }
    let (code, out) = shred(&moto, BUCKET, &november, &["--period", "2025-11"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(refused(&out), "{out}");
    // Deleted for good (this bucket has no lock): KMS still answers for October's files.
    for k in &october_records {
        moto.erase(BUCKET, k).await;
    }
    let (code, out) = shred(&moto, BUCKET, &november, &["--period", "2025-11"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(refused(&out), "{out}");
    assert!(
        out.contains("receivedMessages_202510") || out.contains("attachment_202510"),
        "{out}"
    );
    // Hidden too: the data of a hidden object is still there, so still asked about.
    for k in moto.keys(BUCKET).await.into_iter().filter(|k| k.contains("_202510")) {
        moto.hide(BUCKET, &k).await;
    }
    let (code, out) = shred(&moto, BUCKET, &november, &["--period", "2025-11"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(refused(&out), "{out}");
    assert_eq!(key_state(&moto, &key).await, KeyState::Enabled);
}

/// The bucket of `a_shredded_period_stays_shredded_when_its_backlog_comes_back`.
const BACKLOG_BUCKET: &str = "shred-backlog";

/// What the backlog scenario's set-up leaves: the bot (stopped after its first run), the proxy S3 is
/// reached through, the queue its events reach, and November's key.
struct BacklogStart {
    bot: Bot,
    s3_proxy: common::aws::Proxy,
    queue: String,
    november: String,
}

/// Set-up: November's and December's keys, S3 behind a proxy the test can take down, and a first run
/// in November.
async fn start_backlog_bot(moto: &Moto) -> BacklogStart {
    moto.create_versioned_bucket(BACKLOG_BUCKET).await;
    let (topic, queue) = moto.topic_with_queue("backlog-events").await;
    let november = key_with_alias(moto, "alias/retention-2025-11").await;
    key_with_alias(moto, "alias/retention-2025-12").await;
    // S3 through a proxy the test can take down (KMS stays up).
    let s3_proxy = common::aws::Proxy::start(moto.port).await;
    let s3_endpoint = s3_proxy.endpoint();
    let extra = [
        ("WICKRIO_KMS_CREATE_PERIOD_KEYS", "true"),
        ("WICKRIO_SNS_TOPIC_ARN", topic.as_str()),
        ("AWS_ENDPOINT_URL_S3", s3_endpoint.as_str()),
        ("WICKRIO_COMP_TIMEROTATE", "0.02"),
        ("WICKRIO_EVENT_REPEAT_SECS", "1"),
    ];
    let mut bot = period_bot(moto, BACKLOG_BUCKET, "2025-11-20T00:00:00Z", &extra).await;
    post_run(&bot, 1).await;
    assert!(bot.stop().await.success(), "{}", bot.log_text());
    BacklogStart {
        bot,
        s3_proxy,
        queue,
        november,
    }
}

/// A second run with S3 unreachable, killed with a listed file, an open one and its manifest on disk.
async fn leave_a_backlog(bot: &mut Bot, s3_proxy: &common::aws::Proxy) {
    // A second run with S3 unreachable: a file closes and is listed but cannot go up, another
    // is still open, when the bot is killed. Both stay on its disk, with its open manifest.
    bot.spawn().await;
    s3_proxy.set_up(false);
    assert_eq!(bot.post("application/json", text_message(2)).await.status(), 202);
    wait_for(bot, "a closed November file", Duration::from_secs(20), async || {
        !common::closed_message_files(&bot.messages_dir()).is_empty()
    })
    .await;
    assert_eq!(bot.post("application/json", text_message(3)).await.status(), 202);
    bot.kill9().await;
    let backlog: Vec<String> = common::file_names(&bot.messages_dir())
        .into_iter()
        .filter(|n| n.starts_with("receivedMessages_") || n.starts_with("manifest_"))
        .collect();
    assert!(
        backlog.len() >= 3,
        "a listed file, an open one and the manifest: {backlog:?}"
    );
    s3_proxy.set_up(true);
}

/// November is shredded while the bot is down; returns the bucket's keys after the shred.
async fn shred_november(moto: &Moto, bot: &Bot, november: &str) -> Vec<String> {
    let (code, out) = shred(
        moto,
        BACKLOG_BUCKET,
        bot,
        &["--period", "2025-11", "--pending-days", "7"],
    );
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(key_state(moto, november).await, KeyState::PendingDeletion);
    moto.keys(BACKLOG_BUCKET).await
}

/// The bot back in December: November's backlog waits while the shred can be cancelled, and once KMS
/// has deleted the key it is removed, with no key made for November.
async fn the_backlog_waits_then_is_removed(moto: &Moto, bot: &mut Bot, november: &str) {
    // The bot comes back in December, allowed to create keys. While the shred can still be
    // cancelled its November files wait, not uploaded.
    bot.set_env("RETENTION_BOT_TEST_CLOCK", "2025-12-02T00:00:00Z");
    bot.spawn().await;
    wait_for(
        bot,
        "the bot to say the period's files wait",
        Duration::from_secs(20),
        async || {
            bot.log_text()
                .contains("the period was shredded: its files still on this disk are not uploaded")
        },
    )
    .await;
    assert!(
        common::file_names(&bot.messages_dir())
            .iter()
            .any(|n| n.contains("20251120")),
        "the backlog waits while the shred can be cancelled"
    );
    // KMS deletes the key at the end of the window (here: seconds), and its alias with it. The bot
    // makes no key for November, uploads nothing of it, and removes the backlog, saying so.
    let kms = moto.kms().await;
    wait_for(
        bot,
        "KMS to delete November's key",
        Duration::from_secs(60),
        async || kms.describe_key().key_id(november).send().await.is_err(),
    )
    .await;
    let key_count = kms.list_keys().send().await.unwrap().keys().len();
    wait_for(
        bot,
        "the backlog to be discarded",
        Duration::from_secs(90),
        async || {
            common::file_names(&bot.messages_dir())
                .iter()
                .all(|n| !n.contains("20251120"))
        },
    )
    .await;
    assert!(bot.stop().await.success(), "{}", bot.log_text());
    assert!(
        kms.describe_key()
            .key_id("alias/retention-2025-11")
            .send()
            .await
            .is_err()
    );
    assert_eq!(
        kms.list_keys().send().await.unwrap().keys().len(),
        key_count,
        "no key made"
    );
}

/// Nothing of November went up, its stranded manifest is kept in one supplement, each removal was
/// said (event and log), and the archive verifies with November shredded.
async fn nothing_of_the_shredded_period_went_up(moto: &Moto, bot: &Bot, queue: &str, keys_after_shred: &[String]) {
    let new: Vec<String> = moto
        .keys(BACKLOG_BUCKET)
        .await
        .into_iter()
        .filter(|k| !keys_after_shred.contains(k))
        .collect();
    assert!(
        new.iter().all(|k| !k.contains("receivedMessages_20251120")),
        "a shredded period's file went up: {new:?}"
    );
    let supplements: Vec<&String> = new
        .iter()
        .filter(|k| k.contains("/shredding_2025-11_manifest_"))
        .collect();
    assert_eq!(supplements.len(), 1, "the stranded manifest's copy: {new:?}");
    let events = crate::period_keys::event_messages(moto, queue).await;
    assert!(events.iter().any(|m| m.contains("was removed unsent")), "{events:#?}");
    // The manifest, the listed file and the open one, each said.
    assert_eq!(
        bot.log_text().matches("was removed unsent").count(),
        3,
        "{}",
        bot.log_text()
    );
    // The archive verifies: the discarded files' entries are the shredded period's.
    let (code, out) = verify(moto, BACKLOG_BUCKET, bot, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("SHREDDED 2025-11"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shredded_period_stays_shredded_when_its_backlog_comes_back() {
    let moto = Moto::start_strict_deleting_after(25).await;
    let BacklogStart {
        mut bot,
        s3_proxy,
        queue,
        november,
    } = start_backlog_bot(&moto).await;
    leave_a_backlog(&mut bot, &s3_proxy).await;
    let keys_after_shred = shred_november(&moto, &bot, &november).await;
    the_backlog_waits_then_is_removed(&moto, &mut bot, &november).await;
    nothing_of_the_shredded_period_went_up(&moto, &bot, &queue, &keys_after_shred).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reused_data_key_stops_within_its_bound_once_its_key_is_scheduled_for_deletion() {
    const BUCKET: &str = "shred-reuse";
    let moto = Moto::start_strict().await;
    moto.create_bucket(BUCKET).await;
    let key = key_with_alias(&moto, "alias/retention-2025-06").await;
    let extra = [
        ("WICKRIO_KMS_DATAKEY_MAX_OBJECTS", "1000"),
        ("WICKRIO_KMS_DATAKEY_MAX_AGE_SECS", "86400"),
    ];
    let mut bot = period_bot(&moto, BUCKET, "2025-06-10T00:00:00Z", &extra).await;
    let attach = async |n: usize| {
        let part = reqwest::multipart::Part::bytes(vec![n as u8; 3000]).file_name(format!("a{n}.bin"));
        let r = bot
            .post_form(attachment_form(&file_message(&format!("a{n}.bin")), part))
            .await;
        assert_eq!(r.status(), 202);
    };
    attach(1).await;
    wait_for(&bot, "the first attachment", Duration::from_secs(20), async || {
        named(&moto, BUCKET, "attachment_").await.len() == 1
    })
    .await;
    // The key is scheduled for deletion (as a shred does); the bot's data key is still cached.
    schedule_deletion(&moto, &key).await;
    tokio::time::sleep(Duration::from_secs(KEY_FRESHNESS.parse::<u64>().unwrap() + 1)).await;
    attach(2).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        named(&moto, BUCKET, "attachment_").await.len(),
        1,
        "an object went up under a key pending deletion: {}",
        bot.log_text()
    );
    assert!(
        common::file_names(&bot.attachments_dir())
            .iter()
            .any(|n| n.ends_with("a2.bin")),
        "the second attachment waits on disk"
    );
    assert!(metric(&bot, "KMS_Requests").await >= 1);
    assert!(
        bot.log_text().contains("KMSInvalidStateException"),
        "{}",
        bot.log_text()
    );
    assert!(bot.stop().await.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn shredded_ciphertext_may_be_deleted_and_a_cancel_works_from_a_saved_record() {
    const BUCKET: &str = "shred-after";
    let moto = Moto::start_strict().await;
    moto.create_versioned_bucket(BUCKET).await;
    let key = key_with_alias(&moto, "alias/retention-2025-07").await;
    key_with_alias(&moto, "alias/retention-2025-08").await;
    let mut bot = period_bot(
        &moto,
        BUCKET,
        "2025-07-31T23:59:50Z",
        &[("WICKRIO_COMP_TIMEROTATE", "0.02")],
    )
    .await;
    post_run(&bot, 1).await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    post_run(&bot, 2).await;
    assert!(bot.stop().await.success(), "{}", bot.log_text());
    let (code, out) = shred(&moto, BUCKET, &bot, &["--period", "2025-07", "--pending-days", "7"]);
    assert_eq!(code, Some(0), "{out}");
    let record_key = format!("{FOLDER}/shredding_2025-07.json");
    let (record, _) = moto.object(BUCKET, &record_key).await;
    let saved = bot.root.join("saved-record.json");
    std::fs::write(&saved, &record).unwrap();

    // A lifecycle rule (or anyone) deletes the shredded objects for good: the record's copies keep
    // the chain whole, and nothing alarms.
    let july: Vec<String> = moto
        .keys(BUCKET)
        .await
        .into_iter()
        .filter(|k| k.contains("_202507"))
        .collect();
    assert!(july.iter().any(|k| k.contains("/manifest_")), "{july:?}");
    for k in &july {
        moto.erase(BUCKET, k).await;
    }
    let (code, out) = verify(&moto, BUCKET, &bot, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("SHREDDED 2025-07"), "{out}");

    // The record hidden under a marker: cancel still finds it.
    moto.hide(BUCKET, &record_key).await;
    let (code, out) = shred(&moto, BUCKET, &bot, &["--period", "2025-07", "--cancel"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(key_state(&moto, &key).await, KeyState::Enabled);
    let (code, out) = shred(&moto, BUCKET, &bot, &["--period", "2025-07", "--dry-run"]);
    assert_eq!(code, Some(2), "the period's objects are gone: {out}");

    // Scheduled again by hand (as the first shred had it), the record gone for good: a cancel
    // needs the saved copy, and takes only a signed one of this period.
    schedule_deletion(&moto, &key).await;
    moto.erase(BUCKET, &record_key).await;
    let (code, out) = shred(&moto, BUCKET, &bot, &["--period", "2025-07", "--cancel"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("--record FILE"), "{out}");
    let forged = bot.root.join("forged-record.json");
    let text = String::from_utf8(record.clone())
        .unwrap()
        .replacen("\"2025-07\"", "\"2025-08\"", 1);
    std::fs::write(&forged, text).unwrap();
    let (code, out) = shred(
        &moto,
        BUCKET,
        &bot,
        &["--period", "2025-07", "--cancel", "--record", forged.to_str().unwrap()],
    );
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("not signed"), "{out}");
    assert_eq!(key_state(&moto, &key).await, KeyState::PendingDeletion);
    let (code, out) = shred(
        &moto,
        BUCKET,
        &bot,
        &["--period", "2025-07", "--cancel", "--record", saved.to_str().unwrap()],
    );
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(key_state(&moto, &key).await, KeyState::Enabled);
}

/// Peak RSS (KiB) of a command, as the kernel counts it for the only child of a fresh Python.
fn peak_rss_kib(cmd: &mut Command) -> (Option<i32>, String, u64) {
    let mut wrapped = Command::new(common::aws::venv_bin("python"));
    wrapped
        .args([
            "-c",
            "import resource, subprocess, sys\n\
             r = subprocess.run(sys.argv[1:], capture_output=True)\n\
             sys.stdout.write(r.stdout.decode(errors='replace') + r.stderr.decode(errors='replace'))\n\
             sys.stdout.write('\\nPEAK_RSS_KIB=%d\\n' % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n\
             sys.exit(r.returncode)",
        ])
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .env_clear()
        .envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))));
    let (code, out) = run_to_end(&mut wrapped);
    let peak = out
        .lines()
        .find_map(|l| l.strip_prefix("PEAK_RSS_KIB="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no peak in {out}"));
    (code, out, peak)
}

/// The process's peak RSS so far (KiB), from /proc.
fn vm_hwm_kib(pid: nix::unistd::Pid) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn planted_records_and_manifests_are_refused_unread_and_cost_little_memory() {
    const BUCKET: &str = "planted";
    const PLANTED_MIB: usize = 100;
    let moto = Moto::start().await;
    moto.create_bucket(BUCKET).await;
    let env = bot_env(&moto, BUCKET, &[]);
    let mut bot = Bot::start(&refs(&env)).await;
    post_run(&bot, 1).await;
    assert!(bot.stop().await.success());
    let verify_cmd = || {
        let mut cmd = Command::new(common::BIN);
        cmd.arg("verify")
            .arg(format!("s3://{BUCKET}/{FOLDER}"))
            .arg("--public-key")
            .arg(bot.root.join("state/public_key.txt"))
            .env_clear()
            .envs(moto.env());
        cmd
    };
    let (code, out, baseline) = peak_rss_kib(&mut verify_cmd());
    assert_eq!(code, Some(0), "{out}");

    // An unsigned 100 MiB record, and a 20 MiB manifest, planted.
    let record = format!("{FOLDER}/shredding_2020.json");
    moto.put_raw(BUCKET, &record, vec![b'x'; PLANTED_MIB << 20], HashMap::new())
        .await;
    let manifest = format!("{FOLDER}/manifest_20200101T000000000Z_0a0b0c0d0e0f_000001.txt");
    moto.put_raw(BUCKET, &manifest, vec![b'{'; 20 << 20], HashMap::new())
        .await;
    let (code, out, planted) = peak_rss_kib(&mut verify_cmd());
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!(
            "UNREADABLE s3://{BUCKET}/{record}: not a shredding record: its first line is longer"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("UNREADABLE s3://{BUCKET}/{manifest}")) && out.contains("planted?"),
        "{out}"
    );
    eprintln!(
        "verify's peak RSS: {baseline} KiB, {planted} KiB with a {PLANTED_MIB} MiB record and a 20 MiB manifest planted"
    );
    assert!(
        planted < baseline + (16 << 10),
        "verify's peak RSS grew from {baseline} KiB to {planted} KiB with a {PLANTED_MIB} MiB planted record"
    );

    // The daemon's scheduled check reads the same bucket.
    bot.set_env("WICKRIO_VERIFY_EVERY_HOURS", "0.001");
    bot.spawn().await;
    let before = vm_hwm_kib(bot.pid());
    wait_for(&bot, "two scheduled checks", Duration::from_secs(40), async || {
        metric(&bot, "Archive_Checks").await >= 2
    })
    .await;
    let after = vm_hwm_kib(bot.pid());
    eprintln!("the daemon's peak RSS: {before} KiB before its scheduled checks, {after} KiB after two");
    assert!(metric(&bot, "Archive_Problems").await >= 2);
    assert!(
        after < before + (24 << 10),
        "the daemon's peak RSS grew from {before} KiB to {after} KiB over checks of a bucket with a {PLANTED_MIB} MiB planted record"
    );
    assert!(bot.stop().await.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn shred_waits_for_a_backlog_and_for_a_chain_it_can_prove_whole() {
    const BUCKET: &str = "shred-wait";
    let moto = Moto::start_strict().await;
    moto.create_versioned_bucket(BUCKET).await;
    let key = key_with_alias(&moto, "alias/retention-2025-09").await;
    // S3 refuses the bot's message files (as a bucket policy might): they wait on its disk, while
    // the manifest that lists them goes up.
    let proxy = common::aws::RecordingProxy::start(moto.port).await;
    proxy.refuse_paths_containing(Some("receivedMessages_20250910"));
    let endpoint = proxy.endpoint();
    let mut bot = period_bot(
        &moto,
        BUCKET,
        "2025-09-10T00:00:00Z",
        &[("AWS_ENDPOINT_URL_S3", &endpoint)],
    )
    .await;
    post_run(&bot, 1).await;
    assert!(bot.stop().await.success(), "{}", bot.log_text());
    let waiting = common::closed_message_files(&bot.messages_dir());
    assert_eq!(waiting.len(), 1, "{}", bot.log_text());
    let (code, out) = shred(&moto, BUCKET, &bot, &["--period", "2025-09", "--dry-run"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("a backlog still on a bot's disk") && out.contains(&waiting[0]),
        "{out}"
    );

    // Once it is up, the chain must still be proven to its end: the newest head deleted for good
    // leaves its last manifest's end unknown, until a head kept elsewhere is given.
    proxy.refuse_paths_containing(None);
    // (Its clock on from where the first run's was: manifests are named by it, in order.)
    bot.set_env("RETENTION_BOT_TEST_CLOCK", "2025-09-10T01:00:00Z");
    bot.spawn().await;
    wait_for(&bot, "the waiting file to go up", Duration::from_secs(30), async || {
        common::closed_message_files(&bot.messages_dir()).is_empty()
    })
    .await;
    assert!(bot.stop().await.success(), "{}", bot.log_text());
    let heads = named(&moto, BUCKET, "chainhead_").await;
    let newest = heads.last().unwrap();
    // A copy kept elsewhere (as the chain-head event carries it): the plaintext.
    let kept = bot.root.join("kept-head.json");
    std::fs::write(&kept, moto.read_encrypted(BUCKET, newest, &key, "sample").unwrap()).unwrap();
    moto.erase(BUCKET, newest).await;
    let (code, out) = shred(&moto, BUCKET, &bot, &["--period", "2025-09", "--dry-run"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("the head of its last manifest is missing"), "{out}");
    let typo = bot.root.join("no-such-head.json");
    let (code, out) = shred(
        &moto,
        BUCKET,
        &bot,
        &["--period", "2025-09", "--dry-run", "--head", typo.to_str().unwrap()],
    );
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("cannot be read"), "{out}");
    let (code, out) = shred(
        &moto,
        BUCKET,
        &bot,
        &["--period", "2025-09", "--dry-run", "--head", kept.to_str().unwrap()],
    );
    assert_eq!(code, Some(0), "{out}");
}

/// Schedules `key`'s deletion in KMS, as a shred does.
async fn schedule_deletion(moto: &Moto, key: &str) {
    let kms = moto.kms().await;
    let id = kms
        .describe_key()
        .key_id(key)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id;
    kms.schedule_key_deletion()
        .key_id(id)
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
}
