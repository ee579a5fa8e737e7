//! Checking a producer's text where it lies. A serde visitor walks the JSON once and records only
//! what the rules look at (no tree of values is built: a 16 MiB `[0,0,...]` costs no memory and is
//! refused at its first byte), then the text is compacted in place into the line the spool writes:
//! the message exactly as received, minus insignificant whitespace. A request's memory is its body.

use std::fmt;

use serde::Deserializer as _;
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::entries::{Key, KeySet, MAX_FIELDS, duplicate_key};
use super::shape::{Kind, Shape};
use super::{InvalidMessage, Lines};
use crate::error_chain::Chain;

/// At most this many invalid messages are listed in an answer; the rest are counted.
pub(crate) const MAX_LISTED: usize = 100;
/// Deepest nesting of arrays and objects a message may have. serde_json, Python's json and most
/// readers refuse a few hundred levels or run out of stack: a message that no reader of the archive
/// could open is refused here rather than kept.
pub(crate) const MAX_DEPTH: usize = 64;

/// serde_json's stand-in key for a number when `arbitrary_precision` is on (numbers then arrive as
/// a one-entry map holding their text, which is how every digit is kept).
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

/// What the rules found in a valid message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    pub msgtype: i64,
}

/// Why a request's messages were refused: the first invalid ones, and how many lines were not
/// checked after the [`MAX_LISTED`]th (the request is refused whole either way).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Refused {
    /// Messages seen (non-blank lines).
    pub seen: usize,
    /// Invalid messages found.
    pub invalid: usize,
    /// The first [`MAX_LISTED`] of them.
    pub listed: Vec<InvalidMessage>,
    /// Lines after the last listed one, not checked.
    pub unchecked: usize,
}

impl Refused {
    fn add(&mut self, e: InvalidMessage) {
        self.invalid += 1;
        if self.listed.len() < MAX_LISTED {
            self.listed.push(e);
        }
    }
}

/// Checks one JSON text as a message; `line` labels the errors.
pub fn check_line(text: &[u8], line: usize) -> Result<Checked, InvalidMessage> {
    check_text(text, line).map(|(checked, _)| checked)
}

/// [`check_line`], also telling whether the text holds whitespace that compaction must drop.
fn check_text(text: &[u8], line: usize) -> Result<(Checked, Layout), InvalidMessage> {
    // Strings that the walk skips are not decoded, so the text is checked as UTF-8 first, all at
    // once (a SIMD check; the position is looked up only for an answer that lists it). The walk then
    // reads it as text and checks no string again.
    let Ok(valid) = simdutf8::basic::from_utf8(text) else {
        let at = std::str::from_utf8(text).err().map_or(0, |e| e.valid_up_to());
        return Err(InvalidMessage::new(
            line,
            None,
            format!("not valid UTF-8 (at byte {at})"),
        ));
    };
    let mut de = serde_json::Deserializer::from_str(valid);
    let mut shape = Shape::default();
    let mut problem = None;
    let walked = (&mut de)
        .deserialize_any(Top {
            shape: &mut shape,
            problem: &mut problem,
            line,
        })
        .and_then(|()| de.end());
    if let Some(p) = problem {
        return Err(p);
    }
    walked.map_err(|e| InvalidMessage::new(line, None, json_problem(&e)))?;
    // After the walk, which refuses most hostile shapes at their first bytes (and is safe at any
    // depth: serde_json skips nested values without recursing).
    let layout = check_structure(text, MAX_DEPTH).map_err(|problem| InvalidMessage::new(line, None, problem))?;
    let checked = Checked {
        msgtype: shape.check(line)?,
    };
    Ok((checked, layout))
}

fn json_problem(e: &serde_json::Error) -> String {
    if e.is_eof() {
        format!("incomplete JSON ({e})", e = Chain(&e))
    } else {
        format!("not valid JSON ({e})", e = Chain(&e))
    }
}

/// One message (`application/json`, perhaps pretty-printed): checked, then made its line in place.
pub fn parse_one(mut body: Vec<u8>) -> Result<(Lines, Checked), Refused> {
    let (checked, layout) = check_text(&body, 1).map_err(|e| {
        let mut refused = Refused {
            seen: 1,
            ..Refused::default()
        };
        refused.add(e);
        refused
    })?;
    let len = body.len();
    let end = layout.move_line(&mut body, 0, len, 0);
    body.truncate(end);
    body.push(b'\n');
    Ok((
        Lines {
            bytes: body,
            count: 1,
            accounted: None,
        },
        checked,
    ))
}

