//! The pipeline end to end through the real binary: concurrent producers, rotation, graceful
//! shutdown, crash recovery and metrics.

use crate::common;

use std::collections::HashSet;
use std::time::Duration;

use common::{Bot, attachment_form, closed_lines, file_message, file_names, open_files, text_message};

#[tokio::test]
async fn concurrent_producers_find_every_acknowledged_message_exactly_as_sent() {
    let mut bot = Bot::start(&[]).await;
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for producer in 0..16 {
        let (client, url) = (client.clone(), bot.url("/v1/messages"));
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..40 {
                let base = producer * 10_000 + i * 10;
                // Alternate single JSON messages and NDJSON batches of five.
                let (ctype, msgs): (_, Vec<String>) = if i % 2 == 0 {
                    ("application/json", vec![text_message(base)])
                } else {
                    ("application/x-ndjson", (base..base + 5).map(text_message).collect())
                };
                let r = client
                    .post(&url)
                    .header("content-type", ctype)
                    .body(msgs.join("\n"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
                let body: serde_json::Value = r.json().await.unwrap();
                assert_eq!(body["accepted"], msgs.len());
                acked.extend(msgs);
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    assert!(bot.stop().await.success());

    let lines = closed_lines(&bot.messages_dir());
    assert_eq!(
        lines.len(),
        acked.len(),
        "every acknowledged message once, nothing else"
    );
    let written: HashSet<&String> = lines.iter().collect();
    for m in &acked {
        assert!(written.contains(m), "acknowledged message missing or altered: {m}");
    }
    assert!(open_files(&bot.messages_dir()).is_empty());
}

#[tokio::test]
async fn size_rotation_keeps_files_under_the_limit_and_lines_whole() {
    // 1 KiB files; each message is ~300 bytes, so three fit per file.
    let mut bot = Bot::start(&[("WICKRIO_COMP_FILESIZE", "1")]).await;
    let sent: Vec<String> = (0..20).map(text_message).collect();
    for chunk in sent.chunks(4) {
        assert_eq!(bot.post("application/x-ndjson", chunk.join("\n")).await.status(), 202);
    }
    assert!(bot.stop().await.success());
    let names = common::closed_message_files(&bot.messages_dir());
    assert!(names.len() >= 6, "expected several files, got {names:?}");
    for name in &names {
        let len = std::fs::metadata(bot.messages_dir().join(name)).unwrap().len();
        assert!(len <= 1024, "{name} is {len} bytes");
        assert!(name.starts_with("receivedMessages_"), "{name}");
    }
    // File names sort by time, so reading them in name order gives the order of arrival.
    assert_eq!(closed_lines(&bot.messages_dir()), sent);
}

#[tokio::test]
async fn time_rotation_closes_the_file_while_running() {
    // 0.02 minutes = 1.2 s.
    let mut bot = Bot::start(&[("WICKRIO_COMP_TIMEROTATE", "0.02")]).await;
    assert_eq!(bot.post("application/json", text_message(1)).await.status(), 202);
    assert_eq!(open_files(&bot.messages_dir()).len(), 1);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        open_files(&bot.messages_dir()).is_empty(),
        "file not closed by time: {:?}",
        file_names(&bot.messages_dir())
    );
    assert_eq!(closed_lines(&bot.messages_dir()), vec![text_message(1)]);
    assert_eq!(bot.post("application/json", text_message(2)).await.status(), 202);
    assert!(bot.stop().await.success());
    let closed = common::closed_message_files(&bot.messages_dir()).len();
    assert_eq!(closed, 2, "the second message starts a new file");
}

#[tokio::test]
async fn sigterm_exits_zero_with_the_open_file_closed() {
    let mut bot = Bot::start(&[]).await;
    assert_eq!(bot.post("application/json", text_message(7)).await.status(), 202);
    assert_eq!(open_files(&bot.messages_dir()).len(), 1);
    let started = std::time::Instant::now();
    let status = bot.stop().await;
    assert!(status.success(), "{status}: {}", bot.log_text());
    // Promptly: no waiting for a rotation timer (the default has none at all).
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(open_files(&bot.messages_dir()).is_empty());
    assert_eq!(closed_lines(&bot.messages_dir()), vec![text_message(7)]);
}

#[tokio::test]
async fn shutdown_refuses_new_requests_but_finishes_the_one_in_flight() {
    let mut bot = Bot::start(&[]).await;
    // An attachment upload that is still streaming when SIGTERM arrives.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
    let part = reqwest::multipart::Part::stream(body).file_name("slow.bin");
    let form = attachment_form(&file_message("slow.bin"), part);
    let upload = tokio::spawn(
        reqwest::Client::new()
            .post(bot.url("/v1/messages"))
            .multipart(form)
            .send(),
    );
    tx.send(Ok(vec![1u8; 1000])).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    nix::sys::signal::kill(bot.pid(), nix::sys::signal::Signal::SIGTERM).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = bot.post("application/json", text_message(1)).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(reqwest::get(bot.url("/readyz")).await.unwrap().status(), 503);

    tx.send(Ok(vec![2u8; 1000])).await.unwrap();
    drop(tx);
    let answer = upload.await.unwrap().unwrap();
    assert_eq!(answer.status(), 202);
    assert!(bot.wait().await.success());
    let lines = closed_lines(&bot.messages_dir());
    assert_eq!(lines.len(), 1, "only the in-flight attachment's message: {lines:?}");
    let attachments: Vec<String> = file_names(&bot.attachments_dir());
    assert_eq!(attachments.len(), 1);
    assert!(
        attachments[0].starts_with("attachment_") && attachments[0].ends_with("_slow.bin"),
        "{attachments:?}"
    );
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn kill_9_mid_stream_loses_no_acknowledged_message() {
    let tmp = tempfile::tempdir().unwrap();
    let mut bot = Bot::prepare(tmp.path(), &[]);
    bot.spawn().await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for producer in 0..8 {
        let (url, stop) = (bot.url("/v1/messages"), stop.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut acked = Vec::new();
            for i in 0.. {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let msgs: Vec<String> = (0..20)
                    .map(|j| text_message(producer * 1_000_000 + i * 20 + j))
                    .collect();
                let sent = client
                    .post(&url)
                    .header("content-type", "application/x-ndjson")
                    .body(msgs.join("\n"))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == 202 => acked.extend(msgs),
                    _ => break, // the bot died under us: not acknowledged
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    bot.kill9().await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    assert!(
        acked.len() > 100,
        "the stream was running: {} acknowledged",
        acked.len()
    );
    let open = open_files(&bot.messages_dir());
    assert_eq!(open.len(), 1, "kill -9 leaves the open file: {open:?}");
    // Make the tail torn for sure, as a power loss mid-write would.
    let open_path = bot.messages_dir().join(&open[0]);
    let mut torn = std::fs::read(&open_path).unwrap();
    torn.extend_from_slice(br#"{"message":"half a li"#);
    std::fs::write(&open_path, torn).unwrap();

    let mut bot = Bot::prepare(tmp.path(), &[]);
    bot.spawn().await;
    assert!(bot.stop().await.success());
    assert!(
        open_files(&bot.messages_dir()).is_empty(),
        "recovery closed the open file"
    );
    let lines = closed_lines(&bot.messages_dir()); // also checks: no torn line, all valid JSON
    let written: HashSet<&String> = lines.iter().collect();
    for m in &acked {
        assert!(written.contains(m), "acknowledged message lost: {m}");
    }
    assert!(bot.log_text().contains("recovered a message file left open by a crash"));
}

#[tokio::test]
async fn metrics_count_a_known_workload() {
    let mut bot = Bot::start(&[]).await;
    let good: Vec<String> = (0..3).map(text_message).collect();
    assert_eq!(bot.post("application/x-ndjson", good.join("\n")).await.status(), 202);
    assert_eq!(
        bot.post(
            "application/x-ndjson",
            format!("{}\n{{\"msgtype\":1}}", text_message(9))
        )
        .await
        .status(),
        400
    );
    let text = reqwest::get(bot.url("/metrics")).await.unwrap().text().await.unwrap();
    for (name, value) in [
        ("Messages_Rx", 5),
        ("Messages_Rx_Failed", 2),
        ("Messages_Saved", 3),
        ("Messages_Saved_Failed", 0),
        ("Files_Saved", 0),
    ] {
        let line = format!("{name}{{bot_name=\"testbot\"}} {value}\n");
        assert!(text.contains(&line), "missing {line:?} in:\n{text}");
    }
    assert_eq!(reqwest::get(bot.url("/readyz")).await.unwrap().status(), 200);
    assert!(bot.stop().await.success());
}

#[tokio::test]
async fn healthcheck_command_reports_whether_the_daemon_answers() {
    let mut bot = Bot::start(&[]).await;
    let healthy = bot.command().arg("healthcheck").output().unwrap();
    assert!(healthy.status.success(), "{}", String::from_utf8_lossy(&healthy.stderr));
    assert!(bot.stop().await.success());
    let down = bot.command().arg("healthcheck").output().unwrap();
    assert_eq!(down.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down.stderr).contains("cannot reach"));
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let mut bot = Bot::start(&[("WICKRIO_LOG_FORMAT", "json")]).await;
    assert_eq!(bot.post("application/json", text_message(1)).await.status(), 202);
    assert!(bot.stop().await.success());
    let log = bot.log_text();
    assert!(log.lines().count() >= 3, "{log}");
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"));
        assert!(v["level"].is_string() && v["fields"]["message"].is_string(), "{line}");
    }
    assert!(log.contains("closed message file"));
}
