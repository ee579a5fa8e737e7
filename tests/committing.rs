//! The committing format (`WICKRIO_S3_ENCRYPTION_FORMAT=v3`) against moto: every object the bot
//! writes (a message file, a multipart attachment, the manifest) opens with the official Amazon S3
//! Encryption Client for Python under its **default** commitment policy, which refuses the V2 objects
//! of a bot left at the default; `decrypt`, `verify s3://` and `export` read V3 objects; and an
//! object whose key commitment was altered is refused before anything is decrypted.

use crate::common;

use std::process::Command;

use common::aws::Moto;
use common::{Bot, attachment_form, file_message, text_message};

const FOLDER: &str = "retention/v3";

async fn bot(moto: &Moto, bucket: &str, key_arn: &str, format: Option<&str>) -> Bot {
    moto.s3().await.create_bucket().bucket(bucket).send().await.unwrap();
    let mut env = moto.env();
    for (k, v) in [
        ("WICKRIO_S3_BUCKET_NAME", bucket),
        ("WICKRIO_S3_FOLDER_NAME", FOLDER),
        ("WICKRIO_KMS_MSTRKEY_ARN", key_arn),
    ] {
        env.push((k.to_owned(), v.to_owned()));
    }
    if let Some(f) = format {
        env.push(("WICKRIO_S3_ENCRYPTION_FORMAT".into(), f.into()));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Bot::start(&env).await
}

fn tool(moto: &Moto, args: &[&str]) -> (Option<i32>, String) {
    common::run_to_end(Command::new(common::BIN).args(args).env_clear().envs(moto.env()))
}

/// `verify s3://committing-1/FOLDER` with the bot's public key.
fn verify_in_place(moto: &Moto, key_arg: &str) -> (Option<i32>, String) {
    tool(
        moto,
        &[
            "verify",
            &format!("s3://committing-1/{FOLDER}"),
            "--public-key",
            key_arg,
        ],
    )
}

/// What the V3 bot wrote: the stopped bot (its directory holds the public key), its message line and
/// its attachment's bytes.
struct Written {
    bot: Bot,
    line: String,
    attachment: Vec<u8>,
}

/// A V3 bot writes a message and an attachment over 8 MiB, and stops.
async fn write_v3(moto: &Moto, key_arn: &str) -> Written {
    let mut b = bot(moto, "committing-1", key_arn, Some("v3")).await;
    let line = text_message(7);
    assert_eq!(b.post("application/json", line.clone()).await.status(), 202);
    // Over 8 MiB: a multipart upload, encrypted part by part under one derived key.
    let attachment: Vec<u8> = (0..9 << 20)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let part = reqwest::multipart::Part::bytes(attachment.clone()).file_name("scan.bin");
    let r = b.post_form(attachment_form(&file_message("scan.bin"), part)).await;
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    assert!(b.stop().await.success(), "{}", b.log_text());
    Written {
        bot: b,
        line,
        attachment,
    }
}

/// Every object is V3 alone and opens with the official client's default policy, holding what was
/// sent. Returns the bucket's keys.
async fn every_object_opens_under_the_default_policy(
    moto: &Moto,
    key_arn: &str,
    line: &str,
    attachment: &[u8],
) -> Vec<String> {
    let keys = moto.keys("committing-1").await;
    assert!(keys.len() >= 3, "{keys:?}");
    for key in &keys {
        let (body, meta) = moto.object("committing-1", key).await;
        assert_eq!(meta.get("x-amz-c").map(String::as_str), Some("115"), "{key}: {meta:?}");
        assert!(!meta.contains_key("x-amz-key-v2"), "{key}: one envelope only");
        let plain = moto
            .read_encrypted("committing-1", key, key_arn, "official-default")
            .unwrap_or_else(|e| panic!("{key}: the official client's default policy refused it: {e}"));
        assert_eq!(body.len(), plain.len() + 16, "{key}: ciphertext and tag");
        if key.contains("attachment_") {
            assert_eq!(plain, attachment, "{key}");
        } else if key.contains("receivedMessages_") {
            assert!(
                String::from_utf8(plain).unwrap().starts_with(&format!("{line}\n")),
                "{key}"
            );
        }
    }
    keys
}

/// The same client, same policy, refuses the V2 objects of a bot left at the default.
async fn the_default_policy_refuses_v2(moto: &Moto, key_arn: &str) {
    // The same client, same policy, refuses the V2 objects of a bot left at the default: the policy
    // is the strict one, and the V3 objects passed it on their own merit.
    let mut old = bot(moto, "committing-v2", key_arn, None).await;
    assert_eq!(old.post("application/json", text_message(1)).await.status(), 202);
    assert!(old.stop().await.success(), "{}", old.log_text());
    let v2_key = moto
        .keys("committing-v2")
        .await
        .into_iter()
        .find(|k| k.contains("receivedMessages_"))
        .unwrap();
    let refused = moto
        .read_encrypted("committing-v2", &v2_key, key_arn, "official-default")
        .unwrap_err();
    assert!(
        refused.to_lowercase().contains("commit"),
        "refused for its commitment policy: {refused}"
    );
}

/// The bot's own readers: decrypt (and verify the restored copy), verify in place, export.
fn the_bots_readers_read_v3(moto: &Moto, b: &Bot, key_arg: &str, line: &str, attachment: &[u8]) {
    let dest = b.root.join("restored");
    let (code, text) = tool(
        moto,
        &[
            "decrypt",
            "--bucket",
            "committing-1",
            "--prefix",
            FOLDER,
            "--dest",
            dest.to_str().unwrap(),
            "--public-key",
            key_arg,
        ],
    );
    assert_eq!(code, Some(0), "{text}");
    let restored = common::file_names(&dest.join("attachments"));
    assert_eq!(
        std::fs::read(dest.join("attachments").join(&restored[0])).unwrap(),
        attachment
    );
    let (code, text) = verify_in_place(moto, key_arg);
    assert_eq!(code, Some(0), "{text}");
    let out = b.root.join("export");
    let (code, text) = tool(
        moto,
        &[
            "export",
            "--bucket",
            "committing-1",
            "--prefix",
            FOLDER,
            "--public-key",
            key_arg,
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(0), "{text}");
    let exported = std::fs::read_to_string(out.join("messages.jsonl")).unwrap();
    assert!(exported.starts_with(&format!("{line}\n")), "{exported}");
    assert_eq!(
        std::fs::read(out.join("attachments").join(&restored[0])).unwrap(),
        attachment
    );
}

/// An altered commitment: refused before any byte is decrypted, and verify names the object.
async fn an_altered_commitment_is_refused(moto: &Moto, keys: &[String], key_arg: &str) {
    let message_key = keys.iter().find(|k| k.contains("receivedMessages_")).unwrap();
    let (_, mut meta) = moto.object("committing-1", message_key).await;
    meta.insert("x-amz-d".into(), "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==".into());
    moto.s3()
        .await
        .copy_object()
        .bucket("committing-1")
        .key(message_key)
        .copy_source(format!("committing-1/{message_key}"))
        .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
        .set_metadata(Some(meta))
        .send()
        .await
        .unwrap();
    let (code, text) = verify_in_place(moto, key_arg);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("key commitment does not match"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn v3_objects_open_with_the_official_clients_default_policy_and_every_reader_of_the_bot() {
    let moto = Moto::start().await;
    let key_arn = moto.create_key().await;
    let Written {
        bot: b,
        line,
        attachment,
    } = write_v3(&moto, &key_arn).await;
    let keys = every_object_opens_under_the_default_policy(&moto, &key_arn, &line, &attachment).await;
    the_default_policy_refuses_v2(&moto, &key_arn).await;
    let public_key = b.root.join("state/public_key.txt");
    let key_arg = public_key.to_str().unwrap();
    the_bots_readers_read_v3(&moto, &b, key_arg, &line, &attachment);
    an_altered_commitment_is_refused(&moto, &keys, key_arg).await;
}
