//! Data-key reuse against moto through a recording proxy: with `WICKRIO_KMS_DATAKEY_MAX_OBJECTS`, N
//! encrypted objects cost ⌈N/max⌉ `GenerateDataKey` calls (counted at the proxy and by the
//! `KMS_Requests` metric), objects that share a key never share an IV, and every object still opens
//! with `decrypt` and verifies; with `WICKRIO_KMS_DATAKEY_MAX_AGE_SECS` a key older than that is
//! not used again. Without either, every object gets a key of its own.

use crate::common;

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::time::Duration;

use common::aws::{Moto, RecordingProxy};
use common::{Bot, attachment_form, file_message, metric};

const FOLDER: &str = "retention/keys";

/// A bot uploading encrypted to `bucket` through the proxy, with `extra` settings.
async fn bot(proxy: &RecordingProxy, bucket: &str, key_arn: &str, extra: &[(&str, &str)]) -> Bot {
    let mut env = Moto::env_via(&proxy.endpoint());
    for (k, v) in [
        ("WICKRIO_S3_BUCKET_NAME", bucket),
        ("WICKRIO_S3_FOLDER_NAME", FOLDER),
        ("WICKRIO_KMS_MSTRKEY_ARN", key_arn),
    ] {
        env.push((k.to_owned(), v.to_owned()));
    }
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Bot::start(&env).await
}

async fn post_attachment(bot: &Bot, i: usize) {
    let part = reqwest::multipart::Part::bytes(vec![i as u8; 3000 + i]).file_name(format!("a{i}.bin"));
    let r = bot
        .post_form(attachment_form(&file_message(&format!("a{i}.bin")), part))
        .await;
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
}

/// Waits until every attachment is in the bucket (the bot deletes each once S3 has it).
async fn uploaded(bot: &Bot) {
    let dir = bot.attachments_dir();
    common::wait_for(bot, "the attachments' uploads", Duration::from_secs(20), async || {
        common::file_names(&dir).iter().all(|n| !n.starts_with("attachment_"))
    })
    .await;
}

/// The GenerateDataKey calls the proxy saw.
fn data_key_calls(proxy: &RecordingProxy) -> usize {
    proxy
        .requests()
        .iter()
        .filter(|r| r.header("x-amz-target") == Some(b"TrentService.GenerateDataKey".as_slice()))
        .count()
}

/// Each object's wrapped data key and IV.
async fn envelopes(moto: &Moto, bucket: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for key in moto.keys(bucket).await {
        let (_, meta) = moto.object(bucket, &key).await;
        out.push((meta["x-amz-key-v2"].clone(), meta["x-amz-iv"].clone()));
    }
    out
}

/// `decrypt` of the whole bucket with the bot's key: every object opens and the archive verifies.
fn decrypts_and_verifies(moto: &Moto, bucket: &str, bot: &Bot) {
    let dest = bot.root.join("restored");
    let (code, text) = common::run_to_end(
        Command::new(common::BIN)
            .args(["decrypt", "--bucket", bucket, "--prefix", FOLDER, "--dest"])
            .arg(&dest)
            .arg("--public-key")
            .arg(bot.root.join("state/public_key.txt"))
            .env_clear()
            .envs(Moto::env_via(&moto.endpoint())),
    );
    assert_eq!(code, Some(0), "{text}");
}

/// Ten attachments, four objects to a key: ⌈N/4⌉ calls at the proxy, in the metric and in
/// CloudWatch, no key serving more than four objects, no IV twice, and the archive decrypts.
async fn reused_keys_cost_one_call_per_batch(moto: &Moto, proxy: &RecordingProxy, key_arn: &str) {
    // Ten attachments, four objects to a key; the count goes to CloudWatch too.
    let mut b = bot(
        proxy,
        "keys-reused",
        key_arn,
        &[
            ("WICKRIO_KMS_DATAKEY_MAX_OBJECTS", "4"),
            ("WICKRIO_METRICS_TYPE", "cloudwatch"),
            ("WICKRIO_METRICS_INTERVAL_SECS", "2"),
        ],
    )
    .await;
    for i in 0..10 {
        post_attachment(&b, i).await;
    }
    uploaded(&b).await;
    assert_eq!(
        metric(&b, "KMS_Requests").await,
        data_key_calls(proxy) as u64,
        "the metric counts each call"
    );
    assert!(b.stop().await.success(), "{}", b.log_text());
    let objects = envelopes(moto, "keys-reused").await;
    assert!(
        objects.len() >= 12,
        "ten attachments, a message file, a manifest: {}",
        objects.len()
    );
    assert_eq!(
        data_key_calls(proxy),
        objects.len().div_ceil(4),
        "{} objects",
        objects.len()
    );
    assert_eq!(
        moto.metric_sum("KMS_Requests", "testbot").await,
        Some(data_key_calls(proxy) as f64),
        "CloudWatch has every call (the last datapoint goes out at shutdown)"
    );
    let mut by_key: HashMap<&str, usize> = HashMap::new();
    for (wrapped, _) in &objects {
        *by_key.entry(wrapped).or_default() += 1;
    }
    assert!(
        by_key.values().all(|n| *n <= 4),
        "no key serves more than four objects: {by_key:?}"
    );
    let ivs: HashSet<&str> = objects.iter().map(|(_, iv)| iv.as_str()).collect();
    assert_eq!(ivs.len(), objects.len(), "every object has an IV of its own");
    decrypts_and_verifies(moto, "keys-reused", &b);
}

