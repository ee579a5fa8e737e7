//! Events the bot could not decrypt when they arrived. Their lines are written at once (with the
//! reason), and the encrypted events are kept here with the Megolm session each needs: a sender's keys
//! travel as to-device messages, which can arrive after the room event (a slow or federated
//! homeserver, a sender that was offline). When a key arrives, its events are decrypted and written
//! again in full. Saved beside the sync position, only after the lines they belong to are durable.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::pin::Pin;

use futures_util::{FutureExt, Stream, StreamExt};
use matrix_sdk::Client;
use matrix_sdk::deserialized_responses::TimelineEventKind;
use matrix_sdk::ruma::events::room::encrypted::OriginalSyncRoomEncryptedEvent;
use matrix_sdk::ruma::serde::Raw;
use matrix_sdk::ruma::{OwnedRoomId, RoomId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::translate::Delivery;
use super::{MatrixError, MatrixSource, event_json};
use crate::error_chain::Chain;
use crate::source::Intake;

const FILE: &str = "undecrypted.json";
/// Events kept waiting for a key. Beyond this the oldest are given up: their lines stay written, with
/// the ciphertext and the reason, but are no longer retried.
pub(crate) const CAPACITY: usize = 1_000;
/// Start-ups at which a waiting event is tried again (its key may have come while the bot was
/// down). An event still undecryptable after this many, and [`GIVE_UP_AFTER_SECS`] after it came, is
/// given up: a key that never came by then (withheld, or its sender's device gone) is not worth a
/// retry and a warning at every start. Both must hold, so a crash loop gives nothing up early.
pub(crate) const START_TRIES: u32 = 3;
pub(crate) const GIVE_UP_AFTER_SECS: i64 = 24 * 3600;

/// One undecryptable event, as it arrived.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Pending {
    pub room_id: String,
    pub event_id: String,
    /// The Megolm session whose key decrypts it (`content.session_id`).
    pub session_id: String,
    pub event: Value,
    /// Start-ups that found it still waiting.
    #[serde(default)]
    pub starts: u32,
    /// When it came (Unix seconds; 0 in files of older versions: counted from their first load).
    #[serde(default)]
    pub first_seen: i64,
    /// The room's members as it came, for its line when it is decrypted.
    #[serde(default)]
    pub members: Option<Vec<String>>,
}

/// Which waiting events to try again.
#[derive(Debug, Default, PartialEq)]
enum Due {
    #[default]
    Nothing,
    /// Keys for these sessions arrived.
    Sessions(HashSet<String>),
    /// At start-up (keys may have arrived before a restart) or when key notices were missed.
    All,
}

#[derive(Debug, Default)]
pub(crate) struct Undecrypted {
    events: VecDeque<Pending>,
    due: Due,
    changed: bool,
}

impl Undecrypted {
    fn path(dir: &Path) -> PathBuf {
        dir.join(FILE)
    }

    /// Loads what a previous run left waiting; all of it is due, since its keys may have arrived since,
    /// except what has waited through [`START_TRIES`] start-ups already: that is given up.
    pub fn load(dir: &Path) -> Result<Self, MatrixError> {
        let path = Self::path(dir);
        let events: VecDeque<Pending> = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                MatrixError::state_from(
                    format!(
                        "{} is damaged; remove it (the events it names stay written, encrypted)",
                        path.display()
                    ),
                    e,
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => VecDeque::new(),
            Err(e) => return Err(MatrixError::io(&path, e)),
        };
        let before = events.len();
        let now = chrono::Utc::now().timestamp();
        let events: VecDeque<Pending> = events
            .into_iter()
            .map(|p| Pending {
                first_seen: if p.first_seen == 0 { now } else { p.first_seen },
                ..p
            })
            .filter(|p| p.starts < START_TRIES || now - p.first_seen < GIVE_UP_AFTER_SECS)
            .map(|p| Pending {
                starts: p.starts + 1,
                ..p
            })
            .collect();
        if events.len() < before {
            tracing::info!(
                events = before - events.len(),
                "gave up waiting for the keys of events still undecryptable after {START_TRIES} start-ups and a day; their lines stay as written (ciphertext and reason)"
            );
        }
        let due = if events.is_empty() { Due::Nothing } else { Due::All };
        Ok(Self {
            events,
            due,
            changed: before > 0,
        })
    }

