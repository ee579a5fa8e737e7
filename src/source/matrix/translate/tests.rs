use super::*;

const CTX: Context = Context {
    room_id: "!room:hs",
    network: "hs",
    bot: "@bot:hs",
    members: None,
    // The events' sender: an edit is the sender's own.
    target_sender: Some("@alice:hs"),
};

fn lines_with(ctx: &Context, event: &Value, delivery: Delivery) -> Vec<Value> {
    translate(ctx, event, &delivery)
        .unwrap()
        .into_iter()
        .map(|t| {
            let mut out = Vec::new();
            t.message.write_line(&mut out);
            serde_json::from_slice(&out).unwrap()
        })
        .collect()
}

fn line(event: Value, delivery: Delivery) -> Value {
    lines_with(&CTX, &event, delivery).remove(0)
}

fn event(kind: &str, content: Value) -> Value {
    json!({ "type": kind, "sender": "@alice:hs", "event_id": "$e1", "origin_server_ts": 1691176258901i64, "content": content })
}

#[test]
fn text_has_the_original_fields_and_keeps_the_event() {
    let e = event("m.room.message", json!({ "msgtype": "m.text", "body": "hello" }));
    let l = line(e.clone(), Delivery::Plain);
    assert_eq!(l["msgtype"], 1000);
    assert_eq!(l["message"], "hello");
    assert_eq!(l["sender"], "@alice:hs");
    assert_eq!(l["msg_ts"], "1691176258.901000");
    assert_eq!(l["time"], "8/4/23 7:10 PM");
    assert_eq!(l["time_iso"], "2023-08-04 19:10:58.901");
    assert_eq!(l["vgroupid"], "!room:hs");
    assert_eq!(l["network"], "hs");
    assert_eq!(l["message_id"].as_str().unwrap().len(), 32);
    assert_eq!(l["matrix"]["event"], e);
    assert_eq!(l["matrix"]["encrypted"], false);
    assert!(l.get("text_kind").is_none(), "plain text has no kind: {l}");
}

#[test]
fn edits_reactions_and_redactions_name_their_target() {
    let target = message_id("$orig");
    let edit = event(
        "m.room.message",
        json!({ "msgtype": "m.text", "body": "* fixed", "m.new_content": { "msgtype": "m.text", "body": "fixed" },
                "m.relates_to": { "rel_type": "m.replace", "event_id": "$orig" } }),
    );
    let l = line(edit, Delivery::Decrypted);
    assert_eq!(
        (l["msgtype"].as_i64(), l["message"].as_str()),
        (Some(9000), Some("fixed"))
    );
    assert_eq!(l["edit"]["message_id"], target.as_str());
    assert_eq!(l["matrix"]["encrypted"], true);

    let reaction = event(
        "m.reaction",
        json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": "$orig", "key": "👍" } }),
    );
    let l = line(reaction, Delivery::Plain);
    assert_eq!(
        (l["msgtype"].as_i64(), l["edit"]["reaction"].as_str()),
        (Some(9100), Some("👍"))
    );
    assert_eq!(l["edit"]["message_id"], target.as_str());

    let mut redaction = event("m.room.redaction", json!({ "redacts": "$orig" }));
    redaction["redacts"] = json!("$orig");
    let ctx = Context {
        target_sender: Some("@bob:hs"),
        ..CTX
    };
    let l = lines_with(&ctx, &redaction, Delivery::Plain).remove(0);
    assert_eq!(l["msgtype"], 4011);
    assert_eq!(l["control"]["message_id"], target.as_str());
    assert_eq!(
        l["control"]["original_sender"], "@bob:hs",
        "a moderator's redaction names whose message it was"
    );
}

#[test]
fn an_edit_by_anyone_but_the_sender_is_an_attempt_not_an_edit() {
    let edit = event(
        "m.room.message",
        json!({ "msgtype": "m.text", "body": "* forged", "m.new_content": { "msgtype": "m.text", "body": "forged" },
                "m.relates_to": { "rel_type": "m.replace", "event_id": "$orig" } }),
    );
    let ctx = Context {
        target_sender: Some("@bob:hs"),
        ..CTX
    };
    let l = lines_with(&ctx, &edit, Delivery::Plain).remove(0);
    assert_eq!(l["msgtype"], 1000);
    assert!(l.get("edit").is_none(), "{l}");
    assert_eq!(l["edit_attempt"]["message_id"], message_id("$orig").as_str());
    assert_eq!(l["edit_attempt"]["original_sender"], "@bob:hs");
    assert_eq!(l["message"], "forged");
    let own = Context {
        target_sender: Some("@alice:hs"),
        ..CTX
    };
    assert_eq!(lines_with(&own, &edit, Delivery::Plain)[0]["msgtype"], 9000);
    let unknown = Context {
        target_sender: None,
        ..CTX
    };
    let l = lines_with(&unknown, &edit, Delivery::Plain).remove(0);
    assert_eq!(l["msgtype"], 1000, "an edit the bot cannot vouch for is no edit: {l}");
    assert_eq!(l["edit_attempt"]["original_sender"], Value::Null);
}

