//! A room's changes as the original's control messages: a redaction, the room's creation, a member
//! invited, joining, leaving, kicked, banned or unbanned (who did it to whom), its upgrade to a new
//! room, and any other room state.

use serde_json::{Value, json};

use super::{Body, Context, message_id};
use crate::message::{
    MSGTYPE_CREATE_ROOM, MSGTYPE_DELETE_MESSAGE, MSGTYPE_LEAVE_ROOM, MSGTYPE_MODIFY_MEMBERS, MSGTYPE_MODIFY_ROOM,
};

/// The control message of a room change; `None` for a message-like event.
pub(super) fn control(ctx: &Context, kind: &str, event: &Value, content: &Value, sender: &str) -> Option<Body> {
    let (msgtype, control) = match kind {
        "m.room.redaction" => {
            let redacts = event
                .get("redacts")
                .or_else(|| content.get("redacts"))
                .and_then(Value::as_str)
                .map(message_id);
            let mut control =
                json!({ "msgtype": MSGTYPE_DELETE_MESSAGE, "message_id": redacts, "reason": content.get("reason") });
            // A moderator may redact anyone's message: the line's `sender` is who did, this whose it was.
            if let Some(original) = ctx.target_sender {
                control["original_sender"] = Value::String(original.to_owned());
            }
            (MSGTYPE_DELETE_MESSAGE, control)
        }
        "m.room.create" => (
            MSGTYPE_CREATE_ROOM,
            json!({ "msgtype": MSGTYPE_CREATE_ROOM, "members": [sender] }),
        ),
        "m.room.member" => member(event, content, sender),
        _ if event.get("state_key").is_some() => {
            let mut control = json!({ "msgtype": MSGTYPE_MODIFY_ROOM, "changemask": kind });
            let field = |name: &str| content.get(name).cloned().unwrap_or(Value::Null);
            match kind {
                "m.room.name" => control["title"] = field("name"),
                "m.room.topic" => control["description"] = field("topic"),
                "m.room.tombstone" => {
                    control["description"] = field("body");
                    control["replacement_room"] = field("replacement_room");
                }
                _ => {}
            }
            (MSGTYPE_MODIFY_ROOM, control)
        }
        _ => return None,
    };
    let mut body = Body {
        msgtype,
        ..Body::default()
    };
    body.fields.insert("control".into(), control);
    Some(body)
}

/// What a membership event did, told apart by who sent it and what the membership was before
/// (`unsigned.prev_content`): a leave sent by someone else is a kick, or an unban if the user was
/// banned, or a withdrawn invite.
pub(crate) fn member_action(event: &Value) -> &'static str {
    let text = |pointer: &str| event.pointer(pointer).and_then(Value::as_str);
    let affected = text("/state_key").unwrap_or_default();
    let by_self = text("/sender") == Some(affected);
    let prev = text("/unsigned/prev_content/membership").or_else(|| text("/prev_content/membership"));
    match (text("/content/membership").unwrap_or_default(), prev) {
        ("invite", _) => "invite",
        ("join", Some("join")) => "profile_change",
        ("join", _) => "join",
        ("leave", Some("ban")) => "unban",
        ("leave", Some("invite")) if by_self => "reject_invite",
        ("leave", Some("invite")) => "revoke_invite",
        ("leave", Some("knock")) if by_self => "retract_knock",
        ("leave", _) if by_self => "leave",
        ("leave", _) => "kick",
        ("ban", _) => "ban",
        ("knock", _) => "knock",
        _ => "other",
    }
}

/// A membership change: the affected user in `members`, who did it in `actor`, and what it was in
/// `action` (invite, join, leave, kick, ban, unban...). A user leaving of their own accord is 4003.
fn member(event: &Value, content: &Value, sender: &str) -> (i64, Value) {
    let affected = event.get("state_key").and_then(Value::as_str).unwrap_or_default();
    let membership = content.get("membership").and_then(Value::as_str).unwrap_or_default();
    let action = member_action(event);
    let msgtype = if action == "leave" {
        MSGTYPE_LEAVE_ROOM
    } else {
        MSGTYPE_MODIFY_MEMBERS
    };
    let mut control = json!({ "msgtype": msgtype, "members": [affected], "membership": membership,
                              "action": action, "actor": sender });
    if let Some(reason) = content.get("reason") {
        control["reason"] = reason.clone();
    }
    (msgtype, control)
}
