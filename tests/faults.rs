//! Faults injected into the real binary: failing fsync, write, rename and directory fsync (through an
//! `LD_PRELOAD` shim), clients that hang up mid-request, a second process on one state directory, and
//! kill -9 under load. What each asserts: nothing is acknowledged that is not durable, nothing refused
//! is kept, and the archive verifies.

use crate::common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::faults::FaultShim;
use common::{Bot, attachment_form, file_names, metric, text_message, written_lines};
use tokio::io::AsyncWriteExt;

fn refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

async fn readyz(bot: &Bot) -> u16 {
    reqwest::get(bot.url("/readyz")).await.unwrap().status().as_u16()
}

/// Waits (up to 20 s: the probe runs every 5 s) until `/readyz` answers 200 again.
async fn wait_ready(bot: &Bot) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while readyz(bot).await != 200 {
        assert!(Instant::now() < deadline, "never ready again:\n{}", bot.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `retention-bot verify` over a copy of the bot's archive (its message and attachment directories,
/// as an auditor would get them) with its public key: (exit code, stdout).
pub(crate) fn verify(root: &Path) -> (Option<i32>, String) {
    let copy = tempfile::tempdir().unwrap();
    for sub in ["messages", "attachments"] {
        std::fs::create_dir_all(copy.path().join(sub)).unwrap();
        for name in file_names(&root.join(sub)) {
            std::fs::copy(root.join(sub).join(&name), copy.path().join(sub).join(&name)).unwrap();
        }
    }
    let out = std::process::Command::new(common::BIN)
        .env_clear()
        .arg("verify")
        .arg(copy.path())
        .arg("--public-key")
        .arg(root.join("state/public_key.txt"))
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The `message` field of every complete line in the bot's message files, open or closed.
fn written_texts(bot: &Bot) -> Vec<String> {
    written_lines(&bot.messages_dir())
        .iter()
        .map(|l| l["message"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[derive(Clone, Copy)]
enum Target {
    /// Every file in the message directory (message files, manifests, the readiness probe).
    FilesInMessageDir,
    /// The message directory's own fsync.
    MessageDirItself,
}

/// One message is acknowledged, then `op` fails on `target`: a batch of ten (with 1 KiB files,
/// spread over several files by rotation) must be refused and leave no line anywhere, `/readyz` must
/// stay 503 for as long as the fault lasts, and once it is gone readiness and 202s come back.
async fn batch_refused_while(op: &str, target: Target) {
    let shim = FaultShim::build();
    let tmp = tempfile::tempdir().unwrap();
    let mut env = shim.env();
    env.push(("WICKRIO_COMP_FILESIZE".into(), "1".into()));
    let mut bot = Bot::prepare(tmp.path(), &refs(&env));
    bot.spawn().await;
    let messages = bot.messages_dir();
    assert_eq!(bot.post("application/json", text_message(1)).await.status(), 202);

    let pattern = match target {
        Target::FilesInMessageDir => format!("{}/", messages.display()),
        Target::MessageDirItself => format!("={}", messages.display()),
    };
    shim.inject(&[format!("{op} EIO {pattern}")]);
    let batch: Vec<String> = (100..110).map(text_message).collect();
    let r = bot.post("application/x-ndjson", batch.join("\n")).await;
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    assert!(
        status == 503 || status == 507,
        "{op}: a batch hit by a failed {op} got {status} {body}\n{}",
        bot.log_text()
    );
    assert!(body.contains("error"), "{body}");
    assert_eq!(readyz(&bot).await, 503, "{op}: unready after the failure");
    assert!(metric(&bot, "Spool_Write_Errors").await >= 1);
    // Longer than the readiness probe's interval: still failing, still unready.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(readyz(&bot).await, 503, "{op}: unready while the fault lasts");

    shim.clear();
    wait_ready(&bot).await;
    assert_eq!(bot.post("application/json", text_message(2)).await.status(), 202);
    assert!(bot.stop().await.success(), "{}", bot.log_text());
    let log = bot.log_text();
    assert!(log.contains("writing the spool failed"), "{log}");
    assert!(log.contains("writing the spool works again"), "{log}");

    // A restart recovers whatever a failed rename left open; then every acknowledged line is in a
    // closed file, no refused line is anywhere, and the archive verifies.
    let mut again = Bot::prepare(tmp.path(), &[]);
    again.spawn().await;
    assert!(again.stop().await.success());
    let texts = written_texts(&again);
    for m in ["test message 1", "test message 2"] {
        assert_eq!(texts.iter().filter(|t| *t == m).count(), 1, "{op}: {m} in {texts:?}");
    }
    assert!(
        texts
            .iter()
            .all(|t| !(100..110).any(|i| *t == format!("test message {i}"))),
        "{op}: a refused line was kept: {texts:?}"
    );
    assert!(common::open_files(&messages).is_empty(), "{:?}", file_names(&messages));
    let (code, out) = verify(tmp.path());
    assert_eq!(code, Some(0), "{op}: {out}");
}

#[tokio::test]
async fn a_failed_fsync_refuses_the_batch_and_readiness_waits_for_a_good_one() {
    batch_refused_while("fsync", Target::FilesInMessageDir).await;
}

#[tokio::test]
async fn a_failed_write_refuses_the_batch_and_readiness_waits_for_a_good_one() {
    batch_refused_while("write", Target::FilesInMessageDir).await;
}

#[tokio::test]
async fn a_failed_rename_refuses_the_batch_and_readiness_waits_for_a_good_one() {
    batch_refused_while("rename", Target::FilesInMessageDir).await;
}

#[tokio::test]
async fn a_failed_directory_fsync_refuses_the_batch_and_readiness_waits_for_a_good_one() {
    batch_refused_while("fsync", Target::MessageDirItself).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_failed_fsync_the_file_is_closed_as_suspect_and_the_operators_are_told() {
    let shim = FaultShim::build();
    let moto = common::aws::Moto::start().await;
    let (topic, queue) = moto.topic_with_queue("spool-events").await;
    let mut env = shim.env();
    env.extend(moto.env());
    env.push(("WICKRIO_SNS_TOPIC_ARN".into(), topic));
    let mut bot = Bot::start(&refs(&env)).await;
    let messages = bot.messages_dir();
    assert_eq!(bot.post("application/json", text_message(1)).await.status(), 202);
    let open = common::open_files(&messages);
    assert_eq!(open.len(), 1);
    // Only this file fails, so what happens next is about it alone.
    shim.inject(&[format!("fsync EIO {}", messages.join(&open[0]).display())]);
    assert_eq!(bot.post("application/json", text_message(2)).await.status(), 503);
    shim.clear();
    // The next batch goes to a new file: the failed one is never written again.
    assert_eq!(bot.post("application/json", text_message(3)).await.status(), 202);
    assert_eq!(readyz(&bot).await, 200);
    assert!(bot.stop().await.success());
    let suspect: Vec<String> = file_names(&messages)
        .into_iter()
        .filter(|n| n.ends_with(".suspect.txt"))
        .collect();
    assert_eq!(suspect.len(), 1, "{:?}", file_names(&messages));
    let text = std::fs::read_to_string(messages.join(&suspect[0])).unwrap();
    assert_eq!(
        text,
        format!("{}\n", text_message(1)),
        "cut back to the acknowledged line"
    );
    assert_eq!(written_texts(&bot), ["test message 1", "test message 3"]);
    let (code, out) = verify(&bot.root);
    assert_eq!(code, Some(0), "{out}");

    let events = moto.drain_queue(&queue).await;
    let find = |start: &str| {
        events
            .iter()
            .find(|e| e["message"].as_str().is_some_and(|m| m.starts_with(start)))
            .unwrap_or_else(|| panic!("no event {start:?} in {events:?}"))
    };
    let failing = find("writing the spool failed: ");
    assert_eq!(failing["severity"], "critical");
    assert!(
        failing["message"].as_str().unwrap().contains("Input/output error"),
        "{failing}"
    );
    assert_eq!(find("writing the spool works again")["severity"], "normal");
}

#[tokio::test]
async fn a_failed_attachment_fsync_refuses_it_and_leaves_no_file() {
    let shim = FaultShim::build();
    let mut bot = Bot::start(&refs(&shim.env())).await;
    shim.inject(&[format!("fsync EIO {}/", bot.attachments_dir().display())]);
    let part = reqwest::multipart::Part::bytes(vec![7u8; 5000]).file_name("a.bin");
    let r = bot
        .post_form(attachment_form(&common::file_message("a.bin"), part))
        .await;
    assert_eq!(r.status(), 503, "{}", r.text().await.unwrap());
    assert_eq!(readyz(&bot).await, 503);
    shim.clear();
    // No traffic needed: the spool's own probe finds the disk working again.
    wait_ready(&bot).await;
    let part = reqwest::multipart::Part::bytes(vec![8u8; 5000]).file_name("b.bin");
    let r = bot
        .post_form(attachment_form(&common::file_message("b.bin"), part))
        .await;
    assert_eq!(r.status(), 202);
    assert!(bot.stop().await.success());
    let files = file_names(&bot.attachments_dir());
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].ends_with("_b.bin"), "{files:?}");
    assert_eq!(written_lines(&bot.messages_dir()).len(), 1);
}

#[tokio::test]
async fn a_failed_manifest_append_is_cut_back_and_the_file_listed_once_it_works() {
    manifest_appends_fail(&["fsync"]).await;
}

#[tokio::test]
async fn a_failed_manifest_append_that_cannot_be_cut_is_written_again_not_numbered_again() {
    // The failed manifest keeps the entry; the next one holds it again: the same entry twice.
    manifest_appends_fail(&["fsync", "truncate"]).await;
}

/// Manifest appends fail (with `ops`) while files close, then work again for three more messages.
async fn manifest_appends_fail(ops: &[&str]) {
    let shim = FaultShim::build();
    let mut env = shim.env();
    env.push(("WICKRIO_COMP_FILESIZE".into(), "1".into()));
    let mut bot = Bot::start(&refs(&env)).await;
    let pattern = format!("{}/manifest_", bot.messages_dir().display());
    shim.inject(&ops.iter().map(|op| format!("{op} EIO {pattern}")).collect::<Vec<_>>());
    // Each message fills most of a 1 KiB file, so files close (and want their entries) as we go.
    for i in 0..6 {
        assert_eq!(bot.post("application/json", text_message(i)).await.status(), 202);
    }
    shim.clear();
    for i in 6..9 {
        assert_eq!(bot.post("application/json", text_message(i)).await.status(), 202);
    }
    assert!(bot.stop().await.success());
    let log = bot.log_text();
    assert!(log.contains("cannot write the manifest"), "the fault was hit: {log}");
    if ops.contains(&"truncate") {
        assert!(log.contains("cannot cut back a failed manifest entry"), "{log}");
    }
    // A restart closes what was left for recovery.
    let mut again = Bot::prepare(&bot.root, &[]);
    again.spawn().await;
    assert!(again.stop().await.success());
    // Every file listed, the chain unbroken: no torn entry, no gap, no number given to two entries.
    let (code, out) = verify(&bot.root);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(written_texts(&again).len(), 9);
}

#[tokio::test]
async fn a_failed_file_that_cannot_be_cut_back_keeps_only_its_acknowledged_lines() {
    let shim = FaultShim::build();
    let mut bot = Bot::start(&refs(&shim.env())).await;
    assert_eq!(bot.post("application/json", text_message(1)).await.status(), 202);
    let files = format!("{}/receivedMessages_", bot.messages_dir().display());
    shim.inject(&[format!("fsync EIO {files}"), format!("truncate EIO {files}")]);
    assert_eq!(bot.post("application/json", text_message(2)).await.status(), 503);
    shim.clear();
    assert_eq!(bot.post("application/json", text_message(3)).await.status(), 202);
    assert!(bot.stop().await.success());
    let log = bot.log_text();
    assert!(
        log.contains("cannot cut it back") && log.contains("left for recovery"),
        "{log}"
    );
    // The failed file still holds the refused line; the next start keeps only what was acknowledged.
    let mut again = Bot::prepare(&bot.root, &[]);
    again.spawn().await;
    assert!(again.stop().await.success());
    assert_eq!(written_texts(&again), ["test message 1", "test message 3"]);
    let names = file_names(&again.messages_dir());
    assert!(names.iter().any(|n| n.ends_with(".suspect.txt")), "{names:?}");
    let (code, out) = verify(&again.root);
    assert_eq!(code, Some(0), "{out}");
}

/// A multipart request written by hand so that it can be cut anywhere.
fn raw_attachment_request(port: u16, i: usize, content: &[u8]) -> Vec<u8> {
    let boundary = "XyZbOuNdArY";
    let message = common::file_message(&format!("hangup-{i}.bin"));
    let mut body = Vec::new();
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"message\"\r\n\r\n{message}\r\n").as_bytes(),
    );
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"hangup-{i}.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(content);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let mut request = format!(
        "POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    request
}

/// A small deterministic generator, so a failing run can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn from_time() -> Rng {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        eprintln!("random seed {seed}");
        Rng(seed | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// Every line with a `file.localfilename` points at an attachment that exists, named by no other
/// line. Returns the attachment files no line names.
fn lines_name_existing_attachments(bot: &Bot) -> Vec<String> {
    let mut named = HashMap::new();
    for line in written_lines(&bot.messages_dir()) {
        if let Some(local) = line["file"]["localfilename"].as_str() {
            *named.entry(PathBuf::from(local)).or_insert(0) += 1;
        }
    }
    for (path, n) in &named {
        assert!(
            path.exists(),
            "a durable line names a missing attachment {}",
            path.display()
        );
        assert_eq!(*n, 1, "{} is named by {n} lines", path.display());
    }
    file_names(&bot.attachments_dir())
        .into_iter()
        .filter(|name| !named.contains_key(&bot.attachments_dir().join(name)))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_hanging_up_anywhere_leave_no_attachment_without_its_line_or_line_without_its_file() {
    let mut bot = Bot::start(&[]).await;
    let port = bot.port;
    let mut rng = Rng::from_time();
    let mut plans = Vec::new();
    for i in 0..200 {
        let content: Vec<u8> = (0..(2000 + rng.below(60_000) as usize))
            .map(|j| (i + j) as u8)
            .collect();
        let request = raw_attachment_request(port, i, &content);
        // Anywhere from the first byte to the whole request, with the whole request (then hanging
        // up before the answer) a third of the time.
        let cut = if rng.below(3) == 0 {
            request.len()
        } else {
            rng.below(request.len() as u64) as usize
        };
        let linger = Duration::from_millis(1 + rng.below(20));
        plans.push((request, cut, linger));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in plans.chunks(8) {
        for (request, cut, linger) in chunk.iter().cloned() {
            tasks.spawn(async move {
                let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
                let _ = conn.write_all(&request[..cut]).await;
                tokio::time::sleep(linger).await;
                drop(conn);
            });
        }
        while tasks.join_next().await.is_some() {}
    }
    // Work that outlived its client finishes; then a clean stop.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(bot.stop().await.success(), "{}", bot.log_text());
    let orphans = lines_name_existing_attachments(&bot);
    assert!(
        orphans.is_empty(),
        "attachments without a line: {orphans:?}\n{}",
        bot.log_text()
    );
    let kept = file_names(&bot.attachments_dir()).len();
    eprintln!("{kept} of 200 attachments were kept, each with its line");
    let (code, out) = verify(&bot.root);
    assert_eq!(code, Some(0), "{out}");
}

#[tokio::test]
async fn a_second_daemon_and_an_import_on_a_live_state_directory_are_refused() {
    let mut first = Bot::start(&[]).await;
    assert_eq!(first.post("application/json", text_message(1)).await.status(), 202);

    // Same directories, another port: refused at once, naming the holder.
    let mut second = Bot::prepare(&first.root, &[]);
    second.set_env("WICKRIO_INGEST_ADDR", &format!("127.0.0.1:{}", common::free_port()));
    let out = second.command().output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("PID {}", first.pid())), "{stderr}");
    assert!(
        stderr.contains("`retention-bot run`") && stderr.contains("retention-bot.lock"),
        "{stderr}"
    );

    let input = first.root.join("import.txt");
    std::fs::write(&input, format!("{}\n", text_message(2))).unwrap();
    let out = second.command().arg("import").arg(&input).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("POST them to its HTTP source"), "{stderr}");

    // The first one never noticed.
    assert_eq!(first.post("application/json", text_message(3)).await.status(), 202);
    assert!(first.stop().await.success());
    assert_eq!(written_texts(&first), ["test message 1", "test message 3"]);
    let (code, out) = verify(&first.root);
    assert_eq!(code, Some(0), "{out}");

    // Once it is gone, the import goes through.
    let out = second.command().arg("import").arg(&input).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// What a producer was told was durable.
#[derive(Default)]
struct Acked {
    texts: HashSet<String>,
    /// Attachment path → content.
    files: HashMap<String, Vec<u8>>,
}

/// Producers posting batches and attachments as fast as they are answered, until `stop`.
async fn load(bot_url: String, round: usize, stop: tokio::sync::watch::Receiver<bool>) -> Acked {
    let client = reqwest::Client::new();
    let mut acked = Acked::default();
    let mut n = 0;
    while !*stop.borrow() {
        n += 1;
        let id = round * 100_000 + n;
        let result = if n % 3 == 0 {
            let content = format!("attachment {id}").repeat(50).into_bytes();
            let form = attachment_form(
                &common::file_message(&format!("f{id}.txt")),
                reqwest::multipart::Part::bytes(content.clone()).file_name("f.txt"),
            );
            match client
                .post(format!("{bot_url}/v1/messages"))
                .multipart(form)
                .send()
                .await
            {
                Ok(r) if r.status() == 202 => {
                    let body: serde_json::Value = r.json().await.unwrap_or_default();
                    if let Some(path) = body["localfilename"].as_str() {
                        acked.files.insert(path.to_owned(), content);
                    }
                    Ok(())
                }
                other => Err(other.map(|r| r.status().to_string())),
            }
        } else {
            let batch: Vec<String> = (0..20).map(|j| text_message(id * 100 + j)).collect();
            match client
                .post(format!("{bot_url}/v1/messages"))
                .header("content-type", "application/x-ndjson")
                .body(batch.join("\n"))
                .send()
                .await
            {
                Ok(r) if r.status() == 202 => {
                    acked
                        .texts
                        .extend((0..20).map(|j| format!("test message {}", id * 100 + j)));
                    Ok(())
                }
                other => Err(other.map(|r| r.status().to_string())),
            }
        };
        if result.is_err() {
            break; // the bot was killed
        }
    }
    acked
}

#[tokio::test(flavor = "multi_thread")]
async fn kill9_twenty_times_under_load_loses_nothing_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let extra = [("WICKRIO_COMP_FILESIZE", "64")];
    let mut rng = Rng::from_time();
    let mut acked = Acked::default();
    for round in 0..20 {
        let mut bot = Bot::prepare(tmp.path(), &extra);
        bot.spawn().await;
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let producers: Vec<_> = (0..4)
            .map(|p| tokio::spawn(load(bot.url(""), round * 10 + p, stop_rx.clone())))
            .collect();
        tokio::time::sleep(Duration::from_millis(200 + rng.below(1200))).await;
        bot.kill9().await;
        let _ = stop.send(true);
        for p in producers {
            let got = p.await.unwrap();
            acked.texts.extend(got.texts);
            acked.files.extend(got.files);
        }
    }
    let mut bot = Bot::prepare(tmp.path(), &extra);
    bot.spawn().await;
    assert!(bot.stop().await.success(), "{}", bot.log_text());

    let texts: HashSet<String> = written_texts(&bot).into_iter().collect();
    let lost: Vec<&String> = acked.texts.iter().filter(|t| !texts.contains(*t)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged messages lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(3)]
    );
    for (path, content) in &acked.files {
        assert_eq!(&std::fs::read(path).unwrap(), content, "{path}");
    }
    // A kill between an attachment's link and its line may keep the file without a line: never
    // acknowledged, kept all the same (as recovery keeps whole but unacknowledged lines), and listed.
    let orphans = lines_name_existing_attachments(&bot);
    eprintln!(
        "20 rounds: {} messages and {} attachments acknowledged, all kept; {} unacknowledged attachment(s) kept without a line",
        acked.texts.len(),
        acked.files.len(),
        orphans.len()
    );
    let (code, out) = verify(&bot.root);
    assert_eq!(code, Some(0), "{out}");
}