/// A newline-delimited body: every non-blank line is a message, and line numbers count every line
/// from 1. The lines are made in place: the body becomes the batch. Any invalid message refuses them
/// all; lines are checked on until [`MAX_LISTED`] invalid ones are found, to report each.
pub fn parse_ndjson(mut body: Vec<u8>) -> Result<Lines, Refused> {
    let mut refused = Refused::default();
    let (mut read, mut write, mut number) = (0, 0, 0);
    while read < body.len() {
        let end = memchr::memchr(b'\n', &body[read..]).map_or(body.len(), |i| read + i);
        number += 1;
        let (start, stop) = trimmed(&body, read, end);
        read = end + 1;
        if start == stop {
            continue;
        }
        refused.seen += 1;
        if refused.listed.len() >= MAX_LISTED {
            // Refused already, and the answer lists no more: the rest is counted, not checked.
            refused.unchecked += 1;
            continue;
        }
        match check_text(&body[start..stop], number) {
            Err(e) => refused.add(e),
            Ok((_, layout)) if refused.invalid == 0 => {
                // `write` never passes `start`: a line only ever shrinks, so it moves down in place.
                write = layout.move_line(&mut body, start, stop, write);
                if write < body.len() {
                    body[write] = b'\n';
                } else {
                    body.push(b'\n');
                }
                write += 1;
            }
            Ok(_) => {}
        }
    }
    if refused.invalid > 0 {
        return Err(refused);
    }
    body.truncate(write);
    Ok(Lines {
        bytes: body,
        count: refused.seen,
        accounted: None,
    })
}

/// `body[from..to]` without leading and trailing ASCII whitespace (a `\r` before `\n` included).
fn trimmed(body: &[u8], mut from: usize, mut to: usize) -> (usize, usize) {
    while from < to && body[from].is_ascii_whitespace() {
        from += 1;
    }
    while to > from && body[to - 1].is_ascii_whitespace() {
        to -= 1;
    }
    (from, to)
}

/// Whitespace outside strings, which JSON ignores, is what compaction drops.
#[derive(Default)]
struct Compactor {
    in_string: bool,
    escaped: bool,
}

impl Compactor {
    fn keep(&mut self, b: u8) -> bool {
        if self.in_string {
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.in_string = false;
            }
            return true;
        }
        if b == b'"' {
            self.in_string = true;
        }
        !matches!(b, b' ' | b'\t' | b'\n' | b'\r')
    }
}

/// Whether a valid JSON text is one line already: most producers send compact JSON, whose line is
/// the text as it is (one `memmove`), not a byte-by-byte compaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    Compact,
    /// Has whitespace outside strings (a space, a tab, a line break) to drop.
    Loose,
}

impl Layout {
    /// Moves `buf[from..to]` down to `buf[write..]` as its line; returns the new write position.
    fn move_line(self, buf: &mut [u8], from: usize, to: usize, write: usize) -> usize {
        match self {
            Layout::Compact => {
                buf.copy_within(from..to, write);
                write + (to - from)
            }
            Layout::Loose => compact_within(buf, from, to, write),
        }
    }
}

/// What the walk does not see in the values it skips: how deep arrays and objects nest, and
/// whether every `\u` escape is a whole character (a lone surrogate such as `"\ud800"` is no
/// character, and strict readers of the archive refuse it); and whether compaction has work to do.
/// Runs over valid JSON only. Strings, where most of a message's bytes are, are crossed a vector at
/// a time to the next quote or backslash.
fn check_structure(text: &[u8], max_depth: usize) -> Result<Layout, String> {
    let (mut depth, mut i) = (0usize, 0usize);
    let mut layout = Layout::Compact;
    while i < text.len() {
        match text[i] {
            b'"' => {
                i = string_end(text, i + 1)?;
                continue;
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return Err(format!(
                        "nested deeper than {max_depth} levels (at byte {i}); readers of the archive could not take it"
                    ));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b' ' | b'\t' | b'\n' | b'\r' => layout = Layout::Loose,
            _ => {}
        }
        i += 1;
    }
    Ok(layout)
}

/// Where the string whose contents start at `i` ends (past its closing quote), checking that each
/// `\u` escape in it is a whole character.
fn string_end(text: &[u8], mut i: usize) -> Result<usize, String> {
    let hex4 = |at: usize| {
        text.get(at..at + 4)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u16::from_str_radix(h, 16).ok())
    };
    while let Some(found) = memchr::memchr2(b'"', b'\\', &text[i.min(text.len())..]) {
        let at = i + found;
        if text[at] == b'"' {
            return Ok(at + 1);
        }
        if text.get(at + 1) != Some(&b'u') {
            i = at + 2;
            continue;
        }
        let unit = hex4(at + 2).unwrap_or(0);
        if (0xDC00..0xE000).contains(&unit) {
            return Err(format!("a lone low surrogate \\u{unit:04x} at byte {at}"));
        }
        if (0xD800..0xDC00).contains(&unit) {
            let low = (text.get(at + 6..at + 8) == Some(b"\\u".as_slice()))
                .then(|| hex4(at + 8))
                .flatten();
            if !low.is_some_and(|l| (0xDC00..0xE000).contains(&l)) {
                return Err(format!("a lone high surrogate \\u{unit:04x} at byte {at}"));
            }
            i = at + 12;
        } else {
            i = at + 6;
        }
    }
    Ok(text.len())
}

