//! Create-only uploads against a real moto server, which enforces `If-None-Match: *`: an upload whose
//! first answer was lost is retried, finds its key taken by its own earlier attempt and counts as
//! done; a file whose key holds other content is never uploaded over it, stays on disk, and is
//! reported loudly (a critical event and `S3_Key_Conflicts`).

use crate::common;

use std::collections::HashMap;
use std::time::Duration;

use common::aws::{Moto, Proxy, RecordingProxy};
use common::{Bot, closed_message_files, metric, text_message, wait_for};

const FOLDER: &str = "retention/bot1";

fn refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// A bot (settings `extra`) uploading to `bucket` through a proxy that is down: one message file closes
/// and waits on disk, and the bot is stopped. Returns the proxy (still down), the bot and the file's
/// name.
async fn file_left_waiting(moto: &Moto, bucket: &str, extra: &[(&str, &str)]) -> (Proxy, Bot, String) {
    let proxy = Proxy::start(moto.port).await;
    proxy.set_up(false);
    let mut env = Moto::env_via(&proxy.endpoint());
    for (k, v) in [
        ("WICKRIO_S3_BUCKET_NAME", bucket),
        ("WICKRIO_S3_FOLDER_NAME", FOLDER),
        ("WICKRIO_COMP_TIMEROTATE", "0.02"),
        ("WICKRIO_SHUTDOWN_GRACE_SECS", "1"),
    ]
    .iter()
    .chain(extra)
    {
        env.push((k.to_string(), v.to_string()));
    }
    let mut bot = Bot::start(&refs(&env)).await;
    assert_eq!(bot.post("application/json", text_message(1)).await.status(), 202);
    wait_for(&bot, "the message file to close", Duration::from_secs(30), async || {
        closed_message_files(&bot.messages_dir()).len() == 1
    })
    .await;
    assert!(bot.stop().await.success(), "{}", bot.log_text());
    let name = closed_message_files(&bot.messages_dir()).remove(0);
    (proxy, bot, name)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_encrypted_upload_whose_answer_was_lost_is_retried_and_counts_as_uploaded() {
    let moto = Moto::start().await;
    moto.create_bucket("once-1").await;
    let key_arn = moto.create_key().await;
    let proxy = RecordingProxy::start(moto.port).await;
    // The first PutObject of a message file reaches moto and stores the object; its answer is lost.
    proxy.lose_answers_to("receivedMessages_", 1);
    let mut env = Moto::env_via(&proxy.endpoint());
    for (k, v) in [
        ("WICKRIO_S3_BUCKET_NAME", "once-1"),
        ("WICKRIO_S3_FOLDER_NAME", FOLDER),
        ("WICKRIO_KMS_MSTRKEY_ARN", &key_arn),
        ("WICKRIO_COMP_TIMEROTATE", "0.02"),
    ] {
        env.push((k.to_owned(), v.to_owned()));
    }
    let mut bot = Bot::start(&refs(&env)).await;
    assert_eq!(bot.post("application/json", text_message(1)).await.status(), 202);
    wait_for(&bot, "the message file's upload", Duration::from_secs(60), async || {
        metric(&bot, "S3_Uploads").await >= 1 && closed_message_files(&bot.messages_dir()).is_empty()
    })
    .await;

    let keys: Vec<String> = moto
        .keys("once-1")
        .await
        .into_iter()
        .filter(|k| k.contains("receivedMessages_"))
        .collect();
    assert_eq!(keys.len(), 1, "one object for the one file: {keys:?}");
    let puts: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.path.contains("receivedMessages_"))
        .collect();
    assert!(
        puts.len() >= 2,
        "the lost answer made the SDK send it again: {} PUTs",
        puts.len()
    );
    for put in &puts {
        assert_eq!(put.header("if-none-match"), Some(&b"*"[..]), "every PUT is create-only");
    }
    // The object is the first attempt's (its encryption), and it opens to the file's content.
    let plain = moto.read_encrypted("once-1", &keys[0], &key_arn, "official").unwrap();
    assert_eq!(String::from_utf8(plain).unwrap(), format!("{}\n", text_message(1)));
    assert_eq!(metric(&bot, "S3_Key_Conflicts").await, 0);
    assert!(
        bot.log_text().contains("already in S3 (an earlier attempt stored it"),
        "{}",
        bot.log_text()
    );
    assert!(bot.stop().await.success(), "{}", bot.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_whose_key_holds_other_content_is_kept_and_reported_never_uploaded_over_it() {
    let moto = Moto::start().await;
    moto.create_bucket("once-2").await;
    let (topic, queue) = moto.topic_with_queue("bot-events").await;
    let sns = moto.endpoint();
    let (proxy, mut bot, name) = file_left_waiting(
        &moto,
        "once-2",
        &[
            ("AWS_ENDPOINT_URL_SNS", sns.as_str()),
            ("WICKRIO_SNS_TOPIC_ARN", &topic),
        ],
    )
    .await;
    let key = format!("{FOLDER}/{name}");

    // Someone else's content under the file's key, then S3 back and the bot again.
    let theirs = b"someone else's object".to_vec();
    let stamp = HashMap::from([("wickrio-content-mac".to_owned(), "00".repeat(32))]);
    moto.put_raw("once-2", &key, theirs.clone(), stamp).await;
    proxy.set_up(true);
    bot.spawn().await;
    wait_for(&bot, "the conflict", Duration::from_secs(60), async || {
        metric(&bot, "S3_Key_Conflicts").await >= 1
    })
    .await;

    let (body, _) = moto.object("once-2", &key).await;
    assert_eq!(body, theirs, "the other object is never overwritten");
    assert_eq!(
        closed_message_files(&bot.messages_dir()),
        vec![name.clone()],
        "the file waits on disk"
    );
    let log = bot.log_text();
    assert!(log.contains("already holds other content"), "{log}");
    assert!(bot.stop().await.success(), "{}", bot.log_text());

    let events = moto.drain_queue(&queue).await;
    let conflicts: Vec<_> = events
        .iter()
        .filter(|e| {
            e["message"]
                .as_str()
                .unwrap_or_default()
                .starts_with(&format!("s3://once-2/{key} already holds other content"))
        })
        .collect();
    assert_eq!(conflicts.len(), 1, "one event per file: {events:#?}");
    assert_eq!(conflicts[0]["severity"], "critical");
    // Each stop closed a manifest: its chain head went out as an event too.
    assert!(
        events.iter().any(|e| e["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("manifest chain head: entry ")),
        "{events:#?}"
    );
    assert!(
        closed_message_files(&bot.messages_dir()).contains(&name),
        "still kept after the stop"
    );

    // The operator moves the other object aside: the next attempt uploads the file.
    let s3 = moto.s3().await;
    s3.delete_object().bucket("once-2").key(&key).send().await.unwrap();
    bot.spawn().await;
    wait_for(
        &bot,
        "the upload once the key is free",
        Duration::from_secs(60),
        async || !closed_message_files(&bot.messages_dir()).contains(&name),
    )
    .await;
    let (body, _) = moto.object("once-2", &key).await;
    assert_eq!(String::from_utf8(body).unwrap(), format!("{}\n", text_message(1)));
    assert!(bot.stop().await.success(), "{}", bot.log_text());
}

/// Every file under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// `retention-bot verify DIR` with each of `keys`.
fn verify_with(dir: &std::path::Path, keys: &[std::path::PathBuf]) -> (bool, String) {
    let mut cmd = std::process::Command::new(common::BIN);
    cmd.arg("verify").arg(dir).env_clear();
    for key in keys {
        cmd.arg("--public-key").arg(key);
    }
    let (code, text) = common::run_to_end(&mut cmd);
    (code == Some(0), text)
}

/// Tasks posting to each bot of `two_bots_on_one_bucket_and_folder_never_collide_and_each_chain_verifies`.
const TASKS: usize = 6;
/// Posts each task sends.
const POSTS: usize = 60;
/// Messages in each post.
const LINES: usize = 10;

/// Two replicas on one bucket and folder under load: NDJSON posts from many tasks and the same
/// attachment name on both at once. Returns the two bots, still running.
async fn two_replicas_under_load(moto: &Moto) -> [Bot; 2] {
    // Two replicas of one bot (one name) behind a load balancer, one bucket and folder, files rotating
    // every 0.6 s: their uploads interleave throughout.
    let mut env = Moto::env_via(&moto.endpoint());
    for (k, v) in [
        ("WICKRIO_S3_BUCKET_NAME", "shared-1"),
        ("WICKRIO_S3_FOLDER_NAME", FOLDER),
        ("WICKRIO_COMP_TIMEROTATE", "0.01"),
    ] {
        env.push((k.to_owned(), v.to_owned()));
    }
    let bots = [Bot::start(&refs(&env)).await, Bot::start(&refs(&env)).await];
    let client = reqwest::Client::new();
    let mut load = tokio::task::JoinSet::new();
    for (b, bot) in bots.iter().enumerate() {
        for task in 0..TASKS {
            let (client, url) = (client.clone(), bot.url("/v1/messages"));
            load.spawn(async move {
                for post in 0..POSTS {
                    let first = ((b * TASKS + task) * POSTS + post) * LINES;
                    let body: Vec<String> = (first..first + LINES).map(text_message).collect();
                    let r = client
                        .post(&url)
                        .header("content-type", "application/x-ndjson")
                        .body(body.join("\n"))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 202);
                    // Spread over more than two rotation periods (0.6 s): several files per bot.
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
            });
        }
        // The same attachment name on both bots at once, different content.
        let part = reqwest::multipart::Part::bytes(vec![b as u8; 50_000]).file_name("report.pdf");
        let form = common::attachment_form(&common::file_message("report.pdf"), part);
        assert_eq!(bot.post_form(form).await.status(), 202);
    }
    while let Some(done) = load.join_next().await {
        done.unwrap();
    }
    bots
}

/// Every closed file of both bots uploaded without a key conflict, then both stopped.
async fn every_file_uploaded_without_conflict(bots: &mut [Bot]) {
    for bot in bots.iter() {
        wait_for(bot, "every closed file uploaded", Duration::from_secs(60), async || {
            closed_message_files(&bot.messages_dir()).is_empty() && metric(bot, "S3_Backlog_Files").await == 0
        })
        .await;
        assert_eq!(metric(bot, "S3_Key_Conflicts").await, 0, "{}", bot.log_text());
    }
    for bot in bots.iter_mut() {
        assert!(bot.stop().await.success(), "{}", bot.log_text());
        assert!(!bot.log_text().contains("already holds"), "{}", bot.log_text());
    }
}

/// The whole folder, restored into `dest`, holds every message once and both attachments.
async fn the_restored_folder_holds_everything_once(moto: &Moto, dest: &std::path::Path) {
    let out = std::process::Command::new(common::BIN)
        .args(["decrypt", "--bucket", "shared-1", "--prefix", FOLDER, "--dest"])
        .arg(dest)
        .env_clear()
        .envs(Moto::env_via(&moto.endpoint()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let files = files_under(dest);
    let mut ids = std::collections::HashSet::new();
    for path in files.iter().filter(|p| {
        p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("receivedMessages_")
    }) {
        for line in std::fs::read_to_string(path).unwrap().lines() {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            if value["msgtype"] == 1000 {
                assert!(
                    ids.insert(value["message_id"].as_str().unwrap().to_owned()),
                    "{line} twice"
                );
            }
        }
    }
    assert_eq!(ids.len(), 2 * TASKS * POSTS * LINES);
    let message_objects = moto
        .keys("shared-1")
        .await
        .into_iter()
        .filter(|k| k.contains("/receivedMessages_"))
        .count();
    assert!(
        message_objects >= 4,
        "files of both bots interleaved: {message_objects} message objects"
    );
    let reports = files
        .iter()
        .filter(|p| p.to_string_lossy().ends_with("_report.pdf"))
        .count();
    assert_eq!(reports, 2, "both report.pdf under keys of their own");
}

/// Each bot's chain in `dest` verifies under its own key; with one key, the other bot's entries do
/// not.
fn each_chain_verifies_under_its_own_key(bots: &[Bot], dest: &std::path::Path) {
    let keys: Vec<_> = bots.iter().map(|b| b.root.join("state/public_key.txt")).collect();
    let (ok, text) = verify_with(dest, &keys);
    assert!(ok && text.contains(" 0 problem(s)"), "{text}");
    for key in &keys {
        assert!(
            text.contains(&format!("{}: ", key.display())),
            "entries per key: {text}"
        );
    }
    let (ok, text) = verify_with(dest, &keys[..1]);
    assert!(!ok && text.contains("BAD SIGNATURE"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_bots_on_one_bucket_and_folder_never_collide_and_each_chain_verifies() {
    let moto = Moto::start().await;
    moto.create_bucket("shared-1").await;
    let mut bots = two_replicas_under_load(&moto).await;
    every_file_uploaded_without_conflict(&mut bots).await;

    let dest = bots[0].root.join("restored");
    the_restored_folder_holds_everything_once(&moto, &dest).await;

    each_chain_verifies_under_its_own_key(&bots, &dest);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_altered_after_it_was_listed_is_never_stored() {
    let moto = Moto::start().await;
    moto.create_bucket("once-3").await;
    let (proxy, mut bot, name) = file_left_waiting(&moto, "once-3", &[]).await;
    // Listed, then changed on disk (same length): what the manifest proves is no longer there.
    let path = bot.messages_dir().join(&name);
    let altered = std::fs::read_to_string(&path)
        .unwrap()
        .replace("test message 1", "test message X");
    std::fs::write(&path, altered).unwrap();
    proxy.set_up(true);
    bot.spawn().await;
    wait_for(&bot, "the refusal", Duration::from_secs(60), async || {
        bot.log_text().contains("no longer holds what its manifest entry lists")
    })
    .await;
    assert!(
        !moto.keys("once-3").await.iter().any(|k| k.ends_with(&name)),
        "nothing stored under the file's key"
    );
    assert!(
        closed_message_files(&bot.messages_dir()).contains(&name),
        "the file waits on disk"
    );
    assert!(bot.stop().await.success(), "{}", bot.log_text());
}
