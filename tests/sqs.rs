//! The SQS source against moto's SQS (and S3): two bots draining one queue while one is killed -9 and
//! restarted; bodies in S3 behind the SQS Extended Client's pointers (the legacy one, and AWS's own
//! Python client); a file message naming its bytes in S3; a FIFO queue's order within each group; a
//! poison message moved to the dead-letter queue by the queue's redrive policy; every fsync failing;
//! SIGTERM with messages in hand.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};

use crate::common;
use common::aws::Moto;
use common::faults::FaultShim;
use common::{Bot, text_message, written_lines};

/// A queue on moto, and a client of it.
struct Queue {
    url: String,
    sqs: aws_sdk_sqs::Client,
}

impl Queue {
    async fn create(moto: &Moto, name: &str, attributes: &[(QueueAttributeName, String)]) -> Queue {
        let sqs = aws_sdk_sqs::Client::new(&moto.sdk_config().await);
        let mut request = sqs.create_queue().queue_name(name);
        for (k, v) in attributes {
            request = request.attributes(k.clone(), v);
        }
        let url = request.send().await.unwrap().queue_url.unwrap();
        Queue { url, sqs }
    }

    async fn arn(&self) -> String {
        let attrs = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap();
        attrs.attributes().unwrap()[&QueueAttributeName::QueueArn].clone()
    }

