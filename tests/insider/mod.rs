//! The archive's proofs against the person they are made against: an insider with `s3:*` on the
//! bucket (governance bypass too) but no KMS rights and no bot key. Here `verify s3://` and the
//! daemon's scheduled check, against real moto: plain `DeleteObject` calls (delete markers, which
//! S3 allows even under COMPLIANCE retention) over the newest manifest, its head and its file, a
//! newer version over a listed attachment, a marker over the newest head alone, and, on a bucket
//! that keeps no versions, the newest manifest deleted for good, which only the bot's own head shows.
//!
//! `shred` has the other half: a shred that can neither destroy the wrong period nor be undone.

mod shred;

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::aws::Moto;
use common::{Bot, attachment_form, file_message, metric, run_to_end, text_message, wait_for};

pub(super) const FOLDER: &str = "archive";

fn refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// The environment of a bot uploading to `bucket` with `extra` settings.
fn bot_env(moto: &Moto, bucket: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = moto.env();
    env.push(("WICKRIO_S3_BUCKET_NAME".into(), bucket.into()));
    env.push(("WICKRIO_S3_FOLDER_NAME".into(), FOLDER.into()));
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

/// One run of the bot: a text message and an attachment, then a stop (its manifest and head go up).
async fn one_run(bot: &mut Bot, n: usize) {
    assert_eq!(bot.post("application/json", text_message(n)).await.status(), 202);
    let part = reqwest::multipart::Part::bytes(vec![n as u8; 20_000]).file_name("scan.pdf");
    let r = bot.post_form(attachment_form(&file_message("scan.pdf"), part)).await;
    assert_eq!(r.status(), 202);
    assert!(bot.stop().await.success(), "{}", bot.log_text());
}

/// `retention-bot verify s3://BUCKET/FOLDER --public-key ...`: (exit status, output).
pub(super) fn verify(moto: &Moto, bucket: &str, bot: &Bot, args: &[&str]) -> (Option<i32>, String) {
    run_to_end(
        Command::new(common::BIN)
            .arg("verify")
            .arg(format!("s3://{bucket}/{FOLDER}"))
            .arg("--public-key")
            .arg(bot.root.join("state/public_key.txt"))
            .args(args)
            .env_clear()
            .envs(moto.env()),
    )
}

/// The bucket's keys whose last segment starts with `prefix`, in name (time) order.
pub(super) async fn named(moto: &Moto, bucket: &str, prefix: &str) -> Vec<String> {
    let mut found: Vec<String> = moto
        .keys(bucket)
        .await
        .into_iter()
        .filter(|k| k.rsplit('/').next().unwrap().starts_with(prefix))
        .collect();
    found.sort_by(|a, b| a.rsplit('/').next().cmp(&b.rsplit('/').next()));
    found
}

/// The names a plain manifest object lists.
async fn listed_by(moto: &Moto, bucket: &str, manifest: &str) -> Vec<String> {
    let (text, _) = moto.object(bucket, manifest).await;
    common::archive::manifest_names(&text)
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_markers_and_newer_versions_hide_nothing_from_verify_or_the_scheduled_check() {
    const BUCKET: &str = "insider-1";
    let moto = Moto::start().await;
    moto.create_locked_bucket(BUCKET).await;
    let (topic, queue) = moto.topic_with_queue("insider-events").await;
    let env = bot_env(
        &moto,
        BUCKET,
        &[
            ("WICKRIO_S3_OBJECT_LOCK_MODE", "COMPLIANCE"),
            ("WICKRIO_S3_RETENTION_DAYS", "1"),
            ("WICKRIO_SNS_TOPIC_ARN", &topic),
        ],
    );
    let mut bot = Bot::start(&refs(&env)).await;
    one_run(&mut bot, 1).await;
    bot.spawn().await;
    one_run(&mut bot, 2).await;
    let (code, out) = verify(&moto, BUCKET, &bot, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("2 manifest(s), 4 entries"), "{out}");

    // The insider: delete markers over the second run's manifest, its head and its message file;
    // a newer version (other bytes) over the first run's attachment.
    let manifests = named(&moto, BUCKET, "manifest_").await;
    let heads = named(&moto, BUCKET, "chainhead_").await;
    let second = listed_by(&moto, BUCKET, &manifests[1]).await;
    let message = named(&moto, BUCKET, "receivedMessages_")
        .await
        .into_iter()
        .find(|k| second.iter().any(|n| k.ends_with(n.as_str())))
        .unwrap();
    for key in [&manifests[1], &heads[1], &message] {
        moto.hide(BUCKET, key).await;
    }
    let first = listed_by(&moto, BUCKET, &manifests[0]).await;
    let first_attachment = first.iter().find(|n| n.starts_with("attachment_")).unwrap();
    let time = first_attachment.split('_').nth(1).unwrap();
    let attachment = named(&moto, BUCKET, &format!("attachment_{time}")).await.remove(0);
    let (body, metadata) = moto.object(BUCKET, &attachment).await;
    moto.put_raw(BUCKET, &attachment, vec![0x42; body.len()], metadata)
        .await;
    assert!(
        !moto.keys(BUCKET).await.contains(&manifests[1]),
        "a plain listing no longer shows the second run's manifest"
    );

    // verify reads the bot's versions: the chain is whole, and each hiding is named.
    let (code, out) = verify(&moto, BUCKET, &bot, &[]);
    assert_eq!(code, Some(1), "{out}");
    for (word, key) in [
        ("HIDDEN", &manifests[1]),
        ("HIDDEN", &heads[1]),
        ("HIDDEN", &message),
        ("REPLACED", &attachment),
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("{word} s3://{BUCKET}/{key}:"))),
            "{word} {key}:\n{out}"
        );
    }
    for absent in ["TRUNCATED", "MISSING", "CHAIN BROKEN", "ALTERED", "NOTE:"] {
        assert!(!out.contains(absent), "{absent}:\n{out}");
    }
    assert!(
        out.contains("2 manifest(s), 4 entries") && out.contains(", 4 problem(s)"),
        "{out}"
    );
    let (_, json) = verify(&moto, BUCKET, &bot, &["--json"]);
    let report: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(report["versioning"], "enabled", "{json}");

    // The daemon's own check says the same: FAILED, critical, naming what is hidden.
    bot.set_env("WICKRIO_VERIFY_EVERY_HOURS", "0.001");
    bot.spawn().await;
    wait_for(&bot, "a scheduled check", Duration::from_secs(30), async || {
        metric(&bot, "Archive_Checks").await >= 1
    })
    .await;
    assert_eq!(metric(&bot, "Archive_Problems").await, 4, "{}", bot.log_text());
    assert!(bot.stop().await.success(), "{}", bot.log_text());
    let events = moto.drain_queue(&queue).await;
    let failed = events
        .iter()
        .find(|e| {
            e["message"]
                .as_str()
                .unwrap_or_default()
                .starts_with("archive check FAILED")
        })
        .unwrap_or_else(|| panic!("{events:#?}"));
    assert_eq!(failed["severity"], "critical");
    assert!(failed["message"].as_str().unwrap().contains("HIDDEN"), "{failed}");
    assert!(
        !events.iter().any(|e| e["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("archive check passed")),
        "{events:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delete_marker_over_the_newest_head_alone_is_named_and_the_chain_still_reaches_it() {
    const BUCKET: &str = "insider-2";
    let moto = Moto::start().await;
    moto.create_versioned_bucket(BUCKET).await;
    let env = bot_env(&moto, BUCKET, &[]);
    let mut bot = Bot::start(&refs(&env)).await;
    one_run(&mut bot, 1).await;
    bot.spawn().await;
    one_run(&mut bot, 2).await;
    let heads = named(&moto, BUCKET, "chainhead_").await;
    moto.hide(BUCKET, &heads[1]).await;
    let (code, out) = verify(&moto, BUCKET, &bot, &[]);
    assert_eq!(code, Some(1), "{out}");
    let problems: Vec<&str> = out.lines().filter(|l| !l.starts_with("s3://")).collect();
    assert_eq!(problems.len(), 1, "{out}");
    assert!(
        problems[0].starts_with(&format!("HIDDEN s3://{BUCKET}/{}:", heads[1])),
        "{out}"
    );

    // Newest manifest, its head and its files deleted for good (no lock stands in the way): with
    // the head kept elsewhere the cut shows; the bucket's versions alone cannot tell.
    let kept_head = bot.root.join("kept-head.json");
    std::fs::write(&kept_head, moto_object_version_text(&moto, BUCKET, &heads[1]).await).unwrap();
    let manifests = named(&moto, BUCKET, "manifest_").await;
    let second = listed_by(&moto, BUCKET, &manifests[1]).await;
    for key in moto.keys(BUCKET).await {
        if second
            .iter()
            .any(|n| key.ends_with(n.as_str()) || same_attachment(n, &key))
        {
            moto.erase(BUCKET, &key).await;
        }
    }
    moto.erase(BUCKET, &manifests[1]).await;
    moto.erase(BUCKET, &heads[1]).await;
    let (code, out) = verify(&moto, BUCKET, &bot, &[]);
    assert_eq!(code, Some(0), "without a head kept elsewhere nothing shows: {out}");
    let (code, out) = verify(&moto, BUCKET, &bot, &["--head", kept_head.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("TRUNCATED: the archive ends at entry 2"), "{out}");
}

/// The text of a key's newest version holding data (under a delete marker, too).
async fn moto_object_version_text(moto: &Moto, bucket: &str, key: &str) -> Vec<u8> {
    let s3 = moto.s3().await;
    let (versions, _) = moto.versions_of(bucket, key).await;
    let version = versions.first().unwrap();
    let object = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .set_version_id(version.version_id().map(str::to_owned))
        .send()
        .await
        .unwrap();
    object.body.collect().await.unwrap().to_vec()
}

/// Whether the object `key` is the attachment an entry names (`attachment_<time>_<name>`, stored
/// as `attachment_<time>_<bot>-<hash>_<name>`).
fn same_attachment(name: &str, key: &str) -> bool {
    let object = key.rsplit('/').next().unwrap();
    name.starts_with("attachment_")
        && object.starts_with("attachment_")
        && name.split('_').nth(1) == object.split('_').nth(1)
        && name.rsplit('_').next() == object.rsplit('_').next()
}

#[tokio::test(flavor = "multi_thread")]
async fn on_a_bucket_without_versions_the_daemon_finds_the_cut_against_its_own_chain_head() {
    const BUCKET: &str = "insider-3";
    let moto = Moto::start().await;
    moto.create_bucket(BUCKET).await;
    let env = bot_env(&moto, BUCKET, &[]);
    let mut bot = Bot::start(&refs(&env)).await;
    one_run(&mut bot, 1).await;
    bot.spawn().await;
    one_run(&mut bot, 2).await;
    // The newest manifest, its head and everything it lists, gone for good.
    let manifests = named(&moto, BUCKET, "manifest_").await;
    let second = listed_by(&moto, BUCKET, &manifests[1]).await;
    for key in moto.keys(BUCKET).await {
        let object = key.rsplit('/').next().unwrap();
        if object.contains(manifests[1].rsplit('/').next().unwrap().trim_end_matches(".txt"))
            || second.iter().any(|n| object == n || same_attachment(n, &key))
        {
            moto.erase(BUCKET, &key).await;
        }
    }
    // The bucket alone cannot tell, and verify says so.
    let (code, out) = verify(&moto, BUCKET, &bot, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("NOTE: this bucket keeps no versions"), "{out}");
    // The daemon knows how far its chain went (its state directory): TRUNCATED.
    bot.set_env("WICKRIO_VERIFY_EVERY_HOURS", "0.001");
    bot.spawn().await;
    wait_for(&bot, "a scheduled check", Duration::from_secs(30), async || {
        metric(&bot, "Archive_Checks").await >= 1
    })
    .await;
    assert!(metric(&bot, "Archive_Problems").await >= 1, "{}", bot.log_text());
    assert!(bot.stop().await.success());
    let log = bot.log_text();
    assert!(
        log.contains("TRUNCATED: the archive ends at entry 2, but the bot's own chain head"),
        "{log}"
    );
}
