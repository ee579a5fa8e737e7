//! What a reviewer relies on in a Matrix capture, against a real Synapse: replies and threads linked
//! (and brought along by `export`, RSMF parents set), every kind of event typed (stickers, thumbnails,
//! image edits, locations, calls, polls, notices, emotes) in plain and encrypted rooms; who was in
//! the conversation (room members, `receiver`, kicks, bans and unbans); a foreign edit recorded as an
//! attempt; hidden history marked; a room upgrade followed; and a room the bot loses raised.

use crate::common;
use crate::matrix::{
    SENDER_PASSWORD, bot_in_room, is_member, lines_until, matrix_bot, room_with_bot, send_text, user_id,
};

use common::synapse::{Synapse, client_at, synapse, sync_until};
use common::{Bot, written_lines};
use matrix_sdk::attachment::{AttachmentConfig, Thumbnail};
use matrix_sdk::ruma::api::client::room::{create_room, upgrade_room};
use matrix_sdk::ruma::events::room::history_visibility::{HistoryVisibility, RoomHistoryVisibilityEventContent};
use matrix_sdk::ruma::{OwnedEventId, OwnedMxcUri, OwnedRoomId, RoomVersionId, UInt, UserId};
use matrix_sdk::{Client, Room};
use serde_json::{Value, json};

async fn send(room: &Room, kind: &str, content: Value) -> OwnedEventId {
    room.send_raw(kind, content).await.unwrap().response.event_id
}

fn id_of(event: &OwnedEventId) -> String {
    retention_bot::source::matrix::translate::message_id(event.as_str())
}

/// The line of the event `event`.
fn line_of<'a>(lines: &'a [Value], event: &OwnedEventId) -> &'a Value {
    lines
        .iter()
        .find(|l| l["matrix"]["event"]["event_id"] == event.as_str())
        .unwrap_or_else(|| panic!("no line of {event}"))
}

/// Uploads an image to the homeserver (in the clear, as clients send stickers).
async fn upload(client: &Client, data: &[u8]) -> OwnedMxcUri {
    client
        .media()
        .upload(&mime::IMAGE_PNG, data.to_vec(), None)
        .await
        .unwrap()
        .content_uri
}

/// Runs `export` of the bot's local archive with `args` into `<bot>/<name>`; returns that directory.
fn export(bot: &Bot, name: &str, args: &[&str]) -> std::path::PathBuf {
    let out = bot.root.join(name);
    let status = std::process::Command::new(common::BIN)
        .env_clear()
        .args(["export", "--dir"])
        .arg(&bot.root)
        .arg("--public-key")
        .arg(bot.root.join("state/public_key.txt"))
        .args(args)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert_eq!(status.status.code(), Some(0), "{stderr}");
    out
}

/// Upgrades `room` (its creator's client) to a new room version; the replacement room's ID.
async fn upgrade(client: &Client, room: &Room) -> OwnedRoomId {
    let request = upgrade_room::v3::Request::new(room.room_id().to_owned(), RoomVersionId::V11);
    client.send(request).await.unwrap().replacement_room
}

