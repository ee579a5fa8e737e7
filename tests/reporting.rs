//! Secrets Manager configuration, SNS events, CloudWatch metrics and the watchdog, against a real
//! moto server: the bot's real binary configured only through a secret, events read back from an
//! SQS queue subscribed to the topic, metrics read back with GetMetricStatistics.

use crate::common;

use std::time::Duration;

use common::aws::{Moto, Proxy};
use common::{Bot, INITIAL_PASSWORD, attachment_form, file_message, metric, text_message, wait_for};
use retention_bot::report::origin::NOTIFICATION_KEYS;

fn refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// A bot whose AWS calls go to `endpoint`, with `extra` settings.
async fn aws_bot(endpoint: &str, extra: &[(&str, &str)]) -> Bot {
    let mut env = Moto::env_via(endpoint);
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Bot::start(&refs(&env)).await
}

/// Runs the bot to its exit (it is expected not to start); returns its status code and log.
fn run_to_exit(extra: &[(String, String)]) -> (Option<i32>, String) {
    let tmp = tempfile::tempdir().unwrap();
    let bot = Bot::prepare(tmp.path(), &refs(extra));
    let out = bot.command().output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Checks the original's shape and returns the message.
fn message_of(event: &serde_json::Value) -> String {
    let keys: Vec<&str> = event.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, NOTIFICATION_KEYS, "{event}");
    assert_eq!(event["complianceBot"], "testbot");
    assert_eq!(event["notificationType"], "Bot Event");
    assert_eq!(event["dockerTag"], env!("CARGO_PKG_VERSION"));
    assert!(["normal", "critical"].contains(&event["severity"].as_str().unwrap()));
    assert!(!event["device"].as_str().unwrap().is_empty());
    let time = event["dateTime"].as_str().unwrap();
    assert!(
        chrono::NaiveDateTime::parse_from_str(time, "%Y-%m-%dT%H:%M:%S").is_ok(),
        "{time}"
    );
    event["message"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudwatch_shows_each_metric_with_the_workload_counts_after_one_interval() {
    let moto = Moto::start().await;
    let mut bot = aws_bot(
        &moto.endpoint(),
        &[
            ("WICKRIO_METRICS_TYPE", "cloudwatch"),
            ("WICKRIO_METRICS_INTERVAL_SECS", "2"),
        ],
    )
    .await;
    let lines: Vec<String> = (0..3).map(text_message).collect();
    assert_eq!(bot.post("application/x-ndjson", lines.join("\n")).await.status(), 202);
    let attachment = vec![7u8; 12_345];
    let part = reqwest::multipart::Part::bytes(attachment.clone()).file_name("a.bin");
    assert_eq!(
        bot.post_form(attachment_form(&file_message("a.bin"), part))
            .await
            .status(),
        202
    );
    assert_eq!(bot.post("application/x-ndjson", "{not json").await.status(), 400);

    let expected = [
        ("Messages_Rx", 5.0),
        ("Messages_Rx_Failed", 1.0),
        ("Messages_Saved", 4.0),
        ("Messages_Saved_Failed", 0.0),
        ("Files_Saved", 1.0),
        ("Files_Saved_Bytes", attachment.len() as f64),
        ("Files_Saved_Failed", 0.0),
        ("Logins", 1.0),
        ("Login_Failures", 0.0),
        ("S3_Post_Errors", 0.0),
        ("Watchdog_Failures", 0.0),
        ("Watchdog_Warnings", 0.0),
        ("Spool_Write_Errors", 0.0),
        ("KMS_Requests", 0.0),
        ("S3_Backlog_Files", 0.0),
        ("S3_Backlog_Bytes", 0.0),
    ];
    for (name, value) in expected {
        if !name.starts_with("S3_Backlog") {
            assert_eq!(metric(&bot, name).await as f64, value, "{name} on /metrics");
        }
    }
    // One interval after the workload: every metric is there with its count.
    wait_for(
        &bot,
        "a CloudWatch datapoint after the workload",
        Duration::from_secs(15),
        async || moto.metric_sum("Messages_Rx", "testbot").await == Some(5.0),
    )
    .await;
    for (name, value) in expected {
        assert_eq!(moto.metric_sum(name, "testbot").await, Some(value), "{name}");
    }
    // Shutdown sends a last datapoint: it carries only what happened since (nothing), so the sums
    // stay right (each interval is sent as its own count, not as a running total).
    assert!(bot.stop().await.success());
    for (name, value) in expected {
        assert_eq!(moto.metric_sum(name, "testbot").await, Some(value), "{name} after stop");
    }
    assert!(bot.log_text().contains("metrics go to CloudWatch namespace WickrIO"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudwatch_outage_is_logged_and_counted_and_the_counts_go_out_later() {
    let moto = Moto::start().await;
    let proxy = Proxy::start(moto.port).await;
    proxy.set_up(false);
    let mut bot = aws_bot(
        &proxy.endpoint(),
        &[
            ("WICKRIO_METRICS_TYPE", "cloudwatch"),
            ("WICKRIO_METRICS_INTERVAL_SECS", "1"),
        ],
    )
    .await;
    assert_eq!(bot.post("application/x-ndjson", text_message(1)).await.status(), 202);
    wait_for(
        &bot,
        "a counted CloudWatch failure",
        Duration::from_secs(60),
        async || metric(&bot, "CloudWatch_Errors").await > 0,
    )
    .await;
    assert!(bot.log_text().contains("metrics not published"));
    proxy.set_up(true);
    wait_for(&bot, "the held counts to arrive", Duration::from_secs(60), async || {
        moto.metric_sum("Messages_Saved", "testbot").await == Some(1.0)
    })
    .await;
    assert!(bot.stop().await.success());
    assert_eq!(moto.metric_sum("Logins", "testbot").await, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_alone_configures_a_real_upload_and_receives_the_generated_password() {
    let moto = Moto::start().await;
    moto.create_bucket("from-secret").await;
    let secret = serde_json::json!({
        "password": INITIAL_PASSWORD,
        "s3_bucket_name": "from-secret",
        "s3_region": "us-east-1",
        "s3_folder_name": "vault",
        "note": "kept as it is",
    });
    moto.create_secret("retention/bot", &secret.to_string()).await;
    let tmp = tempfile::tempdir().unwrap();
    let mut env = Moto::env_via(&moto.endpoint());
    env.push(("AWS_SECRET_NAME".into(), "retention/bot".into()));
    env.push(("WICKRIO_SECRET_UPDATE".into(), "true".into()));
    let mut bot = Bot::prepare(tmp.path(), &refs(&env));
    bot.env.retain(|(k, _)| k != "WICKRIO_BOT_PASSWORD");
    bot.spawn().await;

    // The first run's generated password is now in the secret; the other keys are kept.
    let generated = common::generated_password(&bot.stdout_text()).expect("a first-run banner");
    let stored = moto.secret_json("retention/bot").await;
    assert_eq!(stored["password"], generated.as_str());
    assert_eq!(stored["s3_bucket_name"], "from-secret");
    assert_eq!(stored["note"], "kept as it is");

    assert_eq!(bot.post("application/x-ndjson", text_message(1)).await.status(), 202);
    assert!(bot.stop().await.success());
    let keys = moto.keys("from-secret").await;
    assert!(
        keys.iter().any(|k| k.starts_with("vault/receivedMessages")),
        "{keys:?}\n{}",
        bot.log_text()
    );
    let log = bot.log_text();
    assert!(log.contains("setting taken from the secret"), "{log}");
    assert!(log.contains("unknown key in the secret is ignored"), "{log}");
    assert!(
        !log.contains(INITIAL_PASSWORD) && !log.contains(&generated),
        "a password was logged"
    );

    // Restarts take the password from the secret, even with the stale initial password still on the
    // run line beside it.
    bot.env.retain(|(k, _)| k != "WICKRIO_BOT_PASSWORD");
    bot.spawn().await;
    assert!(bot.stop().await.success());
    bot.set_env("WICKRIO_BOT_PASSWORD", INITIAL_PASSWORD);
    bot.spawn().await;
    assert!(bot.stop().await.success());
    assert!(
        bot.log_text()
            .contains("the secret's password does: remove WICKRIO_BOT_PASSWORD")
    );
    // And the log names the password that opened it: the secret's, not the variable's.
    let unlocked = bot
        .log_text()
        .lines()
        .rfind(|l| l.contains("identity unlocked"))
        .unwrap_or_default()
        .to_owned();
    assert!(
        unlocked.contains("the Secrets Manager secret's `password` key")
            && !unlocked.contains("from=WICKRIO_BOT_PASSWORD"),
        "{unlocked}"
    );

    // A rotation is written back too, and the next start needs nothing but the secret.
    bot.env.retain(|(k, _)| k != "WICKRIO_BOT_PASSWORD");
    bot.set_env("WICKRIO_ROTATE_PASSWORD", "rotated-password-0123");
    bot.spawn().await;
    assert!(bot.stop().await.success());
    assert_eq!(
        moto.secret_json("retention/bot").await["password"],
        "rotated-password-0123"
    );
    // (The harness learns the banner's password after every start: drop it again.)
    bot.env
        .retain(|(k, _)| k != "WICKRIO_ROTATE_PASSWORD" && k != "WICKRIO_BOT_PASSWORD");
    bot.spawn().await;
    assert!(bot.stop().await.success());
    assert!(
        !bot.log_text().contains("rotated-password-0123"),
        "a password was logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_malformed_secret_stops_start_up_with_its_message() {
    let moto = Moto::start().await;
    moto.create_secret("not-json", "password=hunter2").await;
    moto.create_secret("wrong-type", r#"{"s3_bucket_name": ["a", "b"]}"#)
        .await;
    moto.create_secret("bad-value", r#"{"s3_bucket_name": "Not_A_Bucket"}"#)
        .await;
    for (name, expected) in [
        (
            "no-such-secret",
            "secret \"no-such-secret\" was not found in region us-east-1",
        ),
        ("not-json", "secret \"not-json\" is not JSON"),
        (
            "wrong-type",
            "secret \"wrong-type\": key \"s3_bucket_name\" is an array; it must be a string",
        ),
        (
            "bad-value",
            "WICKRIO_S3_BUCKET_NAME: \"Not_A_Bucket\" is not a valid bucket name",
        ),
    ] {
        let mut env = Moto::env_via(&moto.endpoint());
        env.push(("AWS_SECRET_NAME".into(), name.into()));
        let (code, log) = run_to_exit(&env);
        assert_eq!(code, Some(2), "{name}: {log}");
        assert!(log.contains(expected), "{name}: {log}");
        assert!(!log.contains("hunter2"), "a secret's value was logged: {log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_the_topic_in_the_original_shape_and_repeated_failures_collapse() {
    let moto = Moto::start().await;
    moto.create_bucket("bkt-1").await;
    let (topic, queue) = moto.topic_with_queue("bot-events").await;
    let proxy = Proxy::start(moto.port).await;
    // S3 through a proxy the test takes down; SNS straight to moto.
    let sns_endpoint = moto.endpoint();
    let mut bot = aws_bot(
        &proxy.endpoint(),
        &[
            ("AWS_ENDPOINT_URL_SNS", &sns_endpoint),
            ("WICKRIO_SNS_TOPIC_ARN", &topic),
            ("WICKRIO_S3_BUCKET_NAME", "bkt-1"),
            ("WICKRIO_COMP_TIMEROTATE", "0.01"),
            ("WICKRIO_EVENT_REPEAT_SECS", "600"),
        ],
    )
    .await;
    // Three outages, each noticed by a failed upload and ended by a successful one.
    for n in 0..3 {
        proxy.set_up(false);
        let errors = metric(&bot, "S3_Post_Errors").await;
        assert_eq!(bot.post("application/x-ndjson", text_message(n)).await.status(), 202);
        wait_for(&bot, "a failed upload", Duration::from_secs(30), async || {
            metric(&bot, "S3_Post_Errors").await > errors
        })
        .await;
        proxy.set_up(true);
        wait_for(
            &bot,
            "the upload after the outage",
            Duration::from_secs(30),
            async || metric(&bot, "S3_Backlog_Files").await == 0,
        )
        .await;
    }
    assert!(bot.stop().await.success());

    let mut messages = Vec::new();
    wait_for(&bot, "the stop event", Duration::from_secs(15), async || {
        messages.extend(moto.drain_queue(&queue).await.iter().map(message_of));
        messages.iter().any(|m| m.starts_with("stopped:"))
    })
    .await;
    let count = |prefix: &str| messages.iter().filter(|m| m.starts_with(prefix)).count();
    assert!(
        messages[0].starts_with("first run: the bot generated its password"),
        "{messages:#?}"
    );
    assert!(messages[1].starts_with("started: retention-bot"), "{messages:#?}");
    assert!(messages[1].contains("logged in as testbot"), "{messages:#?}");
    assert_eq!(count("stopping on SIGTERM"), 1, "{messages:#?}");
    // The first failure and first recovery go out at once; the two repeats of each are held and
    // go out as one event with a count (here at shutdown, inside the 600 s window).
    assert_eq!(count("S3 upload failing: "), 2, "{messages:#?}");
    assert_eq!(count("S3 uploads recovered"), 2, "{messages:#?}");
    let summaries: Vec<&String> = messages
        .iter()
        .filter(|m| m.contains("(repeated 2 more times within 600 s)"))
        .collect();
    assert_eq!(summaries.len(), 2, "{messages:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_start_sends_a_critical_event_before_exiting() {
    let moto = Moto::start().await;
    let (topic, queue) = moto.topic_with_queue("bot-events").await;
    let mut env = Moto::env_via(&moto.endpoint());
    env.push(("WICKRIO_SNS_TOPIC_ARN".into(), topic));
    env.push(("WICKRIO_COMP_FILESIZE".into(), "lots".into()));
    let (code, log) = run_to_exit(&env);
    assert_eq!(code, Some(2), "{log}");
    let events = moto.drain_queue(&queue).await;
    assert_eq!(events.len(), 1, "{events:#?}");
    assert!(message_of(&events[0]).starts_with("not started: configuration error: WICKRIO_COMP_FILESIZE"));
    assert_eq!(events[0]["severity"], "critical");

    // A refused password: the event, and Login_Failures in the last CloudWatch datapoint.
    env.retain(|(k, _)| k != "WICKRIO_COMP_FILESIZE");
    env.push(("WICKRIO_METRICS_TYPE".into(), "cloudwatch".into()));
    let mut bot = Bot::start(&refs(&env)).await;
    assert!(bot.stop().await.success());
    bot.set_env("WICKRIO_BOT_PASSWORD", "not-the-password");
    let out = bot.command().output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let events = moto.drain_queue(&queue).await;
    let refused: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| message_of(e).starts_with("not started: login refused: wrong password"))
        .collect();
    assert_eq!(refused.len(), 1, "{events:#?}");
    assert_eq!(refused[0]["severity"], "critical");
    assert_eq!(moto.metric_sum("Login_Failures", "testbot").await, Some(1.0));
    assert_eq!(moto.metric_sum("Logins", "testbot").await, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_warns_then_fails_on_a_stalled_upload_and_reports_recovery() {
    let moto = Moto::start().await;
    moto.create_bucket("bkt-1").await;
    let proxy = Proxy::start(moto.port).await;
    proxy.set_up(false);
    let bot = aws_bot(
        &proxy.endpoint(),
        &[
            ("WICKRIO_S3_BUCKET_NAME", "bkt-1"),
            ("WICKRIO_COMP_TIMEROTATE", "0.01"),
            ("WICKRIO_WATCHDOG_SECS", "1"),
        ],
    )
    .await;
    assert_eq!(bot.post("application/x-ndjson", text_message(1)).await.status(), 202);
    wait_for(&bot, "a watchdog warning", Duration::from_secs(20), async || {
        metric(&bot, "Watchdog_Warnings").await == 1
    })
    .await;
    wait_for(&bot, "a watchdog failure", Duration::from_secs(20), async || {
        metric(&bot, "Watchdog_Failures").await == 1
    })
    .await;
    let log = bot.log_text();
    assert!(log.contains("watchdog: the S3 uploader is STALLED"), "{log}");
    // One warning and one failure per stall, however long it lasts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(metric(&bot, "Watchdog_Warnings").await, 1);
    assert_eq!(metric(&bot, "Watchdog_Failures").await, 1);
    proxy.set_up(true);
    wait_for(
        &bot,
        "the watchdog to see progress",
        Duration::from_secs(90),
        async || {
            bot.log_text()
                .contains("watchdog: the S3 uploader is making progress again")
        },
    )
    .await;
    assert_eq!(metric(&bot, "Watchdog_Warnings").await, 1, "no warning for the spool");
}
