//! Message-like events: text (notices and emotes keeping their kind), files and stickers with their
//! thumbnails, edits, reactions, locations, calls and polls, and what a reply or a thread links
//! each to.

use serde_json::{Map, Value, json};

use super::{Body, Context, MediaRef, message_id};
use crate::message::{MSGTYPE_CALL, MSGTYPE_EDIT, MSGTYPE_FILE, MSGTYPE_LOCATION, MSGTYPE_REACTION, MSGTYPE_TEXT};

/// The event types of a poll (the stable names and MSC3381's, which clients still send).
const POLL_START: [&str; 2] = ["m.poll.start", "org.matrix.msc3381.poll.start"];
const POLL_RESPONSE: [&str; 2] = ["m.poll.response", "org.matrix.msc3381.poll.response"];
const POLL_END: [&str; 2] = ["m.poll.end", "org.matrix.msc3381.poll.end"];
/// `m.room.message` kinds whose content is a file.
const FILE_KINDS: [&str; 4] = ["m.file", "m.image", "m.audio", "m.video"];

/// A message-like event's body; anything unknown is text (its `body`, if any), the event itself in
/// `matrix`.
pub(super) fn message(ctx: &Context, event_type: &str, event: &Value, content: &Value, sender: &str) -> Body {
    let mut body = match event_type {
        "m.room.message" => room_message(ctx, event, content, sender),
        "m.sticker" => {
            let mut body = file(event, content, sender);
            if let Some(Value::Object(file)) = body.fields.get_mut("file") {
                file.insert("sticker".into(), Value::Bool(true));
            }
            body
        }
        "m.reaction" => reaction(content),
        t if POLL_START.contains(&t) => poll_start(content),
        t if POLL_RESPONSE.contains(&t) => poll_response(content),
        t if POLL_END.contains(&t) => poll_end(content),
        t if t.starts_with("m.call.") => call(t, content),
        _ => text(MSGTYPE_TEXT, body_of(content)),
    };
    link(content, &mut body.fields);
    body
}

fn text(msgtype: i64, text: String) -> Body {
    Body {
        msgtype,
        text,
        conversation: true,
        ..Body::default()
    }
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str)
}

fn body_of(content: &Value) -> String {
    str_at(content, "/body").unwrap_or_default().to_owned()
}

/// The event a relation of this type points at (`m.relates_to.event_id`).
fn related(content: &Value, rel_type: &str) -> Option<String> {
    let relates = content.get("m.relates_to")?;
    (str_at(relates, "/rel_type") == Some(rel_type))
        .then(|| str_at(relates, "/event_id").map(message_id))
        .flatten()
}

/// `reply_to` and `thread_root`: the `message_id`s of the message a reply answers and of a thread's
/// root. In a thread, `m.in_reply_to` that is only a fallback for older clients is no reply.
fn link(content: &Value, fields: &mut Map<String, Value>) {
    let Some(relates) = content.get("m.relates_to") else {
        return;
    };
    let thread = str_at(relates, "/rel_type") == Some("m.thread");
    if thread && let Some(root) = str_at(relates, "/event_id") {
        fields.insert("thread_root".into(), Value::String(message_id(root)));
    }
    let fallback = thread && relates.get("is_falling_back").and_then(Value::as_bool) == Some(true);
    if !fallback && let Some(parent) = str_at(relates, "/m.in_reply_to/event_id") {
        fields.insert("reply_to".into(), Value::String(message_id(parent)));
    }
}

/// A reply's body may start with the quoted message (lines of `> `, then an empty line) for clients
/// that know no replies, which its `formatted_body` then marks as `<mx-reply>`; the reply's own words
/// are what follows. (Matrix 1.13 dropped the fallback: a body that merely starts with a quote is
/// kept whole.)
fn without_reply_fallback<'a>(body: &'a str, content: &Value) -> &'a str {
    if !str_at(content, "/formatted_body").is_some_and(|f| f.contains("<mx-reply>")) {
        return body;
    }
    match body.find("\n\n") {
        Some(end) if body.starts_with("> ") && body[..end].lines().all(|l| l.starts_with('>')) => &body[end + 2..],
        _ => body,
    }
}