    /// Keeps `event` (an `m.room.encrypted` event, which came when the room's members were `members`)
    /// to decrypt when its key arrives.
    pub fn push(&mut self, room_id: &str, event: &Value, members: Option<Vec<String>>) {
        let text = |pointer: &str| {
            event
                .pointer(pointer)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let (event_id, session_id) = (text("/event_id"), text("/content/session_id"));
        if event_id.is_empty() || self.events.iter().any(|p| p.event_id == event_id) {
            return;
        }
        self.events.push_back(Pending {
            room_id: room_id.to_owned(),
            event_id,
            session_id,
            event: event.clone(),
            starts: 0,
            first_seen: chrono::Utc::now().timestamp(),
            members,
        });
        if self.events.len() > CAPACITY
            && let Some(old) = self.events.pop_front()
        {
            tracing::warn!(room = %old.room_id, event = %old.event_id, "no key arrived for this event among the last {CAPACITY} undecryptable ones; its line stays encrypted and is no longer retried");
        }
        self.changed = true;
    }

    /// Notes that keys for `sessions` arrived.
    pub(crate) fn keys_arrived(&mut self, sessions: impl IntoIterator<Item = String>) {
        match &mut self.due {
            Due::All => {}
            Due::Sessions(due) => due.extend(sessions),
            Due::Nothing => self.due = Due::Sessions(sessions.into_iter().collect()),
        }
    }

    /// Key notices were missed (the notice queue overflowed): try everything.
    pub(crate) fn all_due(&mut self) {
        self.due = Due::All;
    }

    /// The waiting events worth trying now. They stay waiting until `decrypted` removes them.
    pub(crate) fn due(&self) -> Vec<Pending> {
        self.events
            .iter()
            .filter(|p| match &self.due {
                Due::Nothing => false,
                Due::All => true,
                Due::Sessions(s) => s.contains(&p.session_id),
            })
            .cloned()
            .collect()
    }

    /// `event_ids` are decrypted and their lines durable; what was due and is left waits for its key.
    pub fn decrypted(&mut self, event_ids: &HashSet<String>) {
        let before = self.events.len();
        self.events.retain(|p| !event_ids.contains(&p.event_id));
        self.changed |= self.events.len() != before;
        self.due = Due::Nothing;
    }

    /// The file's new contents, if anything changed since the last save.
    pub(crate) fn to_save(&self, dir: &Path) -> Result<Option<(PathBuf, Vec<u8>)>, MatrixError> {
        if !self.changed {
            return Ok(None);
        }
        let json = serde_json::to_vec(&self.events)
            .map_err(|e| MatrixError::state_from("cannot write the undecrypted events as JSON", e))?;
        Ok(Some((Self::path(dir), json)))
    }

    /// The last `to_save` reached the disk.
    pub fn saved(&mut self) {
        self.changed = false;
    }
}

/// Matrix-sdk's notices of room keys received (by to-device, backup or import): the sessions whose
/// keys arrived, or `None` when notices were missed (the queue overflowed).
type KeyNotices = Pin<Box<dyn Stream<Item = Option<Vec<String>>> + Send>>;

/// Subscribes to the key notices; `None` without end-to-end encryption.
pub(crate) async fn key_notices(client: &Client) -> Option<KeyNotices> {
    let stream = client.encryption().room_keys_received_stream().await?;
    Some(Box::pin(stream.map(|notice| {
        notice.ok().map(|keys| keys.into_iter().map(|k| k.session_id).collect())
    })))
}

impl MatrixSource {
    /// Takes in the key notices that arrived with the last sync (without waiting for more).
    pub(super) fn note_keys(&mut self, keys: Option<&mut KeyNotices>) {
        let Some(keys) = keys else { return };
        while let Some(Some(notice)) = keys.next().now_or_never() {
            match notice {
                Some(sessions) => self.undecrypted.keys_arrived(sessions),
                None => self.undecrypted.all_due(),
            }
        }
    }

