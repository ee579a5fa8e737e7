//! The WickrIO message model: what a line of a `receivedMessages` file must hold.
//!
//! Validation checks only what the format requires (an object; integer `msgtype`; string
//! `message_id`, `msg_ts`, `sender`; the nested object a `msgtype` carries) and keeps every other field
//! exactly as received, so nothing a producer sends is lost in translation.
//!
//! Producers' text is checked where it lies ([`check`]): no tree of values is built, so a request
//! takes no more memory than its body, and each message becomes a line that is the text as received
//! minus insignificant whitespace. Messages the bot builds itself (the Matrix source) are [`Message`]s.

mod check;
mod entries;
mod file_line;
mod shape;

use serde_json::{Map, Value};

pub(crate) use check::compact_json;
pub use check::{Checked, Refused, check_line, parse_ndjson, parse_one};
pub use file_line::{file_name, with_local_filename};
use shape::{Kind, Shape};

/// `msgtype` of a text message.
pub(crate) const MSGTYPE_TEXT: i64 = 1000;
/// `msgtype` of a file message.
pub(crate) const MSGTYPE_FILE: i64 = 6000;
/// `msgtype` of a call.
pub(crate) const MSGTYPE_CALL: i64 = 7000;
/// `msgtype` of a location.
pub(crate) const MSGTYPE_LOCATION: i64 = 8000;
/// `msgtype` of an edit.
pub(crate) const MSGTYPE_EDIT: i64 = 9000;
/// `msgtype` of an edit reaction (an emoji on a message; Matrix `m.reaction`).
pub(crate) const MSGTYPE_REACTION: i64 = 9100;
/// `msgtype` of a control message: a room was created.
pub(crate) const MSGTYPE_CREATE_ROOM: i64 = 4001;
/// `msgtype` of a control message: a room's members changed.
pub(crate) const MSGTYPE_MODIFY_MEMBERS: i64 = 4002;
/// `msgtype` of a control message: a member left a room.
pub(crate) const MSGTYPE_LEAVE_ROOM: i64 = 4003;
/// `msgtype` of a control message: a room's parameters (name, topic...) changed.
pub(crate) const MSGTYPE_MODIFY_ROOM: i64 = 4004;
/// `msgtype` of a control message: a message was deleted.
pub(crate) const MSGTYPE_DELETE_MESSAGE: i64 = 4011;

/// A `msg_ts` (seconds since the epoch, with a fraction: `1691176258.901277`) as a time; `None` for
/// text that is not one (the format requires only a string).
pub(crate) fn msg_time(ts: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let (secs, frac) = ts.split_once('.').unwrap_or((ts, "0"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(secs) || !(frac.is_empty() || digits(frac)) {
        return None;
    }
    let nanos: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    chrono::DateTime::from_timestamp(secs.parse().ok()?, nanos.parse().ok()?)
}

/// A validated message, kept as the JSON object it arrived as.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    fields: Map<String, Value>,
}

/// Why a message was refused: which line of the body, which field, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[error("line {line}: {}{problem}", field.as_ref().map(|f| format!("field `{f}`: ")).unwrap_or_default())]
pub struct InvalidMessage {
    pub line: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub problem: String,
}

impl InvalidMessage {
    fn new(line: usize, field: Option<&str>, problem: String) -> Self {
        Self {
            line,
            field: field.map(str::to_owned),
            problem,
        }
    }
}

impl Message {
    /// Validates a message a source built itself (e.g. from a Matrix event).
    pub(crate) fn from_object(fields: Map<String, Value>, line: usize) -> Result<Self, InvalidMessage> {
        let mut shape = Shape::default();
        for (name, value) in &fields {
            shape.saw(name, Kind::of(value), value.as_i64());
        }
        shape.check(line)?;
        Ok(Message { fields })
    }

    pub fn msgtype(&self) -> i64 {
        // Validated in `from_object`.
        self.fields.get("msgtype").and_then(Value::as_i64).unwrap_or_default()
    }

    /// The `file` object of a file message (`msgtype` 6000).
    pub fn file(&self) -> Option<&Map<String, Value>> {
        self.fields.get("file").and_then(Value::as_object)
    }

    /// A top-level field.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.fields.get(name)
    }

    /// Sets `key` in the nested object `object` (e.g. a call's duration, once its end is known);
    /// nothing if the message has no such object. No field the format's rules look at is nested.
    pub(crate) fn set_in(&mut self, object: &str, key: &str, value: Value) {
        if let Some(Value::Object(inner)) = self.fields.get_mut(object) {
            inner.insert(key.into(), value);
        }
    }

    /// Records where an attachment was saved, as the original does.
    pub(crate) fn set_local_filename(&mut self, path: &str) {
        self.set_in("file", "localfilename", Value::String(path.to_owned()));
    }

    /// Adds a note to the `matrix` object a Matrix source's line carries (e.g. why media is missing).
    pub(crate) fn set_matrix_field(&mut self, key: &str, value: Value) {
        self.set_in("matrix", key, value);
    }

    /// Appends the message as one compact JSON line (field order and numbers as received).
    pub(crate) fn write_line(&self, out: &mut Vec<u8>) {
        // Serialising a map of `Value`s cannot fail: every key is a string.
        if serde_json::to_writer(&mut *out, &self.fields).is_ok() {
            out.push(b'\n');
        }
    }
}

/// A batch of valid messages, rendered as the lines the spool writes.
#[derive(Default)]
pub struct Lines {
    pub bytes: Vec<u8>,
    pub count: usize,
    /// What the bytes' memory is accounted to (a request's share of the body budget), given back
    /// when they are dropped, wherever that is: a request that hangs up cannot free the share of
    /// bytes still queued for the spool.
    pub accounted: Option<Box<dyn std::any::Any + Send>>,
}

impl std::fmt::Debug for Lines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lines")
            .field("bytes", &self.bytes.len())
            .field("count", &self.count)
            .finish()
    }
}

impl Lines {
    pub fn push(&mut self, message: &Message) {
        message.write_line(&mut self.bytes);
        self.count += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_built_by_a_source_are_checked_by_the_same_rules() {
        let ok: Map<String, Value> = serde_json::from_str(
            r#"{"msgtype":6000,"message_id":"x","msg_ts":"1","sender":"a","file":{"filename":"f"}}"#,
        )
        .unwrap();
        let mut m = Message::from_object(ok, 1).unwrap();
        m.set_local_filename("/d/attachment_1_f");
        let mut out = Vec::new();
        m.write_line(&mut out);
        assert!(
            String::from_utf8(out)
                .unwrap()
                .contains(r#""localfilename":"/d/attachment_1_f""#)
        );
        let bad: Map<String, Value> =
            serde_json::from_str(r#"{"msgtype":6000,"message_id":"x","msg_ts":"1","sender":"a"}"#).unwrap();
        assert_eq!(Message::from_object(bad, 3).unwrap_err().field.as_deref(), Some("file"));
    }
}
