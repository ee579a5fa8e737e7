//! A Matrix room event as a line in the original's format: the WickrIO fields an archive reader
//! expects (`msgtype`, `message`, `sender`, `msg_ts`, `time`, `vgroupid`, and the `file`, `edit` or
//! `control` object), with the whole Matrix event kept beside them under `matrix`, so nothing is lost
//! in translation. Pure functions of the event's JSON: no network, no disk.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::message::{
    InvalidMessage, MSGTYPE_CREATE_ROOM, MSGTYPE_DELETE_MESSAGE, MSGTYPE_EDIT, MSGTYPE_FILE, MSGTYPE_LEAVE_ROOM,
    MSGTYPE_MODIFY_MEMBERS, MSGTYPE_MODIFY_ROOM, MSGTYPE_REACTION, MSGTYPE_TEXT, Message,
};

/// How the bot received the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Sent in the clear (an unencrypted room, or a state event).
    Plain,
    /// Decrypted by the bot: `event` is the plaintext.
    Decrypted,
    /// Written undecryptable when it arrived, decrypted once its key came (`matrix.decrypted_late`).
    DecryptedLate,
    /// An encrypted event the bot holds no key for; the reason is written in the line.
    Undecryptable(String),
}

/// A media file a message refers to, which the bot downloads and saves as an attachment.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaRef {
    /// The event content's `url` or `file` (encrypted) part, as `matrix_sdk`'s `MediaSource` reads it.
    pub source: Value,
    pub filename: String,
}

/// One event, ready for the spool once its media (if any) is saved.
#[derive(Debug)]
pub struct Translated {
    pub message: Message,
    pub media: Option<MediaRef>,
}

/// The original's `message_id` is 32 hex digits; ours is derived from the Matrix event ID, so the same
/// event always gets the same ID and edits, reactions and redactions can name their target.
pub fn message_id(event_id: &str) -> String {
    hex::encode(&Sha256::digest(event_id.as_bytes())[..16])
}

