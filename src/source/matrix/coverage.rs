//! Coverage that must never stop silently: the bot kicked or banned from a room, and a room upgraded
//! to a replacement, which the bot follows (joining when the room lets it). A room the bot can no
//! longer capture is a warning in the log, a critical event and the `Matrix_Rooms_Lost` gauge, until
//! the bot is back in it.

use std::collections::BTreeSet;

use matrix_sdk::ruma::{OwnedServerName, RoomId, RoomOrAliasId, ServerName};
use serde_json::Value;

use super::MatrixSource;
use super::translate::member_action;
use crate::events::{EventKind, announce};
use crate::metrics::Gauge;

/// What an event changes in what the bot can capture.
#[derive(Debug, PartialEq, Eq)]
pub enum RoomChange {
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
pub fn room_change(event: &Value, bot: &str) -> Option<RoomChange> {
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
    /// Acts on a change to what the bot captures, once the event's line is durable.
    pub(super) async fn on_room_change(&mut self, room: &str, change: RoomChange) {
        match change {
            RoomChange::BotJoined => {
                if self.lost.remove(room) {
                    tracing::info!(room, "back in a room it had lost: capturing it again");
                }
            }
            RoomChange::BotRemoved { how, by, reason } => {
                let verb = if how == "ban" { "banned" } else { "kicked" };
                let why = reason.map(|r| format!(" (reason: {r})")).unwrap_or_default();
                self.lose(
                    room,
                    format!("the bot was {verb} from Matrix room {room} by {by}{why}: nothing said there is captured until it is invited back"),
                );
            }
            RoomChange::Upgraded { replacement, via } => self.follow_upgrade(room, &replacement, &via).await,
        }
        self.metrics.set(Gauge::MatrixRoomsLost, self.lost.len() as u64);
    }

    fn lose(&mut self, room: &str, message: String) {
        self.lost.insert(room.to_owned());
        announce!(self.events, tracing::Level::WARN, EventKind::MatrixRoomLost, message);
    }

    /// Joins the room that replaced `room`. The new room's history (from its creation) is then read
    /// like any joined room's.
    async fn follow_upgrade(&mut self, room: &str, replacement: &str, via: &[String]) {
        let target = <&RoomOrAliasId>::try_from(replacement);
        let via: Vec<OwnedServerName> = via.iter().filter_map(|s| ServerName::parse(s).ok()).collect();
        let joined = match target {
            Ok(target) => self
                .client
                .join_room_by_id_or_alias(target, &via)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(format!("{replacement} is no room ID ({e})")),
        };
        match joined {
            Ok(_) => {
                tracing::info!(room, replacement, "the room was upgraded: joined its replacement, which is captured from its start");
                if let Ok(id) = <&RoomId>::try_from(replacement) {
                    self.lost.remove(id.as_str());
                }
            }
            Err(e) => self.lose(
                replacement,
                format!("Matrix room {room} was upgraded to {replacement}, which the bot cannot join ({e}): invite the bot to {replacement}, or nothing said there is captured"),
            ),
        }
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
