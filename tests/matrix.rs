//! The Matrix source against a real Synapse: the password ritual done on the homeserver, a room
//! captured in the original's shape, an end-to-end-encrypted room captured in plaintext, a room key
//! that arrives after its event, kill -9 mid-stream, and a restart that keeps its device.

use crate::common;

use std::time::{Duration, Instant};

use common::lagging_front::LaggingFront;
use common::synapse::{Synapse, client_at, synapse, sync_until};
use common::{Bot, INITIAL_PASSWORD, written_lines};
use matrix_sdk::attachment::AttachmentConfig;
use matrix_sdk::ruma::api::client::room::create_room;
use matrix_sdk::ruma::{OwnedEventId, OwnedUserId, UserId};
use matrix_sdk::{Client, Room, RoomMemberships};
use serde_json::{Value, json};

pub(crate) const SENDER_PASSWORD: &str = "sender-password-1234";

/// A bot (not yet started) for `user`, whose account exists with the initial password.
pub(crate) fn matrix_bot(server: &Synapse, user: &str, extra: &[(&str, &str)]) -> (Bot, tempfile::TempDir) {
    server.register(user, INITIAL_PASSWORD);
    let tmp = tempfile::tempdir().unwrap();
    let url = server.url();
    let mut env = vec![
        ("WICKRIO_NETWORK", "matrix"),
        ("WICKRIO_MATRIX_HOMESERVER", url.as_str()),
        ("WICKRIO_BOT_NAME", user),
    ];
    env.extend_from_slice(extra);
    let bot = Bot::prepare(tmp.path(), &env);
    (bot, tmp)
}

pub(crate) fn user_id(user: &str) -> OwnedUserId {
    UserId::parse(format!("@{user}:localhost")).unwrap()
}

/// A sender with a room it created (encrypted or not) and invited the bot to, once the bot has joined.
pub(crate) async fn room_with_bot(server: &Synapse, sender: &str, bot: &str, encrypted: bool) -> (Client, Room) {
    room_with_bot_via(server, &server.url(), sender, bot, encrypted).await
}

/// `room_with_bot`, with the sender a client of `url` (a front of the homeserver).
pub(crate) async fn room_with_bot_via(
    server: &Synapse,
    url: &str,
    sender: &str,
    bot: &str,
    encrypted: bool,
) -> (Client, Room) {
    server.register(sender, SENDER_PASSWORD);
    let client = client_at(url, sender, SENDER_PASSWORD).await;
    let mut request = create_room::v3::Request::new();
    request.name = Some("Ops".into());
    request.topic = Some("incidents".into());
    let room = client.create_room(request).await.unwrap();
    if encrypted {
        room.enable_encryption().await.unwrap();
    }
    room.invite_user_by_id(&user_id(bot)).await.unwrap();
    let bot_id = user_id(bot);
    sync_until(&client, "the bot to join", async || is_member(&room, &bot_id).await).await;
    (client, room)
}

/// Whether `user` is joined to `room`, as the client that holds `room` last synced.
pub(crate) async fn is_member(room: &Room, user: &UserId) -> bool {
    room.members(RoomMemberships::JOIN)
        .await
        .unwrap()
        .iter()
        .any(|m| m.user_id() == user)
}

/// A running bot `user` in a room that `<user>-alice` created and invited it to.
pub(crate) async fn bot_in_room(user: &str, encrypted: bool) -> (Bot, tempfile::TempDir, Client, Room) {
    let server = synapse();
    let (mut bot, tmp) = matrix_bot(server, user, &[]);
    bot.spawn().await;
    let (alice, room) = room_with_bot(server, &format!("{user}-alice"), user, encrypted).await;
    (bot, tmp, alice, room)
}

pub(crate) async fn send_text(room: &Room, text: &str) -> OwnedEventId {
    room.send_raw("m.room.message", json!({ "msgtype": "m.text", "body": text }))
        .await
        .unwrap()
        .response
        .event_id
}

/// Waits until the bot has written lines that `done` accepts; returns them.
pub(crate) async fn lines_until(bot: &Bot, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    // Generous: the machines are shared, and every test of this binary shares one homeserver.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let lines = written_lines(&bot.messages_dir());
        if done(&lines) {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; lines so far:\n{}\nbot log:\n{}",
            lines.iter().map(Value::to_string).collect::<Vec<_>>().join("\n"),
            bot.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(crate) fn find<'a>(lines: &'a [Value], msgtype: i64, message: &str) -> Option<&'a Value> {
    lines
        .iter()
        .find(|l| l["msgtype"] == msgtype && l["message"] == message)
}