/// Without reuse: a key per object, as before.
async fn without_reuse_each_object_has_its_own_key(moto: &Moto, proxy: &RecordingProxy, key_arn: &str) {
    let before = data_key_calls(proxy);
    let mut b = bot(proxy, "keys-own", key_arn, &[]).await;
    for i in 0..3 {
        post_attachment(&b, i).await;
    }
    assert!(b.stop().await.success(), "{}", b.log_text());
    let objects = envelopes(moto, "keys-own").await;
    assert_eq!(data_key_calls(proxy) - before, objects.len());
    let keys: HashSet<&str> = objects.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys.len(), objects.len());
}

/// A key a second old is not used again, however few objects it served; the archive decrypts.
async fn an_aged_key_is_not_used_again(moto: &Moto, proxy: &RecordingProxy, key_arn: &str) {
    let mut b = bot(
        proxy,
        "keys-aged",
        key_arn,
        &[
            ("WICKRIO_KMS_DATAKEY_MAX_AGE_SECS", "1"),
            ("WICKRIO_KMS_DATAKEY_MAX_OBJECTS", "100"),
        ],
    )
    .await;
    for i in 0..3 {
        post_attachment(&b, i).await;
        uploaded(&b).await;
        tokio::time::sleep(Duration::from_millis(1300)).await;
    }
    assert!(b.stop().await.success(), "{}", b.log_text());
    let objects = envelopes(moto, "keys-aged").await;
    let keys: HashSet<&str> = objects.iter().map(|(k, _)| k.as_str()).collect();
    assert!(
        keys.len() >= 3,
        "each attachment came after the last key aged: {} keys",
        keys.len()
    );
    decrypts_and_verifies(moto, "keys-aged", &b);
}

/// V3 with one reused key: one wrapped key, a Message ID per object, the official client's default
/// policy opens them, and the archive decrypts.
async fn v3_with_one_reused_key(moto: &Moto, proxy: &RecordingProxy, key_arn: &str) {
    // The committing format with one reused key: one wrapped key, a Message ID (so a content key)
    // per object, and the official client's default policy opens them.
    let mut b = bot(
        proxy,
        "keys-v3",
        key_arn,
        &[
            ("WICKRIO_KMS_DATAKEY_MAX_OBJECTS", "100"),
            ("WICKRIO_S3_ENCRYPTION_FORMAT", "v3"),
        ],
    )
    .await;
    for i in 0..3 {
        post_attachment(&b, i).await;
    }
    assert!(b.stop().await.success(), "{}", b.log_text());
    let mut wrapped = HashSet::new();
    let mut ids = HashSet::new();
    let keys = moto.keys("keys-v3").await;
    for key in &keys {
        let (_, meta) = moto.object("keys-v3", key).await;
        wrapped.insert(meta["x-amz-3"].clone());
        ids.insert(meta["x-amz-i"].clone());
    }
    assert_eq!(
        (wrapped.len(), ids.len()),
        (1, keys.len()),
        "one data key, a Message ID each"
    );
    let attachment = keys.iter().find(|k| k.contains("attachment_")).unwrap();
    let plain = moto
        .read_encrypted("keys-v3", attachment, key_arn, "official-default")
        .unwrap();
    assert!(plain.len() >= 3000);
    decrypts_and_verifies(moto, "keys-v3", &b);
}

#[tokio::test(flavor = "multi_thread")]
async fn reused_data_keys_cost_one_kms_call_per_batch_and_never_repeat_an_iv() {
    let moto = Moto::start().await;
    let key_arn = moto.create_key().await;
    let proxy = RecordingProxy::start(moto.port).await;
    for bucket in ["keys-reused", "keys-own", "keys-aged", "keys-v3"] {
        moto.s3().await.create_bucket().bucket(bucket).send().await.unwrap();
    }
    reused_keys_cost_one_call_per_batch(&moto, &proxy, &key_arn).await;
    without_reuse_each_object_has_its_own_key(&moto, &proxy, &key_arn).await;
    an_aged_key_is_not_used_again(&moto, &proxy, &key_arn).await;
    v3_with_one_reused_key(&moto, &proxy, &key_arn).await;
}

#[test]
fn reuse_settings_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let arn = "arn:aws:kms:us-east-1:123456789012:key/k";
    let cases: [(&[(&str, &str)], &str); 4] = [
        (
            &[("WICKRIO_KMS_DATAKEY_MAX_OBJECTS", "0")],
            "WICKRIO_KMS_DATAKEY_MAX_OBJECTS",
        ),
        (&[("WICKRIO_KMS_DATAKEY_MAX_OBJECTS", "2000000")], "1 to 1048576"),
        (&[("WICKRIO_KMS_DATAKEY_MAX_AGE_SECS", "soon")], "is not a whole number"),
        (
            &[
                ("WICKRIO_KMS_MSTRKEY_ARN", ""),
                ("WICKRIO_KMS_DATAKEY_MAX_AGE_SECS", "60"),
            ],
            "WICKRIO_KMS_MSTRKEY_ARN is not",
        ),
    ];
    for (extra, says) in cases {
        let mut bot = Bot::prepare(
            tmp.path(),
            &[("WICKRIO_S3_BUCKET_NAME", "b-1"), ("WICKRIO_KMS_MSTRKEY_ARN", arn)],
        );
        for (k, v) in extra {
            if v.is_empty() {
                bot.env.retain(|(key, _)| key != k);
            } else {
                bot.set_env(k, v);
            }
        }
        let (code, text) = common::run_to_end(&mut bot.command());
        assert_eq!(code, Some(2), "{extra:?}: {text}");
        assert!(text.contains(says), "{extra:?}: {text}");
    }
}
