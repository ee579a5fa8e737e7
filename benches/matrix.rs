//! Matrix capture benchmark: how fast the bot catches up on an end-to-end-encrypted room it missed
//! while stopped, next to a bare matrix-sdk client (no disk) reading the same events from the same
//! Synapse in the same run.
//!
//! `cargo bench --bench matrix`; `BENCH_MESSAGES` (default 1,000) sets how many messages are sent while
//! the bot is down. Needs `.venv-synapse` (made by `.ci/run`). Fails if any message is missing,
//! repeated or undecryptable.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::time::{Duration, Instant};

use common::synapse::synapse;
use common::{Bot, INITIAL_PASSWORD, written_lines};
use matrix_sdk::config::SyncSettings;
use matrix_sdk::deserialized_responses::{TimelineEvent, TimelineEventKind};
use matrix_sdk::room::MessagesOptions;
use matrix_sdk::ruma::api::client::filter::FilterDefinition;
use matrix_sdk::ruma::api::client::room::create_room;
use matrix_sdk::ruma::api::client::sync::sync_events::v3::Filter;
use matrix_sdk::ruma::{OwnedUserId, UserId};
use matrix_sdk::{Client, Room, RoomMemberships};
use serde_json::json;
use support::{row, vm_mib};

const BODY: &str = "bench message";
const PASSWORD: &str = "bench-password-1234";

fn user_id(user: &str) -> OwnedUserId {
    UserId::parse(format!("@{user}:localhost")).expect("user ID")
}

/// Plaintext bench messages among `events` (what a reader of the room gets out of them).
fn decrypted(events: &[TimelineEvent]) -> usize {
    events
        .iter()
        .filter(|e| match &e.kind {
            TimelineEventKind::Decrypted(d) => d.event.json().get().contains(BODY),
            _ => false,
        })
        .count()
}

/// The baseline: one sync from where the reader stopped, then pages of 100 back across the gap, as the
/// bot does, until all `n` messages are decrypted in memory.
async fn read_back(client: &Client, room: &Room, n: usize) -> usize {
    let mut filter = FilterDefinition::default();
    filter.room.timeline.limit = Some(100u32.into());
    let response = client
        .sync_once(SyncSettings::default().filter(Filter::FilterDefinition(filter)))
        .await
        .expect("baseline sync");
    let timeline = &response.rooms.joined[room.room_id()].timeline;
    let mut count = decrypted(&timeline.events);
    let mut from = timeline.prev_batch.clone().filter(|_| timeline.limited);
    while count < n {
        let Some(token) = from.take() else { break };
        let mut options = MessagesOptions::backward().from(token.as_str());
        options.limit = 100u32.into();
        let page = room.messages(options).await.expect("baseline page");
        if page.chunk.is_empty() {
            break;
        }
        count += decrypted(&page.chunk);
        from = page.end;
    }
    count
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("BENCH_MESSAGES").map_or(1_000, |v| v.parse().expect("BENCH_MESSAGES: a number"));
    let server = synapse();
    let tmp = tempfile::tempdir().expect("temp dir");
    server.register("bench", INITIAL_PASSWORD);
    let url = server.url();
    let env = [
        ("WICKRIO_NETWORK", "matrix"),
        ("WICKRIO_MATRIX_HOMESERVER", url.as_str()),
        ("WICKRIO_BOT_NAME", "bench"),
        ("RUST_LOG", "warn"),
    ];
    let mut bot = Bot::prepare(tmp.path(), &env);
    bot.spawn().await;

    for user in ["alice", "reader"] {
        server.register(user, PASSWORD);
    }
    let alice = server.client("alice", PASSWORD).await;
    let reader = server.client("reader", PASSWORD).await;
    let mut request = create_room::v3::Request::new();
    request.name = Some("bench".into());
    let room = alice.create_room(request).await.expect("create room");
    room.enable_encryption().await.expect("encrypt room");
    room.invite_user_by_id(&user_id("bench")).await.expect("invite bot");
    room.invite_user_by_id(&user_id("reader")).await.expect("invite reader");
    reader.join_room_by_id(room.room_id()).await.expect("reader joins");
    let reader_room = reader.get_room(room.room_id()).expect("reader's room");
    let joined = |m: &[matrix_sdk::room::RoomMember]| {
        ["bench", "reader"]
            .iter()
            .all(|u| m.iter().any(|x| x.user_id() == user_id(u)))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !joined(&room.members(RoomMemberships::JOIN).await.expect("members")) {
        assert!(Instant::now() < deadline, "the bot did not join:\n{}", bot.log_text());
        alice
            .sync_once(SyncSettings::default().timeout(Duration::from_millis(500)))
            .await
            .expect("alice sync");
    }
    reader.sync_once(SyncSettings::default()).await.expect("reader sync");
    assert!(bot.stop().await.success(), "the bot stops cleanly");

    let started = Instant::now();
    for i in 0..n {
        room.send_raw(
            "m.room.message",
            json!({ "msgtype": "m.text", "body": format!("{BODY} {i}") }),
        )
        .await
        .expect("send");
    }
    let send_secs = started.elapsed().as_secs_f64();
    println!("sent {n} encrypted messages in {send_secs:.1} s while the bot and the reader were away");

    let started = Instant::now();
    let read = read_back(&reader, &reader_room, n).await;
    let baseline = started.elapsed().as_secs_f64();
    assert_eq!(read, n, "the baseline reader decrypted every message");

    let started = Instant::now();
    bot.spawn().await;
    let ready = started.elapsed().as_secs_f64();
    let pid = bot.pid().as_raw() as u32;
    let deadline = Instant::now() + Duration::from_secs(600);
    let bench_lines = || {
        written_lines(&bot.messages_dir())
            .into_iter()
            .filter(|l| l["message"].as_str().is_some_and(|m| m.starts_with(BODY)))
            .count()
    };
    while bench_lines() < n {
        assert!(
            Instant::now() < deadline,
            "the bot did not catch up:\n{}",
            bot.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total = started.elapsed().as_secs_f64();
    let peak = vm_mib(pid, "VmHWM:");
    assert!(bot.stop().await.success(), "the bot stops cleanly");
    let lines = written_lines(&bot.messages_dir());
    let mut bodies: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["message"].as_str())
        .filter(|m| m.starts_with(BODY))
        .collect();
    bodies.sort_unstable();
    bodies.dedup();
    assert_eq!(bodies.len(), n, "every message written, decrypted, once");
    assert!(
        !lines.iter().any(|l| l["matrix"]["decryption_error"].is_string()),
        "nothing undecryptable"
    );

    println!();
    let rate = |secs: f64| format!("{:.0} msg/s ({secs:.2} s)", n as f64 / secs);
    row(
        "reader, memory only",
        rate(baseline),
        "baseline: sync + pages of 100, decrypt",
        None,
    );
    row(
        "bot, written and fsync'd",
        rate(total),
        &format!("from process start; login took {ready:.2} s"),
        None,
    );
    row(
        "bot, after login",
        rate(total - ready),
        &format!("{:.0}% of the baseline's rate", 100.0 * baseline / (total - ready)),
        None,
    );
    row("bot peak RSS (VmHWM)", format!("{peak:.1} MiB"), "", None);
}
