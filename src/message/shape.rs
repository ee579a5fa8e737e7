//! The format's rules, in one place: what a message's top-level fields must be. Filled from a parse
//! of a producer's text or from an object a source built, then checked.

use serde_json::Value;

use super::InvalidMessage;

/// A JSON value's kind, as an error names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

impl Kind {
    pub(super) fn of(value: &Value) -> Kind {
        match value {
            Value::Null => Kind::Null,
            Value::Bool(_) => Kind::Bool,
            Value::Number(_) => Kind::Number,
            Value::String(_) => Kind::String,
            Value::Array(_) => Kind::Array,
            Value::Object(_) => Kind::Object,
        }
    }

    pub(super) fn describe(self) -> &'static str {
        match self {
            Kind::Null => "null",
            Kind::Bool => "a boolean",
            Kind::Number => "a number",
            Kind::String => "a string",
            Kind::Array => "an array",
            Kind::Object => "an object",
        }
    }
}

/// The fields a `msgtype` needs an object in, per the WickrIO format.
const OBJECT_FIELDS: [&str; 5] = ["file", "call", "location", "edit", "control"];
/// The fields every message needs as strings.
const STRING_FIELDS: [&str; 3] = ["message_id", "msg_ts", "sender"];

/// The nested object a `msgtype` carries.
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

/// What was seen of the fields the rules are about.
#[derive(Debug, Default)]
pub(super) struct Shape {
    msgtype: Option<(Kind, Option<i64>)>,
    strings: [Option<Kind>; 3],
    objects: [Option<Kind>; 5],
}

impl Shape {
    /// Whether the rules look at a field of this name (others are kept, never inspected).
    pub(super) fn cares_about(name: &str) -> bool {
        name == "msgtype" || STRING_FIELDS.contains(&name) || OBJECT_FIELDS.contains(&name)
    }

    /// Records a top-level field: its kind, and its value if it is an integer.
    pub(super) fn saw(&mut self, name: &str, kind: Kind, int: Option<i64>) {
        if name == "msgtype" {
            self.msgtype = Some((kind, int));
        } else if let Some(i) = STRING_FIELDS.iter().position(|f| *f == name) {
            self.strings[i] = Some(kind);
        } else if let Some(i) = OBJECT_FIELDS.iter().position(|f| *f == name) {
            self.objects[i] = Some(kind);
        }
    }

    /// Applies the rules; returns the `msgtype`.
    pub(super) fn check(&self, line: usize) -> Result<i64, InvalidMessage> {
        let invalid = |field: &str, problem: String| InvalidMessage::new(line, Some(field), problem);
        let msgtype = match self.msgtype {
            None => return Err(invalid("msgtype", "missing".into())),
            Some((_, Some(n))) => n,
            Some((kind, None)) => {
                return Err(invalid(
                    "msgtype",
                    format!("must be an integer, got {}", kind.describe()),
                ));
            }
        };
        for (name, seen) in STRING_FIELDS.iter().zip(self.strings) {
            match seen {
                None => return Err(invalid(name, "missing".into())),
                Some(Kind::String) => {}
                Some(kind) => return Err(invalid(name, format!("must be a string, got {}", kind.describe()))),
            }
        }
        if let Some(name) = required_object(msgtype) {
            let i = OBJECT_FIELDS.iter().position(|f| *f == name).unwrap_or_default();
            match self.objects[i] {
                Some(Kind::Object) => {}
                None => {
                    return Err(invalid(
                        name,
                        format!("missing: msgtype {msgtype} needs a `{name}` object"),
                    ));
                }
                Some(kind) => return Err(invalid(name, format!("must be an object, got {}", kind.describe()))),
            }
        }
        Ok(msgtype)
    }
}