#[test]
fn replies_and_threads_name_their_parent_and_root() {
    let reply = event(
        "m.room.message",
        json!({ "msgtype": "m.text", "body": "> <@bob:hs> the question\n\nthe answer",
                "format": "org.matrix.custom.html",
                "formatted_body": "<mx-reply><blockquote>the question</blockquote></mx-reply>the answer",
                "m.relates_to": { "m.in_reply_to": { "event_id": "$q" } } }),
    );
    let l = line(reply, Delivery::Plain);
    assert_eq!(l["reply_to"], message_id("$q").as_str());
    assert_eq!(
        l["message"], "the answer",
        "the quoted fallback is not the reply's words"
    );
    // Without the fallback's mark, a reply that starts with a quote of its own keeps it.
    let quoting = event(
        "m.room.message",
        json!({ "msgtype": "m.text", "body": "> as the memo says\n\nno",
                "m.relates_to": { "m.in_reply_to": { "event_id": "$q" } } }),
    );
    assert_eq!(line(quoting, Delivery::Plain)["message"], "> as the memo says\n\nno");
    assert!(l.get("thread_root").is_none());

    let in_thread = |falling_back: bool| {
        event(
            "m.room.message",
            json!({ "msgtype": "m.text", "body": "in the thread",
                    "m.relates_to": { "rel_type": "m.thread", "event_id": "$root", "is_falling_back": falling_back,
                                      "m.in_reply_to": { "event_id": "$latest" } } }),
        )
    };
    let l = line(in_thread(true), Delivery::Plain);
    assert_eq!(l["thread_root"], message_id("$root").as_str());
    assert!(
        l.get("reply_to").is_none(),
        "a fallback reply to the thread's latest is no reply: {l}"
    );
    let l = line(in_thread(false), Delivery::Plain);
    assert_eq!(l["reply_to"], message_id("$latest").as_str());
}

#[test]
fn files_name_their_media_and_thumbnails_get_a_line_of_their_own() {
    let e = event(
        "m.room.message",
        json!({ "msgtype": "m.video", "body": "clip.mp4", "url": "mxc://hs/abc",
                "info": { "thumbnail_url": "mxc://hs/thumb", "thumbnail_info": { "mimetype": "image/jpeg" } } }),
    );
    let t = translate(&CTX, &e, &Delivery::Plain).unwrap();
    assert_eq!(t.len(), 2);
    let media = t[0].media.as_ref().unwrap();
    assert_eq!(media.filename, "clip.mp4");
    assert_eq!(media.source["url"], "mxc://hs/abc");
    assert_eq!(t[0].message.file().unwrap()["guid"], "mxc://hs/abc");
    assert_eq!(t[0].message.msgtype(), 6000);
    let thumb = t[1].media.as_ref().unwrap();
    assert_eq!(
        (thumb.filename.as_str(), &thumb.source["url"]),
        ("clip.thumbnail.jpg", &json!("mxc://hs/thumb"))
    );
    let lines = lines_with(&CTX, &e, Delivery::Plain);
    assert_eq!(lines[1]["file"]["thumbnail_of"], lines[0]["message_id"]);
    assert_eq!(lines[0]["file"]["thumbnail"], lines[1]["message_id"]);
    assert_ne!(lines[0]["message_id"], lines[1]["message_id"]);
}

#[test]
fn a_sticker_is_a_file_and_an_image_edit_keeps_the_new_image() {
    let sticker = event(
        "m.sticker",
        json!({ "body": "a cat", "url": "mxc://hs/cat", "info": { "mimetype": "image/png" } }),
    );
    let t = translate(&CTX, &sticker, &Delivery::Plain).unwrap();
    assert_eq!(t[0].message.msgtype(), 6000);
    assert_eq!(t[0].media.as_ref().unwrap().filename, "a cat.png");
    assert_eq!(t[0].message.file().unwrap()["sticker"], true);

    let edit = event(
        "m.room.message",
        json!({ "msgtype": "m.image", "body": "* new.png", "m.new_content": { "msgtype": "m.image", "body": "new.png", "url": "mxc://hs/new" },
                "m.relates_to": { "rel_type": "m.replace", "event_id": "$orig" } }),
    );
    let t = translate(&CTX, &edit, &Delivery::Plain).unwrap();
    assert_eq!(t[0].message.msgtype(), 9000);
    assert_eq!(t[0].media.as_ref().unwrap().source["url"], "mxc://hs/new");
    let l = line(edit, Delivery::Plain);
    assert_eq!(
        (l["edit"]["type"].as_str(), l["file"]["filename"].as_str()),
        (Some("file"), Some("new.png"))
    );
}

