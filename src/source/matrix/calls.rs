//! A call as it goes: Matrix sends its invite, answers and hang-up as separate events, and the
//! original's call message has room for its start, end, duration and who took part. Each call line
//! gets what is known by then; the hang-up (or rejection) line has all of it.

use std::collections::{BTreeSet, HashMap, VecDeque};

use chrono::DateTime;
use serde_json::{Value, json};

use super::translate::iso_time;
use crate::message::{MSGTYPE_CALL, Message};

/// Calls followed at most; beyond this the oldest unfinished is forgotten (its end line then lacks
/// the start).
const CAPACITY: usize = 1_000;

struct Call {
    start_ms: i64,
    who: BTreeSet<String>,
}

#[derive(Default)]
pub(crate) struct Calls {
    open: HashMap<String, Call>,
    order: VecDeque<String>,
}

impl Calls {
    /// Adds `call.start`, `call.who` and, at its end, `call.end` and `call.duration_secs` to a call
    /// line (`event` is its Matrix event).
    pub fn note(&mut self, message: &mut Message, event: &Value) {
        if message.msgtype() != MSGTYPE_CALL {
            return;
        }
        let call = message.get("call");
        let text = |key: &str| call.and_then(|c| c.get(key)).and_then(Value::as_str).map(str::to_owned);
        let (Some(status), Some(call_id)) = (text("status"), text("call_id")) else {
            return;
        };
        // A call is its room's: another room's signals under the same ID are another call.
        let room = message.get("vgroupid").and_then(Value::as_str).unwrap_or_default();
        let id = format!("{room}\0{call_id}");
        let at = event
            .get("origin_server_ts")
            .and_then(Value::as_i64)
            .unwrap_or_default();
        let sender = event
            .get("sender")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if status == "invite" && !self.open.contains_key(&id) {
            self.open.insert(
                id.clone(),
                Call {
                    start_ms: at,
                    who: BTreeSet::new(),
                },
            );
            self.order.push_back(id.clone());
            if self.order.len() > CAPACITY
                && let Some(old) = self.order.pop_front()
            {
                self.open.remove(&old);
            }
        }
        let ended = matches!(status.as_str(), "hangup" | "reject");
        let Some(call) = self.open.get_mut(&id) else { return };
        call.who.insert(sender);
        let time = |ms: i64| DateTime::from_timestamp_millis(ms).map(iso_time);
        message.set_in("call", "start", json!(time(call.start_ms)));
        message.set_in("call", "who", json!(call.who));
        if ended {
            message.set_in("call", "end", json!(time(at)));
            message.set_in("call", "duration_secs", json!((at - call.start_ms) as f64 / 1000.0));
            self.open.remove(&id);
            self.order.retain(|o| *o != id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::matrix::translate::{Context, Delivery, translate};

    fn call_line(calls: &mut Calls, kind: &str, sender: &str, at: i64) -> Value {
        let event = json!({ "type": kind, "sender": sender, "event_id": format!("${kind}"), "origin_server_ts": at,
                            "content": { "call_id": "c1", "version": 1 } });
        let mut t = translate(&Context::default(), &event, &Delivery::Plain)
            .unwrap()
            .remove(0);
        calls.note(&mut t.message, &event);
        t.message.get("call").cloned().unwrap()
    }

    #[test]
    fn the_end_of_a_call_has_its_start_duration_and_who() {
        let mut calls = Calls::default();
        let start = 1_700_000_000_000;
        let invite = call_line(&mut calls, "m.call.invite", "@a:hs", start);
        assert_eq!(invite["who"], json!(["@a:hs"]));
        call_line(&mut calls, "m.call.answer", "@b:hs", start + 2_000);
        let end = call_line(&mut calls, "m.call.hangup", "@a:hs", start + 62_500);
        assert_eq!(end["duration_secs"], 62.5);
        assert_eq!(end["who"], json!(["@a:hs", "@b:hs"]));
        assert_eq!(end["start"], "2023-11-14 22:13:20.000");
        assert_eq!(end["end"], "2023-11-14 22:14:22.500");
        // Ended: a stray hang-up of the same call adds nothing.
        assert!(
            call_line(&mut calls, "m.call.hangup", "@b:hs", start + 70_000)
                .get("start")
                .is_none()
        );
    }
}