/// Waits until the bot's `Matrix_Rooms_Lost` gauge is `n`.
async fn rooms_lost_reaches(bot: &Bot, n: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while common::metric(bot, "Matrix_Rooms_Lost").await != n {
        assert!(std::time::Instant::now() < deadline, "{}", bot.log_text());
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// A small PNG-looking file: the homeserver stores it as given.
fn image(tag: u8) -> Vec<u8> {
    let mut data = b"\x89PNG\r\n\x1a\n".to_vec();
    data.extend(std::iter::repeat_n(tag, 300));
    data
}

/// The text-like events `every_kind` sends: a question with a reply and a thread, a location, a
/// notice, an emote, and a poll with a vote and its end.
struct Texts {
    question: OwnedEventId,
    reply: OwnedEventId,
    in_thread: OwnedEventId,
    location: OwnedEventId,
    notice: OwnedEventId,
    emote: OwnedEventId,
    poll: OwnedEventId,
    vote: OwnedEventId,
    end: OwnedEventId,
}

/// Sends `every_kind`'s text-like events, in order; their IDs.
async fn send_texts(room: &Room) -> Texts {
    let question = send_text(room, "which release?").await;
    let reply = send(
        room,
        "m.room.message",
        json!({ "msgtype": "m.text", "body": "> <@x:localhost> which release?\n\nthe second one",
                "format": "org.matrix.custom.html",
                "formatted_body": "<mx-reply><blockquote>which release?</blockquote></mx-reply>the second one",
                "m.relates_to": { "m.in_reply_to": { "event_id": question } } }),
    )
    .await;
    let in_thread = send(
        room,
        "m.room.message",
        json!({ "msgtype": "m.text", "body": "in the thread",
                "m.relates_to": { "rel_type": "m.thread", "event_id": question, "is_falling_back": true,
                                  "m.in_reply_to": { "event_id": question } } }),
    )
    .await;
    let location = send(
        room,
        "m.room.message",
        json!({ "msgtype": "m.location", "body": "the office", "geo_uri": "geo:51.5008,-0.1247;u=35" }),
    )
    .await;
    let notice = send(
        room,
        "m.room.message",
        json!({ "msgtype": "m.notice", "body": "build green" }),
    )
    .await;
    let emote = send(room, "m.room.message", json!({ "msgtype": "m.emote", "body": "waves" })).await;
    let (poll, vote, end) = send_poll(room).await;
    Texts {
        question,
        reply,
        in_thread,
        location,
        notice,
        emote,
        poll,
        vote,
        end,
    }
}

/// Sends a poll, a vote on it and its end; their IDs.
async fn send_poll(room: &Room) -> (OwnedEventId, OwnedEventId, OwnedEventId) {
    let poll = send(
        room,
        "org.matrix.msc3381.poll.start",
        json!({ "org.matrix.msc3381.poll.start": { "kind": "org.matrix.msc3381.poll.disclosed", "max_selections": 1,
                "question": { "org.matrix.msc1767.text": "Ship on Friday?" },
                "answers": [ { "id": "yes", "org.matrix.msc1767.text": "Yes" }, { "id": "no", "org.matrix.msc1767.text": "No" } ] },
                "org.matrix.msc1767.text": "Ship on Friday?\n1. Yes\n2. No" }),
    )
    .await;
    let vote = send(
        room,
        "org.matrix.msc3381.poll.response",
        json!({ "org.matrix.msc3381.poll.response": { "answers": ["no"] },
                "m.relates_to": { "rel_type": "m.reference", "event_id": poll } }),
    )
    .await;
    let end = send(
        room,
        "org.matrix.msc3381.poll.end",
        json!({ "org.matrix.msc3381.poll.end": {}, "org.matrix.msc1767.text": "The poll has ended. Top answer: No",
                "m.relates_to": { "rel_type": "m.reference", "event_id": poll } }),
    )
    .await;
    (poll, vote, end)
}

/// Sends a call's invite, answer and hangup; the invite's and the hangup's IDs.
async fn send_call(room: &Room) -> (OwnedEventId, OwnedEventId) {
    let call = json!({ "call_id": "call-1", "version": "1", "party_id": "p1", "lifetime": 60000,
                       "offer": { "type": "offer", "sdp": "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n" } });
    let invite = send(room, "m.call.invite", call.clone()).await;
    send(
        room,
        "m.call.answer",
        json!({ "call_id": "call-1", "version": "1", "party_id": "p2",
                                          "answer": { "type": "answer", "sdp": "v=0\r\n" } }),
    )
    .await;
    let hangup = send(
        room,
        "m.call.hangup",
        json!({ "call_id": "call-1", "version": "1", "party_id": "p1",
                                                       "reason": "user_hangup" }),
    )
    .await;
    (invite, hangup)
}

/// The media events `every_kind` sends, with the bytes each file must be kept as.
struct Media {
    sticker: OwnedEventId,
    cat: Vec<u8>,
    video: OwnedEventId,
    clip: Vec<u8>,
    thumb: Vec<u8>,
    original: OwnedEventId,
    new_image: OwnedEventId,
    second: Vec<u8>,
}

/// Sends `every_kind`'s media events, in order: a sticker, a video with a thumbnail, and an image
/// replaced by another.
async fn send_media(room: &Room, alice: &Client) -> Media {
    // A sticker (the image named in the clear, as clients send them) and a video with a thumbnail.
    let cat = image(1);
    let cat_uri = upload(alice, &cat).await;
    let sticker = send(
        room,
        "m.sticker",
        json!({ "body": "a cat", "url": cat_uri, "info": { "mimetype": "image/png", "w": 64, "h": 64 } }),
    )
    .await;
    let clip = b"not really a video".to_vec();
    let thumb = image(2);
    let thumbnail = Thumbnail {
        data: thumb.clone(),
        content_type: mime::IMAGE_PNG,
        height: UInt::from(32u32),
        width: UInt::from(32u32),
        size: UInt::from(thumb.len() as u32),
    };
    let video = room
        .send_attachment(
            "clip.mp4",
            &"video/mp4".parse().unwrap(),
            clip.clone(),
            AttachmentConfig::new().thumbnail(Some(thumbnail)),
        )
        .await
        .unwrap()
        .event_id;
    // An image replaced by another.
    let first = image(3);
    let original = room
        .send_attachment("plan.png", &mime::IMAGE_PNG, first, AttachmentConfig::new())
        .await
        .unwrap()
        .event_id;
    let second = image(4);
    let second_uri = upload(alice, &second).await;
    let new_image = send(
        room,
        "m.room.message",
        json!({ "msgtype": "m.image", "body": "* plan-v2.png", "url": second_uri,
                "m.new_content": { "msgtype": "m.image", "body": "plan-v2.png", "url": second_uri, "info": { "mimetype": "image/png" } },
                "m.relates_to": { "rel_type": "m.replace", "event_id": original } }),
    )
    .await;
    Media {
        sticker,
        cat,
        video,
        clip,
        thumb,
        original,
        new_image,
        second,
    }
}

/// Checks the text-like events' lines: the reply and thread linked, the location, notice, emote and
/// poll typed.
fn check_texts(lines: &[Value], texts: &Texts) {
    let q = id_of(&texts.question);
    let answer = line_of(lines, &texts.reply);
    assert_eq!(
        (answer["reply_to"].as_str(), answer["message"].as_str()),
        (Some(q.as_str()), Some("the second one"))
    );
    let threaded = line_of(lines, &texts.in_thread);
    assert_eq!(threaded["thread_root"], q.as_str());
    assert!(
        threaded.get("reply_to").is_none(),
        "a thread's fallback is no reply: {threaded}"
    );
    let here = line_of(lines, &texts.location);
    assert_eq!(here["msgtype"], 8000);
    assert_eq!(
        (
            here["location"]["latitude"].as_f64(),
            here["location"]["longitude"].as_f64()
        ),
        (Some(51.5008), Some(-0.1247))
    );
    assert_eq!(line_of(lines, &texts.notice)["text_kind"], "notice");
    assert_eq!(line_of(lines, &texts.emote)["text_kind"], "emote");
    let asked = line_of(lines, &texts.poll);
    assert_eq!(asked["message"], "Ship on Friday?\n- Yes\n- No", "searchable: {asked}");
    let voted = line_of(lines, &texts.vote);
    assert_eq!(
        (
            voted["poll"]["message_id"].as_str(),
            voted["poll"]["answers"][0].as_str()
        ),
        (Some(id_of(&texts.poll).as_str()), Some("no"))
    );
    let ended = line_of(lines, &texts.end);
    assert_eq!(
        (ended["poll"]["kind"].as_str(), ended["message"].as_str()),
        (Some("end"), Some("The poll has ended. Top answer: No"))
    );
}

/// Checks the call's lines: the invite typed, the hangup with the call's duration and times.
fn check_call(lines: &[Value], invite: &OwnedEventId, hangup: &OwnedEventId) {
    let started = line_of(lines, invite);
    assert_eq!(
        (started["msgtype"].as_i64(), started["call"]["status"].as_str()),
        (Some(7000), Some("invite"))
    );
    let hung_up = line_of(lines, hangup);
    assert_eq!(hung_up["call"]["status"], "hangup");
    assert!(
        hung_up["call"]["duration_secs"].as_f64().is_some_and(|d| d >= 0.0),
        "{hung_up}"
    );
    assert_eq!(hung_up["call"]["start"], started["call"]["start"]);
    assert!(hung_up["call"]["end"].is_string(), "{hung_up}");
}

/// Checks the media lines and the files kept for them: the sticker, the video and its thumbnail,
/// and the image edit.
fn check_media(lines: &[Value], media: &Media) {
    let saved = |line: &Value| std::fs::read(line["file"]["localfilename"].as_str().unwrap()).unwrap();
    let stuck = line_of(lines, &media.sticker);
    assert_eq!(
        (stuck["msgtype"].as_i64(), stuck["file"]["sticker"].as_bool()),
        (Some(6000), Some(true))
    );
    assert_eq!(saved(stuck), media.cat, "the sticker's image is kept");
    let film = line_of(lines, &media.video);
    assert_eq!(saved(film), media.clip);
    let thumb_line = lines
        .iter()
        .find(|l| l["file"]["thumbnail_of"] == film["message_id"])
        .expect("the thumbnail's line");
    assert_eq!(
        saved(thumb_line),
        media.thumb,
        "the thumbnail is kept beside its file (decrypted if encrypted)"
    );
    assert_eq!(film["file"]["thumbnail"], thumb_line["message_id"]);
    let replaced = line_of(lines, &media.new_image);
    assert_eq!(
        (replaced["msgtype"].as_i64(), replaced["edit"]["type"].as_str()),
        (Some(9000), Some("file"))
    );
    assert_eq!(replaced["edit"]["message_id"], id_of(&media.original).as_str());
    assert_eq!(saved(replaced), media.second, "the edit's new image is kept");
}

/// Checks who was there, and where, on the reply's line: the network and the room's members.
fn check_members(lines: &[Value], reply: &OwnedEventId, user: &str) {
    let answer = line_of(lines, reply);
    assert_eq!(answer["network"], "localhost");
    let members: Vec<&str> = answer["room_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    let mut expected = vec![format!("@{user}:localhost"), format!("@{user}-alice:localhost")];
    expected.sort();
    assert_eq!(members, expected, "the room's members as the reply was sent");
}

/// Checks the export of the question: its reply and its thread and nothing else, and RSMF naming the
/// reply's parent.
fn check_question_export(bot: &Bot, texts: &Texts) {
    let q = id_of(&texts.question);
    let out = export(bot, "export-question", &["--message-id", &q, "--format", "jsonl,rsmf"]);
    let exported: Vec<Value> = std::fs::read_to_string(out.join("messages.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: Vec<&str> = exported.iter().map(|l| l["message_id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            q.as_str(),
            id_of(&texts.reply).as_str(),
            id_of(&texts.in_thread).as_str()
        ]
    );
    let rsmf = crate::export::rsmf_check::read_all(&out.join("rsmf"));
    let events: Vec<&Value> = rsmf.iter().flat_map(|f| f.events()).collect();
    let child = events
        .iter()
        .find(|e| e["id"] == id_of(&texts.reply).as_str())
        .expect("the reply's RSMF event");
    assert_eq!(child["parent"], q.as_str());
}

/// Every kind of event, then what the archive and its export make of them.
async fn every_kind(user: &str, encrypted: bool) {
    let (mut bot, _tmp, alice, room) = bot_in_room(user, encrypted).await;
    let texts = send_texts(&room).await;
    let (invite, hangup) = send_call(&room).await;
    let media = send_media(&room, &alice).await;

    let lines = lines_until(&bot, "every kind of event", |l| {
        l.iter()
            .any(|x| x["matrix"]["event"]["event_id"] == media.new_image.as_str())
            && l.iter().filter(|x| x["file"]["localfilename"].is_string()).count() >= 4
    })
    .await;
    check_texts(&lines, &texts);
    check_call(&lines, &invite, &hangup);
    check_media(&lines, &media);

    // Who was there, and where.
    check_members(&lines, &texts.reply, user);
    assert!(
        bot.log_text().matches("no backup key").count() <= 1,
        "{}",
        bot.log_text()
    );
    assert!(bot.stop().await.success());

    // The export of the question brings its reply, its thread and nothing else; its RSMF names the
    // reply's parent.
    check_question_export(&bot, &texts);
}

#[tokio::test(flavor = "multi_thread")]
async fn replies_threads_and_every_kind_of_event_are_linked_and_typed() {
    every_kind("kinds", false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn replies_threads_and_every_kind_of_event_are_linked_and_typed_when_encrypted() {
    every_kind("kindscrypt", true).await;
}

/// A user `name` with a client of their own, joined to `room`.
async fn join_as(room: &Room, name: &str) -> (Client, Room) {
    let server = synapse();
    server.register(name, SENDER_PASSWORD);
    room.invite_user_by_id(&user_id(name)).await.unwrap();
    let client = client_at(&server.url(), name, SENDER_PASSWORD).await;
    client.sync_once(Default::default()).await.unwrap();
    let joined = client.join_room_by_id(room.room_id()).await.unwrap();
    (client, joined)
}

#[tokio::test(flavor = "multi_thread")]
async fn lines_say_who_was_there_who_did_what_and_a_foreign_edit_is_an_attempt() {
    let (mut bot, _tmp, _alice, room) = bot_in_room("people", false).await;
    let (bob_client, bobs_room) = join_as(&room, "people-bob").await;
    let (alice, bob, carol, me) = (
        "@people-alice:localhost",
        "@people-bob:localhost",
        "@people-carol:localhost",
        "@people:localhost",
    );
    let bob_id = UserId::parse(bob).unwrap();
    sync_until(&bob_client, "bob to be in the room", async || {
        is_member(&room, &bob_id).await
    })
    .await;
    let just_us = send_text(&room, "just the two of us").await;
    // Bob "edits" Alice's message: Matrix clients ignore it, and so must the archive.
    let forged = send(
        &bobs_room,
        "m.room.message",
        json!({ "msgtype": "m.text", "body": "* I owe bob money", "m.new_content": { "msgtype": "m.text", "body": "I owe bob money" },
                "m.relates_to": { "rel_type": "m.replace", "event_id": just_us } }),
    )
    .await;
    room.kick_user(&bob_id, Some("off topic")).await.unwrap();
    let carol_id = UserId::parse(carol).unwrap();
    synapse().register("people-carol", SENDER_PASSWORD);
    room.ban_user(&carol_id, Some("spam")).await.unwrap();
    room.unban_user(&carol_id, None).await.unwrap();
    room.invite_user_by_id(&carol_id).await.unwrap();
    let alone = send_text(&room, "now only the bot listens").await;

    let lines = lines_until(&bot, "the last message", |l| {
        l.iter().any(|x| x["matrix"]["event"]["event_id"] == alone.as_str())
    })
    .await;
    let direct = line_of(&lines, &just_us);
    assert_eq!(
        direct["receiver"], bob,
        "two people besides the bot: a direct conversation"
    );
    assert_eq!(direct["room_members"], json!([alice, bob, me]));
    let attempt = line_of(&lines, &forged);
    assert_eq!(attempt["msgtype"], 1000, "not an edit: {attempt}");
    assert_eq!(attempt["sender"], bob);
    assert_eq!(attempt["edit_attempt"]["original_sender"], alice);
    assert_eq!(attempt["edit_attempt"]["message_id"], id_of(&just_us).as_str());
    assert!(
        !lines.iter().any(|l| l["msgtype"] == 9000),
        "no edit of alice's message"
    );
    let control = |action: &str, affected: &str| {
        lines
            .iter()
            .find(|l| l["control"]["action"] == action && l["control"]["members"][0] == affected)
            .unwrap_or_else(|| panic!("no {action} line"))["control"]
            .clone()
    };
    for (action, affected) in [
        ("kick", bob),
        ("ban", carol),
        ("unban", carol),
        ("invite", carol),
        ("join", bob),
    ] {
        let c = control(action, affected);
        let actor = if action == "join" { bob } else { alice };
        assert_eq!(c["actor"], actor, "{action}: {c}");
    }
    assert_eq!(control("kick", bob)["reason"], "off topic");
    let after = line_of(&lines, &alone);
    assert!(after.get("receiver").is_none(), "{after}");
    assert_eq!(after["room_members"], json!([alice, me]));
    assert!(bot.stop().await.success());

    // `export --participant` finds bob in the messages he was present for.
    let out = export(&bot, "export-bob", &["--participant", bob, "--msgtype", "text"]);
    let exported = std::fs::read_to_string(out.join("messages.jsonl")).unwrap();
    assert!(exported.contains("just the two of us"), "{exported}");
}

/// Makes a public room whose history is hidden from those who join later, says something, then
/// invites the bot: its lines hold a notice of the hidden history and nothing said before. The room.
async fn hidden_history_is_marked(bot: &Bot, alice: &Client, bot_id: &UserId) -> Room {
    let mut request = create_room::v3::Request::new();
    request.preset = Some(create_room::v3::RoomPreset::PublicChat);
    let public = alice.create_room(request).await.unwrap();
    public
        .send_state_event(RoomHistoryVisibilityEventContent::new(HistoryVisibility::Joined))
        .await
        .unwrap();
    let unseen = send_text(&public, "said before the bot came").await;
    public.invite_user_by_id(bot_id).await.unwrap();
    sync_until(alice, "the bot to join", async || is_member(&public, bot_id).await).await;
    let lines = lines_until(bot, "the hidden history's line", |l| {
        l.iter().any(|x| x["retention_notice"]["kind"] == "history_hidden")
    })
    .await;
    assert!(
        !lines
            .iter()
            .any(|l| l["matrix"]["event"]["event_id"] == unseen.as_str())
    );
    let notice = lines
        .iter()
        .find(|x| x["retention_notice"]["kind"] == "history_hidden")
        .unwrap();
    assert_eq!(
        (notice["vgroupid"].as_str(), notice["sender"].as_str()),
        (Some(public.room_id().as_str()), Some("@cover:localhost"))
    );
    public
}

/// Upgrades `public`: the bot follows it to its replacement and captures it, and counts no room lost.
async fn upgrade_is_followed(bot: &Bot, alice: &Client, public: &Room, bot_id: &UserId) {
    let upgraded = upgrade(alice, public).await;
    sync_until(alice, "the bot to follow the upgrade", async || {
        match alice.get_room(&upgraded) {
            Some(r) => is_member(&r, bot_id).await,
            None => false,
        }
    })
    .await;
    let new_room = alice.get_room(&upgraded).unwrap();
    send_text(&new_room, "in the upgraded room").await;
    lines_until(bot, "the upgraded room's message", |l| {
        l.iter()
            .any(|x| x["message"] == "in the upgraded room" && x["vgroupid"] == upgraded.as_str())
    })
    .await;
    assert_eq!(common::metric(bot, "Matrix_Rooms_Lost").await, 0);
}

/// A private room upgraded to one the bot may not join, and a room the bot is kicked from: both are
/// raised; invited back into the replacement, the bot no longer counts it lost. The senders' clients
/// (dave's, erin's), which the test keeps to its end.
async fn lost_rooms_are_raised(server: &Synapse, bot: &Bot, bot_id: &UserId) -> (Client, Client) {
    let (dave, private) = room_with_bot(server, "cover-dave", "cover", false).await;
    let replacement = upgrade(&dave, &private).await;
    let (erin, doomed) = room_with_bot(server, "cover-erin", "cover", false).await;
    doomed.kick_user(bot_id, Some("no bots here")).await.unwrap();
    rooms_lost_reaches(bot, 2).await;
    let log = bot.log_text();
    assert!(
        log.contains(&format!(
            "upgraded to {replacement}, which the bot cannot follow (cannot join"
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "the bot was kicked from Matrix room {} by @cover-erin:localhost (reason: no bots here)",
            doomed.room_id()
        )),
        "{log}"
    );
    // Invited back into the replacement, it joins and the room no longer counts as lost.
    dave.sync_once(Default::default()).await.unwrap();
    let replaced = dave.get_room(&replacement).expect("dave is in the room he upgraded to");
    replaced.invite_user_by_id(bot_id).await.unwrap();
    rooms_lost_reaches(bot, 1).await;
    (dave, erin)
}

/// Tombstones a room of frank's with the bot to point at an unrelated public room of alice's: the
/// bot leaves, does not join it, and raises the upgrade it could not follow. The public room, and
/// frank's client, which the test keeps to its end.
async fn a_lure_is_not_followed(server: &Synapse, bot: &Bot, alice: &Client, bot_id: &UserId) -> (Room, Client) {
    let mut request = create_room::v3::Request::new();
    request.preset = Some(create_room::v3::RoomPreset::PublicChat);
    let elsewhere = alice.create_room(request).await.unwrap();
    send_text(&elsewhere, "a conversation the bot was never asked into").await;
    let (frank, lure) = room_with_bot(server, "cover-frank", "cover", false).await;
    lure.send_state_event_raw(
        "m.room.tombstone",
        "",
        json!({ "body": "moved", "replacement_room": elsewhere.room_id() }),
    )
    .await
    .unwrap();
    rooms_lost_reaches(bot, 2).await;
    assert!(
        bot.log_text()
            .contains("its creation names no predecessor: left it, not captured"),
        "{}",
        bot.log_text()
    );
    assert!(
        !is_member(&elsewhere, bot_id).await || {
            alice.sync_once(Default::default()).await.unwrap();
            !is_member(&elsewhere, bot_id).await
        }
    );
    (elsewhere, frank)
}

/// Once the bot has stopped: nothing of the room `elsewhere` was captured, and the two losses
/// reached the topic (read back from `queue`) as critical events.
async fn losses_reached_the_topic(bot: &Bot, moto: &common::aws::Moto, queue: &str, elsewhere: &Room) {
    let lines = written_lines(&bot.messages_dir());
    assert!(
        !lines.iter().any(|l| l["vgroupid"] == elsewhere.room_id().as_str()),
        "nothing of the lured-into room is captured"
    );
    // The losses reached the topic as critical events (the later ones, of the same kind within the
    // repeat window, at shutdown as one with their count).
    let events = moto.drain_queue(queue).await;
    let lost: Vec<&Value> = events
        .iter()
        .filter(|e| e["message"].as_str().is_some_and(|m| m.contains("Matrix room")))
        .collect();
    assert_eq!(lost.len(), 2, "{events:#?}");
    assert!(lost.iter().all(|e| e["severity"] == "critical"), "{lost:#?}");
    assert!(
        lost[0]["message"]
            .as_str()
            .unwrap()
            .contains("which the bot cannot follow (cannot join"),
        "{lost:#?}"
    );
    // The kick and the lure, of the same kind within the repeat window: one event with the count.
    assert!(
        lost[1]["message"].as_str().unwrap().contains("(repeated 2 more times"),
        "{lost:#?}"
    );
    assert!(!written_lines(&bot.messages_dir()).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn hidden_history_is_marked_an_upgrade_is_followed_and_a_lost_room_is_raised() {
    let server = synapse();
    // Events go to an SNS topic (moto), read back through a subscribed queue.
    let moto = common::aws::Moto::start().await;
    let (topic, queue) = moto.topic_with_queue("cover-events").await;
    let mut extra = common::aws::Moto::env_via(&moto.endpoint());
    extra.push(("WICKRIO_SNS_TOPIC_ARN".into(), topic));
    let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (mut bot, _tmp) = matrix_bot(server, "cover", &extra);
    bot.spawn().await;
    server.register("cover-alice", SENDER_PASSWORD);
    let alice = client_at(&server.url(), "cover-alice", SENDER_PASSWORD).await;
    let bot_id = user_id("cover");

    // A public room whose history is hidden from those who join later.
    let public = hidden_history_is_marked(&bot, &alice, &bot_id).await;

    // Upgraded: the bot follows the public room to its replacement and captures it.
    upgrade_is_followed(&bot, &alice, &public, &bot_id).await;

    // A private room upgraded to one the bot may not join, and a room it is kicked from: both raised.
    let (_dave, _erin) = lost_rooms_are_raised(server, &bot, &bot_id).await;

    // A tombstone is the room's creator's to send: one that points at an unrelated public room does
    // not take the bot there (the room names no predecessor): it leaves, captures nothing of it, and
    // raises the upgrade it could not follow.
    let (elsewhere, _frank) = a_lure_is_not_followed(server, &bot, &alice, &bot_id).await;
    assert!(bot.stop().await.success());
    losses_reached_the_topic(&bot, &moto, &queue, &elsewhere).await;

    // A restart does not forget: the rooms still lost are raised again, and counted from the start.
    bot.spawn().await;
    rooms_lost_reaches(&bot, 2).await;
    assert!(bot.stop().await.success());
    assert!(
        bot.log_text().contains("the bot still cannot capture Matrix room(s)"),
        "{}",
        bot.log_text()
    );
}
