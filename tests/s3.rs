//! The S3 sink and the decrypt tool against a real moto server: plain and encrypted uploads, the
//! official S3 Encryption Client reading what the bot wrote, outages, KMS refusals, kill -9 in the
//! middle of a multipart upload, and tampering.

use crate::common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use base64::Engine as _;
use common::aws::{Moto, Proxy, RecordingProxy};
use common::{Bot, attachment_form, closed_message_files, file_message, file_names, metric, text_message, wait_for};

const FOLDER: &str = "retention/bot1";

fn refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// A bot uploading to `bucket` through `endpoint`, with `extra` settings.
async fn s3_bot(endpoint: &str, bucket: &str, extra: &[(&str, &str)]) -> Bot {
    let mut env = Moto::env_via(endpoint);
    env.push(("WICKRIO_S3_BUCKET_NAME".into(), bucket.into()));
    env.push(("WICKRIO_S3_FOLDER_NAME".into(), FOLDER.into()));
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Bot::start(&refs(&env)).await
}

fn last_segment(key: &str) -> &str {
    key.rsplit('/').next().unwrap()
}

/// Deterministic, incompressible-looking bytes.
fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Posts three text messages and one attachment; returns the text lines and the attachment.
async fn post_messages_and_attachment(bot: &Bot, attachment: &[u8]) -> Vec<String> {
    let lines: Vec<String> = (0..3).map(text_message).collect();
    let r = bot.post("application/x-ndjson", lines.join("\n")).await;
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let part = reqwest::multipart::Part::bytes(attachment.to_vec()).file_name("report.pdf");
    let r = bot.post_form(attachment_form(&file_message("report.pdf"), part)).await;
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    lines
}

/// `decrypt` of the bucket into the bot's `restored` directory, checked with the bot's key; asserts it
/// succeeded and the restored archive verifies. Returns the directory and what it printed.
fn restore_verified(endpoint: &str, bucket: &str, bot: &Bot) -> (std::path::PathBuf, String) {
    let dest = bot.root.join("restored");
    let out = decrypt_tool(endpoint, bucket, &dest, bot);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(" 0 problem(s)"), "{stdout}");
    (dest, stdout)
}

/// `decrypt` of `bucket` (through `endpoint`) into `dest`, checked with `bot`'s public key.
fn decrypt_tool(endpoint: &str, bucket: &str, dest: &Path, bot: &Bot) -> Output {
    std::process::Command::new(common::BIN)
        .args(["decrypt", "--bucket", bucket, "--prefix", FOLDER, "--dest"])
        .arg(dest)
        .arg("--public-key")
        .arg(bot.root.join("state/public_key.txt"))
        .env_clear()
        .envs(Moto::env_via(endpoint))
        .output()
        .unwrap()
}