#[test]
fn locations_calls_polls_notices_and_emotes_keep_their_kind() {
    let loc = event(
        "m.room.message",
        json!({ "msgtype": "m.location", "body": "the office", "geo_uri": "GEO:51.5008,-0.1247,12;u=35" }),
    );
    let l = line(loc, Delivery::Plain);
    assert_eq!(l["msgtype"], 8000);
    assert_eq!(
        (l["location"]["latitude"].as_f64(), l["location"]["longitude"].as_f64()),
        (Some(51.5008), Some(-0.1247))
    );
    assert_eq!(l["location"]["description"], "the office");

    let invite = event(
        "m.call.invite",
        json!({ "call_id": "c1", "offer": { "type": "offer", "sdp": "v=0\r\nm=audio 9\r\nm=video 9\r\n" }, "version": 1 }),
    );
    let l = line(invite, Delivery::Plain);
    assert_eq!(
        (
            l["msgtype"].as_i64(),
            l["call"]["status"].as_str(),
            l["call"]["video"].as_bool()
        ),
        (Some(7000), Some("invite"), Some(true))
    );

    let poll = event(
        "org.matrix.msc3381.poll.start",
        json!({ "org.matrix.msc3381.poll.start": { "question": { "org.matrix.msc1767.text": "Lunch?" },
                "answers": [ { "id": "a", "org.matrix.msc1767.text": "Pizza" }, { "id": "b", "org.matrix.msc1767.text": "Sushi" } ] } }),
    );
    let l = line(poll, Delivery::Plain);
    assert_eq!(l["message"], "Lunch?\n- Pizza\n- Sushi");
    assert_eq!(l["poll"]["answers"][1]["id"], "b");
    let vote = event(
        "m.poll.response",
        json!({ "m.selections": ["b"], "m.relates_to": { "rel_type": "m.reference", "event_id": "$poll" } }),
    );
    let l = line(vote, Delivery::Plain);
    assert_eq!(
        (l["poll"]["kind"].as_str(), l["poll"]["message_id"].as_str()),
        (Some("response"), Some(message_id("$poll").as_str()))
    );
    assert_eq!(l["message"], "voted: b");
    let end = event(
        "m.poll.end",
        json!({ "m.text": [ { "body": "Ended: Sushi" } ], "m.relates_to": { "rel_type": "m.reference", "event_id": "$poll" } }),
    );
    let l = line(end, Delivery::Plain);
    assert_eq!(
        (l["message"].as_str(), l["poll"]["kind"].as_str()),
        (Some("Ended: Sushi"), Some("end"))
    );

    for (kind, expected) in [("m.notice", "notice"), ("m.emote", "emote")] {
        let l = line(
            event("m.room.message", json!({ "msgtype": kind, "body": "x" })),
            Delivery::Plain,
        );
        assert_eq!(
            (l["msgtype"].as_i64(), l["text_kind"].as_str()),
            (Some(1000), Some(expected))
        );
    }
}

#[test]
fn lines_name_the_rooms_members_and_in_a_direct_room_the_receiver() {
    let members = ["@alice:hs".to_owned(), "@bob:hs".to_owned(), "@bot:hs".to_owned()];
    let ctx = Context {
        members: Some(&members),
        ..CTX
    };
    let text = event("m.room.message", json!({ "msgtype": "m.text", "body": "hi" }));
    let l = lines_with(&ctx, &text, Delivery::Plain).remove(0);
    assert_eq!(l["room_members"], json!(members));
    assert_eq!(l["receiver"], "@bob:hs");
    let group = [
        "@alice:hs".to_owned(),
        "@bob:hs".to_owned(),
        "@bot:hs".to_owned(),
        "@carol:hs".to_owned(),
    ];
    let ctx = Context {
        members: Some(&group),
        ..CTX
    };
    let l = lines_with(&ctx, &text, Delivery::Plain).remove(0);
    assert!(l.get("receiver").is_none(), "three people are no direct room: {l}");
    // A control line is no conversation.
    let mut name = event("m.room.name", json!({ "name": "Ops" }));
    name["state_key"] = json!("");
    assert!(
        lines_with(&ctx, &name, Delivery::Plain)[0]
            .get("room_members")
            .is_none()
    );
}