/// Appends valid JSON `text` without its insignificant whitespace.
pub(crate) fn compact_json(text: &[u8], out: &mut Vec<u8>) {
    let mut c = Compactor::default();
    out.extend(text.iter().copied().filter(|b| c.keep(*b)));
}

/// Compacts `buf[from..to]` down to `buf[write..]`; returns the new write position.
fn compact_within(buf: &mut [u8], from: usize, to: usize, mut write: usize) -> usize {
    let mut c = Compactor::default();
    for read in from..to {
        let b = buf[read];
        if c.keep(b) {
            buf[write] = b;
            write += 1;
        }
    }
    write
}

/// The message itself: a map whose fields feed the [`Shape`]; anything else is refused at once.
struct Top<'s> {
    shape: &'s mut Shape,
    problem: &'s mut Option<InvalidMessage>,
    line: usize,
}

impl Top<'_> {
    fn not_an_object<E: de::Error>(self, kind: Kind) -> Result<(), E> {
        *self.problem = Some(InvalidMessage::new(
            self.line,
            None,
            format!("a message must be a JSON object, got {}", kind.describe()),
        ));
        Err(E::custom("not an object"))
    }
}

impl<'de> Visitor<'de> for Top<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.not_an_object(Kind::Bool)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.not_an_object(Kind::Number)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.not_an_object(Kind::Number)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.not_an_object(Kind::Number)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.not_an_object(Kind::String)
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.not_an_object(Kind::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        // Refused at its first byte: an array of millions of elements is never walked.
        self.not_an_object(Kind::Array)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut names = KeySet::default();
        while let Some(Key(name)) = map.next_key()? {
            if names.is_empty() && name == NUMBER_TOKEN {
                return self.not_an_object(Kind::Number);
            }
            if Shape::cares_about(&name) {
                // Classified by its own text: a value that is not what it seems (an object posing as
                // a number through serde_json's number token) cannot fool the rules.
                let raw: &'de RawValue = map.next_value()?;
                let (kind, int) = classify(raw.get());
                if name == "file"
                    && kind == Kind::Object
                    && let Some(problem) = duplicate_key(raw.get())
                {
                    return self.refuse(&name, problem);
                }
                self.shape.saw(&name, kind, int);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
            if names.len() >= MAX_FIELDS {
                return self.refuse(&name, format!("more than {MAX_FIELDS} fields"));
            }
            if !names.insert(name.clone()) {
                return self.refuse(&name, "appears more than once; a field may appear once".into());
            }
        }
        Ok(())
    }
}

impl Top<'_> {
    fn refuse<E: de::Error>(self, field: &str, problem: String) -> Result<(), E> {
        *self.problem = Some(InvalidMessage::new(self.line, Some(field), problem));
        Err(E::custom("refused"))
    }
}

