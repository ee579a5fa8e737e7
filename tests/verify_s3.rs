//! `retention-bot verify s3://BUCKET/PREFIX` against a real moto server with Object Lock: a good,
//! encrypted, locked bucket passes with each object's retention reported (text and JSON), a retention
//! floor above the bucket's names every object, and each kind of damage is named: a deleted object,
//! a flipped byte in an encrypted object, a dropped manifest, the newest manifest deleted with its
//! files, and a foreign object (each version deleted for good, with governance bypass: what a
//! bucket writer can do with delete markers and new versions alone is `versions`').

use crate::common;

use std::path::Path;
use std::process::Command;

use common::aws::Moto;
use common::{Bot, attachment_form, file_message, text_message};

const BUCKET: &str = "audit-1";
const FOLDER: &str = "retention/bot1";

fn refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// `retention-bot verify s3://BUCKET/FOLDER ARGS...`: (exit status, stdout + stderr).
fn verify_bucket(moto: &Moto, key: &Path, args: &[&str]) -> (Option<i32>, String) {
    let mut cmd = Command::new(common::BIN);
    cmd.arg("verify")
        .arg(format!("s3://{BUCKET}/{FOLDER}"))
        .arg("--public-key")
        .arg(key)
        .args(args)
        .env_clear()
        .envs(Moto::env_via(&moto.endpoint()));
    common::run_to_end(&mut cmd)
}

/// Set-up: a locked bucket, a KMS key, and three runs of the bot (three manifests, each listing a
/// message file and an attachment). Returns the stopped bot (its directory holds the public key) and
/// the key's ARN.
async fn archive_three_runs(moto: &Moto) -> (Bot, String) {
    moto.create_locked_bucket(BUCKET).await;
    let key_arn = moto.create_key().await;
    let mut env = Moto::env_via(&moto.endpoint());
    for (k, v) in [
        ("WICKRIO_S3_BUCKET_NAME", BUCKET),
        ("WICKRIO_S3_FOLDER_NAME", FOLDER),
        ("WICKRIO_KMS_MSTRKEY_ARN", &key_arn),
        ("WICKRIO_S3_OBJECT_LOCK_MODE", "GOVERNANCE"),
        ("WICKRIO_S3_RETENTION_DAYS", "30"),
    ] {
        env.push((k.to_owned(), v.to_owned()));
    }
    // Three runs: three manifests, each listing a message file and an attachment.
    let mut bot = Bot::start(&refs(&env)).await;
    for run in 0..3 {
        if run > 0 {
            bot.spawn().await;
        }
        assert_eq!(bot.post("application/json", text_message(run + 1)).await.status(), 202);
        let part = reqwest::multipart::Part::bytes(vec![run as u8; 70_000]).file_name("scan.pdf");
        let r = bot.post_form(attachment_form(&file_message("scan.pdf"), part)).await;
        assert_eq!(r.status(), 202);
        assert!(bot.stop().await.success(), "{}", bot.log_text());
    }
    (bot, key_arn)
}

