//! What an export asks for: the selection flags, checked when they are parsed, and how one archived
//! line is judged against them.
//!
//! Flags combine with AND; repeated values of one flag with OR. A line is judged from the few fields
//! the flags are about, read where they lie in its text (nothing else of it is parsed).

use std::borrow::Cow;
use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;

use crate::message::msg_time;
use crate::period::{parse_end, parse_time};

/// The selection, as given on the command line.
#[derive(Debug, Clone, Default, clap::Args, serde::Serialize)]
pub struct Selection {
    /// Only messages from this time on, by `msg_ts` (RFC 3339, e.g. 2026-03-01T09:00:00Z, or a
    /// date, 2026-03-01, meaning its start in UTC).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<DateTime<Utc>>,
    /// Only messages up to this time, inclusive (as --from; a date means its end in UTC).
    #[arg(long, value_name = "TIME", value_parser = parse_end)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<DateTime<Utc>>,
    /// Only messages this user sent (`sender`, case-insensitive). Repeatable: any of them.
    #[arg(long, value_name = "USER", value_parser = non_empty)]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sender: Vec<String>,
    /// Only messages this user sent or received: `sender`, `receiver`, or a member of the message's
    /// room (named in the room's control messages, or seen sending in it). Repeatable: any of them.
    #[arg(long, value_name = "USER", value_parser = non_empty)]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub participant: Vec<String>,
    /// Only messages in this room or conversation (`vgroupid`). Repeatable: any of them.
    #[arg(long, value_name = "VGROUPID", value_parser = non_empty)]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub room: Vec<String>,
    /// Only messages of this type: a `msgtype` number, or text, file, call, location, edit (edits
    /// and reactions), control (room and message control), verification. Repeatable: any of them.
    #[arg(long, value_name = "TYPE", value_parser = parse_msgtype)]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub msgtype: Vec<MsgTypes>,
    /// Only the message with this `message_id`. Repeatable: any of them.
    #[arg(long, value_name = "ID", value_parser = non_empty)]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub message_id: Vec<String>,
    /// Only messages whose text (`message`, or an edit's new text) holds this, case-insensitive.
    /// Repeatable: any of them.
    #[arg(long, value_name = "TEXT", value_parser = non_empty)]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub text: Vec<String>,
}

/// The `msgtype` numbers one `--msgtype` value stands for (a name may stand for several).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MsgTypes {
    pub given: String,
    #[serde(skip)]
    pub numbers: Vec<i64>,
}

const MSGTYPE_NAMES: &[(&str, &[i64])] = &[
    ("text", &[1000]),
    ("verification", &[3000]),
    ("file", &[6000]),
    ("call", &[7000]),
    ("location", &[8000]),
    ("edit", &[9000, 9100]),
    ("control", &[4001, 4002, 4003, 4004, 4005, 4011, 4012, 4013, 4014]),
];

fn parse_msgtype(text: &str) -> Result<MsgTypes, String> {
    let numbers = match text.trim().parse::<i64>() {
        Ok(n) if n > 0 => vec![n],
        Ok(_) => {
            return Err(format!(
                "{text:?} is not a msgtype (they are positive numbers, e.g. 1000)"
            ));
        }
        Err(_) => MSGTYPE_NAMES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(text.trim()))
            .map(|(_, n)| n.to_vec())
            .ok_or_else(|| {
                let names: Vec<&str> = MSGTYPE_NAMES.iter().map(|(n, _)| *n).collect();
                format!(
                    "{text:?} is not a message type: give a msgtype number (e.g. 1000) or one of {}",
                    names.join(", ")
                )
            })?,
    };
    Ok(MsgTypes {
        given: text.trim().to_owned(),
        numbers,
    })
}

fn non_empty(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        return Err("an empty value selects nothing: give a value, or leave the flag out".into());
    }
    Ok(text.to_owned())
}

/// The fields of an archived line the selection looks at.
#[derive(Debug, Default)]
pub struct Line<'a> {
    pub time: Option<DateTime<Utc>>,
    pub msg_ts: Option<Cow<'a, str>>,
    pub msgtype: Option<i64>,
    pub message_id: Option<Cow<'a, str>>,
    pub sender: Option<Cow<'a, str>>,
    pub receiver: Option<Cow<'a, str>>,
    pub room: Option<Cow<'a, str>>,
    pub text: Option<Cow<'a, str>>,
    /// The message an edit, reaction or delete refers to; or that a reply answers, a thread message
    /// follows, a vote is cast in, a thumbnail shows, or a foreign edit tried to change.
    pub refers_to: Option<Cow<'a, str>>,
    /// `control.members` of a room control message.
    pub members: Vec<Cow<'a, str>>,
    /// `room_members`: who was in the room when the message was sent.
    pub present: Vec<Cow<'a, str>>,
    /// The archived name of a file message's attachment (`file.localfilename`'s last part).
    pub attachment: Option<Cow<'a, str>>,
    /// `file.filename`: the name the sender gave it.
    pub file_name: Option<Cow<'a, str>>,
}

