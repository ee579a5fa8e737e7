//! SQS source benchmark: messages a second one bot drains from a local SQS (moto server), next to a
//! bare consumer with the same SDK that receives and deletes without writing (the same receivers, 10
//! messages a call), in the same run; then two bots on one queue.
//!
//! `cargo bench --bench sqs`; `BENCH_MESSAGES` (default 5,000) sets how many messages each round
//! drains. Needs `.venv` with moto (made by `.ci/run`). Fails if any message is missing from the
//! archives.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, QueueAttributeName, SendMessageBatchRequestEntry};
use common::aws::Moto;
use common::{Bot, text_message, written_lines};
use support::row;

/// Receivers of the bare consumer: the bot's default (`WICKRIO_SQS_RECEIVERS`).
const RECEIVERS: usize = 4;

async fn fill(sqs: &aws_sdk_sqs::Client, url: &str, first: usize, n: usize) {
    let bodies: Vec<String> = (first..first + n).map(text_message).collect();
    let mut sends = tokio::task::JoinSet::new();
    for (c, chunk) in bodies.chunks(10).enumerate() {
        let entries: Vec<SendMessageBatchRequestEntry> = chunk
            .iter()
            .enumerate()
            .map(|(i, b)| {
                SendMessageBatchRequestEntry::builder()
                    .id(format!("{c}-{i}"))
                    .message_body(b)
                    .build()
                    .expect("entry")
            })
            .collect();
        let (sqs, url) = (sqs.clone(), url.to_owned());
        sends.spawn(async move {
            sqs.send_message_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send()
                .await
                .expect("send")
        });
        if sends.len() >= 16 {
            sends.join_next().await;
        }
    }
    while sends.join_next().await.is_some() {}
}

async fn waiting(sqs: &aws_sdk_sqs::Client, url: &str) -> u64 {
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .expect("attributes");
    let attrs = attrs.attributes().expect("attributes");
    let n = |k| attrs.get(&k).and_then(|v: &String| v.parse::<u64>().ok()).unwrap_or(0);
    n(QueueAttributeName::ApproximateNumberOfMessages) + n(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
}

/// The bare consumer: receives and deletes `n` messages, writing nothing; messages a second.
async fn bare(sqs: &aws_sdk_sqs::Client, url: &str, n: usize) -> f64 {
    let done = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut receivers = tokio::task::JoinSet::new();
    for _ in 0..RECEIVERS {
        let (sqs, url, done) = (sqs.clone(), url.to_owned(), done.clone());
        receivers.spawn(async move {
            while done.load(Ordering::Relaxed) < n {
                let got = sqs
                    .receive_message()
                    .queue_url(&url)
                    .max_number_of_messages(10)
                    .wait_time_seconds(1)
                    .send()
                    .await
                    .expect("receive");
                let messages = got.messages();
                if messages.is_empty() {
                    continue;
                }
                let entries: Vec<DeleteMessageBatchRequestEntry> = messages
                    .iter()
                    .enumerate()
                    .map(|(i, m)| {
                        DeleteMessageBatchRequestEntry::builder()
                            .id(i.to_string())
                            .receipt_handle(m.receipt_handle().expect("handle"))
                            .build()
                            .expect("entry")
                    })
                    .collect();
                sqs.delete_message_batch()
                    .queue_url(&url)
                    .set_entries(Some(entries))
                    .send()
                    .await
                    .expect("delete");
                done.fetch_add(messages.len(), Ordering::Relaxed);
            }
        });
    }
    while receivers.join_next().await.is_some() {}
    n as f64 / start.elapsed().as_secs_f64()
}

/// `bots` bots drain `n` messages already in the queue; messages a second, from their start (ready)
/// to the queue's last delete.
async fn bots(moto: &Moto, url: &str, sqs: &aws_sdk_sqs::Client, count: usize, ids: std::ops::Range<usize>) -> f64 {
    let mut env = Moto::env_via(&moto.endpoint());
    env.push(("WICKRIO_NETWORK".into(), "sqs".into()));
    env.push(("WICKRIO_SQS_QUEUE_URL".into(), url.to_owned()));
    env.push((
        "RUST_LOG".into(),
        std::env::var("BENCH_RUST_LOG").unwrap_or_else(|_| "warn".into()),
    ));
    if let Ok(receivers) = std::env::var("BENCH_RECEIVERS") {
        env.push(("WICKRIO_SQS_RECEIVERS".into(), receivers));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let dirs: Vec<tempfile::TempDir> = (0..count).map(|_| tempfile::tempdir().expect("dir")).collect();
    let mut running = Vec::new();
    for dir in &dirs {
        running.push(Bot::prepare(dir.path(), &env));
    }
    let start = Instant::now();
    for bot in &mut running {
        bot.spawn().await;
    }
    while waiting(sqs, url).await > 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rate = ids.len() as f64 / start.elapsed().as_secs_f64();
    let mut got = HashSet::new();
    for bot in &mut running {
        assert!(bot.stop().await.success(), "{}", bot.log_text());
        let log = bot.log_text();
        if log.contains("WARN") || std::env::var("BENCH_LOG").is_ok() {
            println!("bot log:\n{log}");
        }
        for line in written_lines(&bot.messages_dir()) {
            got.insert(line["message_id"].as_str().expect("id").to_owned());
        }
    }
    let missing = ids.filter(|i| !got.contains(&format!("{i:032x}"))).count();
    assert_eq!(missing, 0, "messages missing from the archives");
    rate
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("BENCH_MESSAGES").map_or(5_000, |v| v.parse().expect("BENCH_MESSAGES: a number"));
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "SQS benchmark: {n} messages a round, moto server; load average {}",
        load.trim()
    );
    let moto = Moto::start().await;
    let sqs = aws_sdk_sqs::Client::new(&moto.sdk_config().await);
    // A queue a round: a stopped bot's last long poll (given up, still open on the server's side)
    // must not take the next round's messages.
    let queue = |name: &'static str| {
        let sqs = sqs.clone();
        async move {
            let created = sqs.create_queue().queue_name(name).send().await.expect("queue");
            created.queue_url.expect("url")
        }
    };
    let (bare_q, one_q, two_q) = (queue("bare").await, queue("one").await, queue("two").await);

    fill(&sqs, &bare_q, 0, n).await;
    let baseline = bare(&sqs, &bare_q, n).await;
    fill(&sqs, &one_q, n, n).await;
    let one = bots(&moto, &one_q, &sqs, 1, n..2 * n).await;
    fill(&sqs, &two_q, 2 * n, n).await;
    let two = bots(&moto, &two_q, &sqs, 2, 2 * n..3 * n).await;

    println!();
    row(
        "bare consumer (no disk)",
        format!("{baseline:.0} msg/s"),
        "baseline (4 receivers, receive + delete)",
        None,
    );
    row(
        "one bot",
        format!("{one:.0} msg/s"),
        &format!("{:.0}% of bare (target >= 80%)", 100.0 * one / baseline),
        Some(one >= 0.8 * baseline),
    );
    row(
        "two bots, one queue",
        format!("{two:.0} msg/s"),
        &format!("{:.2}x one bot", two / one),
        None,
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average after: {}", load.trim());
}
