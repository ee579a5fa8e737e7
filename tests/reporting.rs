//! Secrets Manager configuration, SNS events, CloudWatch metrics and the watchdog, against a real
//! moto server: the bot's real binary configured only through a secret, events read back from an
//! SQS queue subscribed to the topic, metrics read back with GetMetricStatistics.

mod common;

use std::time::Duration;

use common::aws::{Moto, Proxy};
use common::{Bot, INITIAL_PASSWORD, attachment_form, file_message, metric, text_message, wait_for};

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

const ORIGINAL_KEYS: [&str; 8] = [
    "complianceBot",
    "dateTime",
    "device",
    "dockerImage",
    "dockerTag",
    "message",
    "notificationType",
    "severity",
];

/// Checks the original's shape and returns the message.
fn message_of(event: &serde_json::Value) -> String {
    let keys: Vec<&str> = event.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ORIGINAL_KEYS, "{event}");
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