/// The untouched bucket: it passes (text and JSON), every object locked as configured, and a floor
/// above what the objects carry names each of them. Returns every key in the bucket.
async fn check_untouched(moto: &Moto, public_key: &Path) -> Vec<String> {
    // Untouched: it passes, every object locked as configured.
    let (code, text) = verify_bucket(moto, public_key, &["--min-retention-days", "30"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains(", 0 problem(s)"), "{text}");
    let keys = moto.keys(BUCKET).await;
    assert!(
        text.contains(&format!("{} object(s)", keys.len()))
            && text.contains("0 COMPLIANCE, ")
            && text.contains(" GOVERNANCE, 0 none)"),
        "every object checked and locked: {text}"
    );
    let (code, json) = verify_bucket(moto, public_key, &["--json"]);
    assert_eq!(code, Some(0), "{json}");
    let report: serde_json::Value = serde_json::from_str(json.trim()).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!(report["ok"], true);
    assert_eq!(report["manifests"], 3);
    let objects = report["objects"].as_array().unwrap();
    assert_eq!(objects.len(), keys.len());
    assert!(
        objects
            .iter()
            .all(|o| o["lock_mode"] == "GOVERNANCE" && o["retain_until"].is_string()),
        "{json}"
    );
    // A floor above what the objects carry names each of them.
    let (code, text) = verify_bucket(moto, public_key, &["--min-retention-days", "31"]);
    assert_eq!(code, Some(1), "{text}");
    assert_eq!(text.matches("SHORT RETENTION").count(), keys.len(), "{text}");
    keys
}

/// Deletes the current version of `key` for good, with governance bypass.
async fn remove(s3: &aws_sdk_s3::Client, key: &str) {
    let version = s3.head_object().bucket(BUCKET).key(key).send().await.unwrap();
    s3.delete_object()
        .bucket(BUCKET)
        .key(key)
        .set_version_id(version.version_id().map(str::to_owned))
        .bypass_governance_retention(true)
        .send()
        .await
        .unwrap();
}

/// The keys among `keys` whose object name starts with `prefix`, sorted.
fn named(keys: &[String], prefix: &str) -> Vec<String> {
    let mut found: Vec<String> = keys
        .iter()
        .filter(|k| k.rsplit('/').next().unwrap().starts_with(prefix))
        .cloned()
        .collect();
    found.sort();
    found
}

/// The entries the encrypted manifest at `manifest` lists.
fn listed_by(moto: &Moto, manifest: &str, key_arn: &str) -> Vec<String> {
    let plain = moto.read_encrypted(BUCKET, manifest, key_arn, "official").unwrap();
    common::archive::manifest_names(&plain)
}

/// Whether `names` (a manifest's entries) list the object `key`: its name, or for an attachment
/// (`attachment_<time>_<bot>-<hash>_<name>`) the same time and name.
fn lists(names: &[String], key: &str) -> bool {
    let object = key.rsplit('/').next().unwrap();
    names.iter().any(|n| {
        n == object
            || (n.starts_with("attachment_")
                && n.split('_').nth(1) == object.split('_').nth(1)
                && n.rsplit('_').next() == object.rsplit('_').next())
    })
}

/// The damage, done with governance bypass where the lock stands in the way: the middle run's
/// message file deleted and its attachment flipped, the first manifest dropped, the newest deleted
/// with its files, and a foreign object. Returns the deleted message file's key.
async fn damage(moto: &Moto, keys: &[String], key_arn: &str) -> String {
    let s3 = moto.s3().await;
    let (manifests, messages, attachments) = (
        named(keys, "manifest_"),
        named(keys, "receivedMessages_"),
        named(keys, "attachment_"),
    );
    assert_eq!(
        (manifests.len(), messages.len(), attachments.len()),
        (3, 3, 3),
        "{keys:?}"
    );
    // The middle run's files: its message file deleted, its attachment's ciphertext flipped.
    let middle = listed_by(moto, &manifests[1], key_arn);
    let message = messages.iter().find(|k| lists(&middle, k)).unwrap();
    remove(&s3, message).await;
    let attachment = attachments.iter().find(|k| lists(&middle, k)).unwrap();
    let (mut body, metadata) = moto.object(BUCKET, attachment).await;
    body[100] ^= 0x01;
    // The altered copy goes over it, and the bot's version is then deleted (versions are the
    // archive's evidence: `versions` has the copy over a version that is still there).
    let original = s3.head_object().bucket(BUCKET).key(attachment).send().await.unwrap();
    moto.put_raw(BUCKET, attachment, body, metadata).await;
    s3.delete_object()
        .bucket(BUCKET)
        .key(attachment)
        .set_version_id(original.version_id().map(str::to_owned))
        .bypass_governance_retention(true)
        .send()
        .await
        .unwrap();
    // The first manifest dropped; the newest deleted with its files (its head record stays, locked).
    remove(&s3, &manifests[0]).await;
    let newest = listed_by(moto, &manifests[2], key_arn);
    for key in messages.iter().chain(&attachments).filter(|k| lists(&newest, k)) {
        remove(&s3, key).await;
    }
    remove(&s3, &manifests[2]).await;
    // And something no bot wrote.
    moto.put_raw(
        BUCKET,
        &format!("{FOLDER}/notes.txt"),
        b"planted".to_vec(),
        Default::default(),
    )
    .await;
    message.clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_s3_passes_a_good_bucket_in_place_and_names_each_kind_of_damage() {
    let moto = Moto::start().await;
    let (bot, key_arn) = archive_three_runs(&moto).await;
    let public_key = bot.root.join("state/public_key.txt");

    let keys = check_untouched(&moto, &public_key).await;

    let message = damage(&moto, &keys, &key_arn).await;

    let (code, text) = verify_bucket(&moto, &public_key, &[]);
    assert_eq!(code, Some(1), "{text}");
    for expected in [
        format!("MISSING {}", message.rsplit('/').next().unwrap()),
        "ALTERED attachment_".to_owned(),
        "it does not decrypt".to_owned(),
        "CHAIN BROKEN".to_owned(),
        "TRUNCATED: the archive ends at entry".to_owned(),
        format!("UNLISTED s3://{BUCKET}/{FOLDER}/notes.txt"),
    ] {
        assert!(text.contains(&expected), "expected {expected:?} in:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_checks_its_bucket_on_schedule_and_reports_damage_as_a_critical_event() {
    let moto = Moto::start().await;
    moto.create_bucket("sched-1").await;
    let (topic, queue) = moto.topic_with_queue("bot-events").await;
    let mut env = Moto::env_via(&moto.endpoint());
    for (k, v) in [
        ("WICKRIO_S3_BUCKET_NAME", "sched-1"),
        ("WICKRIO_S3_FOLDER_NAME", FOLDER),
        ("WICKRIO_SNS_TOPIC_ARN", topic.as_str()),
        ("WICKRIO_COMP_TIMEROTATE", "0.02"),
        // Every 3.6 s.
        ("WICKRIO_VERIFY_EVERY_HOURS", "0.001"),
        ("WICKRIO_EVENT_REPEAT_SECS", "1"),
    ] {
        env.push((k.to_owned(), v.to_owned()));
    }
    let mut bot = Bot::start(&refs(&env)).await;
    // Files keep closing and uploading while the checks run; the open manifest lists uploaded files
    // that no manifest in the bucket lists yet: none of that is a problem.
    for n in 1..=8 {
        assert_eq!(bot.post("application/json", text_message(n)).await.status(), 202);
        tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    }
    common::wait_for(
        &bot,
        "two scheduled checks",
        std::time::Duration::from_secs(30),
        async || common::metric(&bot, "Archive_Checks").await >= 2,
    )
    .await;
    assert_eq!(common::metric(&bot, "Archive_Problems").await, 0, "{}", bot.log_text());

    // An uploaded file deleted from the bucket: the next check names it.
    let gone = moto
        .keys("sched-1")
        .await
        .into_iter()
        .find(|k| k.contains("/receivedMessages_"))
        .unwrap();
    moto.s3()
        .await
        .delete_object()
        .bucket("sched-1")
        .key(&gone)
        .send()
        .await
        .unwrap();
    let name = gone.rsplit('/').next().unwrap().to_owned();
    // Its entry must be in a manifest in the bucket for the check to miss it: close the open one.
    assert!(bot.stop().await.success(), "{}", bot.log_text());
    bot.spawn().await;
    common::wait_for(
        &bot,
        "a check that finds the damage",
        std::time::Duration::from_secs(30),
        async || common::metric(&bot, "Archive_Problems").await > 0,
    )
    .await;
    assert!(bot.stop().await.success(), "{}", bot.log_text());
    let events = moto.drain_queue(&queue).await;
    let message = |e: &serde_json::Value| e["message"].as_str().unwrap_or_default().to_owned();
    assert!(
        events
            .iter()
            .any(|e| message(e).starts_with("archive check passed: s3://sched-1/")),
        "{events:#?}"
    );
    let failed: Vec<_> = events
        .iter()
        .filter(|e| message(e).starts_with("archive check FAILED: s3://sched-1/"))
        .collect();
    assert!(!failed.is_empty(), "{events:#?}");
    assert_eq!(failed[0]["severity"], "critical");
    assert!(message(failed[0]).contains(&format!("MISSING {name}")), "{failed:#?}");
}
