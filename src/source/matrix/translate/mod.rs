//! A Matrix room event as a line in the original's format: the WickrIO fields an archive reader
//! expects (`msgtype`, `message`, `sender`, `msg_ts`, `time`, `vgroupid`, and the `file`, `call`,
//! `location`, `edit` or `control` object), with the whole Matrix event kept beside them under
//! `matrix`, so nothing is lost in translation. Pure functions of the event's JSON and of what the
//! bot knows of its room ([`Context`]): no network, no disk.

mod content;
mod state;

pub(crate) use state::member_action;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::message::{InvalidMessage, MSGTYPE_TEXT, Message};

/// How the bot received the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Sent in the clear (an unencrypted room, or a state event).
    Plain,
    /// Decrypted by the bot: `event` is the plaintext.
    Decrypted,
    /// Written undecryptable when it arrived, decrypted once its key came (`matrix.decrypted_late`),
    /// with the room's members as it arrived.
    DecryptedLate(Option<Vec<String>>),
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

/// One line, ready for the spool once its media (if any) is saved.
#[derive(Debug)]
pub struct Translated {
    pub message: Message,
    pub media: Option<MediaRef>,
}

/// What the bot knows of the room an event arrived in, beyond the event itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct Context<'a> {
    pub room_id: &'a str,
    /// The homeserver's server name: the network a line was captured on (`network`).
    pub network: &'a str,
    /// The bot's own user ID: in the room, but no party to its conversations.
    pub bot: &'a str,
    /// The room's joined members as the event arrived, sorted; `None` if unknown.
    pub members: Option<&'a [String]>,
    /// Who sent the event this one replaces or redacts, when the bot knows it: only the sender of an
    /// event may replace it, so an "edit" by anyone else is recorded as the attempt it is.
    pub target_sender: Option<&'a str>,
}

/// The original's `message_id` is 32 hex digits; ours is derived from the Matrix event ID, so the same
/// event always gets the same ID and edits, reactions, replies and redactions can name their target.
pub fn message_id(event_id: &str) -> String {
    hex::encode(&Sha256::digest(event_id.as_bytes())[..16])
}

/// What an event becomes before the fields every line has: its `msgtype`, `message`, its own fields
/// (`file`, `edit`, `control`...), and the media to fetch.
#[derive(Debug, Default)]
struct Body {
    msgtype: i64,
    text: String,
    fields: Map<String, Value>,
    media: Option<MediaRef>,
    /// A thumbnail to keep beside the file: a line of its own (6000) naming the file's message.
    thumbnail: Option<MediaRef>,
    /// Whether it is a message between people (not a change to the room): such lines carry the
    /// room's members and, in a direct room, the `receiver`.
    conversation: bool,
}

/// Turns `event` (a room event's JSON, as delivered or as decrypted) into its line, and a line of
/// its thumbnail after it when it has one.
pub fn translate(ctx: &Context, event: &Value, delivery: &Delivery) -> Result<Vec<Translated>, InvalidMessage> {
    let text_at = |key: &str| event.get(key).and_then(Value::as_str).unwrap_or_default();
    let (event_type, sender, event_id) = (text_at("type"), text_at("sender"), text_at("event_id"));
    let content = event.get("content").cloned().unwrap_or_else(|| json!({}));
    let body = match delivery {
        Delivery::Undecryptable(_) => Body {
            msgtype: MSGTYPE_TEXT,
            conversation: true,
            ..Body::default()
        },
        _ => match state::control(ctx, event_type, event, &content, sender) {
            Some(body) => body,
            None => content::message(ctx, event_type, event, &content, sender),
        },
    };
    let Body {
        msgtype,
        text,
        fields,
        media,
        thumbnail,
        conversation,
    } = body;
    let id = message_id(event_id);
    let mut line = common_fields(ctx, event, &id, sender, msgtype, text);
    if conversation {
        people(ctx, sender, &mut line);
    }
    line.extend(fields);
    if thumbnail.is_some()
        && let Some(Value::Object(file)) = line.get_mut("file")
    {
        file.insert("thumbnail".into(), Value::String(thumbnail_id(event_id)));
    }
    line.insert("matrix".into(), matrix_field(ctx.room_id, event, delivery));
    let mut out = vec![Translated {
        message: Message::from_object(line, 1)?,
        media,
    }];
    if let Some(thumb) = thumbnail {
        out.push(thumbnail_line(ctx, event, event_id, &id, sender, thumb)?);
    }
    Ok(out)
}

/// A thumbnail's own `message_id`: derived from its file's event, so a repeat is the same line.
fn thumbnail_id(event_id: &str) -> String {
    message_id(&format!("{event_id}#thumbnail"))
}