/// Turns `event` (a room event's JSON, as delivered or as decrypted) into a message line.
pub fn translate(room_id: &str, event: &Value, delivery: &Delivery) -> Result<Translated, InvalidMessage> {
    let str_at = |path: &[&str]| -> Option<&str> {
        let mut v = event;
        for key in path {
            v = v.get(key)?;
        }
        v.as_str()
    };
    let event_type = str_at(&["type"]).unwrap_or_default();
    let sender = str_at(&["sender"]).unwrap_or_default();
    let event_id = str_at(&["event_id"]).unwrap_or_default();
    let content = event.get("content").cloned().unwrap_or_else(|| json!({}));
    let body = content
        .get("body")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let relates = content.get("m.relates_to");
    let relation = relates.and_then(|r| r.get("rel_type")).and_then(Value::as_str);
    let target = relates
        .and_then(|r| r.get("event_id"))
        .and_then(Value::as_str)
        .map(message_id);

    let mut fields = Map::new();
    let mut media = None;
    let (msgtype, text): (i64, String) = match (event_type, delivery) {
        (_, Delivery::Undecryptable(_)) => (MSGTYPE_TEXT, String::new()),
        ("m.room.message", _) if relation == Some("m.replace") => {
            let new = content.get("m.new_content").unwrap_or(&content);
            let text = new.get("body").and_then(Value::as_str).unwrap_or(&body).to_owned();
            fields.insert(
                "edit".into(),
                json!({ "type": "text", "message_id": target, "message": text }),
            );
            (MSGTYPE_EDIT, text)
        }
        ("m.room.message", _) => match content.get("msgtype").and_then(Value::as_str) {
            Some("m.file" | "m.image" | "m.audio" | "m.video") => {
                let (file, media_ref) = file_fields(event, &content, &body, sender);
                fields.insert("file".into(), file);
                media = Some(media_ref);
                (MSGTYPE_FILE, body)
            }
            _ => (MSGTYPE_TEXT, body),
        },
        ("m.reaction", _) => {
            let key = relates
                .and_then(|r| r.get("key"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            fields.insert(
                "edit".into(),
                json!({ "type": "reaction", "message_id": target, "reaction": key }),
            );
            (MSGTYPE_REACTION, key.to_owned())
        }
        (kind, _) => match control(kind, event, &content, sender) {
            Some((msgtype, control)) => {
                fields.insert("control".into(), control);
                (msgtype, String::new())
            }
            // Any other message-like event (stickers, polls, calls...): its body, if any; the event
            // itself is in `matrix`.
            None => (MSGTYPE_TEXT, body),
        },
    };

    let mut line = common_fields(room_id, event, event_id, sender, msgtype, text);
    line.extend(fields);
    line.insert("matrix".into(), matrix_field(room_id, event, delivery));
    let message = Message::from_object(line, 1)?;
    Ok(Translated { message, media })
}

/// A file message's `file` object, and where its media is to be fetched from.
fn file_fields(event: &Value, content: &Value, body: &str, sender: &str) -> (Value, MediaRef) {
    let filename = content
        .get("filename")
        .and_then(Value::as_str)
        .unwrap_or(body)
        .to_owned();
    let mut file = json!({
        "filename": filename,
        "guid": content.get("url").or_else(|| content.get("file").and_then(|f| f.get("url"))),
        "uploadedbyuser": sender,
        "uploadedtimestamp": event.get("origin_server_ts"),
    });
    if content.get("msgtype").and_then(Value::as_str) == Some("m.audio")
        && content.get("org.matrix.msc3245.voice").is_some()
    {
        file["isvoicememo"] = json!(true);
    }
    let media = MediaRef {
        source: json!({ "url": content.get("url"), "file": content.get("file") }),
        filename,
    };
    (file, media)
}

/// A room's change (a redaction, its creation, a member, a state event) as the original's
/// control message: its `msgtype` and `control` object; `None` for a message-like event.
fn control(kind: &str, event: &Value, content: &Value, sender: &str) -> Option<(i64, Value)> {
    Some(match kind {
        "m.room.redaction" => {
            let redacts = event
                .get("redacts")
                .or_else(|| content.get("redacts"))
                .and_then(Value::as_str)
                .map(message_id);
            let control =
                json!({ "msgtype": MSGTYPE_DELETE_MESSAGE, "message_id": redacts, "reason": content.get("reason") });
            (MSGTYPE_DELETE_MESSAGE, control)
        }
        "m.room.create" => (
            MSGTYPE_CREATE_ROOM,
            json!({ "msgtype": MSGTYPE_CREATE_ROOM, "members": [sender] }),
        ),
        "m.room.member" => {
            let member = event.get("state_key").and_then(Value::as_str).unwrap_or_default();
            let membership = content.get("membership").and_then(Value::as_str).unwrap_or_default();
            let left = matches!(membership, "leave" | "ban") && member == sender;
            let msgtype = if left {
                MSGTYPE_LEAVE_ROOM
            } else {
                MSGTYPE_MODIFY_MEMBERS
            };
            (
                msgtype,
                json!({ "msgtype": msgtype, "members": [member], "membership": membership }),
            )
        }
        _ if event.get("state_key").is_some() => {
            let mut control = json!({ "msgtype": MSGTYPE_MODIFY_ROOM, "changemask": kind });
            match kind {
                "m.room.name" => control["title"] = content.get("name").cloned().unwrap_or(Value::Null),
                "m.room.topic" => control["description"] = content.get("topic").cloned().unwrap_or(Value::Null),
                _ => {}
            }
            (MSGTYPE_MODIFY_ROOM, control)
        }
        _ => return None,
    })
}

/// The fields every line has, in the original's order and formats.
fn common_fields(
    room_id: &str,
    event: &Value,
    event_id: &str,
    sender: &str,
    msgtype: i64,
    text: String,
) -> Map<String, Value> {
    let ts = event
        .get("origin_server_ts")
        .and_then(Value::as_i64)
        .unwrap_or_default();
    let at = DateTime::<Utc>::from_timestamp_millis(ts).unwrap_or_default();
    let mut line = Map::new();
    line.insert("message".into(), Value::String(text));
    line.insert("message_id".into(), Value::String(message_id(event_id)));
    line.insert(
        "msg_ts".into(),
        Value::String(format!("{}.{:06}", at.timestamp(), at.timestamp_subsec_micros())),
    );
    line.insert("msgtype".into(), json!(msgtype));
    line.insert("sender".into(), Value::String(sender.to_owned()));
    line.insert("sender_type".into(), Value::String("normal".into()));
    line.insert(
        "time".into(),
        Value::String(at.format("%-m/%-d/%y %-I:%M %p").to_string()),
    );
    line.insert(
        "time_iso".into(),
        Value::String(at.format("%Y-%m-%d %H:%M:%S%.3f").to_string()),
    );
    line.insert("vgroupid".into(), Value::String(room_id.to_owned()));
    line
}

/// `matrix`: the event itself, and how it was delivered.
fn matrix_field(room_id: &str, event: &Value, delivery: &Delivery) -> Value {
    let mut matrix = json!({ "room_id": room_id, "encrypted": *delivery != Delivery::Plain, "event": event });
    match delivery {
        Delivery::Undecryptable(reason) => matrix["decryption_error"] = Value::String(reason.clone()),
        Delivery::DecryptedLate => matrix["decrypted_late"] = Value::Bool(true),
        Delivery::Plain | Delivery::Decrypted => {}
    }
    matrix
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(event: Value, delivery: Delivery) -> Value {
        let t = translate("!room:hs", &event, &delivery).unwrap();
        let mut out = Vec::new();
        t.message.write_line(&mut out);
        serde_json::from_slice(&out).unwrap()
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
        assert_eq!(l["message_id"].as_str().unwrap().len(), 32);
        assert_eq!(l["matrix"]["event"], e);
        assert_eq!(l["matrix"]["encrypted"], false);
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
        let l = line(redaction, Delivery::Plain);
        assert_eq!(l["msgtype"], 4011);
        assert_eq!(l["control"]["message_id"], target.as_str());
    }

    #[test]
    fn files_name_their_media() {
        let e = event(
            "m.room.message",
            json!({ "msgtype": "m.file", "body": "report.pdf", "url": "mxc://hs/abc" }),
        );
        let t = translate("!room:hs", &e, &Delivery::Plain).unwrap();
        let media = t.media.unwrap();
        assert_eq!(media.filename, "report.pdf");
        assert_eq!(media.source["url"], "mxc://hs/abc");
        assert_eq!(t.message.file().unwrap()["guid"], "mxc://hs/abc");
        assert_eq!(t.message.msgtype(), 6000);
    }

    #[test]
    fn room_state_maps_to_control_messages() {
        let mut join = event("m.room.member", json!({ "membership": "join" }));
        join["state_key"] = json!("@bob:hs");
        assert_eq!(line(join, Delivery::Plain)["msgtype"], 4002);
        let mut leave = event("m.room.member", json!({ "membership": "leave" }));
        leave["state_key"] = json!("@alice:hs");
        assert_eq!(line(leave, Delivery::Plain)["msgtype"], 4003);
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
        let late = line(e.clone(), Delivery::DecryptedLate);
        assert_eq!(late["message"], "late");
        assert_eq!(late["matrix"]["decrypted_late"], true);
        assert_eq!(late["matrix"]["encrypted"], true);
        assert_eq!(late["message_id"], line(e, Delivery::Decrypted)["message_id"]);
    }
}
