//! Coverage that must never stop silently: the bot kicked or banned from a room, and a room upgraded
//! to a replacement, which the bot follows (joining when the room lets it, and only a room that names
//! the upgraded one as its predecessor). A room the bot can no longer capture is a warning in the log,
//! a critical event and the `Matrix_Rooms_Lost` gauge, kept across restarts, until the bot is back in.

use std::collections::BTreeSet;

use matrix_sdk::ruma::api::client::state::get_state_event_for_key;
use matrix_sdk::ruma::events::StateEventType;
use matrix_sdk::ruma::{OwnedServerName, RoomId, ServerName};
use serde_json::Value;

use super::MatrixSource;
use super::translate::member_action;
use crate::error_chain::Chain;
use crate::events::{EventKind, announce};
use crate::metrics::Gauge;

/// What an event changes in what the bot can capture.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RoomChange {
    /// The bot joined (or joined again): the room is captured.
    BotJoined,
    /// Someone removed the bot: `how` is `kick` or `ban`.
    BotRemoved {
        how: &'static str,
        by: String,
        reason: Option<String>,
    },
    /// The room was replaced by `replacement` (`m.room.tombstone`); `via` are servers to join it by.
    Upgraded { replacement: String, via: Vec<String> },
}

/// The server part of a Matrix ID (`@user:server`, `!room:server`).
fn server_of(id: &str) -> Option<&str> {
    id.split_once(':').map(|(_, server)| server).filter(|s| !s.is_empty())
}

/// What `event` changes for a bot whose user ID is `bot`, if anything.
pub(crate) fn room_change(event: &Value, bot: &str) -> Option<RoomChange> {
    let text = |pointer: &str| event.pointer(pointer).and_then(Value::as_str);
    match text("/type")? {
        "m.room.member" if text("/state_key") == Some(bot) => match member_action(event) {
            "join" => Some(RoomChange::BotJoined),
            how @ ("kick" | "ban") => Some(RoomChange::BotRemoved {
                how,
                by: text("/sender").unwrap_or_default().to_owned(),
                reason: text("/content/reason").map(str::to_owned),
            }),
            _ => None,
        },
        "m.room.tombstone" if text("/state_key") == Some("") => {
            let replacement = text("/content/replacement_room")?.to_owned();
            let via = [text("/sender").and_then(server_of), server_of(&replacement)]
                .into_iter()
                .flatten()
                .map(str::to_owned)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            Some(RoomChange::Upgraded { replacement, via })
        }
        _ => None,
    }
}

impl MatrixSource {
    /// Acts on a change to what the bot captures, once the event's line is durable. What it lost is
    /// saved with the sync position.
    pub(super) async fn on_room_change(&mut self, room: &str, change: RoomChange) {
        match change {
            RoomChange::BotJoined => {
                if self.position.lost.remove(room).is_some() {
                    self.position_changed = true;
                    tracing::info!(room, "back in a room it had lost: capturing it again");
                }
            }
            RoomChange::BotRemoved { how, by, reason } => {
                // Who is in the room is learnt afresh when the bot is back.
                self.members.forget(room);
                let verb = if how == "ban" { "banned" } else { "kicked" };
                let why = reason.map(|r| format!(" (reason: {r})")).unwrap_or_default();
                self.lose(
                    room,
                    room,
                    format!("the bot was {verb} from Matrix room {room} by {by}{why}: nothing said there is captured until it is invited back"),
                );
            }
            RoomChange::Upgraded { replacement, via } => self.follow_upgrade(room, &replacement, &via).await,
        }
        self.publish_lost();
    }

    /// Sets the gauge; at start-up, says which rooms a previous run lost.
    pub(super) fn publish_lost(&self) {
        self.metrics
            .set(Gauge::MatrixRoomsLost, self.position.lost.len() as u64);
    }

    /// Counts `room` lost (standing for `origin`: one entry per origin, so a room upgraded again and
    /// again counts once) and raises it.
    fn lose(&mut self, room: &str, origin: &str, message: String) {
        self.position.lost.retain(|_, o| o != origin);
        self.position.lost.insert(room.to_owned(), origin.to_owned());
        self.position_changed = true;
        announce!(self.events, tracing::Level::WARN, EventKind::MatrixRoomLost, message);
    }

