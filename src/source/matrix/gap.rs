//! A gap in a room's timeline (more events than one sync carries), read back to the last event
//! captured.

use matrix_sdk::Room;
use matrix_sdk::deserialized_responses::TimelineEvent;
use matrix_sdk::room::MessagesOptions;
use serde_json::Value;

use super::{MAX_READS_PER_PAGE, MatrixError, PAGE};

/// The part of a room's timeline a limited sync skipped: from its `prev_batch` back to the last event
/// captured (or the room's beginning). Found by paging back, keeping only the pages' bounds, and then
/// read forward a page at a time, so a gap of any length costs one page of memory.
pub(crate) struct Gap {
    /// Page bounds, newest first: page `i` lies between `bounds[i + 1]` (older; `None` is the room's
    /// beginning) and `bounds[i]`.
    bounds: Vec<Option<String>>,
    stop_at: Option<String>,
    /// The gap's membership events, newest first (noted on the way back, at most
    /// `MAX_MEMBER_CHANGES`): who was in the room before the gap is the members after it with these
    /// undone.
    pub member_changes: Vec<Value>,
}

/// Membership events a gap keeps for working out who was in the room before it; beyond this the
/// members at its start are taken as they are at its end.
const MAX_MEMBER_CHANGES: usize = 10_000;

impl Gap {
    pub async fn find(room: &Room, from: &str, stop_at: Option<&str>) -> Result<Gap, MatrixError> {
        let mut bounds = vec![Some(from.to_owned())];
        let mut events = 0usize;
        let mut member_changes = Vec::new();
        'pages: while let Some(Some(from)) = bounds.last().cloned() {
            let mut options = MessagesOptions::backward().from(from.as_str());
            options.limit = PAGE.into();
            let page = room
                .messages(options)
                .await
                .map_err(|e| MatrixError::request(format!("cannot page back room {}", room.room_id()), e))?;
            if page.chunk.is_empty() {
                break;
            }
            bounds.push(page.end.clone());
            for event in &page.chunk {
                if stop_at.is_some() && event.event_id().as_deref().map(|e| e.as_str()) == stop_at {
                    break 'pages;
                }
                events += 1;
                if member_changes.len() < MAX_MEMBER_CHANGES
                    && let Some(change) = super::member_event(event)
                {
                    member_changes.push(change);
                }
            }
        }
        tracing::info!(
            room = %room.room_id(),
            events,
            back_to = stop_at.unwrap_or("the room's beginning"),
            "read the room's history across a gap in its timeline"
        );
        Ok(Gap {
            bounds,
            stop_at: stop_at.map(str::to_owned),
            member_changes,
        })
    }

    pub fn pages(&self) -> usize {
        self.bounds.len() - 1
    }

    /// The events of page `n` counting from the oldest, oldest first; the oldest page without the
    /// events up to the last one captured.
    pub async fn read(&self, room: &Room, n: usize) -> Result<Vec<TimelineEvent>, MatrixError> {
        let i = self.pages() - 1 - n;
        let mut events = Vec::new();
        let mut from = self.bounds[i + 1].clone();
        // Usually one request; more if the range grew meanwhile (history backfilled over federation).
        for _ in 0..MAX_READS_PER_PAGE {
            let mut options = MessagesOptions::forward().from(from.as_deref());
            options.to = self.bounds[i].clone();
            options.limit = PAGE.into();
            let page = room
                .messages(options)
                .await
                .map_err(|e| MatrixError::request(format!("cannot read room {}", room.room_id()), e))?;
            let done = page.chunk.is_empty() || page.end.is_none() || page.end == self.bounds[i];
            events.extend(page.chunk);
            if done {
                break;
            }
            from = page.end;
        }
        if n == 0
            && let Some(stop_at) = &self.stop_at
            && let Some(at) = events
                .iter()
                .position(|e| e.event_id().as_deref().map(|e| e.as_str()) == Some(stop_at.as_str()))
        {
            events.drain(..=at);
        }
        Ok(events)
    }
}
