//! Who is in each room as its events go by, so that every message line can record the room's
//! members at that moment (as Wickr's bot does since 6.18) and a direct room its `receiver`.
//!
//! matrix-sdk's store knows a room's members only as of the latest sync; the events of that sync
//! come before it. So a room is first seeded from the store with the sync's own membership changes
//! undone (newest first, from each event's `unsigned.prev_content`), and from then on follows its
//! membership events forward, in the order they are captured.

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;

#[derive(Debug, Default)]
pub(crate) struct Members {
    rooms: HashMap<String, BTreeSet<String>>,
}

/// A membership event's user, and whether it leaves them joined (`None` for any other event).
fn change(event: &Value) -> Option<(&str, bool, bool)> {
    if event.get("type").and_then(Value::as_str) != Some("m.room.member") {
        return None;
    }
    let text = |pointer: &str| event.pointer(pointer).and_then(Value::as_str);
    let user = text("/state_key")?;
    let joined = text("/content/membership") == Some("join");
    let was_joined =
        text("/unsigned/prev_content/membership").or_else(|| text("/prev_content/membership")) == Some("join");
    Some((user, was_joined, joined))
}

impl Members {
    pub fn knows(&self, room: &str) -> bool {
        self.rooms.contains_key(room)
    }

    /// Starts following `room`: `now` are its joined members after the events about to be captured,
    /// and `undo` those events' membership changes, newest first (anything else is passed over).
    pub fn seed<'a>(
        &mut self,
        room: &str,
        now: impl IntoIterator<Item = String>,
        undo: impl Iterator<Item = &'a Value>,
    ) {
        let mut members: BTreeSet<String> = now.into_iter().collect();
        for (user, was_joined, _) in undo.filter_map(change) {
            if was_joined {
                members.insert(user.to_owned());
            } else {
                members.remove(user);
            }
        }
        self.rooms.insert(room.to_owned(), members);
    }

    /// Stops following `room` (the bot left it): its members are learnt afresh when it is back.
    pub fn forget(&mut self, room: &str) {
        self.rooms.remove(room);
    }

    /// Follows a captured event (a membership change moves the set; anything else leaves it).
    pub(crate) fn apply(&mut self, room: &str, event: &Value) {
        let (Some((user, _, joined)), Some(members)) = (change(event), self.rooms.get_mut(room)) else {
            return;
        };
        if joined {
            members.insert(user.to_owned());
        } else {
            members.remove(user);
        }
    }

    /// The room's members, sorted; `None` for a room not followed.
    pub fn of(&self, room: &str) -> Option<Vec<String>> {
        self.rooms.get(room).map(|m| m.iter().cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn member(user: &str, membership: &str, prev: Option<&str>) -> Value {
        let mut e = json!({ "type": "m.room.member", "state_key": user, "content": { "membership": membership } });
        if let Some(prev) = prev {
            e["unsigned"] = json!({ "prev_content": { "membership": prev } });
        }
        e
    }

    #[test]
    fn a_seed_undoes_the_batch_and_then_follows_it() {
        let text = json!({ "type": "m.room.message", "content": { "body": "hi" } });
        let batch = [
            text.clone(),
            member("@carol:hs", "join", Some("invite")),
            text.clone(),
            member("@bob:hs", "leave", Some("join")),
        ];
        let mut m = Members::default();
        assert!(!m.knows("!r"));
        // The store, after the sync: alice and carol.
        m.seed(
            "!r",
            ["@alice:hs".to_owned(), "@carol:hs".to_owned()],
            batch.iter().rev(),
        );
        assert_eq!(m.of("!r").unwrap(), ["@alice:hs", "@bob:hs"], "as before the batch");
        let mut seen = Vec::new();
        for e in &batch {
            seen.push(m.of("!r").unwrap());
            m.apply("!r", e);
        }
        assert_eq!(seen[2], ["@alice:hs", "@bob:hs", "@carol:hs"]);
        assert_eq!(m.of("!r").unwrap(), ["@alice:hs", "@carol:hs"]);
        assert_eq!(m.of("!other"), None);
        m.forget("!r");
        assert!(!m.knows("!r"));
    }
}