    /// Joins the room that replaced `room`, if it says it did (its creation names `room` as its
    /// predecessor: otherwise anyone able to send a tombstone could send the bot into any room). Its
    /// history, from its creation, is then read like any joined room's.
    async fn follow_upgrade(&mut self, room: &str, replacement: &str, via: &[String]) {
        let lost = |why: String| {
            format!(
                "Matrix room {room} was upgraded to {replacement}, which the bot cannot follow ({why}): invite the bot to {replacement}, or nothing said there is captured"
            )
        };
        let Ok(target) = <&RoomId>::try_from(replacement) else {
            return self.lose(replacement, room, lost("not a room ID".into()));
        };
        let via: Vec<OwnedServerName> = via.iter().filter_map(|s| ServerName::parse(s).ok()).collect();
        let joined = match self.client.join_room_by_id_or_alias(target.into(), &via).await {
            Ok(joined) => joined,
            Err(e) => return self.lose(replacement, room, lost(format!("cannot join: {e}", e = Chain(&e)))),
        };
        match self.predecessor_of(target).await {
            Some(p) if p == room => {
                tracing::info!(
                    room,
                    replacement,
                    "the room was upgraded: joined its replacement, which is captured from its start"
                );
                self.followed.insert(replacement.to_owned());
                if self.position.lost.remove(replacement).is_some() {
                    self.position_changed = true;
                }
            }
            named => {
                self.refused.insert(replacement.to_owned());
                if let Err(e) = joined.leave().await {
                    tracing::warn!(room = replacement, error = %Chain(&e), "cannot leave a room that is no replacement");
                }
                let why = match named {
                    Some(p) => format!("it names {p} as its predecessor, not this room: left it, not captured"),
                    None => "its creation names no predecessor: left it, not captured".to_owned(),
                };
                self.lose(replacement, room, lost(why));
            }
        }
    }

    /// The room a room's creation names as its predecessor (`m.room.create`'s `predecessor`).
    async fn predecessor_of(&self, room: &RoomId) -> Option<String> {
        let request =
            get_state_event_for_key::v3::Request::new(room.to_owned(), StateEventType::RoomCreate, String::new());
        let response = self.client.send(request).await.ok()?;
        let content: Value = serde_json::from_str(response.event_or_content.get()).ok()?;
        let content = content.get("content").unwrap_or(&content);
        content
            .pointer("/predecessor/room_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kicks_bans_joins_and_upgrades_are_told_apart() {
        let member = |sender: &str, membership: &str, prev: &str| {
            json!({ "type": "m.room.member", "sender": sender, "state_key": "@bot:hs",
                    "content": { "membership": membership, "reason": "spam" },
                    "unsigned": { "prev_content": { "membership": prev } } })
        };
        assert_eq!(
            room_change(&member("@bot:hs", "join", "invite"), "@bot:hs"),
            Some(RoomChange::BotJoined)
        );
        assert_eq!(
            room_change(&member("@mod:hs", "leave", "join"), "@bot:hs"),
            Some(RoomChange::BotRemoved {
                how: "kick",
                by: "@mod:hs".into(),
                reason: Some("spam".into())
            })
        );
        assert!(matches!(
            room_change(&member("@mod:hs", "ban", "join"), "@bot:hs"),
            Some(RoomChange::BotRemoved { how: "ban", .. })
        ));
        assert_eq!(
            room_change(&member("@bot:hs", "leave", "join"), "@bot:hs"),
            None,
            "leaving by itself"
        );
        assert_eq!(
            room_change(&member("@mod:hs", "leave", "join"), "@other:hs"),
            None,
            "someone else kicked"
        );
        let tombstone = json!({ "type": "m.room.tombstone", "sender": "@a:one", "state_key": "",
                                "content": { "replacement_room": "!new:two", "body": "upgraded" } });
        assert_eq!(
            room_change(&tombstone, "@bot:hs"),
            Some(RoomChange::Upgraded {
                replacement: "!new:two".into(),
                via: vec!["one".into(), "two".into()]
            })
        );
    }
}