#[test]
fn membership_lines_name_the_actor_and_what_was_done() {
    let member = |sender: &str, affected: &str, membership: &str, prev: Option<&str>| {
        let mut e = event("m.room.member", json!({ "membership": membership }));
        e["sender"] = json!(sender);
        e["state_key"] = json!(affected);
        if let Some(prev) = prev {
            e["unsigned"] = json!({ "prev_content": { "membership": prev } });
        }
        line(e, Delivery::Plain)
    };
    let cases = [
        (("@a:hs", "@b:hs", "invite", None), "invite", 4002),
        (("@b:hs", "@b:hs", "join", Some("invite")), "join", 4002),
        (("@b:hs", "@b:hs", "leave", Some("join")), "leave", 4003),
        (("@a:hs", "@b:hs", "leave", Some("join")), "kick", 4002),
        (("@a:hs", "@b:hs", "ban", Some("join")), "ban", 4002),
        (("@a:hs", "@b:hs", "leave", Some("ban")), "unban", 4002),
        (("@b:hs", "@b:hs", "leave", Some("invite")), "reject_invite", 4002),
    ];
    for ((sender, affected, membership, prev), action, msgtype) in cases {
        let l = member(sender, affected, membership, prev);
        assert_eq!(
            (l["control"]["action"].as_str(), l["msgtype"].as_i64()),
            (Some(action), Some(msgtype)),
            "{l}"
        );
        assert_eq!(l["control"]["actor"], sender);
        assert_eq!(l["control"]["members"], json!([affected]));
    }
}

#[test]
fn room_state_maps_to_control_messages() {
    let mut create = event("m.room.create", json!({}));
    create["state_key"] = json!("");
    assert_eq!(line(create, Delivery::Plain)["msgtype"], 4001);
    let mut name = event("m.room.name", json!({ "name": "Ops" }));
    name["state_key"] = json!("");
    let l = line(name, Delivery::Plain);
    assert_eq!(
        (l["msgtype"].as_i64(), l["control"]["title"].as_str()),
        (Some(4004), Some("Ops"))
    );
    let mut topic = event("m.room.topic", json!({ "topic": "incidents" }));
    topic["state_key"] = json!("");
    assert_eq!(line(topic, Delivery::Plain)["control"]["description"], "incidents");
    let mut tombstone = event(
        "m.room.tombstone",
        json!({ "body": "upgraded", "replacement_room": "!new:hs" }),
    );
    tombstone["state_key"] = json!("");
    assert_eq!(
        line(tombstone, Delivery::Plain)["control"]["replacement_room"],
        "!new:hs"
    );
}

#[test]
fn undecryptable_events_are_written_with_the_reason() {
    let e = event(
        "m.room.encrypted",
        json!({ "algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "x" }),
    );
    let l = line(e, Delivery::Undecryptable("missing room key".into()));
    assert_eq!(l["msgtype"], 1000);
    assert_eq!(l["message"], "");
    assert_eq!(l["matrix"]["decryption_error"], "missing room key");
    assert_eq!(l["matrix"]["encrypted"], true);
    assert!(l["matrix"].get("decrypted_late").is_none());
}

#[test]
fn a_late_decryption_is_marked_and_names_the_same_message() {
    let e = event("m.room.message", json!({ "msgtype": "m.text", "body": "late" }));
    let late = line(e.clone(), Delivery::DecryptedLate(None));
    assert_eq!(late["message"], "late");
    assert_eq!(late["matrix"]["decrypted_late"], true);
    assert_eq!(late["matrix"]["encrypted"], true);
    assert_eq!(late["message_id"], line(e, Delivery::Decrypted)["message_id"]);
}

#[test]
fn hidden_history_is_said_once_per_join() {
    let mut join = event("m.room.member", json!({ "membership": "join" }));
    join["state_key"] = json!("@bot:hs");
    let t = history_hidden(&CTX, &join, "joined").unwrap();
    let mut out = Vec::new();
    t.message.write_line(&mut out);
    let l: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(l["sender"], "@bot:hs");
    assert_eq!(l["retention_notice"]["kind"], "history_hidden");
    assert!(l["message"].as_str().unwrap().contains("history_visibility: joined"));
    let again = history_hidden(&CTX, &join, "joined").unwrap();
    assert_eq!(
        again.message.get("message_id"),
        t.message.get("message_id"),
        "a repeat is the same line"
    );
}
