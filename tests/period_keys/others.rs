//! More of per-period keys: the bot creating the keys itself, and `shred` refusing a period whose
//! alias was pointed at the key an older archive is under.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use aws_sdk_kms::types::KeyState;

use super::{BUCKET, FOLDER, TEMPLATE, event_messages, key_state, key_with_alias, post_messages, shred, wrapping_keys};
use crate::common::aws::Moto;
use crate::common::{Bot, text_message, wait_for};

#[tokio::test(flavor = "multi_thread")]
async fn with_key_creation_on_the_bot_makes_the_current_and_coming_periods_keys_itself() {
    let moto = Moto::start_strict().await;
    moto.create_bucket(BUCKET).await;
    let (topic, queue) = moto.topic_with_queue("created-events").await;
    let mut env = moto.env();
    for (k, v) in [
        ("WICKRIO_S3_BUCKET_NAME", BUCKET),
        ("WICKRIO_S3_FOLDER_NAME", FOLDER),
        ("WICKRIO_KMS_MSTRKEY_ARN", TEMPLATE),
        ("WICKRIO_KMS_CREATE_PERIOD_KEYS", "true"),
        ("WICKRIO_SNS_TOPIC_ARN", &topic),
        // Within a day of April: the look-ahead wants both months' keys.
        ("RETENTION_BOT_TEST_CLOCK", "2025-03-31T12:00:00Z"),
    ] {
        env.push((k.to_owned(), v.to_owned()));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut bot = Bot::start(&env).await;
    assert_eq!(bot.post("application/json", text_message(1)).await.status(), 202);
    let kms = moto.kms().await;
    wait_for(&bot, "the coming period's key", Duration::from_secs(20), async || {
        kms.describe_key()
            .key_id("alias/retention-2025-04")
            .send()
            .await
            .is_ok()
    })
    .await;
    assert!(bot.stop().await.success(), "{}", bot.log_text());

    let mut created = HashMap::new();
    for period in ["2025-03", "2025-04"] {
        let alias = format!("alias/retention-{period}");
        let key = kms
            .describe_key()
            .key_id(&alias)
            .send()
            .await
            .unwrap()
            .key_metadata
            .unwrap();
        assert_eq!(key.key_state, Some(KeyState::Enabled), "{alias}");
        let tags = kms.list_resource_tags().key_id(&key.key_id).send().await.unwrap();
        let tag = tags
            .tags()
            .iter()
            .find(|t| t.tag_key() == "retention-bot-period")
            .unwrap();
        assert_eq!(tag.tag_value(), period);
        created.insert(period, key.arn.unwrap());
    }
    let wrapped = wrapping_keys(&moto).await;
    assert!(!wrapped.is_empty());
    for (key, kms_key) in &wrapped {
        assert_eq!(kms_key, &created["2025-03"], "{key}");
    }
    let events = event_messages(&moto, &queue).await;
    for period in ["2025-03", "2025-04"] {
        assert!(
            events
                .iter()
                .any(|m| m.contains("created the KMS key") && m.contains(&format!("for the period {period}"))),
            "{events:?}"
        );
    }
    assert!(!events.iter().any(|m| m.contains("does not exist")), "{events:?}");
}

/// The operator's likeliest mistake: pointing a period's alias at the one key the bot used before
/// its template. That key protects the older archive too, whose entries name it by another alias;
/// `shred` asks KMS what each name stands for, finds its own key, and refuses.
#[tokio::test(flavor = "multi_thread")]
async fn shred_refuses_a_period_whose_alias_names_the_key_the_older_archive_is_under() {
    let moto = Moto::start_strict().await;
    moto.create_bucket(BUCKET).await;
    let old_key = key_with_alias(&moto, "alias/legacy").await;
    let run = async |key: &str, clock: &str, root: Option<&Path>| {
        let mut env = moto.env();
        for (k, v) in [
            ("WICKRIO_S3_BUCKET_NAME", BUCKET),
            ("WICKRIO_S3_FOLDER_NAME", FOLDER),
            ("WICKRIO_KMS_MSTRKEY_ARN", key),
            ("RETENTION_BOT_TEST_CLOCK", clock),
        ] {
            env.push((k.to_owned(), v.to_owned()));
        }
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut bot = match root {
            None => Bot::start(&env).await,
            Some(root) => {
                let mut bot = Bot::prepare(root, &env);
                bot.spawn().await;
                bot
            }
        };
        post_messages(&bot, 1..=2, "a.bin").await;
        assert!(bot.stop().await.success(), "{}", bot.log_text());
        bot
    };
    // February under the fixed key; March under the template, whose alias names that same key.
    let february = run(
        "arn:aws:kms:us-east-1:123456789012:alias/legacy",
        "2025-02-10T12:00:00Z",
        None,
    )
    .await;
    moto.kms()
        .await
        .create_alias()
        .alias_name("alias/retention-2025-03")
        .target_key_id(&old_key)
        .send()
        .await
        .unwrap();
    let march = run(TEMPLATE, "2025-03-10T12:00:00Z", Some(&february.root)).await;
    let (code, out) = shred(&moto, &march, &["--period", "2025-03"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains(&format!("KMS key {old_key} protects")), "{out}");
    assert!(out.contains("of the period 2025-02, too"), "{out}");
    assert_eq!(key_state(&moto, &old_key).await, KeyState::Enabled);
}