/// Changes `user`'s password as a client of its own would, which ends the account's other sessions.
async fn change_password(server: &Synapse, user: &str, old: &str, new: &str) {
    use matrix_sdk::ruma::api::client::uiaa::{AuthData, MatrixUserIdentifier, Password, UserIdentifier};
    let client = server.client(user, old).await;
    let id = UserIdentifier::Matrix(MatrixUserIdentifier::new(format!("@{user}:localhost")));
    let auth = AuthData::Password(Password::new(id, old.into()));
    client.account().change_password(new, Some(auth)).await.unwrap();
}

/// The password the bot now starts with (the harness learns the generated one from the banner).
fn password(bot: &Bot) -> String {
    let (_, pw) = bot.env.iter().find(|(k, _)| k == "WICKRIO_BOT_PASSWORD").unwrap();
    pw.clone()
}

fn device_id(bot: &Bot) -> String {
    std::fs::read_to_string(bot.root.join("state/matrix/device_id")).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn first_run_changes_the_password_on_the_homeserver_and_restarts_keep_the_device() {
    let server = synapse();
    let (mut bot, _tmp) = matrix_bot(server, "ritual", &[]);
    bot.spawn().await;
    let generated = password(&bot);
    assert_ne!(generated, INITIAL_PASSWORD, "no banner: {}", bot.stdout_text());
    assert_eq!(
        server.password_login("ritual", INITIAL_PASSWORD).await,
        (403, Some("M_FORBIDDEN".into())),
        "the homeserver still takes the initial password"
    );
    assert_eq!(server.password_login("ritual", &generated).await.0, 200);
    let device = device_id(&bot);

    // A restart logs in with the generated password, on the same device.
    assert!(bot.stop().await.success());
    bot.spawn().await;
    assert_eq!(device_id(&bot), device);
    // Other users see exactly one device with keys for the bot: the first one.
    server.register("ritual-watcher", SENDER_PASSWORD);
    let ids = server
        .devices_with_keys("ritual", "ritual-watcher", SENDER_PASSWORD)
        .await;
    assert_eq!(ids, vec![device.clone()], "the bot's devices with keys");

    // Rotation changes the homeserver's password too.
    assert!(bot.stop().await.success());
    let rotated = "rotated-password-5678";
    bot.set_env("WICKRIO_ROTATE_PASSWORD", rotated);
    bot.spawn().await;
    assert_eq!(server.password_login("ritual", &generated).await.0, 403);
    assert_eq!(server.password_login("ritual", rotated).await.0, 200);
    assert!(bot.stop().await.success());
    let log = bot.log_text();
    for secret in [INITIAL_PASSWORD, generated.as_str(), rotated] {
        assert!(!log.contains(secret), "a password is in the log:\n{log}");
    }
    assert!(!log.contains("access_token"), "an access token is in the log:\n{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_homeserver_that_refuses_the_password_stops_the_bot_with_exit_3() {
    let server = synapse();
    let (bot, _tmp) = matrix_bot(server, "refused", &[]);
    // Someone changed the account's password behind the bot's back: the bot's local identity opens,
    // but the homeserver refuses it.
    change_password(server, "refused", INITIAL_PASSWORD, "changed-by-someone-else").await;
    let status = bot.command().output().unwrap();
    assert_eq!(
        status.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let log = String::from_utf8_lossy(&status.stderr);
    assert!(log.contains("login refused by the Matrix homeserver"), "{log}");
    assert!(!log.contains(INITIAL_PASSWORD), "password in the log: {log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn captures_a_room_in_the_original_shape() {
    let (mut bot, _tmp, _alice, room) = bot_in_room("shape", false).await;

    let hello = send_text(&room, "hello").await;
    let doomed = send_text(&room, "delete me").await;
    let data = b"quarterly numbers\n".to_vec();
    room.send_attachment("report.txt", &mime::TEXT_PLAIN, data.clone(), AttachmentConfig::new())
        .await
        .unwrap();
    room.send_raw(
        "m.room.message",
        json!({ "msgtype": "m.text", "body": "* hello, edited",
                "m.new_content": { "msgtype": "m.text", "body": "hello, edited" },
                "m.relates_to": { "rel_type": "m.replace", "event_id": hello } }),
    )
    .await
    .unwrap();
    room.send_raw(
        "m.reaction",
        json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": hello, "key": "👍" } }),
    )
    .await
    .unwrap();
    // A redaction removes the content on the homeserver: a bot that syncs only afterwards gets the
    // redacted event. Wait until the text is kept, as a bot that is keeping up does.
    lines_until(&bot, "the text to be redacted", |l| {
        find(l, 1000, "delete me").is_some()
    })
    .await;
    room.redact(&doomed, Some("oops"), None).await.unwrap();
    room.set_name("Ops (renamed)".into()).await.unwrap();

    let lines = lines_until(&bot, "every kind of event", |l| {
        l.iter()
            .any(|x| x["msgtype"] == 4004 && x["control"]["title"] == "Ops (renamed)")
    })
    .await;
    let text = find(&lines, 1000, "hello").expect("text");
    assert_eq!(text["sender"], "@shape-alice:localhost");
    assert_eq!(text["vgroupid"], room.room_id().as_str());
    assert_eq!(text["matrix"]["event"]["event_id"], hello.as_str());
    assert_eq!(text["matrix"]["encrypted"], false);
    for field in ["message_id", "msg_ts", "time", "time_iso", "sender_type"] {
        assert!(text[field].is_string(), "{field} missing in {text}");
    }
    let hello_id = text["message_id"].as_str().unwrap();

    let file = lines.iter().find(|l| l["msgtype"] == 6000).expect("file");
    assert_eq!(file["file"]["filename"], "report.txt");
    let local = file["file"]["localfilename"].as_str().unwrap();
    assert!(
        local.contains("attachment_") && local.ends_with("_report.txt"),
        "{local}"
    );
    assert_eq!(std::fs::read(local).unwrap(), data);

    let edit = find(&lines, 9000, "hello, edited").expect("edit");
    assert_eq!(edit["edit"]["message_id"], hello_id);
    let reaction = find(&lines, 9100, "👍").expect("reaction");
    assert_eq!(reaction["edit"]["message_id"], hello_id);
    let doomed_id = find(&lines, 1000, "delete me").expect("the redacted text, as first seen")["message_id"].clone();
    let redaction = lines.iter().find(|l| l["msgtype"] == 4011).expect("redaction");
    assert_eq!(redaction["control"]["message_id"], doomed_id);

    assert!(lines.iter().any(|l| l["msgtype"] == 4001), "room creation");
    let joined = lines
        .iter()
        .any(|l| l["msgtype"] == 4002 && l["control"]["members"][0] == "@shape:localhost");
    assert!(joined, "the bot's own join");
    assert!(
        lines
            .iter()
            .any(|l| l["msgtype"] == 4004 && l["control"]["description"] == "incidents"),
        "topic"
    );
    assert!(common::metric(&bot, "Messages_Rx").await >= lines.len() as u64);
    assert!(bot.stop().await.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn captures_an_encrypted_room_in_plaintext() {
    let (mut bot, _tmp, _alice, room) = bot_in_room("crypto", true).await;
    let server = synapse();
    assert!(room.latest_encryption_state().await.unwrap().is_encrypted());

    send_text(&room, "the plans are in the safe").await;
    let data = b"%PDF secret attachment".to_vec();
    room.send_attachment(
        "plans.pdf",
        &mime::APPLICATION_PDF,
        data.clone(),
        AttachmentConfig::new(),
    )
    .await
    .unwrap();

    let lines = lines_until(&bot, "the decrypted text and file", |l| {
        find(l, 1000, "the plans are in the safe").is_some() && l.iter().any(|x| x["msgtype"] == 6000)
    })
    .await;
    let text = find(&lines, 1000, "the plans are in the safe").unwrap();
    assert_eq!(text["matrix"]["encrypted"], true);
    assert_eq!(text["matrix"]["event"]["type"], "m.room.message");
    let file = lines.iter().find(|l| l["msgtype"] == 6000).unwrap();
    assert_eq!(file["matrix"]["encrypted"], true);
    let local = file["file"]["localfilename"].as_str().unwrap();
    assert_eq!(std::fs::read(local).unwrap(), data, "the attachment is decrypted");
    // Nothing on disk holds the plaintext outside the bot's files: the media was encrypted on the
    // homeserver.
    let media = walk(&server.dir.join("media_store"));
    assert!(!media.iter().any(|p| std::fs::read(p).unwrap() == data));
    assert_eq!(common::metric(&bot, "Messages_Rx_Failed").await, 0);
    assert!(bot.stop().await.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_whose_key_arrives_late_is_written_again_decrypted() {
    let server = synapse();
    let (mut bot, _tmp) = matrix_bot(server, "latekey", &[]);
    bot.spawn().await;
    let front = LaggingFront::start(&server.url()).await;
    let (_alice, room) = room_with_bot_via(server, &front.url, "latekey-alice", "latekey", true).await;

    // The room key is held back: the bot gets the event before the key that unlocks it.
    front.hold();
    let id = send_text(&room, "sent before its key").await;
    let lines = lines_until(&bot, "the event, undecryptable", |l| {
        l.iter().any(|x| x["matrix"]["event"]["event_id"] == id.as_str())
    })
    .await;
    let early = lines
        .iter()
        .find(|x| x["matrix"]["event"]["event_id"] == id.as_str())
        .unwrap()
        .clone();
    assert!(early["matrix"]["decryption_error"].is_string(), "{early}");
    assert_eq!(early["message"], "");
    assert_eq!(common::metric(&bot, "Messages_Rx_Failed").await, 1);

    // A restart while the key is on its way keeps the event waiting for it.
    assert!(bot.stop().await.success());
    let waiting = std::fs::read_to_string(bot.root.join("state/matrix/undecrypted.json")).unwrap();
    assert!(waiting.contains(id.as_str()), "{waiting}");
    bot.spawn().await;

    assert!(front.release().await > 0, "the sender sent its key to the bot's device");
    let lines = lines_until(&bot, "the event, decrypted late", |l| {
        find(l, 1000, "sent before its key").is_some()
    })
    .await;
    let late = find(&lines, 1000, "sent before its key").unwrap();
    assert_eq!(late["matrix"]["decrypted_late"], true);
    assert_eq!(late["matrix"]["encrypted"], true);
    assert_eq!(
        late["message_id"], early["message_id"],
        "the full line names the same message"
    );
    let waiting = || std::fs::read_to_string(bot.root.join("state/matrix/undecrypted.json")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while waiting().contains(id.as_str()) {
        assert!(
            Instant::now() < deadline,
            "the decrypted event still waits: {}",
            waiting()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(bot.stop().await.success());
    let copies = written_lines(&bot.messages_dir())
        .iter()
        .filter(|l| l["message"] == "sent before its key")
        .count();
    assert_eq!(copies, 1, "written in full once");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_stream_and_restart_loses_nothing() {
    let (mut bot, _tmp, _alice, room) = bot_in_room("crash", true).await;

    // The sender keeps sending while the bot is killed and restarted.
    let total = 120;
    let sent = |i: usize| format!("message {i:03}");
    let sender = {
        let room = room.clone();
        tokio::spawn(async move {
            for i in 0..total {
                send_text(&room, &sent(i)).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    lines_until(&bot, "the first messages", |l| find(l, 1000, &sent(20)).is_some()).await;
    bot.kill9().await;
    let before_restart = written_lines(&bot.messages_dir()).len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    bot.spawn().await;
    sender.await.unwrap();
    assert!(
        before_restart < total,
        "the kill came after everything was captured ({before_restart} lines): not mid-stream"
    );
    let lines = lines_until(&bot, "every message", |l| {
        (0..total).all(|i| find(l, 1000, &sent(i)).is_some())
    })
    .await;
    let undecrypted = lines
        .iter()
        .filter(|l| l["matrix"]["decryption_error"].is_string())
        .count();
    assert_eq!(undecrypted, 0, "the crypto store survived kill -9");
    assert!(bot.stop().await.success());
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gap_longer_than_one_sync_is_paged_back() {
    let (mut bot, _tmp, _alice, room) = bot_in_room("gap", false).await;
    send_text(&room, "before the gap").await;
    lines_until(&bot, "the first message", |l| find(l, 1000, "before the gap").is_some()).await;
    assert!(bot.stop().await.success());

    // More than one sync's timeline (100 events) arrives while the bot is down: a gap of several
    // pages (100 each). Each message is 36 KB, so that the pages kept in memory from the way back
    // (8 MiB of events) hold only the newest of them: the older ones are read again, in order.
    let total = 350;
    let padding = "x".repeat(36_000);
    let text = |i: usize| format!("gap {i:03} {padding}");
    for i in 0..total {
        send_text(&room, &text(i)).await;
    }
    bot.spawn().await;
    let lines = lines_until(&bot, "every message of the gap", |l| {
        (0..total).all(|i| find(l, 1000, &text(i)).is_some())
    })
    .await;
    // In order, and each once.
    let gap: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["message"].as_str().filter(|m| m.starts_with("gap ")))
        .collect();
    let expected: Vec<String> = (0..total).map(text).collect();
    assert_eq!(gap, expected);
    // Paged back to the last event captured before the gap, not further: nothing written twice.
    let before = lines.iter().filter(|l| l["message"] == "before the gap").count();
    assert_eq!(before, 1, "the page-back went past the last captured event");
    let gap_logged = |bot: &Bot, pages: &str| {
        let log = bot.log_text();
        let seen = log.lines().any(|l| l.contains("across a gap") && l.contains(pages));
        assert!(seen, "no gap read with {pages}:\n{log}");
    };
    gap_logged(&bot, "pages=3 pages_kept=2");

    // A short gap: its one page, which holds the last event captured, is kept whole from the way
    // back; only the events after that one are written.
    assert!(bot.stop().await.success());
    let short = |i: usize| format!("short gap {i:03}");
    for i in 0..150 {
        send_text(&room, &short(i)).await;
    }
    bot.spawn().await;
    let lines = lines_until(&bot, "every message of the short gap", |l| {
        (0..150).all(|i| find(l, 1000, &short(i)).is_some())
    })
    .await;
    let texts: Vec<&str> = lines.iter().filter_map(|l| l["message"].as_str()).collect();
    let written: Vec<&str> = texts.iter().copied().filter(|m| m.starts_with("short gap ")).collect();
    assert_eq!(written, (0..150).map(short).collect::<Vec<_>>());
    assert_eq!(
        texts.iter().filter(|m| m.starts_with("gap ")).count(),
        total,
        "the first gap again"
    );
    gap_logged(&bot, "pages=1 pages_kept=1");
    assert!(bot.stop().await.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_ended_by_the_homeserver_stops_the_bot() {
    let server = synapse();
    let (mut bot, _tmp) = matrix_bot(server, "revoked", &[]);
    bot.spawn().await;
    let generated = password(&bot);
    // Someone changes the bot's password elsewhere: the homeserver ends the bot's session.
    change_password(server, "revoked", &generated, "changed-elsewhere-1234").await;
    let status = bot.wait().await;
    assert_eq!(status.code(), Some(1), "{}", bot.log_text());
    assert!(bot.log_text().contains("ended the bot's session"), "{}", bot.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn media_over_the_file_limit_is_refused_without_being_held_and_the_message_kept() {
    let server = synapse();
    let (mut bot, _tmp) = matrix_bot(server, "bigmedia", &[("WICKRIO_INGEST_MAX_FILE", "64KiB")]);
    bot.spawn().await;
    let (_alice, room) = room_with_bot(server, "bigmedia-alice", "bigmedia", true).await;
    let small: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 241) as u8).collect();
    for (name, data) in [("small.bin", &small), ("big.bin", &big)] {
        room.send_attachment(
            name,
            &mime::APPLICATION_OCTET_STREAM,
            data.clone(),
            AttachmentConfig::new(),
        )
        .await
        .unwrap();
    }
    let lines = lines_until(&bot, "both file messages", |l| {
        l.iter().filter(|x| x["msgtype"] == 6000).count() == 2
    })
    .await;
    let file = |name: &str| {
        lines
            .iter()
            .find(|x| x["msgtype"] == 6000 && x["file"]["filename"] == name)
            .unwrap()
            .clone()
    };
    let kept = file("small.bin");
    assert_eq!(
        std::fs::read(kept["file"]["localfilename"].as_str().unwrap()).unwrap(),
        small
    );
    let refused = file("big.bin");
    assert!(refused["file"]["localfilename"].is_null(), "{refused}");
    let why = refused["matrix"]["media_error"].as_str().unwrap();
    assert!(why.contains("WICKRIO_INGEST_MAX_FILE"), "{why}");
    assert!(bot.stop().await.success());
    // Only the small file was kept: nothing partial of the big one is left.
    let files = common::file_names(&bot.attachments_dir());
    assert_eq!(files.len(), 1, "{files:?}");
}