fn keys_of<'a>(keys: &'a [String], prefix: &str) -> Vec<&'a String> {
    keys.iter().filter(|k| last_segment(k).starts_with(prefix)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_upload_carries_metadata_removes_local_copies_and_decrypt_copies_back() {
    let moto = Moto::start().await;
    moto.create_bucket("plain-1").await;
    let mut bot = s3_bot(&moto.endpoint(), "plain-1", &[]).await;
    let attachment = payload(70_000, 1);
    let lines = post_messages_and_attachment(&bot, &attachment).await;
    assert!(bot.stop().await.success(), "{}", bot.log_text());

    let keys = moto.keys("plain-1").await;
    assert!(keys.iter().all(|k| k.starts_with("retention/bot1/")), "{keys:?}");
    let (messages, attachments, manifests) = (
        keys_of(&keys, "receivedMessages_"),
        keys_of(&keys, "attachment_"),
        keys_of(&keys, "manifest_"),
    );
    assert_eq!((messages.len(), attachments.len()), (1, 1), "{keys:?}");
    assert!(!manifests.is_empty(), "{keys:?}");

    let (body, meta) = moto.object("plain-1", messages[0]).await;
    assert_eq!(meta["wickrio-type"], "message");
    assert_eq!(meta["wickrio-file-path"], last_segment(messages[0]));
    let text = String::from_utf8(body).unwrap();
    assert_eq!(text.lines().take(3).collect::<Vec<_>>(), lines);
    assert_eq!(text.lines().count(), 4, "three texts and the file message");

    let (body, meta) = moto.object("plain-1", attachments[0]).await;
    assert_eq!(body, attachment);
    assert_eq!(meta["wickrio-type"], "file");
    // A keyed hash of the content, by which a create-only retry recognises its own earlier upload:
    // not the content's plain SHA-256, which would let a reader of the metadata confirm a guess.
    let mac = &meta["wickrio-content-mac"];
    assert!(mac.len() == 64 && mac.bytes().all(|b| b.is_ascii_hexdigit()), "{mac}");
    assert_ne!(*mac, hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&attachment)));
    assert!(!meta.contains_key("wickrio-sha256"));
    let restored_name = &meta["wickrio-file-path"];
    assert!(restored_name.starts_with("attachment_") && restored_name.ends_with("_report.pdf"));
    assert!(!meta.contains_key("x-amz-key-v2"), "plain upload carries no envelope");
    let (_, meta) = moto.object("plain-1", manifests[0]).await;
    assert_eq!(meta["wickrio-type"], "manifest");

    assert_eq!(closed_message_files(&bot.messages_dir()), Vec::<String>::new());
    assert!(
        file_names(&bot.messages_dir())
            .iter()
            .all(|n| !n.starts_with("manifest_"))
    );
    assert!(
        file_names(&bot.attachments_dir())
            .iter()
            .all(|n| !n.starts_with("attachment_"))
    );

    let (dest, stdout) = restore_verified(&moto.endpoint(), "plain-1", &bot);
    assert!(stdout.contains("copied: "), "{stdout}");
    assert_eq!(
        std::fs::read(dest.join("attachments").join(restored_name)).unwrap(),
        attachment
    );
}

/// A bot that uploaded three messages and a multipart-sized attachment, encrypted.
struct EncryptedArchive {
    moto: Moto,
    bot: Bot,
    key_arn: String,
    lines: Vec<String>,
    attachment: Vec<u8>,
    keys: Vec<String>,
}

const ENC_BUCKET: &str = "enc-1";