/// Reads a line's fields; `None` if it is not a JSON object. A field of an unexpected type is read as
/// absent: archived lines were checked only for what the format requires.
pub(crate) fn read_line(text: &[u8]) -> Option<Line<'_>> {
    let top: Fields = serde_json::from_slice(text).ok()?;
    let string = |raw: Option<&RawValue>| raw.and_then(|r| serde_json::from_str::<Cow<str>>(r.get()).ok());
    let object = |name: &str| top.get(name).and_then(|r| serde_json::from_str::<Fields>(r.get()).ok());
    let msg_ts = string(top.get("msg_ts"));
    let msgtype = top.get("msgtype").and_then(|r| r.get().parse::<i64>().ok());
    let mut line = Line {
        time: msg_ts.as_deref().and_then(msg_time),
        msg_ts,
        msgtype,
        message_id: string(top.get("message_id")),
        sender: string(top.get("sender")),
        receiver: string(top.get("receiver")),
        room: string(top.get("vgroupid")),
        text: string(top.get("message")),
        ..Line::default()
    };
    if let Some(edit) = object("edit") {
        // Only an edit or a reaction refers to a message through `edit` (a text line carrying one
        // must not split a message from its history).
        if matches!(
            msgtype,
            Some(crate::message::MSGTYPE_EDIT | crate::message::MSGTYPE_REACTION)
        ) {
            line.refers_to = string(edit.get("message_id"));
        }
        if line.text.as_deref().is_none_or(str::is_empty) {
            line.text = string(edit.get("message"));
        }
    }
    if let Some(control) = object("control") {
        if msgtype == Some(crate::message::MSGTYPE_DELETE_MESSAGE) {
            line.refers_to = string(control.get("message_id"));
        }
        if let Some(members) = control.get("members") {
            line.members = users(Some(members));
        }
    }
    line.present = users(top.get("room_members"));
    // A line that belongs with another message without changing it: a reply, a thread's message, a
    // poll's vote or end, a file's thumbnail, an edit attempt by someone else.
    if line.refers_to.is_none() {
        let nested = |object_name: &str, key: &str| object(object_name).and_then(|o| string(o.get(key)));
        line.refers_to = string(top.get("reply_to"))
            .or_else(|| string(top.get("thread_root")))
            .or_else(|| nested("poll", "message_id"))
            .or_else(|| nested("file", "thumbnail_of"))
            .or_else(|| nested("edit_attempt", "message_id"));
    }
    if let Some(file) = object("file") {
        line.file_name = string(file.get("filename"));
        line.attachment = string(file.get("localfilename")).map(|p| match p {
            Cow::Borrowed(p) => Cow::Borrowed(p.rsplit('/').next().unwrap_or(p)),
            Cow::Owned(p) => Cow::Owned(p.rsplit('/').next().unwrap_or(&p).to_owned()),
        });
    }
    Some(line)
}

/// A list of user IDs (a field of another type reads as none).
fn users(raw: Option<&RawValue>) -> Vec<Cow<'_, str>> {
    raw.and_then(|r| serde_json::from_str::<Vec<Cow<str>>>(r.get()).ok())
        .unwrap_or_default()
}

/// A JSON object's top-level fields, each the raw text it was (the last of a repeated key wins, as
/// in every JSON reader the archive's readers use).
struct Fields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Fields<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map: Vec<(Cow<'de, str>, &'de RawValue)> = d.deserialize_map(FieldsVisitor)?;
        Ok(Fields(map))
    }
}

struct FieldsVisitor;

impl<'de> serde::de::Visitor<'de> for FieldsVisitor {
    type Value = Vec<(Cow<'de, str>, &'de RawValue)>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Vec::new();
        while let Some((k, v)) = map.next_entry::<Cow<str>, &RawValue>()? {
            fields.push((k, v));
        }
        Ok(fields)
    }
}

impl<'a> Fields<'a> {
    fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.0.iter().rev().find(|(k, _)| k == name).map(|(_, v)| *v)
    }
}

/// What the selection says of one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Selected.
    Yes,
    /// Selected if a participant turns out to be a member of this room (known only once every file
    /// has been read).
    IfMember(String),
    No,
}

/// The selection, ready to judge lines: values lowered once.
#[derive(Debug, Clone)]
pub struct Judge {
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    senders: HashSet<String>,
    participants: HashSet<String>,
    rooms: HashSet<String>,
    msgtypes: HashSet<i64>,
    message_ids: HashSet<String>,
    texts: Vec<String>,
}

