//! S3 Object Lock (write once, read many) against a real moto server, which enforces it: every object
//! (messages, a multipart attachment, manifests) carries the configured mode and a retain-until date
//! counted from its file's close, the server refuses to delete a locked version, and a lock mode for
//! a bucket without Object Lock stops the bot at start-up with what to change.

use crate::common;

use std::time::{Duration, SystemTime};

use aws_sdk_s3::primitives::{DateTime, DateTimeFormat};
use aws_sdk_s3::types::{
    DefaultRetention, ObjectLockConfiguration, ObjectLockEnabled, ObjectLockMode, ObjectLockRetentionMode,
    ObjectLockRule,
};
use common::aws::{Moto, RecordingProxy};
use common::{Bot, attachment_form, file_message, text_message};

const DAY: Duration = Duration::from_secs(24 * 3600);

fn refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// The bucket setting and `extra`.
fn lock_env(bucket: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = vec![("WICKRIO_S3_BUCKET_NAME".to_owned(), bucket.to_owned())];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

#[tokio::test(flavor = "multi_thread")]
async fn every_object_is_retained_from_its_close_and_the_server_refuses_to_delete_it() {
    let moto = Moto::start().await;
    moto.create_locked_bucket("worm-1").await;
    let proxy = RecordingProxy::start(moto.port).await;
    let mut env = Moto::env_via(&proxy.endpoint());
    env.extend(lock_env(
        "worm-1",
        &[
            ("WICKRIO_S3_OBJECT_LOCK_MODE", "governance"),
            ("WICKRIO_S3_RETENTION_DAYS", "30"),
        ],
    ));
    let mut bot = Bot::start(&refs(&env)).await;
    let started = SystemTime::now();
    let r = bot.post("application/json", text_message(1)).await;
    assert_eq!(r.status(), 202);
    // Above one 8 MiB part: a multipart upload, whose lock is set on CreateMultipartUpload.
    let big = vec![7u8; 9 << 20];
    let part = reqwest::multipart::Part::bytes(big).file_name("big.bin");
    let r = bot.post_form(attachment_form(&file_message("big.bin"), part)).await;
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    assert!(bot.stop().await.success(), "{}", bot.log_text());
    let window = (
        started + 30 * DAY - Duration::from_secs(2),
        SystemTime::now() + 30 * DAY,
    );
    let retained = |until: SystemTime| until >= window.0 && until <= window.1;

    // As sent: every request that creates an object (PutObject, CreateMultipartUpload) carries the mode
    // and the date, and every request with data its checksum, as S3 requires with a lock. (moto keeps
    // the lock of a PutObject only; real S3 also honours CreateMultipartUpload's.)
    let requests = proxy.requests();
    let creating: Vec<_> = requests
        .iter()
        .filter(|r| {
            (r.method == "PUT" && !r.path.contains("partNumber="))
                || (r.method == "POST" && r.path.ends_with("?uploads"))
        })
        .collect();
    assert_eq!(
        creating.iter().filter(|r| r.method == "POST").count(),
        1,
        "one multipart upload: {creating:?}"
    );
    for r in &creating {
        assert_eq!(r.header("x-amz-object-lock-mode"), Some(&b"GOVERNANCE"[..]), "{r:?}");
        let until = std::str::from_utf8(r.header("x-amz-object-lock-retain-until-date").unwrap()).unwrap();
        let until = DateTime::from_str(until, DateTimeFormat::DateTime).unwrap();
        assert!(retained(SystemTime::try_from(until).unwrap()), "{r:?}");
    }
    for r in requests.iter().filter(|r| r.method == "PUT") {
        assert!(r.header("x-amz-checksum-crc32c").is_some(), "no checksum: {r:?}");
    }

    // As stored: what moto locked, it refuses to delete.
    let s3 = moto.s3().await;
    let keys = moto.keys("worm-1").await;
    for prefix in ["receivedMessages_", "attachment_", "manifest_"] {
        assert!(keys.iter().any(|k| k.starts_with(prefix)), "no {prefix}: {keys:?}");
    }
    let single: Vec<_> = keys.iter().filter(|k| !k.ends_with("big.bin")).collect();
    for key in single {
        let head = s3.head_object().bucket("worm-1").key(key).send().await.unwrap();
        assert_eq!(head.object_lock_mode(), Some(&ObjectLockMode::Governance), "{key}");
        let until = SystemTime::try_from(*head.object_lock_retain_until_date().unwrap()).unwrap();
        assert!(retained(until), "{key}: retained until {until:?}");
        let deleted = s3
            .delete_object()
            .bucket("worm-1")
            .key(key)
            .set_version_id(head.version_id().map(str::to_owned))
            .send()
            .await;
        assert!(deleted.is_err(), "{key}: a locked version was deleted");
    }
    assert_eq!(moto.keys("worm-1").await, keys);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lock_mode_for_a_bucket_without_object_lock_stops_the_start_with_status_2() {
    let moto = Moto::start().await;
    moto.create_bucket("plain-lock").await;
    let mut env = moto.env();
    env.extend(lock_env(
        "plain-lock",
        &[
            ("WICKRIO_S3_OBJECT_LOCK_MODE", "COMPLIANCE"),
            ("WICKRIO_S3_RETENTION_DAYS", "2557"),
        ],
    ));
    let tmp = tempfile::tempdir().unwrap();
    let mut command = tokio::process::Command::from(Bot::prepare(tmp.path(), &refs(&env)).command());
    // A bot that does not refuse runs on: killed at the deadline, it fails the test instead of hanging it.
    command.kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("the bot started instead of refusing the bucket")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("WICKRIO_S3_OBJECT_LOCK_MODE: bucket \"plain-lock\" does not have Object Lock enabled"),
        "{stderr}"
    );
    assert!(stderr.contains("enable Object Lock on the bucket"), "{stderr}");
    assert!(moto.keys("plain-lock").await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_mode_the_bot_says_which_default_retention_the_bucket_applies() {
    let moto = Moto::start().await;
    moto.create_locked_bucket("worm-default").await;
    let rule = ObjectLockRule::builder()
        .default_retention(
            DefaultRetention::builder()
                .mode(ObjectLockRetentionMode::Compliance)
                .days(7)
                .build(),
        )
        .build();
    moto.s3()
        .await
        .put_object_lock_configuration()
        .bucket("worm-default")
        .object_lock_configuration(
            ObjectLockConfiguration::builder()
                .object_lock_enabled(ObjectLockEnabled::Enabled)
                .rule(rule)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let mut env = moto.env();
    env.extend(lock_env("worm-default", &[]));
    let mut bot = Bot::start(&refs(&env)).await;
    let says = "the bucket's default Object Lock retention applies to every object: COMPLIANCE for 7 days";
    common::wait_for(
        &bot,
        "the bucket's default retention logged",
        Duration::from_secs(30),
        async || bot.log_text().contains(says),
    )
    .await;
    assert!(bot.stop().await.success(), "{}", bot.log_text());
}

/// The object's legal hold status (`None`: never set).
async fn hold_of(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Option<String> {
    let out = s3.get_object_legal_hold().bucket(bucket).key(key).send().await.ok()?;
    out.legal_hold()?.status().map(|s| s.as_str().to_owned())
}

/// `retention-bot legal-hold ARGS...` against `endpoint`: (success, stdout + stderr).
fn legal_hold(endpoint: &str, args: &[&str]) -> (bool, String) {
    let mut cmd = std::process::Command::new(common::BIN);
    cmd.arg("legal-hold")
        .args(args)
        .env_clear()
        .envs(Moto::env_via(endpoint));
    let (code, text) = common::run_to_end(&mut cmd);
    (code == Some(0), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn legal_holds_follow_the_period_hold_a_version_against_deletion_and_lift_again() {
    let moto = Moto::start().await;
    moto.create_locked_bucket("hold-1").await;
    let key_arn = moto.create_key().await;
    // Encrypted: the manifests the selection reads are decrypted in memory.
    let mut env = Moto::env_via(&moto.endpoint());
    env.extend(lock_env("hold-1", &[("WICKRIO_KMS_MSTRKEY_ARN", &key_arn)]));
    let mut bot = Bot::start(&refs(&env)).await;
    // A message of 2023-11-14 (msg_ts 1700000000) in one file, one of 2027-01-15 in the next.
    let old = text_message(1).replace("1691176258.000001", "1700000000.000001");
    assert_eq!(bot.post("application/json", old).await.status(), 202);
    assert!(bot.stop().await.success(), "{}", bot.log_text());
    bot.spawn().await;
    let new = text_message(2).replace("1691176258.000002", "1800000000.000002");
    assert_eq!(bot.post("application/json", new).await.status(), 202);
    assert!(bot.stop().await.success(), "{}", bot.log_text());
    let keys = moto.keys("hold-1").await;
    let messages: Vec<&String> = keys.iter().filter(|k| k.starts_with("receivedMessages_")).collect();
    assert_eq!(messages.len(), 2, "{keys:?}");
    let s3 = moto.s3().await;
    let mut older = None;
    for key in &messages {
        let plain = moto.read_encrypted("hold-1", key, &key_arn, "official").unwrap();
        if String::from_utf8(plain).unwrap().contains("1700000000") {
            older = Some((*key).clone());
        }
    }
    let older = older.expect("the 2023 message's file");
    let newer = messages.iter().find(|k| ***k != older).unwrap().to_string();

    // November 2023: the older file and the manifest listing it, not the newer file.
    let period = ["--from", "2023-11-01", "--to", "2023-11-30"];
    let (ok, text) = legal_hold(
        &moto.endpoint(),
        &[&["on", "--bucket", "hold-1"][..], &period[..]].concat(),
    );
    assert!(ok, "{text}");
    assert!(text.contains(&format!("legal hold ON: s3://hold-1/{older}")), "{text}");
    assert!(!text.contains(&newer), "{text}");
    assert!(
        text.contains("legal hold ON: s3://hold-1/manifest_"),
        "its manifest too: {text}"
    );
    assert_eq!(hold_of(&s3, "hold-1", &older).await.as_deref(), Some("ON"));
    assert_eq!(hold_of(&s3, "hold-1", &newer).await, None);

    // Held: the server refuses to delete the version.
    let version = s3.head_object().bucket("hold-1").key(&older).send().await.unwrap();
    let version = version.version_id().unwrap().to_owned();
    let delete = |key: String, version: String| {
        let s3 = s3.clone();
        async move {
            s3.delete_object()
                .bucket("hold-1")
                .key(key)
                .version_id(version)
                .send()
                .await
        }
    };
    assert!(
        delete(older.clone(), version.clone()).await.is_err(),
        "a held version cannot be deleted"
    );

    // Again: the same objects, nothing else changes.
    let (ok, again) = legal_hold(
        &moto.endpoint(),
        &[&["on", "--bucket", "hold-1"][..], &period[..]].concat(),
    );
    assert!(ok, "{again}");
    assert_eq!(again, text, "idempotent");

    // Off for every object: the version can go.
    let (ok, text) = legal_hold(&moto.endpoint(), &["off", "--bucket", "hold-1"]);
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!("legal hold OFF on {} object(s)", keys.len())),
        "{text}"
    );
    assert_eq!(hold_of(&s3, "hold-1", &older).await.as_deref(), Some("OFF"));
    delete(older, version).await.unwrap();

    // A time that is not one: a clear refusal, nothing changed.
    let (ok, text) = legal_hold(
        &moto.endpoint(),
        &["on", "--bucket", "hold-1", "--from", "last tuesday"],
    );
    assert!(!ok && text.contains("neither an RFC 3339 time"), "{text}");
    assert_eq!(hold_of(&s3, "hold-1", &newer).await.as_deref(), Some("OFF"));
}