async fn encrypted_archive() -> EncryptedArchive {
    let moto = Moto::start().await;
    moto.create_bucket(ENC_BUCKET).await;
    let key_arn = moto.create_key().await;
    let mut bot = s3_bot(&moto.endpoint(), ENC_BUCKET, &[("WICKRIO_KMS_MSTRKEY_ARN", &key_arn)]).await;
    // Over the 8 MiB part size: a multipart upload, encrypted as one GCM stream across parts.
    let attachment = payload(20 << 20, 2);
    let lines = post_messages_and_attachment(&bot, &attachment).await;
    assert!(bot.stop().await.success(), "{}", bot.log_text());
    let keys = moto.keys(ENC_BUCKET).await;
    EncryptedArchive {
        moto,
        bot,
        key_arn,
        lines,
        attachment,
        keys,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn encrypted_upload_has_every_v2_key_and_opens_with_the_official_client_and_the_sample_logic() {
    let a = encrypted_archive().await;
    let messages = keys_of(&a.keys, "receivedMessages_");
    let attachments = keys_of(&a.keys, "attachment_");
    assert_eq!((messages.len(), attachments.len()), (1, 1), "{:?}", a.keys);

    for (key, check_plain) in [(messages[0], None), (attachments[0], Some(&a.attachment))] {
        let (body, meta) = a.moto.object(ENC_BUCKET, key).await;
        let b64 = base64::engine::general_purpose::STANDARD;
        assert_eq!(b64.decode(&meta["x-amz-iv"]).unwrap().len(), 12);
        assert!(!b64.decode(&meta["x-amz-key-v2"]).unwrap().is_empty());
        assert_eq!(meta["x-amz-cek-alg"], "AES/GCM/NoPadding");
        assert_eq!(meta["x-amz-tag-len"], "128");
        assert_eq!(meta["x-amz-wrap-alg"], "kms+context");
        let matdesc: HashMap<String, String> = serde_json::from_str(&meta["x-amz-matdesc"]).unwrap();
        assert_eq!(matdesc["aws:x-amz-cek-alg"], "AES/GCM/NoPadding");
        let plain_len: usize = meta["x-amz-unencrypted-content-length"].parse().unwrap();
        assert_eq!(body.len(), plain_len + 16, "ciphertext plus the 16-byte tag");

        let official = a.moto.read_encrypted(ENC_BUCKET, key, &a.key_arn, "official").unwrap();
        let sample = a.moto.read_encrypted(ENC_BUCKET, key, &a.key_arn, "sample").unwrap();
        assert_eq!(official, sample);
        assert_eq!(official.len(), plain_len);
        assert_ne!(body[..plain_len], official[..], "the stored body is not the plaintext");
        match check_plain {
            Some(expected) => assert_eq!(&official, expected),
            None => {
                let text = String::from_utf8(official).unwrap();
                assert_eq!(text.lines().take(3).collect::<Vec<_>>(), a.lines);
            }
        }
    }
    // The manifest is encrypted too.
    let (_, meta) = a.moto.object(ENC_BUCKET, keys_of(&a.keys, "manifest_")[0]).await;
    assert!(meta.contains_key("x-amz-key-v2"));
}

#[tokio::test(flavor = "multi_thread")]
async fn decrypt_restores_messages_and_attachments_and_the_archive_verifies() {
    let a = encrypted_archive().await;
    let (dest, stdout) = restore_verified(&a.moto.endpoint(), ENC_BUCKET, &a.bot);
    assert_eq!(stdout.matches("decrypted: ").count(), a.keys.len(), "{stdout}");

    let message_file = last_segment(keys_of(&a.keys, "receivedMessages_")[0]);
    let text = std::fs::read_to_string(dest.join(message_file)).unwrap();
    assert_eq!(text.lines().take(3).collect::<Vec<_>>(), a.lines);
    let attachments = file_names(&dest.join("attachments"));
    assert_eq!(attachments.len(), 1);
    assert_eq!(
        std::fs::read(dest.join("attachments").join(&attachments[0])).unwrap(),
        a.attachment
    );
    // The message line names the attachment by the name it was restored under.
    assert!(text.contains(&attachments[0]), "{text}");

    // A second run finds everything already there and changes nothing.
    let again = decrypt_tool(&a.moto.endpoint(), ENC_BUCKET, &dest, &a.bot);
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{stdout}");
    assert_eq!(stdout.matches("already there: ").count(), a.keys.len(), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_object_fails_decrypt_clearly_and_leaves_no_plaintext() {
    let a = encrypted_archive().await;
    let key = keys_of(&a.keys, "receivedMessages_")[0].clone();
    let (mut body, meta) = a.moto.object(ENC_BUCKET, &key).await;
    body[10] ^= 0x01;
    a.moto.put_raw(ENC_BUCKET, &key, body, meta).await;

    let dest = a.bot.root.join("restored");
    let out = decrypt_tool(&a.moto.endpoint(), ENC_BUCKET, &dest, &a.bot);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("FAILED s3://{ENC_BUCKET}/{key}")) && stderr.contains("tag does not match"),
        "{stderr}"
    );
    assert!(
        !dest.join(last_segment(&key)).exists(),
        "no unauthenticated plaintext left behind"
    );
    // Everything else was restored; only the tampered file is missing, and verify says so.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches("decrypted: ").count(), a.keys.len() - 1, "{stdout}");
    assert!(stdout.contains(&format!("MISSING {}", last_segment(&key))), "{stdout}");
    // Nothing but restored files in the destination: no temporary files.
    let all: Vec<String> = file_names(&dest).into_iter().filter(|n| n != "attachments").collect();
    assert!(
        all.iter().all(|n| a.keys.iter().any(|k| k.ends_with(n.as_str()))),
        "{all:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_outage_keeps_files_on_disk_then_uploads_them_when_it_returns() {
    let moto = Moto::start().await;
    moto.create_bucket("outage-1").await;
    let proxy = Proxy::start(moto.port).await;
    proxy.set_up(false);
    let bot = s3_bot(&proxy.endpoint(), "outage-1", &[("WICKRIO_COMP_TIMEROTATE", "0.02")]).await;
    let r = bot.post("application/json", text_message(1)).await;
    assert_eq!(r.status(), 202);

    wait_for(&bot, "a failed upload", Duration::from_secs(30), async || {
        metric(&bot, "S3_Post_Errors").await >= 2
    })
    .await;
    let waiting = closed_message_files(&bot.messages_dir());
    assert_eq!(waiting.len(), 1, "the closed file stays on disk");
    assert!(metric(&bot, "S3_Backlog_Files").await >= 1);
    assert!(metric(&bot, "S3_Backlog_Bytes").await > 0);
    assert!(moto.keys("outage-1").await.is_empty());

    proxy.set_up(true);
    wait_for(
        &bot,
        "the upload after the outage",
        Duration::from_secs(60),
        async || closed_message_files(&bot.messages_dir()).is_empty(),
    )
    .await;
    let keys = moto.keys("outage-1").await;
    assert!(keys.contains(&format!("{FOLDER}/{}", waiting[0])), "{keys:?}");
    let (body, _) = moto.object("outage-1", &format!("{FOLDER}/{}", waiting[0])).await;
    assert_eq!(String::from_utf8(body).unwrap(), format!("{}\n", text_message(1)));
    assert_eq!(metric(&bot, "S3_Backlog_Files").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn kms_refusal_uploads_nothing_and_keeps_the_file() {
    let moto = Moto::start().await;
    moto.create_bucket("denied-1").await;
    // moto does not enforce disabled keys; a key that does not exist is refused (NotFoundException).
    let missing = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000";
    let bot = s3_bot(
        &moto.endpoint(),
        "denied-1",
        &[
            ("WICKRIO_KMS_MSTRKEY_ARN", missing),
            ("WICKRIO_COMP_TIMEROTATE", "0.02"),
        ],
    )
    .await;
    let r = bot.post("application/json", text_message(1)).await;
    assert_eq!(r.status(), 202);
    wait_for(&bot, "a refused upload", Duration::from_secs(30), async || {
        metric(&bot, "S3_Post_Errors").await >= 1
    })
    .await;
    // Give a wrong fallback every chance to happen.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        moto.keys("denied-1").await.is_empty(),
        "nothing may be uploaded unencrypted"
    );
    assert_eq!(closed_message_files(&bot.messages_dir()).len(), 1);
    let log = bot.log_text();
    assert!(
        log.contains("upload REFUSED") && log.contains("NotFoundException"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kms_outage_uploads_nothing_until_kms_returns_then_encrypts() {
    let moto = Moto::start().await;
    moto.create_bucket("kmsdown-1").await;
    let key_arn = moto.create_key().await;
    // S3 stays reachable; only KMS goes through the proxy, which is down.
    let kms_proxy = Proxy::start(moto.port).await;
    kms_proxy.set_up(false);
    let kms_endpoint = kms_proxy.endpoint();
    let bot = s3_bot(
        &moto.endpoint(),
        "kmsdown-1",
        &[
            ("WICKRIO_KMS_MSTRKEY_ARN", &key_arn),
            ("WICKRIO_COMP_TIMEROTATE", "0.02"),
            ("AWS_ENDPOINT_URL_KMS", &kms_endpoint),
        ],
    )
    .await;
    let r = bot.post("application/json", text_message(1)).await;
    assert_eq!(r.status(), 202);
    wait_for(&bot, "a failed upload", Duration::from_secs(30), async || {
        metric(&bot, "S3_Post_Errors").await >= 2
    })
    .await;
    assert!(
        moto.keys("kmsdown-1").await.is_empty(),
        "nothing may be uploaded unencrypted"
    );
    let waiting = closed_message_files(&bot.messages_dir());
    assert_eq!(waiting.len(), 1);

    kms_proxy.set_up(true);
    wait_for(
        &bot,
        "the upload once KMS is back",
        Duration::from_secs(60),
        async || closed_message_files(&bot.messages_dir()).is_empty(),
    )
    .await;
    let key = format!("{FOLDER}/{}", waiting[0]);
    let (body, meta) = moto.object("kmsdown-1", &key).await;
    assert!(meta.contains_key("x-amz-key-v2"), "{meta:?}");
    let plain = moto.read_encrypted("kmsdown-1", &key, &key_arn, "official").unwrap();
    assert_eq!(String::from_utf8(plain).unwrap(), format!("{}\n", text_message(1)));
    assert_ne!(body, format!("{}\n", text_message(1)).into_bytes());
}

#[tokio::test(flavor = "multi_thread")]
async fn kill9_during_a_multipart_upload_then_restart_leaves_one_object_and_no_local_copy() {
    let moto = Moto::start().await;
    moto.create_bucket("crash-1").await;
    let proxy = Proxy::start(moto.port).await;
    proxy.set_rate(4 << 20);
    let mut bot = s3_bot(&proxy.endpoint(), "crash-1", &[]).await;
    let attachment = payload(24 << 20, 3);
    let part = reqwest::multipart::Part::bytes(attachment.clone()).file_name("big.bin");
    let r = bot.post_form(attachment_form(&file_message("big.bin"), part)).await;
    assert_eq!(r.status(), 202);
    let sent = proxy.sent.clone();
    wait_for(
        &bot,
        "the upload to be under way",
        Duration::from_secs(30),
        async || sent.load(std::sync::atomic::Ordering::SeqCst) > 10 << 20,
    )
    .await;
    bot.kill9().await;
    assert_eq!(
        moto.unfinished_uploads("crash-1").await,
        1,
        "the killed upload is left unfinished"
    );
    assert!(keys_of(&moto.keys("crash-1").await, "attachment_").is_empty());

    proxy.set_rate(0);
    let mut env = Moto::env_via(&proxy.endpoint());
    env.push(("WICKRIO_S3_BUCKET_NAME".into(), "crash-1".into()));
    env.push(("WICKRIO_S3_FOLDER_NAME".into(), FOLDER.into()));
    let mut bot = Bot::prepare(&bot.root.clone(), &refs(&env));
    bot.spawn().await;
    wait_for(&bot, "the upload after restart", Duration::from_secs(60), async || {
        !file_names(&bot.attachments_dir())
            .iter()
            .any(|n| n.starts_with("attachment_"))
    })
    .await;
    let keys = moto.keys("crash-1").await;
    let attachments = keys_of(&keys, "attachment_");
    assert_eq!(attachments.len(), 1, "{keys:?}");
    assert_eq!(moto.object("crash-1", attachments[0]).await.0, attachment);
    assert_eq!(
        moto.unfinished_uploads("crash-1").await,
        0,
        "the abandoned upload was aborted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_non_ascii_file_name_travels_as_ascii_metadata_and_decrypt_restores_it() {
    let moto = Moto::start().await;
    moto.create_bucket("names-1").await;
    let key_arn = moto.create_key().await;
    let proxy = RecordingProxy::start(moto.port).await;
    let mut bot = s3_bot(&proxy.endpoint(), "names-1", &[("WICKRIO_KMS_MSTRKEY_ARN", &key_arn)]).await;
    let name = "résumé 報告.pdf";
    let content = payload(3000, 9);
    let part = reqwest::multipart::Part::bytes(content.clone()).file_name("x.pdf");
    let r = bot.post_form(attachment_form(&file_message(name), part)).await;
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    assert!(bot.stop().await.success(), "{}", bot.log_text());

    // What S3 would see: every user metadata header is printable US-ASCII (real S3 refuses anything
    // else with 403 SignatureDoesNotMatch), and the file path decodes to the name.
    let requests = proxy.requests();
    let puts: Vec<_> = requests.iter().filter(|r| r.method == "PUT").collect();
    assert!(!puts.is_empty());
    for r in &puts {
        for (header, value) in r.headers.iter().filter(|(h, _)| h.starts_with("x-amz-meta-")) {
            assert!(
                value.iter().all(|b| (0x20..0x7f).contains(b)),
                "{header} of {} is not ASCII: {:?}",
                r.path,
                String::from_utf8_lossy(value)
            );
        }
    }
    let sent_path = puts
        .iter()
        .find_map(|r| {
            r.header("x-amz-meta-wickrio-file-path")
                .filter(|v| v.starts_with(b"attachment_"))
        })
        .expect("the attachment's PUT");
    let sent_path = String::from_utf8(sent_path.to_vec()).unwrap();
    assert!(
        sent_path.ends_with("_r%C3%A9sum%C3%A9%20%E5%A0%B1%E5%91%8A.pdf"),
        "{sent_path}"
    );

    let (dest, _) = restore_verified(&moto.endpoint(), "names-1", &bot);
    let restored = file_names(&dest.join("attachments"));
    assert_eq!(restored.len(), 1, "{restored:?}");
    assert!(restored[0].ends_with(&format!("_{name}")), "{restored:?}");
    assert_eq!(
        std::fs::read(dest.join("attachments").join(&restored[0])).unwrap(),
        content
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_s3_refuses_waits_aside_while_the_files_behind_it_upload() {
    let moto = Moto::start().await;
    moto.create_bucket("refused-1").await;
    let proxy = RecordingProxy::start(moto.port).await;
    proxy.refuse_paths_containing(Some("blocked"));
    let mut bot = s3_bot(&proxy.endpoint(), "refused-1", &[("WICKRIO_COMP_TIMEROTATE", "0.02")]).await;
    // Two refused files first: one for each upload worker.
    for name in ["blocked-1.bin", "blocked-2.bin", "fine.bin"] {
        let part = reqwest::multipart::Part::bytes(payload(5000, 3)).file_name(name);
        let r = bot.post_form(attachment_form(&file_message(name), part)).await;
        assert_eq!(r.status(), 202);
    }
    assert_eq!(bot.post("application/json", text_message(1)).await.status(), 202);

    // Refused files are retried every two minutes: anything stuck behind them would wait that long.
    wait_for(
        &bot,
        "the files behind the refused ones",
        Duration::from_secs(30),
        async || {
            let keys = moto.keys("refused-1").await;
            !keys_of(&keys, "attachment_").is_empty() && !keys_of(&keys, "receivedMessages_").is_empty()
        },
    )
    .await;
    let keys = moto.keys("refused-1").await;
    let attachments = keys_of(&keys, "attachment_");
    assert_eq!(attachments.len(), 1, "{keys:?}");
    assert!(attachments[0].ends_with("_fine.bin"), "{keys:?}");
    let waiting: Vec<String> = file_names(&bot.attachments_dir());
    assert_eq!(waiting.len(), 2, "the refused files wait on disk: {waiting:?}");
    assert!(waiting.iter().all(|n| n.contains("blocked")), "{waiting:?}");
    let log = bot.log_text();
    assert!(log.contains("upload REFUSED") && log.contains("AccessDenied"), "{log}");
    assert!(bot.stop().await.success());
    assert_eq!(file_names(&bot.attachments_dir()).len(), 2, "kept for the next start");
}