/// The line of a file's thumbnail: a file message (6000) whose `file.thumbnail_of` names the file's
/// message, so `export` brings it along with it.
fn thumbnail_line(
    ctx: &Context,
    event: &Value,
    event_id: &str,
    file_id: &str,
    sender: &str,
    thumb: MediaRef,
) -> Result<Translated, InvalidMessage> {
    let mut line = common_fields(
        ctx,
        event,
        &thumbnail_id(event_id),
        sender,
        crate::message::MSGTYPE_FILE,
        String::new(),
    );
    line.insert(
        "file".into(),
        json!({ "filename": thumb.filename, "uploadedbyuser": sender, "thumbnail_of": file_id,
                "uploadedtimestamp": event.get("origin_server_ts") }),
    );
    line.insert(
        "matrix".into(),
        json!({ "room_id": ctx.room_id, "thumbnail_of_event": event_id }),
    );
    Ok(Translated {
        message: Message::from_object(line, 1)?,
        media: Some(thumb),
    })
}

/// Members listed in a line at most: a room of thousands would otherwise make every line hundreds of
/// kilobytes. Beyond it a line carries the count alone.
pub(crate) const MAX_LISTED_MEMBERS: usize = 1_000;

/// Who was in the conversation: the room's members at that moment (their number, and their IDs up to
/// [`MAX_LISTED_MEMBERS`]), and in a direct room (two people besides the bot) the one the sender
/// wrote to, as the original's `receiver`.
fn people(ctx: &Context, sender: &str, line: &mut Map<String, Value>) {
    let Some(members) = ctx.members else { return };
    line.insert("room_member_count".into(), json!(members.len()));
    if members.len() <= MAX_LISTED_MEMBERS {
        line.insert("room_members".into(), json!(members));
    }
    let others: Vec<&String> = members.iter().filter(|m| *m != ctx.bot).collect();
    if let [a, b] = others.as_slice() {
        let receiver = if *a == sender {
            Some(b)
        } else if *b == sender {
            Some(a)
        } else {
            None
        };
        if let Some(receiver) = receiver {
            line.insert("receiver".into(), Value::String((*receiver).clone()));
        }
    }
}

/// The fields every line has, in the original's order and formats.
fn common_fields(
    ctx: &Context,
    event: &Value,
    id: &str,
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
    line.insert("message_id".into(), Value::String(id.to_owned()));
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
    line.insert("time_iso".into(), Value::String(iso_time(at)));
    line.insert("vgroupid".into(), Value::String(ctx.room_id.to_owned()));
    if !ctx.network.is_empty() {
        line.insert("network".into(), Value::String(ctx.network.to_owned()));
    }
    line
}

/// The original's `time_iso` format.
pub(crate) fn iso_time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S%.3f").to_string()
}

/// `matrix`: the event itself, and how it was delivered.
fn matrix_field(room_id: &str, event: &Value, delivery: &Delivery) -> Value {
    let mut matrix = json!({ "room_id": room_id, "encrypted": *delivery != Delivery::Plain, "event": event });
    match delivery {
        Delivery::Undecryptable(reason) => matrix["decryption_error"] = Value::String(reason.clone()),
        Delivery::DecryptedLate(_) => matrix["decrypted_late"] = Value::Bool(true),
        Delivery::Plain | Delivery::Decrypted => {}
    }
    matrix
}

/// The line saying that a room's history before the bot joined is hidden from it by the room's
/// `history_visibility` (`joined` or `invited`): what was said before is not in the archive, and
/// the archive says so rather than look complete. Written by the bot, right after its join.
pub fn history_hidden(ctx: &Context, join: &Value, visibility: &str) -> Result<Translated, InvalidMessage> {
    let join_id = join.get("event_id").and_then(Value::as_str).unwrap_or_default();
    let text = format!(
        "This room's history before the retention bot joined is hidden from it (history_visibility: {visibility}): messages sent before this point were not captured."
    );
    let mut line = common_fields(
        ctx,
        join,
        &message_id(&format!("{join_id}#history_hidden")),
        ctx.bot,
        MSGTYPE_TEXT,
        text,
    );
    line.insert("text_kind".into(), Value::String("notice".into()));
    line.insert(
        "retention_notice".into(),
        json!({ "kind": "history_hidden", "history_visibility": visibility }),
    );
    line.insert(
        "matrix".into(),
        json!({ "room_id": ctx.room_id, "encrypted": false, "join_event": join_id }),
    );
    Ok(Translated {
        message: Message::from_object(line, 1)?,
        media: None,
    })
}

#[cfg(test)]
mod tests;