fn room_message(ctx: &Context, event: &Value, content: &Value, sender: &str) -> Body {
    if let Some(target) = related(content, "m.replace") {
        return edit(ctx, event, content, sender, target);
    }
    match str_at(content, "/msgtype").unwrap_or_default() {
        kind if FILE_KINDS.contains(&kind) => file(event, content, sender),
        "m.location" => location_message(content),
        kind => {
            let raw = body_of(content);
            let words = match str_at(content, "/m.relates_to/m.in_reply_to/event_id") {
                Some(_) => without_reply_fallback(&raw, content).to_owned(),
                None => raw,
            };
            let mut body = text(MSGTYPE_TEXT, words);
            if kind != "m.text" && !kind.is_empty() {
                let kind = kind.strip_prefix("m.").unwrap_or(kind);
                body.fields.insert("text_kind".into(), Value::String(kind.to_owned()));
            }
            body
        }
    }
}

/// An edit (`m.replace`) of the message `target`: its new text, file or location. An edit by anyone
/// but the message's sender is no edit (Matrix lets only the sender replace an event, and clients
/// ignore any other): it is kept as the attempt it is, under `edit_attempt`, a text line of its own;
/// and so is one whose original's sender the bot could not learn, which it cannot vouch for.
fn edit(ctx: &Context, event: &Value, content: &Value, sender: &str, target: String) -> Body {
    let new = content.get("m.new_content").unwrap_or(content);
    let new_text = str_at(new, "/body").map_or_else(|| body_of(content), str::to_owned);
    let refused = match ctx.target_sender {
        Some(original) if original == sender => None,
        Some(original) => Some((
            Value::String(original.to_owned()),
            "only a message's sender can replace it: Matrix clients ignore this edit",
        )),
        None => Some((
            Value::Null,
            "the sender of the message it edits is unknown to the bot (not captured, or not readable): not taken as an edit",
        )),
    };
    if let Some((original, reason)) = refused {
        let mut body = text(MSGTYPE_TEXT, new_text);
        body.fields.insert(
            "edit_attempt".into(),
            json!({ "message_id": target, "original_sender": original, "reason": reason }),
        );
        return body;
    }
    let kind = str_at(new, "/msgtype").unwrap_or_default();
    if FILE_KINDS.contains(&kind) {
        let mut body = file(event, new, sender);
        let name = body.media.as_ref().map(|m| m.filename.clone()).unwrap_or_default();
        body.msgtype = MSGTYPE_EDIT;
        body.text = name.clone();
        body.fields.insert(
            "edit".into(),
            json!({ "type": "file", "message_id": target, "message": name }),
        );
        return body;
    }
    if kind == "m.location" {
        let location = location(new);
        let mut body = text(MSGTYPE_EDIT, new_text);
        body.fields.insert(
            "edit".into(),
            json!({ "type": "location", "message_id": target, "location": location }),
        );
        return body;
    }
    let mut body = text(MSGTYPE_EDIT, new_text.clone());
    body.fields.insert(
        "edit".into(),
        json!({ "type": "text", "message_id": target, "message": new_text }),
    );
    body
}

fn reaction(content: &Value) -> Body {
    let key = str_at(content, "/m.relates_to/key").unwrap_or_default();
    let target = str_at(content, "/m.relates_to/event_id").map(message_id);
    let mut body = text(MSGTYPE_REACTION, key.to_owned());
    body.fields.insert(
        "edit".into(),
        json!({ "type": "reaction", "message_id": target, "reaction": key }),
    );
    body
}