    /// Decrypts the waiting events whose keys have arrived and writes each again in full (same
    /// `message_id`, `matrix.decrypted_late`). They stop waiting only once those lines are durable.
    pub(super) async fn decrypt_late(&mut self, intake: &Intake) -> Result<(), MatrixError> {
        let due = self.undecrypted.due();
        if due.is_empty() {
            return Ok(());
        }
        let mut rooms: BTreeMap<String, Vec<(Value, Delivery)>> = BTreeMap::new();
        let mut done = HashSet::new();
        for Pending {
            room_id,
            event_id,
            event,
            members,
            ..
        } in due
        {
            let Some(room) = RoomId::parse(&room_id).ok().and_then(|id| self.client.get_room(&id)) else {
                continue;
            };
            let Ok(raw) = serde_json::value::to_raw_value(&event) else {
                continue;
            };
            let raw: Raw<OriginalSyncRoomEncryptedEvent> = Raw::from_json(raw);
            match room.decrypt_event(&raw, None).await {
                Ok(decrypted) if matches!(decrypted.kind, TimelineEventKind::Decrypted(_)) => {
                    if let Some((json, _)) = event_json(&decrypted) {
                        rooms
                            .entry(room_id)
                            .or_default()
                            .push((json, Delivery::DecryptedLate(members)));
                        done.insert(event_id);
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(event = %event_id, error = %Chain(&e), "still cannot decrypt"),
            }
        }
        for (room_id, events) in rooms {
            let room_id = OwnedRoomId::try_from(room_id)
                .map_err(|e| MatrixError::state_from("a waiting event names no room", e))?;
            self.capture_room(&room_id, events, intake).await?;
        }
        if !done.is_empty() {
            tracing::info!(
                events = done.len(),
                "decrypted events whose keys arrived late; written again in full"
            );
        }
        self.undecrypted.decrypted(&done);
        self.save_undecrypted().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn encrypted(id: &str, session: &str) -> Value {
        json!({ "event_id": id, "type": "m.room.encrypted", "content": { "session_id": session, "ciphertext": "x" } })
    }

    #[test]
    fn events_wait_until_their_sessions_key_arrives() {
        let mut u = Undecrypted::default();
        u.push("!r", &encrypted("$a", "s1"), None);
        u.push("!r", &encrypted("$b", "s2"), None);
        u.push("!r", &encrypted("$a", "s1"), None);
        assert!(u.due().is_empty(), "nothing is due before a key arrives");
        u.keys_arrived(["s2".to_owned()]);
        let due: Vec<_> = u.due().into_iter().map(|p| p.event_id).collect();
        assert_eq!(due, ["$b"]);
        u.decrypted(&HashSet::from(["$b".to_owned()]));
        assert!(u.due().is_empty());
        u.all_due();
        let due: Vec<_> = u.due().into_iter().map(|p| p.event_id).collect();
        assert_eq!(due, ["$a"], "a repeat is kept once; $b is gone");
    }

    #[test]
    fn the_oldest_are_given_up_beyond_capacity() {
        let mut u = Undecrypted::default();
        for i in 0..=CAPACITY {
            u.push("!r", &encrypted(&format!("${i}"), "s"), None);
        }
        u.all_due();
        let due = u.due();
        assert_eq!(due.len(), CAPACITY);
        assert_eq!(due[0].event_id, "$1");
    }

    #[test]
    fn saves_and_loads_and_a_restart_retries_everything() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Undecrypted::load(dir.path()).unwrap().due().is_empty());
        let mut u = Undecrypted::default();
        assert!(u.to_save(dir.path()).unwrap().is_none(), "nothing changed");
        u.push("!r", &encrypted("$a", "s1"), None);
        let (path, bytes) = u.to_save(dir.path()).unwrap().unwrap();
        std::fs::write(path, bytes).unwrap();
        u.saved();
        assert!(u.to_save(dir.path()).unwrap().is_none());
        let loaded = Undecrypted::load(dir.path()).unwrap();
        assert_eq!(loaded.due().len(), 1);
        assert_eq!(loaded.due()[0].event_id, "$a");
        // Each start-up counts; after START_TRIES of them, if it came a day ago, the event is given up.
        for start in 1..=START_TRIES + 2 {
            let loaded = Undecrypted::load(dir.path()).unwrap();
            assert_eq!(loaded.due().len(), 1, "start {start}: still tried within the day");
            let (path, bytes) = loaded.to_save(dir.path()).unwrap().unwrap();
            std::fs::write(path, bytes).unwrap();
        }
        let mut old = Undecrypted::load(dir.path()).unwrap();
        old.events[0].first_seen -= GIVE_UP_AFTER_SECS;
        let (path, bytes) = old.to_save(dir.path()).unwrap().unwrap();
        std::fs::write(path, bytes).unwrap();
        assert!(Undecrypted::load(dir.path()).unwrap().due().is_empty(), "given up");
        std::fs::write(Undecrypted::path(dir.path()), b"[oops").unwrap();
        assert!(matches!(Undecrypted::load(dir.path()), Err(MatrixError::State { .. })));
    }
}
