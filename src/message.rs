//! The WickrIO message model: what a line of a `receivedMessages` file must hold.
//!
//! Validation checks only what the format requires (an object; integer `msgtype`; string
//! `message_id`, `msg_ts`, `sender`; the nested object a `msgtype` carries) and keeps every other field
//! exactly as received, so nothing a producer sends is lost in translation.

use serde_json::{Map, Value};

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

/// `msgtype` of a file message.
pub const MSGTYPE_FILE: i64 = 6000;

/// The nested object a `msgtype` carries, per the WickrIO format.
fn required_object(msgtype: i64) -> Option<&'static str> {
    match msgtype {
        6000 => Some("file"),
        7000 => Some("call"),
        8000 => Some("location"),
        9000 | 9100 => Some("edit"),
        4001..=4005 | 4011..=4014 => Some("control"),
        _ => None,
    }
}

impl Message {
    /// Parses and validates one JSON text; `line` is only used to label errors.
    pub fn parse(text: &[u8], line: usize) -> Result<Self, InvalidMessage> {
        let invalid = |field: Option<&str>, problem: String| InvalidMessage::new(line, field, problem);
        let value: Value = serde_json::from_slice(text).map_err(|e| {
            let problem = if e.is_eof() {
                format!("incomplete JSON ({e})")
            } else {
                format!("not valid JSON ({e})")
            };
            invalid(None, problem)
        })?;
        let Value::Object(fields) = value else {
            return Err(invalid(
                None,
                format!("a message must be a JSON object, got {}", kind(&value)),
            ));
        };
        Self::from_object(fields, line)
    }

    /// Validates a message a source built itself (e.g. from a Matrix event).
    pub fn from_object(fields: Map<String, Value>, line: usize) -> Result<Self, InvalidMessage> {
        let invalid = |field: Option<&str>, problem: String| InvalidMessage::new(line, field, problem);
        let msgtype = match fields.get("msgtype") {
            None => return Err(invalid(Some("msgtype"), "missing".into())),
            Some(v) => v
                .as_i64()
                .ok_or_else(|| invalid(Some("msgtype"), format!("must be an integer, got {}", kind(v))))?,
        };
        for name in ["message_id", "msg_ts", "sender"] {
            match fields.get(name) {
                None => return Err(invalid(Some(name), "missing".into())),
                Some(Value::String(_)) => {}
                Some(v) => {
                    return Err(invalid(Some(name), format!("must be a string, got {}", kind(v))));
                }
            }
        }
        if let Some(name) = required_object(msgtype) {
            match fields.get(name) {
                Some(Value::Object(_)) => {}
                None => {
                    return Err(invalid(
                        Some(name),
                        format!("missing: msgtype {msgtype} needs a `{name}` object"),
                    ));
                }
                Some(v) => {
                    return Err(invalid(Some(name), format!("must be an object, got {}", kind(v))));
                }
            }
        }
        Ok(Message { fields })
    }

    pub fn msgtype(&self) -> i64 {
        // Validated in `parse`.
        self.fields.get("msgtype").and_then(Value::as_i64).unwrap_or_default()
    }

    /// The `file` object of a file message (`msgtype` 6000).
    pub fn file(&self) -> Option<&Map<String, Value>> {
        self.fields.get("file").and_then(Value::as_object)
    }

    /// Records where an attachment was saved, as the original does.
    pub fn set_local_filename(&mut self, path: &str) {
        if let Some(Value::Object(file)) = self.fields.get_mut("file") {
            file.insert("localfilename".into(), Value::String(path.to_owned()));
        }
    }

    /// Adds a note to the `matrix` object a Matrix source's line carries (e.g. why media is missing).
    pub fn set_matrix_field(&mut self, key: &str, value: Value) {
        if let Some(Value::Object(matrix)) = self.fields.get_mut("matrix") {
            matrix.insert(key.into(), value);
        }
    }

    /// Appends the message as one compact JSON line (field order and numbers as received).
    pub fn write_line(&self, out: &mut Vec<u8>) {
        // Serialising a map of `Value`s cannot fail: every key is a string.
        if serde_json::to_writer(&mut *out, &self.fields).is_ok() {
            out.push(b'\n');
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A batch of valid messages, rendered as the lines the spool writes.
#[derive(Debug, Default)]
pub struct Lines {
    pub bytes: Vec<u8>,
    pub count: usize,
}

impl Lines {
    pub fn push(&mut self, message: &Message) {
        message.write_line(&mut self.bytes);
        self.count += 1;
    }
}

/// Parses a newline-delimited body. Blank lines are skipped; line numbers count every line, from 1.
/// Returns the lines and the number of messages seen, or every invalid line.
pub fn parse_ndjson(body: &[u8]) -> Result<Lines, (usize, Vec<InvalidMessage>)> {
    let mut lines = Lines {
        bytes: Vec::with_capacity(body.len() + 64),
        count: 0,
    };
    let mut errors = Vec::new();
    let mut seen = 0;
    for (i, raw) in body.split(|b| *b == b'\n').enumerate() {
        let raw = raw.trim_ascii();
        if raw.is_empty() {
            continue;
        }
        seen += 1;
        match Message::parse(raw, i + 1) {
            Ok(m) if errors.is_empty() => lines.push(&m),
            Ok(_) => {}
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(lines)
    } else {
        Err((seen, errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"{"message":"hi","message_id":"a526085032fa11ee9a74053bb1017859","msg_ts":"1691176258.901277","msgtype":1000,"sender":"dr002@example","big":123456789012345678901234567890,"f":1.50}"#;

    #[test]
    fn keeps_every_field_and_number_as_received() {
        let m = Message::parse(TEXT.as_bytes(), 1).unwrap();
        let mut out = Vec::new();
        m.write_line(&mut out);
        assert_eq!(out, format!("{TEXT}\n").into_bytes());
    }

    #[test]
    fn pretty_input_becomes_one_line() {
        let pretty =
            "{\n  \"msgtype\": 1000,\n  \"message_id\": \"x\",\n  \"msg_ts\": \"1.0\",\n  \"sender\": \"a\"\n}";
        let mut out = Vec::new();
        Message::parse(pretty.as_bytes(), 1).unwrap().write_line(&mut out);
        assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1);
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
            (r#"[1,2]"#, None),
            (r#"{"msgtype":1000"#, None),
        ];
        for (text, field) in cases {
            let err = Message::parse(text.as_bytes(), 4).unwrap_err();
            assert_eq!(err.line, 4);
            assert_eq!(err.field.as_deref(), field, "{text}: {err}");
        }
    }

    #[test]
    fn invalid_utf8_is_refused() {
        let mut bad = br#"{"msgtype":1000,"message_id":"x","msg_ts":"1","sender":""#.to_vec();
        bad.extend_from_slice(&[0xff, 0xfe]);
        bad.extend_from_slice(br#""}"#);
        assert!(Message::parse(&bad, 1).is_err());
    }

    #[test]
    fn ndjson_reports_every_bad_line_and_keeps_none() {
        let body = format!("{TEXT}\n\n{{\"msgtype\":1}}\n{TEXT}\nnope\n");
        let (seen, errors) = parse_ndjson(body.as_bytes()).unwrap_err();
        assert_eq!(seen, 4);
        assert_eq!(errors.iter().map(|e| e.line).collect::<Vec<_>>(), vec![3, 5]);
        let ok = parse_ndjson(format!("{TEXT}\r\n{TEXT}").as_bytes()).unwrap();
        assert_eq!(ok.count, 2);
        assert_eq!(ok.bytes, format!("{TEXT}\n{TEXT}\n").into_bytes());
    }
}