/// A file, image, audio, video or sticker: its `file` object, the media to fetch, and its thumbnail.
fn file(event: &Value, content: &Value, sender: &str) -> Body {
    let body = body_of(content);
    let mimetype = str_at(content, "/info/mimetype");
    let mut filename = str_at(content, "/filename").map_or(body, str::to_owned);
    if !filename.contains('.')
        && let Some(ext) = mimetype.and_then(extension)
    {
        // A sticker's or an image's body is often a description ("a cat"): give the file its type.
        filename = format!("{filename}.{ext}");
    }
    let mut file = json!({
        "filename": filename,
        "guid": content.get("url").or_else(|| content.pointer("/file/url")),
        "uploadedbyuser": sender,
        "uploadedtimestamp": event.get("origin_server_ts"),
    });
    if str_at(content, "/msgtype") == Some("m.audio") && content.get("org.matrix.msc3245.voice").is_some() {
        file["isvoicememo"] = json!(true);
    }
    let media = MediaRef {
        source: json!({ "url": content.get("url"), "file": content.get("file") }),
        filename: filename.clone(),
    };
    let thumbnail = thumbnail(content, &filename);
    let mut body = text(MSGTYPE_FILE, str_at(content, "/body").unwrap_or_default().to_owned());
    body.fields.insert("file".into(), file);
    body.media = Some(media);
    body.thumbnail = thumbnail;
    body
}

/// The thumbnail of an image, video or sticker (`info.thumbnail_url`, or `info.thumbnail_file` when
/// encrypted), named after its file with the thumbnail's own type.
fn thumbnail(content: &Value, filename: &str) -> Option<MediaRef> {
    let info = content.get("info")?;
    let url = info.get("thumbnail_url").filter(|u| u.is_string());
    let file = info.get("thumbnail_file").filter(|f| f.is_object());
    if url.is_none() && file.is_none() {
        return None;
    }
    let stem = filename.rsplit_once('.').map_or(filename, |(stem, _)| stem);
    let ext = str_at(info, "/thumbnail_info/mimetype")
        .and_then(extension)
        .unwrap_or("bin");
    Some(MediaRef {
        source: json!({ "url": url, "file": file }),
        filename: format!("{stem}.thumbnail.{ext}"),
    })
}

/// A file extension for the media types Matrix clients send as thumbnails and stickers.
fn extension(mimetype: &str) -> Option<&'static str> {
    Some(match mimetype {
        "image/jpeg" => "jpg",
        "image/png" => "png",
        "image/gif" => "gif",
        "image/webp" => "webp",
        "image/svg+xml" => "svg",
        "video/mp4" => "mp4",
        "audio/ogg" => "ogg",
        _ => return None,
    })
}

fn location_message(content: &Value) -> Body {
    let mut body = text(MSGTYPE_LOCATION, body_of(content));
    body.fields.insert("location".into(), location(content));
    body
}

/// The original's `location` object: `latitude` and `longitude` (numbers, from the `geo:` URI),
/// with the `description` and the `geo_uri` as sent.
fn location(content: &Value) -> Value {
    let geo = str_at(content, "/geo_uri")
        .or_else(|| str_at(content, "/m.location/uri"))
        .or_else(|| str_at(content, "/org.matrix.msc3488.location/uri"))
        .unwrap_or_default();
    let description = str_at(content, "/m.location/description")
        .or_else(|| str_at(content, "/org.matrix.msc3488.location/description"))
        .or_else(|| str_at(content, "/body"));
    let scheme = geo.get(..4).filter(|s| s.eq_ignore_ascii_case("geo:"));
    let mut coords = scheme
        .map_or("", |_| &geo[4..])
        .split(';')
        .next()
        .unwrap_or_default()
        .split(',')
        .map(|n| n.trim().parse::<f64>().ok());
    let (latitude, longitude) = (coords.next().flatten(), coords.next().flatten());
    json!({ "latitude": latitude, "longitude": longitude, "description": description, "geo_uri": geo })
}

