//! One line of the archive as RSMF 2.0 events: the fields every event has, a message-like line's
//! event (text, file, call, location, anything else), a room control line's `join`/`leave`/`history`
//! events. Folding edits, reactions and deletes into their message is [`super::Timeline`]'s job.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::message::{
    MSGTYPE_CALL, MSGTYPE_CREATE_ROOM, MSGTYPE_FILE, MSGTYPE_LEAVE_ROOM, MSGTYPE_LOCATION, MSGTYPE_MODIFY_MEMBERS,
    MSGTYPE_TEXT, msg_time,
};
use crate::source::matrix::translate::message_id as matrix_message_id;

/// One event, with RSMF 2.0's field names (the transcript reads the same).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEvent {
    pub id: String,
    /// `message`, `join`, `leave`, `history` or `unknown`.
    #[serde(rename = "type")]
    pub kind: String,
    pub conversation: String,
    pub participant: String,
    /// RFC 3339, UTC, to the microsecond.
    pub timestamp: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub deleted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub edits: Vec<Edit>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<Reaction>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom: Vec<Custom>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A file a message carries: `id` is its archived name (the export's `attachments/` file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    pub id: String,
    pub display: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Edit {
    pub participant: String,
    pub timestamp: String,
    pub previous: String,
    pub new: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Reaction {
    pub value: String,
    pub count: u64,
    pub participants: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Custom {
    pub name: String,
    pub value: String,
}

impl TimelineEvent {
    pub fn custom(&self, name: &str) -> Option<&str> {
        self.custom.iter().find(|c| c.name == name).map(|c| c.value.as_str())
    }

    pub(super) fn push_custom(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        // RSMF takes no empty value.
        if !value.is_empty() {
            self.custom.push(Custom {
                name: name.to_owned(),
                value,
            });
        }
    }

    /// Everyone the event names: its participant, editors and reactors.
    pub fn people(&self) -> impl Iterator<Item = &String> {
        std::iter::once(&self.participant)
            .chain(self.edits.iter().map(|e| &e.participant))
            .chain(self.reactions.iter().flat_map(|r| r.participants.iter()))
    }

    pub fn time(&self) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(&self.timestamp)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

/// The fields every event of a line has; `None` for a line without a sender or a readable time.
pub(super) fn base_event(line: &Value) -> Option<TimelineEvent> {
    let sender = line.get("sender").and_then(Value::as_str).filter(|s| !s.is_empty())?;
    let time = line.get("msg_ts").and_then(Value::as_str).and_then(msg_time)?;
    let id = line
        .get("message_id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map_or_else(|| format!("{}-{}", sender, time.timestamp_micros()), str::to_owned);
    let conversation = line
        .get("vgroupid")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .unwrap_or_else(|| {
            // No room: the pair of people, in a stable order.
            let receiver = line.get("receiver").and_then(Value::as_str).unwrap_or("");
            let mut pair = [sender, receiver];
            pair.sort_unstable();
            format!("direct:{}:{}", pair[0], pair[1])
        });
    Some(TimelineEvent {
        id,
        kind: "message".into(),
        conversation,
        participant: sender.to_owned(),
        timestamp: time.to_rfc3339_opts(SecondsFormat::Micros, true),
        body: None,
        deleted: false,
        parent: None,
        attachments: Vec::new(),
        edits: Vec::new(),
        reactions: Vec::new(),
        custom: Vec::new(),
    })
}

/// A message-like line: text, file, call, location, or anything else.
pub(super) fn message_event(msgtype: i64, line: &Value, mut event: TimelineEvent) -> TimelineEvent {
    let text = line.get("message").and_then(Value::as_str).unwrap_or_default();
    event.body = Some(text.to_owned());
    event.push_custom("msgtype", msgtype.to_string());
    // Replies and threads exist only on Matrix: the line's `reply_to` and `thread_root` name the
    // message answered and the thread's root. Lines archived before the bot wrote those fields say it
    // in their event, kept whole (by event id, which the line's `message_id` is a digest of).
    let top = |name: &str| line.get(name).and_then(Value::as_str).map(str::to_owned);
    let relates = line.pointer("/matrix/event/content/m.relates_to");
    let related = |pointer: &str| relates.and_then(|r| r.pointer(pointer)).and_then(Value::as_str);
    let thread_root = top("thread_root").or_else(|| {
        (related("/rel_type") == Some("m.thread"))
            .then(|| related("/event_id").map(matrix_message_id))
            .flatten()
    });
    let legacy = line.get("reply_to").is_none() && line.get("network").is_none();
    let reply_to = top("reply_to").or_else(|| {
        legacy
            .then(|| related("/m.in_reply_to/event_id").map(matrix_message_id))
            .flatten()
    });
    event.parent = reply_to.or_else(|| thread_root.clone());
    if let Some(root) = thread_root {
        event.push_custom("thread_root", root);
    }
    match msgtype {
        MSGTYPE_TEXT => {}
        MSGTYPE_FILE => {
            let file = line.get("file");
            let name = file
                .and_then(|f| f.get("filename"))
                .and_then(Value::as_str)
                .unwrap_or("attachment");
            if let Some(archived) = file
                .and_then(|f| f.get("localfilename"))
                .and_then(Value::as_str)
                .and_then(|p| p.rsplit('/').next())
                .filter(|p| !p.is_empty())
            {
                event.attachments.push(Attachment {
                    id: archived.to_owned(),
                    display: name.to_owned(),
                    size: None,
                });
            }
            if text.is_empty() {
                event.body = Some(name.to_owned());
            }
        }
        MSGTYPE_CALL | MSGTYPE_LOCATION => {
            let (field, label) = if msgtype == MSGTYPE_CALL {
                ("call", "Call")
            } else {
                ("location", "Location")
            };
            let details = line.get(field).and_then(Value::as_object);
            for (name, value) in details.into_iter().flatten() {
                event.push_custom(&format!("{field}.{name}"), plain(value));
            }
            if text.is_empty() {
                let summary: Vec<String> = details
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| format!("{k} {}", plain(v)))
                    .collect();
                event.body = Some(format!("{label}: {}", summary.join(", ")));
            }
        }
        _ => event.kind = "unknown".into(),
    }
    event
}

/// A room control line: a `join` for each member added, a `leave`, or `history` (the room changed).
pub(super) fn control_events(msgtype: i64, line: &Value, base: TimelineEvent) -> Vec<TimelineEvent> {
    let members: Vec<String> = line
        .pointer("/control/members")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m.as_str().filter(|m| !m.is_empty()).map(str::to_owned))
        .collect();
    let actor = base.participant.clone();
    let with = |kind: &str, participant: String, body: String| {
        let mut event = base.clone();
        event.kind = kind.into();
        event.participant = participant;
        event.body = Some(body);
        event.push_custom("msgtype", msgtype.to_string());
        event
    };
    // What a membership line did (the Matrix source writes `control.action`): a kick or a ban takes
    // the member out, an invitation or an unban changes the room's history; anything else adds them.
    let action = line.pointer("/control/action").and_then(Value::as_str);
    if msgtype == MSGTYPE_MODIFY_MEMBERS
        && let Some(action) = action.filter(|a| *a != "join")
    {
        return members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let mut event = match action {
                    "kick" => with("leave", m.clone(), format!("{m} was removed by {actor}")),
                    "ban" => with("leave", m.clone(), format!("{m} was banned by {actor}")),
                    "invite" => with("history", actor.clone(), format!("{actor} invited {m}")),
                    "unban" => with("history", actor.clone(), format!("{actor} lifted the ban on {m}")),
                    "revoke_invite" => with(
                        "history",
                        actor.clone(),
                        format!("{actor} withdrew the invitation of {m}"),
                    ),
                    "reject_invite" => with("history", m.clone(), format!("{m} declined the invitation")),
                    "knock" => with("history", m.clone(), format!("{m} asked to join")),
                    other => with("history", actor.clone(), format!("{actor}: {other} {m}")),
                };
                event.push_custom("action", action.to_owned());
                if i > 0 {
                    event.id = format!("{}#{action}-{m}", base.id);
                }
                event
            })
            .collect();
    }
    match msgtype {
        MSGTYPE_CREATE_ROOM | MSGTYPE_MODIFY_MEMBERS if !members.is_empty() => members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let mut event = with("join", m.clone(), format!("{m} joined (added by {actor})"));
                if i > 0 {
                    event.id = format!("{}#join-{m}", base.id);
                }
                event
            })
            .collect(),
        MSGTYPE_LEAVE_ROOM => vec![with("leave", actor.clone(), format!("{actor} left"))],
        _ => {
            let mut changed: Vec<String> = Vec::new();
            for (name, value) in line.get("control").and_then(Value::as_object).into_iter().flatten() {
                if name != "msgtype" && name != "members" {
                    changed.push(format!("{name}: {}", plain(value)));
                }
            }
            vec![with(
                "history",
                actor.clone(),
                format!("{actor} changed the room ({})", changed.join("; ")),
            )]
        }
    }
}

/// A JSON value as a plain string (a string without its quotes).
fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