    /// Sends `bodies`, ten a call; in a FIFO queue each with the group `group(i)`.
    async fn send(&self, bodies: &[String], group: Option<&(dyn Fn(usize) -> String + Sync)>) {
        for (n, chunk) in bodies.chunks(10).enumerate() {
            let entries = chunk.iter().enumerate().map(|(i, body)| {
                let at = n * 10 + i;
                let mut entry = SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(body);
                if let Some(group) = group {
                    entry = entry
                        .message_group_id(group(at))
                        .message_deduplication_id(at.to_string());
                }
                entry.build().unwrap()
            });
            let out = self
                .sqs
                .send_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries.collect()))
                .send()
                .await
                .unwrap();
            assert!(out.failed.is_empty(), "{:?}", out.failed);
        }
    }

    /// Messages waiting and messages in flight (received, not deleted).
    async fn counts(&self) -> (u64, u64) {
        let attrs = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .unwrap();
        let attrs = attrs.attributes().unwrap();
        let n = |k: QueueAttributeName| attrs.get(&k).and_then(|v| v.parse().ok()).unwrap_or(0);
        (
            n(QueueAttributeName::ApproximateNumberOfMessages),
            n(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        )
    }

    /// Waits (bounded) until nothing waits and nothing is in flight.
    async fn drained(&self, bots: &[&Bot]) {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if self.counts().await == (0, 0) {
                return;
            }
            let logs: Vec<String> = bots.iter().map(|b| b.log_text()).collect();
            assert!(
                Instant::now() < deadline,
                "the queue does not drain: {:?}\n{}",
                self.counts().await,
                logs.join("\n---\n")
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

/// The settings of a bot draining `queue` on `moto`.
fn sqs_env(moto: &Moto, queue: &Queue) -> Vec<(String, String)> {
    let mut env = Moto::env_via(&moto.endpoint());
    env.push(("WICKRIO_NETWORK".into(), "sqs".into()));
    env.push(("WICKRIO_SQS_QUEUE_URL".into(), queue.url.clone()));
    env
}

fn refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// The `message_id`s a bot has written, with how often.
fn ids(bot: &Bot) -> HashMap<String, usize> {
    let mut ids = HashMap::new();
    for line in written_lines(&bot.messages_dir()) {
        *ids.entry(line["message_id"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    ids
}

/// Bodies of `n` messages from `first`: single messages, and every tenth body NDJSON of ten.
fn bodies(first: usize, n: usize) -> (Vec<String>, Vec<String>) {
    let (mut bodies, mut expected) = (Vec::new(), Vec::new());
    let mut i = first;
    while i < first + n {
        if (i / 10).is_multiple_of(10) && i + 10 <= first + n {
            bodies.push((i..i + 10).map(text_message).collect::<Vec<_>>().join("\n"));
            expected.extend((i..i + 10).map(|j| format!("{j:032x}")));
            i += 10;
        } else {
            bodies.push(text_message(i));
            expected.push(format!("{i:032x}"));
            i += 1;
        }
    }
    (bodies, expected)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_bots_drain_one_queue_and_a_kill_9_loses_nothing() {
    let moto = Moto::start().await;
    let queue = Queue::create(&moto, "fleet", &[]).await;
    let env = sqs_env(&moto, &queue);
    let (tmp_a, tmp_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = Bot::prepare(tmp_a.path(), &refs(&env));
    let mut b = Bot::prepare(tmp_b.path(), &refs(&env));
    a.spawn().await;
    b.spawn().await;
    let (all, expected) = bodies(0, 3000);
    let sender = {
        let (url, sqs, all) = (queue.url.clone(), queue.sqs.clone(), all.clone());
        tokio::spawn(async move { Queue { url, sqs }.send(&all, None).await })
    };
    // Bot a is killed mid-stream, and restarted.
    let deadline = Instant::now() + Duration::from_secs(120);
    while ids(&a).len() < 300 {
        assert!(Instant::now() < deadline, "{}", a.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.kill9().await;
    a.spawn().await;
    sender.await.unwrap();
    queue.drained(&[&a, &b]).await;
    assert!(
        common::metric(&b, "SQS_Deleted").await > 0,
        "the second bot took a share"
    );
    assert!(a.stop().await.success(), "{}", a.log_text());
    assert!(b.stop().await.success(), "{}", b.log_text());

    let (ids_a, ids_b) = (ids(&a), ids(&b));
    let missing: Vec<&String> = expected
        .iter()
        .filter(|id| !ids_a.contains_key(*id) && !ids_b.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} messages in neither archive: {:?}",
        missing.len(),
        expected.len(),
        &missing[..missing.len().min(5)]
    );
    for bot in [&a, &b] {
        let (code, out) = crate::faults::verify(&bot.root);
        assert_eq!(code, Some(0), "{out}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_and_attachments_in_s3_are_fetched_and_a_fifo_group_keeps_its_order() {
    let moto = Moto::start().await;
    moto.create_bucket("payloads").await;
    let queue = Queue::create(&moto, "ordered.fifo", &[(QueueAttributeName::FifoQueue, "true".into())]).await;
    let mut env = sqs_env(&moto, &queue);
    env.push(("WICKRIO_SQS_DELETE_PAYLOADS".into(), "true".into()));
    env.push(("WICKRIO_SQS_PAYLOAD_BUCKETS".into(), "payloads".into()));
    // One receiver: SQS hands out no more of a group while some of it is in flight, whatever the
    // receivers, but moto checks that against the groups in flight when a long poll began (a stale
    // snapshot, moto/sqs/models.py `receive_message`), so with several it can hand a group to two
    // receivers at once. What the bot owes (a batch written in its order, deleted only after) shows
    // with one.
    env.push(("WICKRIO_SQS_RECEIVERS".into(), "1".into()));
    let mut bot = Bot::start(&refs(&env)).await;

    // Three groups, interleaved.
    let messages: Vec<String> = (0..150).map(text_message).collect();
    queue.send(&messages, Some(&|i| format!("group-{}", i % 3))).await;
    // A legacy pointer to a body in S3, and a file message whose bytes are in S3.
    let big: Vec<String> = (1000..1400).map(text_message).collect();
    moto.put_raw("payloads", "bodies/big", big.join("\n").into_bytes(), HashMap::new())
        .await;
    let legacy = format!(
        r#"["{}",{{"s3BucketName":"payloads","s3Key":"bodies/big"}}]"#,
        retention_bot::source::sqs::LEGACY_POINTER
    );
    let attachment: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    moto.put_raw("payloads", "files/report.pdf", attachment.clone(), HashMap::new())
        .await;
    let file = r#"{"msgtype":6000,"message_id":"file-1","msg_ts":"1691176259.5","sender":"a","vgroupid":"S1","file":{"filename":"report.pdf","s3":{"bucket":"payloads","key":"files/report.pdf"}}}"#;
    queue.send(&[legacy, file.to_owned()], Some(&|_| "s3".to_owned())).await;
    queue.drained(&[&bot]).await;

    let lines = written_lines(&bot.messages_dir());
    for group in 0..3 {
        let order: Vec<usize> = lines
            .iter()
            .filter_map(|l| l["message"].as_str()?.strip_prefix("test message ")?.parse().ok())
            .filter(|i: &usize| *i < 150 && i % 3 == group)
            .collect();
        let expected: Vec<usize> = (0..150).filter(|i| i % 3 == group).collect();
        assert_eq!(order, expected, "group {group} in order, each once");
    }
    let got: BTreeSet<usize> = lines
        .iter()
        .filter_map(|l| l["message"].as_str()?.strip_prefix("test message ")?.parse().ok())
        .collect();
    assert!((1000..1400).all(|i| got.contains(&i)), "the body behind the pointer");
    let filed = lines
        .iter()
        .find(|l| l["message_id"] == "file-1")
        .expect("the file message");
    let local = filed["file"]["localfilename"].as_str().unwrap();
    assert!(
        local.contains("attachment_") && local.ends_with("_report.pdf"),
        "{local}"
    );
    assert_eq!(std::fs::read(local).unwrap(), attachment);
    assert_eq!(
        filed["file"]["s3"]["key"], "files/report.pdf",
        "the rest of the file object as sent"
    );
    // WICKRIO_SQS_DELETE_PAYLOADS: the body's object is gone once archived.
    assert!(!moto.keys("payloads").await.contains(&"bodies/big".to_owned()));
    assert_eq!(common::metric(&bot, "SQS_Payloads_Fetched").await, 2);
    assert!(bot.stop().await.success(), "{}", bot.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_python_extended_client_s_large_bodies_are_archived() {
    let moto = Moto::start().await;
    moto.create_bucket("extended").await;
    let queue = Queue::create(&moto, "extended", &[]).await;
    let mut env = sqs_env(&moto, &queue);
    env.push(("WICKRIO_SQS_PAYLOAD_BUCKETS".into(), "other,extended".into()));
    let mut bot = Bot::start(&refs(&env)).await;
    // Over the client's threshold (256 KiB): it moves the body to S3 and sends its pointer.
    let big: Vec<String> = (5000..7000).map(text_message).collect();
    let body = big.join("\n");
    assert!(body.len() > 256 * 1024);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &body).unwrap();
    let out = std::process::Command::new(common::aws::venv_bin("python"))
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/sqs_extended.py"))
        .args([&queue.url, "extended"])
        .arg(file.path())
        .envs(Moto::env_via(&moto.endpoint()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    queue.drained(&[&bot]).await;
    let got = ids(&bot);
    assert!(
        (5000..7000).all(|i| got.contains_key(&format!("{i:032x}"))),
        "{}",
        bot.log_text()
    );
    assert!(moto.keys("extended").await.len() == 1, "payloads are kept by default");
    assert!(bot.stop().await.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_poison_message_reaches_the_dead_letter_queue_and_the_good_ones_are_archived() {
    let moto = Moto::start().await;
    let dead = Queue::create(&moto, "poison-dlq", &[]).await;
    let redrive = format!(
        r#"{{"deadLetterTargetArn":"{}","maxReceiveCount":"2"}}"#,
        dead.arn().await
    );
    let queue = Queue::create(&moto, "poison", &[(QueueAttributeName::RedrivePolicy, redrive)]).await;
    moto.create_bucket("allowed").await;
    moto.put_raw("allowed", "f", b"bytes".to_vec(), HashMap::new()).await;
    let mut env = sqs_env(&moto, &queue);
    env.push(("WICKRIO_SQS_PAYLOAD_BUCKETS".into(), "allowed".into()));
    let mut bot = Bot::start(&refs(&env)).await;
    let poison = r#"{"message":"secret words","msgtype":"not a number","message_id":"p","msg_ts":"1","sender":"a"}"#;
    let mut batch: Vec<String> = (0..9).map(text_message).collect();
    batch.insert(4, poison.to_owned());
    // Hostile ones: a pointer into a bucket not allowed (the bot's archive, say), a file.s3 in NDJSON
    // (it would be archived without its bytes), a file.s3 whose name climbs out of the directory.
    let hostile = [
        format!(r#"["{}",{{"s3BucketName":"archive","s3Key":"anything"}}]"#, retention_bot::source::sqs::POINTER),
        [text_message(100), r#"{"msgtype":6000,"message_id":"n","msg_ts":"1","sender":"a","file":{"filename":"x","s3":{"bucket":"allowed","key":"f"}}}"#.to_owned()].join("\n"),
        r#"{"msgtype":6000,"message_id":"t","msg_ts":"1","sender":"a","file":{"filename":"../../etc/cron.d/x","s3":{"bucket":"allowed","key":"f"}}}"#.to_owned(),
    ];
    batch.extend(hostile);
    queue.send(&batch, None).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while dead.counts().await.0 < 4 {
        assert!(
            Instant::now() < deadline,
            "no message reached the dead-letter queue\n{}",
            bot.log_text()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    queue.drained(&[&bot]).await;
    let got = ids(&bot);
    assert!(
        (0..9).all(|i| got.contains_key(&format!("{i:032x}"))),
        "the good ones around it"
    );
    assert!(!got.contains_key("p"));
    assert!(
        !got.contains_key(&format!("{:032x}", 100)),
        "an NDJSON body with a file.s3 line is refused whole"
    );
    let moved = dead
        .sqs
        .receive_message()
        .queue_url(&dead.url)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap();
    assert!(moved.messages().iter().any(|m| m.body() == Some(poison)));
    assert_eq!(
        common::metric(&bot, "SQS_Refused").await,
        4,
        "counted once however often it returns"
    );
    assert!(bot.stop().await.success());
    let log = bot.log_text();
    assert_eq!(
        log.matches("refused, not deleted").count(),
        4,
        "each reported once: {log}"
    );
    assert!(log.contains("msgtype"), "says what was wrong: {log}");
    assert!(log.contains("not in WICKRIO_SQS_PAYLOAD_BUCKETS"), "{log}");
    assert!(log.contains("file.s3 is taken only in a body of one message"), "{log}");
    assert!(log.contains("no safe file name"), "{log}");
    assert!(
        !log.contains("secret words") && !log.contains("cron.d"),
        "never its content: {log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_every_fsync_failing_nothing_is_deleted_and_once_healed_all_is_archived() {
    let moto = Moto::start().await;
    let dead = Queue::create(&moto, "faulty-dlq", &[]).await;
    let redrive = format!(
        r#"{{"deadLetterTargetArn":"{}","maxReceiveCount":"4"}}"#,
        dead.arn().await
    );
    let queue = Queue::create(&moto, "faulty", &[(QueueAttributeName::RedrivePolicy, redrive)]).await;
    let shim = FaultShim::build();
    let mut env = sqs_env(&moto, &queue);
    env.extend(shim.env());
    let mut bot = Bot::start(&refs(&env)).await;
    shim.inject(&["fsync EIO /".to_owned()]);
    let messages: Vec<String> = (0..40).map(text_message).collect();
    queue.send(&messages, None).await;
    // Long enough for several receives, were receiving not paused: with maxReceiveCount 4 (the
    // receive whose write failed, the one that archives it, and room for one more should a renewal
    // come late on a slow host), every message received every 6 s would reach the dead-letter queue.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let (waiting, in_flight) = queue.counts().await;
    assert_eq!(
        waiting + in_flight,
        40,
        "nothing deleted while nothing is durable\n{}",
        bot.log_text()
    );
    assert_eq!(common::metric(&bot, "SQS_Deleted").await, 0);
    let ready = reqwest::get(bot.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503, "/readyz says why");
    shim.clear();
    queue.drained(&[&bot]).await;
    // Receiving paused while the spool could not write: no message was received again and again
    // into the dead-letter queue.
    assert_eq!(dead.counts().await, (0, 0), "good messages in the dead-letter queue");
    let got = ids(&bot);
    assert!(
        (0..40).all(|i| got.contains_key(&format!("{i:032x}"))),
        "{}",
        bot.log_text()
    );
    assert!(bot.stop().await.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_with_messages_in_hand_loses_none_and_leaves_none_invisible() {
    let moto = Moto::start().await;
    let queue = Queue::create(&moto, "stopping", &[]).await;
    let (mut bodies_all, mut expected) = (Vec::new(), Vec::new());
    for round in 0..5 {
        let (b, e) = bodies(round * 1000, 200);
        bodies_all.extend(b);
        expected.extend(e);
    }
    let mut bot = Bot::start(&refs(&sqs_env(&moto, &queue))).await;
    let sender = {
        let (url, sqs) = (queue.url.clone(), queue.sqs.clone());
        tokio::spawn(async move { Queue { url, sqs }.send(&bodies_all, None).await })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while ids(&bot).len() < 100 {
        assert!(Instant::now() < deadline, "{}", bot.log_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stopped_at = Instant::now();
    assert!(bot.stop().await.success(), "{}", bot.log_text());
    sender.await.unwrap();
    // Stopped: what it had in hand is archived, or back in the queue within the grace period (8 s by
    // default) from the SIGTERM.
    let deadline = stopped_at + Duration::from_secs(8);
    while queue.counts().await.1 > 0 {
        assert!(
            Instant::now() < deadline,
            "messages left invisible after the stop: {:?}",
            queue.counts().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        queue.counts().await.0 > 0,
        "stopped before the queue was drained: a stop with messages in hand"
    );
    // A restart drains the rest: nothing lost.
    bot.spawn().await;
    queue.drained(&[&bot]).await;
    let archived = ids(&bot);
    assert!(expected.iter().all(|id| archived.contains_key(id)));
    assert!(bot.stop().await.success());
}