impl Judge {
    pub fn new(selection: &Selection) -> Result<Judge, String> {
        if let (Some(from), Some(to)) = (selection.from, selection.to)
            && from > to
        {
            return Err(format!(
                "--from {} is after --to {}: the period is empty",
                from.to_rfc3339(),
                to.to_rfc3339()
            ));
        }
        let lower = |v: &[String]| v.iter().map(|s| s.to_lowercase()).collect::<HashSet<_>>();
        Ok(Judge {
            from: selection.from,
            to: selection.to,
            senders: lower(&selection.sender),
            participants: lower(&selection.participant),
            rooms: selection.room.iter().cloned().collect(),
            msgtypes: selection.msgtype.iter().flat_map(|m| m.numbers.clone()).collect(),
            message_ids: selection.message_id.iter().cloned().collect(),
            texts: selection.text.iter().map(|t| t.to_lowercase()).collect(),
        })
    }

    pub(crate) fn has_period(&self) -> bool {
        self.from.is_some() || self.to.is_some()
    }

    pub(crate) fn has_participants(&self) -> bool {
        !self.participants.is_empty()
    }

    /// Whether a file whose messages span `span` may hold a selected line (`None`: unknown, so yes).
    pub(crate) fn may_hold(&self, span: Option<(DateTime<Utc>, DateTime<Utc>)>) -> bool {
        let Some((earliest, latest)) = span else {
            return true;
        };
        self.from.is_none_or(|from| latest >= from) && self.to.is_none_or(|to| earliest <= to)
    }

    /// Whether a line's time is in the period (a line without a readable time is in none).
    pub fn in_period(&self, line: &Line) -> bool {
        if !self.has_period() {
            return true;
        }
        line.time
            .is_some_and(|t| self.from.is_none_or(|from| t >= from) && self.to.is_none_or(|to| t <= to))
    }

    /// Whether a participant is a member of the line's room, as the line shows it: they sent it, or
    /// its control message names them.
    pub(crate) fn shows_member(&self, line: &Line) -> bool {
        self.has_participants()
            && line.room.is_some()
            && (line
                .sender
                .as_deref()
                .is_some_and(|s| self.participants.contains(&s.to_lowercase()))
                || line
                    .members
                    .iter()
                    .chain(&line.present)
                    .any(|m| self.participants.contains(&m.to_lowercase())))
    }