/// A value's kind from its first byte (JSON's grammar decides it), and its value if it is an
/// integer that fits 64 bits.
fn classify(text: &str) -> (Kind, Option<i64>) {
    let kind = match text.as_bytes().first() {
        Some(b'{') => Kind::Object,
        Some(b'[') => Kind::Array,
        Some(b'"') => Kind::String,
        Some(b't' | b'f') => Kind::Bool,
        Some(b'n') => Kind::Null,
        _ => return (Kind::Number, text.parse().ok()),
    };
    (kind, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"{"message":"hi","message_id":"a526085032fa11ee9a74053bb1017859","msg_ts":"1691176258.901277","msgtype":1000,"sender":"dr002@example","big":123456789012345678901234567890,"f":1.50}"#;

    fn one(text: &str) -> Result<String, Refused> {
        parse_one(text.as_bytes().to_vec()).map(|(l, _)| String::from_utf8(l.bytes).unwrap())
    }

    #[test]
    fn keeps_every_field_and_number_as_received() {
        assert_eq!(one(TEXT).unwrap(), format!("{TEXT}\n"));
    }

    #[test]
    fn pretty_input_becomes_one_line_with_strings_untouched() {
        let pretty = "{\n  \"msgtype\": 1000,\n  \"message_id\": \"x\",\n  \"msg_ts\": \"1.0\",\n  \"sender\": \"a\",\n  \"message\": \"two  spaces\\n and \\\"quotes\\\" \\u00e9\"\n}";
        assert_eq!(
            one(pretty).unwrap(),
            "{\"msgtype\":1000,\"message_id\":\"x\",\"msg_ts\":\"1.0\",\"sender\":\"a\",\"message\":\"two  spaces\\n and \\\"quotes\\\" \\u00e9\"}\n"
        );
    }

    #[test]
    fn names_the_bad_field() {
        let cases = [
            (
                r#"{"msgtype":"1000","message_id":"x","msg_ts":"1","sender":"a"}"#,
                Some("msgtype"),
            ),
            (
                r#"{"msgtype":1000.5,"message_id":"x","msg_ts":"1","sender":"a"}"#,
                Some("msgtype"),
            ),
            (
                r#"{"msgtype":1e30,"message_id":"x","msg_ts":"1","sender":"a"}"#,
                Some("msgtype"),
            ),
            (
                r#"{"msgtype":1000,"message_id":7,"msg_ts":"1","sender":"a"}"#,
                Some("message_id"),
            ),
            (r#"{"msgtype":1000,"message_id":"x","sender":"a"}"#, Some("msg_ts")),
            (
                r#"{"msgtype":6000,"message_id":"x","msg_ts":"1","sender":"a"}"#,
                Some("file"),
            ),
            (
                r#"{"msgtype":9000,"message_id":"x","msg_ts":"1","sender":"a","edit":"no"}"#,
                Some("edit"),
            ),
            (
                r#"{"msgtype":1000,"message_id":"x","msg_ts":"1","sender":"a","sender":"b"}"#,
                Some("sender"),
            ),
            (r#"[1,2]"#, None),
            (r#"17"#, None),
            (r#"{"msgtype":1000"#, None),
            (
                r#"{"msgtype":1000,"message_id":"x","msg_ts":"1","sender":"a"} trailing"#,
                None,
            ),
        ];
        for (text, field) in cases {
            let err = check_line(text.as_bytes(), 4).unwrap_err();
            assert_eq!(err.line, 4);
            assert_eq!(err.field.as_deref(), field, "{text}: {err}");
        }
        let err = check_line(b"[0,0,0]", 1).unwrap_err();
        assert_eq!(err.problem, "a message must be a JSON object, got an array");
    }

    #[test]
    fn deep_nesting_is_refused_wherever_it_is_and_brackets_in_strings_do_not_count() {
        let deep = format!(
            r#"{{"msgtype":1000,"message_id":"x","msg_ts":"1","sender":"a","n":{}{}}}"#,
            "[".repeat(MAX_DEPTH),
            "]".repeat(MAX_DEPTH)
        );
        assert!(
            check_line(deep.as_bytes(), 1)
                .unwrap_err()
                .problem
                .contains("nested deeper")
        );
        let shallow = format!(
            r#"{{"msgtype":1000,"message_id":"x","msg_ts":"1","sender":"a","n":{}{},"s":"{}"}}"#,
            "[".repeat(MAX_DEPTH - 1),
            "]".repeat(MAX_DEPTH - 1),
            "[".repeat(500)
        );
        check_line(shallow.as_bytes(), 1).unwrap();
    }

    #[test]
    fn escapes_must_be_whole_characters() {
        let with =
            |s: &str| format!(r#"{{"msgtype":1000,"message_id":"x","msg_ts":"1","sender":"a","message":"{s}"}}"#);
        check_line(with(r"a \ud83d\ude00 pair and \u00e9").as_bytes(), 1).unwrap();
        for lone in [r"\ud800", r"\ud800x", r"\ude00", r"\ud800\u0041"] {
            let e = check_line(with(lone).as_bytes(), 1).unwrap_err();
            assert!(e.problem.contains("lone"), "{lone}: {e}");
        }
    }

    #[test]
    fn a_value_posing_as_a_number_is_not_taken_for_one() {
        let forged = r#"{"msgtype":{"$serde_json::private::Number":"6000"},"message_id":"x","msg_ts":"1","sender":"a","file":{}}"#;
        let e = check_line(forged.as_bytes(), 1).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("msgtype"), "{e}");
    }

    #[test]
    fn a_file_object_names_each_key_once_and_fields_are_bounded() {
        let twice = r#"{"msgtype":6000,"message_id":"x","msg_ts":"1","sender":"a","file":{"filename":"a.pdf","filename":"x.exe"}}"#;
        let e = check_line(twice.as_bytes(), 1).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("file"));
        assert!(e.problem.contains("filename"), "{e}");
        let many: String = (0..=MAX_FIELDS).map(|i| format!(r#""k{i}":0,"#)).collect();
        let wide = format!(r#"{{{many}"msgtype":1000,"message_id":"x","msg_ts":"1","sender":"a"}}"#);
        assert!(check_line(wide.as_bytes(), 1).unwrap_err().problem.contains("fields"));
    }

    #[test]
    fn invalid_utf8_is_refused_even_in_fields_nobody_reads() {
        for field in ["sender", "message"] {
            let mut bad =
                format!(r#"{{"msgtype":1000,"message_id":"x","msg_ts":"1","sender":"a","{field}":""#).into_bytes();
            bad.extend_from_slice(&[0xff, 0xfe]);
            bad.extend_from_slice(br#""}"#);
            assert!(check_line(&bad, 1).unwrap_err().problem.contains("UTF-8"), "{field}");
        }
    }

    #[test]
    fn ndjson_reports_every_bad_line_and_keeps_none() {
        let body = format!("{TEXT}\n\n{{\"msgtype\":1}}\n{TEXT}\nnope\n");
        let refused = parse_ndjson(body.into_bytes()).unwrap_err();
        assert_eq!((refused.seen, refused.invalid), (4, 2));
        assert_eq!(refused.listed.iter().map(|e| e.line).collect::<Vec<_>>(), vec![3, 5]);
        let ok = parse_ndjson(format!(" {TEXT}\r\n\n{TEXT}").into_bytes()).unwrap();
        assert_eq!(ok.count, 2);
        assert_eq!(ok.bytes, format!("{TEXT}\n{TEXT}\n").into_bytes());
    }

    #[test]
    fn listed_errors_are_capped_and_the_rest_counted_unchecked() {
        let body = "x\n".repeat(1000);
        let refused = parse_ndjson(body.into_bytes()).unwrap_err();
        assert_eq!(
            (refused.seen, refused.invalid, refused.listed.len(), refused.unchecked),
            (1000, MAX_LISTED, MAX_LISTED, 900)
        );
    }

    #[test]
    fn a_text_is_taken_as_compact_only_when_compaction_would_not_change_it() {
        let texts: [&[u8]; 7] = [
            br#"{"a":"x y\" z","b":[1,{"c":"\\"}]}"#,
            br#"{"a" :1}"#,
            b"{\"a\":\t1}",
            b"{\"a\":[1,\r\n2]}",
            br#"{"a":"} { [ ]\n\t"}"#,
            br#"{"s":"\ud83d\ude00","t":"\""}"#,
            br#"{"a":"\\","b" : 2}"#,
        ];
        for text in texts {
            let mut fresh = Vec::new();
            compact_json(text, &mut fresh);
            let layout = check_structure(text, MAX_DEPTH).unwrap();
            assert_eq!(
                layout == Layout::Compact,
                fresh == text,
                "{}",
                String::from_utf8_lossy(text)
            );
            let mut buf = text.to_vec();
            let end = layout.move_line(&mut buf, 0, text.len(), 0);
            assert_eq!(&buf[..end], &fresh[..], "{}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn compaction_in_place_matches_compaction_into_a_new_buffer() {
        let text = b" { \"a\" : [ 1 , \"x \\\" y\" ] , \"b\":{} } ";
        let mut fresh = Vec::new();
        compact_json(text, &mut fresh);
        let mut buf = text.to_vec();
        let end = compact_within(&mut buf, 0, text.len(), 0);
        assert_eq!(&buf[..end], &fresh[..]);
        assert_eq!(fresh, b"{\"a\":[1,\"x \\\" y\"],\"b\":{}}");
    }
}
