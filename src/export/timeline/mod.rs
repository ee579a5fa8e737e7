//! The verified lines of an export as conversation events: what the RSMF files (`export::rsmf`) and
//! the transcript (`export::html`) show. Each line of the WickrIO format (and what the Matrix source
//! writes) becomes one event in RSMF 2.0's terms: a text, file, call or location message a `message`
//! event (a file's attachment named, a call's or location's details as `custom` properties); an edit
//! (9000) an entry of its message's `edits`; a reaction (9100) one of its `reactions`; a delete
//! (4011) marks it `deleted`; a room's control messages `join`, `leave` or `history` events.
//!
//! Lines arrive in the export's order (time order, each message followed by the edits, reactions and
//! deletes that refer to it), so a message is held until the next one begins, then written as one
//! JSON line to a work file: only a small index (conversation, day, offset) stays in memory.

mod event;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use serde_json::Value;

use crate::message::{
    MSGTYPE_CREATE_ROOM, MSGTYPE_DELETE_MESSAGE, MSGTYPE_EDIT, MSGTYPE_LEAVE_ROOM, MSGTYPE_MODIFY_MEMBERS,
    MSGTYPE_MODIFY_ROOM, MSGTYPE_REACTION,
};
#[cfg(test)]
pub use event::Attachment;
pub use event::TimelineEvent;
pub(crate) use event::{Custom, Edit, Reaction};
use event::{base_event, control_events, message_event};

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
    pub len: u64,
}

/// The most an event gathers of its edits' texts and its reactors' names: an edit or reaction
/// beyond it is an event of its own, so that one message edited a thousand times cannot take the
/// export's memory (each edit holds its previous and new text).
const MAX_FOLDED_BYTES: usize = 32 << 20;
/// What the custom property `unsigned_source` says of an event from a file no signed entry lists.
const UNSIGNED_NOTE: &str = "from a file no signed manifest entry lists (--unsigned-source)";
/// What `unsigned_change` says of an event an edit, reaction or delete from such a file changed.
const UNSIGNED_CHANGE_NOTE: &str =
    "an edit, reaction or delete of it is from a file no signed manifest entry lists (--unsigned-source)";

/// The message whose edits, reactions and deletes may follow.
struct Pending {
    event: TimelineEvent,
    /// Its id and the ids folded into it (an edit's edit refers to the edit).
    ids: HashSet<String>,
    /// Each reaction value's place in `event.reactions`, and who gave it.
    reactions: std::collections::HashMap<String, (usize, HashSet<String>)>,
    /// Bytes of edit texts and reactor names folded in.
    folded: usize,
}