/// A text in MSC1767's shapes (a string, `[{"body": ...}]` under `m.text`, or under
/// `org.matrix.msc1767.text`), as polls carry their question, answers and closing words.
fn extensible_text(value: &Value) -> Option<String> {
    if let Some(s) = value.as_str() {
        return Some(s.to_owned());
    }
    let text = value.get("m.text").or_else(|| value.get("org.matrix.msc1767.text"));
    match text {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Array(parts)) => parts.iter().find_map(|p| str_at(p, "/body")).map(str::to_owned),
        _ => str_at(value, "/body").map(str::to_owned),
    }
}

/// A poll's question and answers are its `message` (searchable), one answer a line; `poll` keeps
/// them with their ids, which the votes name.
fn poll_start(content: &Value) -> Body {
    let poll = content
        .get("m.poll")
        .or_else(|| content.get("org.matrix.msc3381.poll.start"))
        .cloned()
        .unwrap_or_default();
    let question = poll.get("question").and_then(extensible_text).unwrap_or_default();
    let answers: Vec<Value> = poll
        .get("answers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|a| {
            let id = str_at(a, "/m.id").or_else(|| str_at(a, "/id"));
            json!({ "id": id, "text": extensible_text(a) })
        })
        .collect();
    let mut words = question.clone();
    for answer in &answers {
        words.push_str("\n- ");
        words.push_str(str_at(answer, "/text").unwrap_or_default());
    }
    if question.is_empty() {
        words = extensible_text(content).unwrap_or_default();
    }
    let mut body = text(MSGTYPE_TEXT, words);
    body.fields.insert("text_kind".into(), Value::String("poll".into()));
    body.fields.insert(
        "poll".into(),
        json!({ "kind": "start", "question": question, "answers": answers,
                "max_selections": poll.get("max_selections"), "disclosure": poll.get("kind") }),
    );
    body
}

/// A vote: the answer ids chosen, linked to its poll by `poll.message_id`.
fn poll_response(content: &Value) -> Body {
    let answers = content
        .get("m.selections")
        .or_else(|| content.pointer("/org.matrix.msc3381.poll.response/answers"))
        .cloned()
        .unwrap_or_else(|| json!([]));
    let chosen: Vec<&str> = answers
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut body = text(MSGTYPE_TEXT, format!("voted: {}", chosen.join(", ")));
    body.fields
        .insert("text_kind".into(), Value::String("poll_response".into()));
    body.fields.insert(
        "poll".into(),
        json!({ "kind": "response", "message_id": related(content, "m.reference"), "answers": answers }),
    );
    body
}

/// A poll's end, with its closing words, linked to its poll.
fn poll_end(content: &Value) -> Body {
    let words = extensible_text(content).unwrap_or_else(|| "The poll has ended.".into());
    let mut body = text(MSGTYPE_TEXT, words);
    body.fields.insert("text_kind".into(), Value::String("poll_end".into()));
    body.fields.insert(
        "poll".into(),
        json!({ "kind": "end", "message_id": related(content, "m.reference") }),
    );
    body
}

/// A call signal (`m.call.invite`, `answer`, `hangup`, `reject`...) as the original's call message:
/// `call.status` says which. The call's start, end, duration and who took part are added as the
/// call goes (`matrix::calls`).
fn call(kind: &str, content: &Value) -> Body {
    let status = kind.strip_prefix("m.call.").unwrap_or(kind);
    let mut call = json!({ "status": status, "call_id": content.get("call_id") });
    if let Some(reason) = content.get("reason") {
        call["reason"] = reason.clone();
    }
    if status == "invite" {
        let video = str_at(content, "/offer/sdp").is_some_and(|sdp| sdp.contains("m=video"));
        call["video"] = Value::Bool(video);
    }
    let words = match status {
        "invite" => "call started",
        "answer" => "call answered",
        "hangup" => "call ended",
        "reject" => "call rejected",
        _ => "",
    };
    let mut body = text(MSGTYPE_CALL, words.to_owned());
    body.fields.insert("call".into(), call);
    body
}