    pub(crate) fn judge(&self, line: &Line) -> Verdict {
        let user_in = |set: &HashSet<String>, user: &Option<Cow<str>>| {
            user.as_deref().is_some_and(|u| set.contains(&u.to_lowercase()))
        };
        let exact_in = |set: &HashSet<String>, value: &Option<Cow<str>>| {
            set.is_empty() || value.as_deref().is_some_and(|v| set.contains(v))
        };
        let selected = self.in_period(line)
            && (self.senders.is_empty() || user_in(&self.senders, &line.sender))
            && exact_in(&self.rooms, &line.room)
            && exact_in(&self.message_ids, &line.message_id)
            && (self.msgtypes.is_empty() || line.msgtype.is_some_and(|t| self.msgtypes.contains(&t)))
            && (self.texts.is_empty() || {
                let text = line.text.as_deref().unwrap_or_default().to_lowercase();
                self.texts.iter().any(|t| text.contains(t.as_str()))
            });
        if !selected {
            return Verdict::No;
        }
        if self.participants.is_empty()
            || user_in(&self.participants, &line.sender)
            || user_in(&self.participants, &line.receiver)
            || line
                .present
                .iter()
                .any(|m| self.participants.contains(&m.to_lowercase()))
        {
            return Verdict::Yes;
        }
        match &line.room {
            Some(room) => Verdict::IfMember(room.to_string()),
            None => Verdict::No,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judge(args: &[&str]) -> Result<Judge, String> {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            selection: Selection,
        }
        let cli = <Cli as clap::Parser>::try_parse_from(std::iter::once("x").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        Judge::new(&cli.selection)
    }

    const TEXT: &str = r#"{"message":"Quarterly Numbers","message_id":"m1","msg_ts":"1700000000.25","msgtype":1000,"receiver":"Bob@Example","sender":"alice@example","vgroupid":"S1"}"#;

    #[test]
    fn lines_are_read_for_the_fields_the_selection_needs() {
        let line = read_line(TEXT.as_bytes()).unwrap();
        assert_eq!(line.time.unwrap().timestamp_micros(), 1_700_000_000_250_000);
        assert_eq!(line.msgtype, Some(1000));
        let edit = r#"{"msgtype":9000,"message_id":"e","msg_ts":"1","sender":"a","edit":{"message_id":"m1","message":"new words"}}"#;
        let edit = read_line(edit.as_bytes()).unwrap();
        assert_eq!(
            (edit.refers_to.as_deref(), edit.text.as_deref()),
            (Some("m1"), Some("new words"))
        );
        let delete = r#"{"msgtype":4011,"message_id":"d","msg_ts":"1","sender":"a","control":{"message_id":"m1"}}"#;
        assert_eq!(read_line(delete.as_bytes()).unwrap().refers_to.as_deref(), Some("m1"));
        let file = r#"{"msgtype":6000,"message_id":"f","msg_ts":"1","sender":"a","receiver":7,"file":{"filename":"a.pdf","localfilename":"/x/attachment_1_a.pdf"}}"#;
        let file = read_line(file.as_bytes()).unwrap();
        assert_eq!(file.attachment.as_deref(), Some("attachment_1_a.pdf"));
        assert_eq!(file.receiver, None, "a field of another type reads as absent");
        assert!(read_line(b"[1,2]").is_none());
        assert!(read_line(b"{\"msg_ts\":").is_none());
    }

    #[test]
    fn flags_combine_with_and_and_repeated_values_with_or() {
        let line = read_line(TEXT.as_bytes()).unwrap();
        let verdict = |args: &[&str]| judge(args).unwrap().judge(&line);
        assert_eq!(verdict(&[]), Verdict::Yes);
        assert_eq!(verdict(&["--sender", "ALICE@example"]), Verdict::Yes);
        assert_eq!(
            verdict(&["--sender", "carol", "--sender", "alice@example"]),
            Verdict::Yes
        );
        assert_eq!(verdict(&["--sender", "alice@example", "--room", "S2"]), Verdict::No);
        assert_eq!(verdict(&["--participant", "bob@example"]), Verdict::Yes);
        assert_eq!(verdict(&["--participant", "dan"]), Verdict::IfMember("S1".into()));
        assert_eq!(verdict(&["--msgtype", "text"]), Verdict::Yes);
        assert_eq!(verdict(&["--msgtype", "6000", "--msgtype", "1000"]), Verdict::Yes);
        assert_eq!(verdict(&["--msgtype", "file"]), Verdict::No);
        assert_eq!(verdict(&["--text", "quarterly num"]), Verdict::Yes);
        assert_eq!(verdict(&["--text", "annual"]), Verdict::No);
        assert_eq!(verdict(&["--message-id", "m1"]), Verdict::Yes);
        // 1700000000 is 2023-11-14T22:13:20Z.
        assert_eq!(verdict(&["--from", "2023-11-14", "--to", "2023-11-14"]), Verdict::Yes);
        assert_eq!(
            verdict(&["--to", "2023-11-14T22:13:20Z"]),
            Verdict::No,
            "0.25 s after --to"
        );
        assert_eq!(verdict(&["--from", "2023-11-15"]), Verdict::No);
        // The last fraction of a second of a --to date is in it.
        let late = TEXT.replace("1700000000.25", "1700006399.9999995");
        let late = read_line(late.as_bytes()).unwrap();
        let judge = judge(&["--to", "2023-11-14"]).unwrap();
        assert_eq!(judge.judge(&late), Verdict::Yes);
        assert!(judge.may_hold(Some((late.time.unwrap(), late.time.unwrap()))));
    }

    #[test]
    fn bad_values_are_refused_saying_what_is_wrong() {
        let err = |args: &[&str]| judge(args).unwrap_err();
        assert!(err(&["--msgtype", "txt"]).contains("give a msgtype number (e.g. 1000) or one of text,"));
        assert!(err(&["--msgtype=0"]).contains("not a msgtype"));
        assert!(err(&["--from", "March"]).contains("neither an RFC 3339 time"));
        assert!(err(&["--from", "2026-05-01", "--to", "2026-03-01"]).contains("is after --to"));
        assert!(err(&["--sender", ""]).contains("an empty value selects nothing"));
        assert!(err(&["--colour", "red"]).contains("--colour"));
    }

    #[test]
    fn a_file_is_skipped_only_when_its_span_misses_the_period() {
        let j = judge(&["--from", "2023-11-15", "--to", "2023-11-16"]).unwrap();
        let t = |s: &str| crate::period::parse_time(s).unwrap();
        assert!(j.may_hold(None));
        assert!(j.may_hold(Some((t("2023-11-01"), t("2023-11-15")))));
        assert!(j.may_hold(Some((t("2023-11-16"), t("2023-12-01")))));
        assert!(!j.may_hold(Some((t("2023-11-01"), t("2023-11-14")))));
        assert!(!j.may_hold(Some((t("2023-11-17"), t("2023-12-01")))));
    }
}