/// The events as the lines arrive.
pub struct Timeline {
    work: BufWriter<File>,
    path: PathBuf,
    written: u64,
    pub conversations: BTreeMap<String, Conversation>,
    pending: Option<Pending>,
    /// Lines with no sender or no readable time: in the JSONL, but no event.
    pub left_out: usize,
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
            left_out: 0,
        })
    }

    /// Takes one line of the output (in the export's order); `unsigned`: from a file
    /// `--unsigned-source` took, which its events say.
    pub fn add(&mut self, text: &[u8], unsigned: bool) -> std::io::Result<()> {
        let Some((line, mut base)) = serde_json::from_slice::<Value>(text)
            .ok()
            .and_then(|line| base_event(&line).map(|base| (line, base)))
        else {
            self.left_out += 1;
            return Ok(());
        };
        if unsigned {
            base.push_custom("unsigned_source", UNSIGNED_NOTE);
        }
        let msgtype = line.get("msgtype").and_then(Value::as_i64).unwrap_or(0);
        self.note_conversation(&line, &base);
        if matches!(msgtype, MSGTYPE_EDIT | MSGTYPE_REACTION | MSGTYPE_DELETE_MESSAGE)
            && self.fold_into_pending(msgtype, &line, &base, unsigned)
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
                self.pending = Some(Pending {
                    ids: HashSet::from([event.id.clone()]),
                    event,
                    reactions: std::collections::HashMap::new(),
                    folded: 0,
                });
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

    /// An edit, reaction or delete of the message held (or of an edit folded into it), in its
    /// conversation: folded in (unless the message has gathered [`MAX_FOLDED_BYTES`]).
    fn fold_into_pending(&mut self, msgtype: i64, line: &Value, base: &TimelineEvent, unsigned: bool) -> bool {
        let target = match msgtype {
            MSGTYPE_DELETE_MESSAGE => line.pointer("/control/message_id"),
            _ => line.pointer("/edit/message_id"),
        }
        .and_then(Value::as_str);
        let Some(pending) = &mut self.pending else {
            return false;
        };
        let event = &mut pending.event;
        if !target.is_some_and(|t| pending.ids.contains(t)) || event.conversation != base.conversation {
            return false;
        }
        let new = line
            .pointer("/edit/message")
            .or_else(|| line.get("message"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let adds = match msgtype {
            MSGTYPE_EDIT => 2 * new.len(),
            _ => base.participant.len(),
        };
        if pending.folded + adds > MAX_FOLDED_BYTES {
            return false;
        }
        pending.folded += adds;
        pending.ids.insert(base.id.clone());
        if unsigned && event.custom("unsigned_change").is_none() {
            event.push_custom("unsigned_change", UNSIGNED_CHANGE_NOTE);
        }
        match msgtype {
            MSGTYPE_EDIT => {
                let previous = event
                    .edits
                    .last()
                    .map_or_else(|| event.body.clone().unwrap_or_default(), |e| e.new.clone());
                event.edits.push(Edit {
                    participant: base.participant.clone(),
                    timestamp: base.timestamp.clone(),
                    previous,
                    new: new.to_owned(),
                });
            }
            MSGTYPE_REACTION => {
                let value = line
                    .pointer("/edit/reaction")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_owned();
                match pending.reactions.get_mut(&value) {
                    Some((at, who)) => {
                        let r = &mut event.reactions[*at];
                        r.count += 1;
                        if who.insert(base.participant.clone()) {
                            r.participants.push(base.participant.clone());
                        }
                    }
                    None => {
                        let who = HashSet::from([base.participant.clone()]);
                        pending.reactions.insert(value.clone(), (event.reactions.len(), who));
                        event.reactions.push(Reaction {
                            value,
                            count: 1,
                            participants: vec![base.participant.clone()],
                        });
                    }
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
            Some(pending) => self.store(pending.event),
            None => Ok(()),
        }
    }

    fn store(&mut self, event: TimelineEvent) -> std::io::Result<()> {
        let Some(time) = event.time() else {
            self.left_out += 1;
            return Ok(());
        };
        let text = serde_json::to_vec(&event).map_err(std::io::Error::other)?;
        self.work.write_all(&text)?;
        let stored = Stored {
            day: time.date_naive(),
            time: time.timestamp_micros(),
            offset: self.written,
            len: text.len() as u64,
        };
        self.written += text.len() as u64;
        let conversation = self.conversations.entry(event.conversation.clone()).or_default();
        conversation.people.extend(event.people().cloned());
        conversation.events.push(stored);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(lines: &[&str]) -> Vec<TimelineEvent> {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Timeline::new(&dir.path().join("work")).unwrap();
        for line in lines {
            t.add(line.as_bytes(), false).unwrap();
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
    fn a_kick_or_ban_is_a_leave_and_an_invitation_is_history() {
        let got = events(&[
            r#"{"msgtype":4002,"message_id":"k","msg_ts":"1700000000","sender":"@a:x","vgroupid":"!r:x","control":{"msgtype":4002,"members":["@b:x"],"action":"kick","actor":"@a:x"}}"#,
            r#"{"msgtype":4002,"message_id":"i","msg_ts":"1700000001","sender":"@a:x","vgroupid":"!r:x","control":{"msgtype":4002,"members":["@c:x"],"action":"invite","actor":"@a:x"}}"#,
            r#"{"msgtype":4002,"message_id":"j","msg_ts":"1700000002","sender":"@c:x","vgroupid":"!r:x","control":{"msgtype":4002,"members":["@c:x"],"action":"join","actor":"@c:x"}}"#,
        ]);
        let kinds: Vec<(&str, &str)> = got.iter().map(|e| (e.kind.as_str(), e.participant.as_str())).collect();
        assert_eq!(kinds, [("leave", "@b:x"), ("history", "@a:x"), ("join", "@c:x")]);
        assert_eq!(got[0].body.as_deref(), Some("@b:x was removed by @a:x"));
    }

    #[test]
    fn a_matrix_reply_names_its_parent_and_a_thread_its_root() {
        let id = crate::source::matrix::translate::message_id("$root");
        let got = events(&[
            &format!(
                r#"{{"msgtype":1000,"message_id":"{id}","msg_ts":"1700000000","sender":"@a:x","vgroupid":"!r:x","message":"q"}}"#
            ),
            r#"{"msgtype":1000,"message_id":"b","msg_ts":"1700000001","sender":"@b:x","vgroupid":"!r:x","message":"a","matrix":{"event":{"content":{"m.relates_to":{"rel_type":"m.thread","event_id":"$root","m.in_reply_to":{"event_id":"$root"}}}}}}"#,
        ]);
        assert_eq!(got[1].parent.as_deref(), Some(id.as_str()));
        assert_eq!(got[1].custom("thread_root"), Some(id.as_str()));
        assert_eq!(got[0].parent, None);
        // Lines the bot writes now name both; a thread's fallback reply is no reply.
        let got = events(&[
            r#"{"msgtype":1000,"message_id":"r","msg_ts":"1700000000","sender":"@a:x","vgroupid":"!r:x","message":"q"}"#,
            r#"{"msgtype":1000,"message_id":"c","msg_ts":"1700000002","sender":"@b:x","vgroupid":"!r:x","network":"x","message":"c","thread_root":"r","matrix":{"event":{"content":{"m.relates_to":{"rel_type":"m.thread","event_id":"$r","is_falling_back":true,"m.in_reply_to":{"event_id":"$other"}}}}}}"#,
            r#"{"msgtype":1000,"message_id":"d","msg_ts":"1700000003","sender":"@b:x","vgroupid":"!r:x","network":"x","message":"d","reply_to":"c","thread_root":"r"}"#,
        ]);
        assert_eq!(
            (got[1].parent.as_deref(), got[1].custom("thread_root")),
            (Some("r"), Some("r"))
        );
        assert_eq!(got[2].parent.as_deref(), Some("c"));
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
