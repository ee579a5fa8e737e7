//! The verified lines of an export as conversation events: what the RSMF files ([`super::rsmf`]) and
//! the transcript ([`super::html`]) show. Each line of the WickrIO format (and what the Matrix source
//! writes) becomes one event in RSMF 2.0's terms: a text, file, call or location message a `message`
//! event (a file's attachment named, a call's or location's details as `custom` properties); an edit
//! (9000) an entry of its message's `edits`; a reaction (9100) one of its `reactions`; a delete
//! (4011) marks it `deleted`; a room's control messages `join`, `leave` or `history` events.
//!
//! Lines arrive in the export's order (time order, each message followed by the edits, reactions and
//! deletes that refer to it), so a message is held until the next one begins, then written as one
//! JSON line to a work file: only a small index (conversation, day, offset) stays in memory.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::message::{
    MSGTYPE_CALL, MSGTYPE_CREATE_ROOM, MSGTYPE_DELETE_MESSAGE, MSGTYPE_EDIT, MSGTYPE_FILE, MSGTYPE_LEAVE_ROOM,
    MSGTYPE_LOCATION, MSGTYPE_MODIFY_MEMBERS, MSGTYPE_MODIFY_ROOM, MSGTYPE_REACTION, MSGTYPE_TEXT, msg_time,
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
pub struct Edit {
    pub participant: String,
    pub timestamp: String,
    pub previous: String,
    pub new: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reaction {
    pub value: String,
    pub count: u64,
    pub participants: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Custom {
    pub name: String,
    pub value: String,
}

impl TimelineEvent {
    pub fn custom(&self, name: &str) -> Option<&str> {
        self.custom.iter().find(|c| c.name == name).map(|c| c.value.as_str())
    }

    fn push_custom(&mut self, name: &str, value: impl Into<String>) {
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

/// What is known of a conversation across the export.
#[derive(Debug, Default)]
pub struct Conversation {
    /// Its title, when a control message gave one.
    pub title: Option<String>,
    /// `matrix` or `wickr`: where its lines came from.
    pub platform: &'static str,
    /// Every line named a receiver: a one-to-one conversation (if two people take part).
    pub all_have_receiver: bool,
    /// Everyone named in it: senders, receivers, members, editors and reactors.
    pub people: BTreeSet<String>,
    /// Its events: day, time (µs), and where each lies in the work file.
    pub events: Vec<Stored>,
}

impl Conversation {
    /// RSMF's `direct`: every line to a receiver, between two people.
    pub fn is_direct(&self) -> bool {
        self.all_have_receiver && self.people.len() == 2
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Stored {
    pub day: NaiveDate,
    pub time: i64,
    offset: u64,
    len: u32,
}

/// The events as the lines arrive.
pub struct Timeline {
    work: BufWriter<File>,
    path: PathBuf,
    written: u64,
    pub conversations: BTreeMap<String, Conversation>,
    /// The message whose edits, reactions and deletes may follow, and the ids folded into it.
    pending: Option<(TimelineEvent, HashSet<String>)>,
}

impl Timeline {
    pub fn new(path: &Path) -> std::io::Result<Timeline> {
        let file = std::fs::OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(path)?;
        Ok(Timeline {
            work: BufWriter::with_capacity(1 << 20, file),
            path: path.to_owned(),
            written: 0,
            conversations: BTreeMap::new(),
            pending: None,
        })
    }

    /// Takes one verified line (in the export's order).
    pub fn add(&mut self, text: &[u8]) -> std::io::Result<()> {
        let Ok(line) = serde_json::from_slice::<Value>(text) else {
            return Ok(());
        };
        let Some(base) = base_event(&line) else {
            return Ok(());
        };
        let msgtype = line.get("msgtype").and_then(Value::as_i64).unwrap_or(0);
        self.note_conversation(&line, &base);
        if matches!(msgtype, MSGTYPE_EDIT | MSGTYPE_REACTION | MSGTYPE_DELETE_MESSAGE)
            && self.fold_into_pending(msgtype, &line, &base)
        {
            return Ok(());
        }
        self.flush()?;
        match msgtype {
            MSGTYPE_CREATE_ROOM | MSGTYPE_MODIFY_MEMBERS | MSGTYPE_LEAVE_ROOM | MSGTYPE_MODIFY_ROOM => {
                for event in control_events(msgtype, &line, base) {
                    self.store(event)?;
                }
            }
            _ => {
                let event = message_event(msgtype, &line, base);
                let id = event.id.clone();
                self.pending = Some((event, HashSet::from([id])));
            }
        }
        Ok(())
    }

    /// Writes the message held last; every line has been taken.
    pub fn finish(&mut self) -> std::io::Result<()> {
        self.flush()?;
        self.work.flush()
    }

    /// The event stored at `stored`.
    pub fn read(&self, stored: &Stored) -> std::io::Result<TimelineEvent> {
        let mut buf = vec![0u8; stored.len as usize];
        self.work.get_ref().read_exact_at(&mut buf, stored.offset)?;
        serde_json::from_slice(&buf).map_err(std::io::Error::other)
    }

    /// Removes the work file.
    pub fn remove(self) -> std::io::Result<()> {
        drop(self.work);
        std::fs::remove_file(&self.path)
    }

    fn note_conversation(&mut self, line: &Value, base: &TimelineEvent) {
        let conversation = self
            .conversations
            .entry(base.conversation.clone())
            .or_insert_with(|| Conversation {
                all_have_receiver: true,
                platform: "wickr",
                ..Conversation::default()
            });
        if line.get("matrix").is_some() {
            conversation.platform = "matrix";
        }
        conversation.people.insert(base.participant.clone());
        match line.get("receiver").and_then(Value::as_str).filter(|r| !r.is_empty()) {
            Some(receiver) => {
                conversation.people.insert(receiver.to_owned());
            }
            None => conversation.all_have_receiver = false,
        }
        let control = line.get("control");
        for member in control
            .and_then(|c| c.get("members"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(member) = member.as_str().filter(|m| !m.is_empty()) {
                conversation.people.insert(member.to_owned());
            }
        }
        if let Some(title) = control.and_then(|c| c.get("title")).and_then(Value::as_str) {
            conversation.title = Some(title.to_owned());
        }
    }

    /// An edit, reaction or delete of the message held (or of an edit folded into it): folded in.
    fn fold_into_pending(&mut self, msgtype: i64, line: &Value, base: &TimelineEvent) -> bool {
        let target = match msgtype {
            MSGTYPE_DELETE_MESSAGE => line.pointer("/control/message_id"),
            _ => line.pointer("/edit/message_id"),
        }
        .and_then(Value::as_str);
        let Some((event, ids)) = &mut self.pending else {
            return false;
        };
        if !target.is_some_and(|t| ids.contains(t)) {
            return false;
        }
        ids.insert(base.id.clone());
        match msgtype {
            MSGTYPE_EDIT => {
                let new = line
                    .pointer("/edit/message")
                    .or_else(|| line.get("message"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let previous = event
                    .edits
                    .last()
                    .map_or_else(|| event.body.clone().unwrap_or_default(), |e| e.new.clone());
                event.edits.push(Edit {
                    participant: base.participant.clone(),
                    timestamp: base.timestamp.clone(),
                    previous,
                    new,
                });
            }
            MSGTYPE_REACTION => {
                let value = line
                    .pointer("/edit/reaction")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_owned();
                match event.reactions.iter_mut().find(|r| r.value == value) {
                    Some(r) => {
                        r.count += 1;
                        if !r.participants.contains(&base.participant) {
                            r.participants.push(base.participant.clone());
                        }
                    }
                    None => event.reactions.push(Reaction {
                        value,
                        count: 1,
                        participants: vec![base.participant.clone()],
                    }),
                }
            }
            _ => {
                event.deleted = true;
                event.push_custom("deleted_by", base.participant.clone());
                event.push_custom("deleted_at", base.timestamp.clone());
            }
        }
        true
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.pending.take() {
            Some((event, _)) => self.store(event),
            None => Ok(()),
        }
    }

    fn store(&mut self, event: TimelineEvent) -> std::io::Result<()> {
        let Some(time) = event.time() else { return Ok(()) };
        let text = serde_json::to_vec(&event).map_err(std::io::Error::other)?;
        self.work.write_all(&text)?;
        let stored = Stored {
            day: time.date_naive(),
            time: time.timestamp_micros(),
            offset: self.written,
            len: u32::try_from(text.len()).unwrap_or(u32::MAX),
        };
        self.written += text.len() as u64;
        let conversation = self.conversations.entry(event.conversation.clone()).or_default();
        conversation.people.extend(event.people().cloned());
        conversation.events.push(stored);
        Ok(())
    }
}

/// The fields every event of a line has; `None` for a line without a sender or a readable time.
fn base_event(line: &Value) -> Option<TimelineEvent> {
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
fn message_event(msgtype: i64, line: &Value, mut event: TimelineEvent) -> TimelineEvent {
    let text = line.get("message").and_then(Value::as_str).unwrap_or_default();
    event.body = Some(text.to_owned());
    event.push_custom("msgtype", msgtype.to_string());
    // Replies and threads exist only on Matrix: its event, kept whole in the line, says what it
    // relates to (by event id, which the line's `message_id` is a digest of).
    let relates = line.pointer("/matrix/event/content/m.relates_to");
    let related = |pointer: &str| relates.and_then(|r| r.pointer(pointer)).and_then(Value::as_str);
    if let Some(parent) = related("/m.in_reply_to/event_id") {
        event.parent = Some(matrix_message_id(parent));
    }
    if related("/rel_type") == Some("m.thread")
        && let Some(root) = related("/event_id")
    {
        event.push_custom("thread_root", matrix_message_id(root));
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
fn control_events(msgtype: i64, line: &Value, base: TimelineEvent) -> Vec<TimelineEvent> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn events(lines: &[&str]) -> Vec<TimelineEvent> {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Timeline::new(&dir.path().join("work")).unwrap();
        for line in lines {
            t.add(line.as_bytes()).unwrap();
        }
        t.finish().unwrap();
        let mut all: Vec<TimelineEvent> = Vec::new();
        for c in t.conversations.values() {
            for s in &c.events {
                all.push(t.read(s).unwrap());
            }
        }
        all
    }

    #[test]
    fn edits_reactions_and_deletes_fold_into_their_message() {
        let got = events(&[
            r#"{"msgtype":1000,"message_id":"a","msg_ts":"1700000000.5","sender":"ann","vgroupid":"R","message":"hi"}"#,
            r#"{"msgtype":9000,"message_id":"e1","msg_ts":"1700000010","sender":"ann","vgroupid":"R","edit":{"message_id":"a","message":"hello"}}"#,
            r#"{"msgtype":9000,"message_id":"e2","msg_ts":"1700000020","sender":"bob","vgroupid":"R","edit":{"message_id":"e1","message":"hey"}}"#,
            r#"{"msgtype":9100,"message_id":"r1","msg_ts":"1700000030","sender":"bob","vgroupid":"R","edit":{"message_id":"a","reaction":"+1"}}"#,
            r#"{"msgtype":9100,"message_id":"r2","msg_ts":"1700000031","sender":"cy","vgroupid":"R","edit":{"message_id":"a","reaction":"+1"}}"#,
            r#"{"msgtype":4011,"message_id":"d1","msg_ts":"1700000040","sender":"ann","vgroupid":"R","control":{"msgtype":4011,"message_id":"a"}}"#,
            r#"{"msgtype":1000,"message_id":"b","msg_ts":"1700000050","sender":"bob","vgroupid":"R","message":"next"}"#,
        ]);
        assert_eq!(got.len(), 2);
        let a = &got[0];
        assert_eq!((a.id.as_str(), a.body.as_deref(), a.deleted), ("a", Some("hi"), true));
        assert_eq!(a.timestamp, "2023-11-14T22:13:20.500000Z");
        assert_eq!(a.edits.len(), 2);
        assert_eq!(
            (a.edits[1].previous.as_str(), a.edits[1].new.as_str()),
            ("hello", "hey")
        );
        assert_eq!(a.edits[1].participant, "bob");
        assert_eq!(
            a.reactions,
            vec![Reaction {
                value: "+1".into(),
                count: 2,
                participants: vec!["bob".into(), "cy".into()]
            }]
        );
        assert_eq!(a.custom("deleted_by"), Some("ann"));
        assert_eq!(got[1].id, "b");
    }

    #[test]
    fn a_matrix_reply_names_its_parent_and_a_thread_its_root() {
        let id = matrix_message_id("$root");
        let got = events(&[
            &format!(
                r#"{{"msgtype":1000,"message_id":"{id}","msg_ts":"1700000000","sender":"@a:x","vgroupid":"!r:x","message":"q"}}"#
            ),
            r#"{"msgtype":1000,"message_id":"b","msg_ts":"1700000001","sender":"@b:x","vgroupid":"!r:x","message":"a","matrix":{"event":{"content":{"m.relates_to":{"rel_type":"m.thread","event_id":"$root","m.in_reply_to":{"event_id":"$root"}}}}}}"#,
        ]);
        assert_eq!(got[1].parent.as_deref(), Some(id.as_str()));
        assert_eq!(got[1].custom("thread_root"), Some(id.as_str()));
        assert_eq!(got[0].parent, None);
    }

    #[test]
    fn files_calls_locations_and_controls_become_their_events() {
        let got = events(&[
            r#"{"msgtype":4001,"message_id":"c","msg_ts":"1700000000","sender":"ann","vgroupid":"R","control":{"msgtype":4001,"members":["ann","bob"]}}"#,
            r#"{"msgtype":6000,"message_id":"f","msg_ts":"1700000001","sender":"ann","vgroupid":"R","message":"","file":{"filename":"a<b>.pdf","localfilename":"/x/attachment_1_a_b_.pdf"}}"#,
            r#"{"msgtype":7000,"message_id":"k","msg_ts":"1700000002","sender":"bob","vgroupid":"R","message":"","call":{"status":"ended","duration":61}}"#,
            r#"{"msgtype":8000,"message_id":"l","msg_ts":"1700000003","sender":"bob","vgroupid":"R","message":"","location":{"latitude":51.5}}"#,
            r#"{"msgtype":4003,"message_id":"q","msg_ts":"1700000004","sender":"bob","vgroupid":"R","control":{"msgtype":4003}}"#,
            r#"{"msgtype":5555,"message_id":"u","msg_ts":"1700000005","sender":"ann","vgroupid":"R","message":"?"}"#,
        ]);
        let kinds: Vec<(&str, &str)> = got.iter().map(|e| (e.id.as_str(), e.kind.as_str())).collect();
        assert_eq!(
            kinds,
            [
                ("c", "join"),
                ("c#join-bob", "join"),
                ("f", "message"),
                ("k", "message"),
                ("l", "message"),
                ("q", "leave"),
                ("u", "unknown")
            ]
        );
        assert_eq!(got[2].attachments[0].id, "attachment_1_a_b_.pdf");
        assert_eq!(got[2].body.as_deref(), Some("a<b>.pdf"));
        assert_eq!(got[3].custom("call.duration"), Some("61"));
        assert_eq!(got[4].custom("location.latitude"), Some("51.5"));
    }
}
