//! What the bot knows of a room as it translates an event there: who is in it (followed from the
//! store and the events), who sent the event an edit or a redaction names, and whether the room hides
//! its history from the bot.

use matrix_sdk::ruma::events::room::history_visibility::HistoryVisibility;
use matrix_sdk::ruma::{EventId, OwnedRoomId};
use matrix_sdk::{Room, RoomMemberships};
use serde_json::Value;

use super::MatrixSource;
use super::coverage::RoomChange;
use super::translate::{self, Context, Delivery, Translated};
use crate::error_chain::Chain;

impl MatrixSource {
    /// An event's lines, given what the bot knows of its room; after the bot's own join, the line
    /// saying the room hides its earlier history from it, if it does.
    pub(super) fn translate(
        &mut self,
        room: Option<&Room>,
        room_id: &OwnedRoomId,
        json: &Value,
        delivery: &Delivery,
        target_sender: Option<String>,
        change: &Option<RoomChange>,
    ) -> Result<Vec<Translated>, crate::message::InvalidMessage> {
        let members = match delivery {
            // A late decryption: the members as the event arrived.
            Delivery::DecryptedLate(Some(members)) => Some(members.clone()),
            _ => self.members.of(room_id.as_str()),
        };
        let ctx = Context {
            room_id: room_id.as_str(),
            network: &self.network,
            bot: &self.bot,
            members: members.as_deref(),
            target_sender: target_sender.as_deref(),
        };
        let mut lines = translate::translate(&ctx, json, delivery)?;
        self.members.apply(room_id.as_str(), json);
        let hidden = match room.map(|r| r.history_visibility_or_default()) {
            Some(HistoryVisibility::Joined) => Some("joined"),
            Some(HistoryVisibility::Invited) => Some("invited"),
            _ => None,
        };
        // A replacement room the bot followed into at once hides nothing it missed.
        if *change == Some(RoomChange::BotJoined)
            && !self.followed.contains(room_id.as_str())
            && let Some(visibility) = hidden
        {
            lines.push(translate::history_hidden(&ctx, json, visibility)?);
        }
        Ok(lines)
    }

    /// Starts following a room's members before its first events are captured: the store's members
    /// (as of the latest sync) with `undo`'s membership changes (newest first) taken back.
    pub(super) async fn seed_members(&mut self, room: Option<&Room>, room_id: &str, undo: impl Iterator<Item = Value>) {
        let Some(room) = room.filter(|_| !self.members.knows(room_id)) else {
            return;
        };
        match room.members_no_sync(RoomMemberships::JOIN).await {
            Ok(now) => {
                let undo: Vec<Value> = undo.collect();
                self.members
                    .seed(room_id, now.iter().map(|m| m.user_id().to_string()), undo.iter());
            }
            Err(e) => {
                tracing::debug!(room = room_id, error = %Chain(&e), "room members unknown: lines go without them")
            }
        }
    }

    /// Who sent the event an edit replaces or a redaction removes: remembered, or asked of the
    /// homeserver. `None` if neither knows (the edit is then recorded as an edit).
    pub(super) async fn target_sender(&mut self, room: Option<&Room>, event: &Value) -> Option<String> {
        let target = match event.get("type").and_then(Value::as_str)? {
            "m.room.redaction" => event.get("redacts").or_else(|| event.pointer("/content/redacts")),
            "m.room.message" => {
                let relates = event.pointer("/content/m.relates_to")?;
                (relates.get("rel_type").and_then(Value::as_str) == Some("m.replace"))
                    .then(|| relates.get("event_id"))
                    .flatten()
            }
            _ => None,
        }?
        .as_str()?;
        if let Some(sender) = self.senders.get(target) {
            return Some(sender.clone());
        }
        let id = EventId::parse(target).ok()?;
        match room?.event(&id, None).await {
            Ok(found) => {
                let sender: String = found.raw().get_field("sender").ok().flatten()?;
                self.senders.insert(target.to_owned(), sender.clone());
                Some(sender)
            }
            Err(e) => {
                tracing::debug!(event = target, error = %Chain(&e), "cannot learn who sent the event an edit or redaction names");
                None
            }
        }
    }
}
