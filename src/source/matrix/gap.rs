//! A gap in a room's timeline (more events than one sync carries), read back to the last event
//! captured.

use matrix_sdk::Room;
use matrix_sdk::deserialized_responses::TimelineEvent;
use matrix_sdk::room::MessagesOptions;
use serde_json::Value;

use super::{MAX_READS_PER_PAGE, MatrixError, PAGE};

/// The part of a room's timeline a limited sync skipped: from its `prev_batch` back to the last event
/// captured (or the room's beginning). Found by paging back, keeping the pages' bounds and the newest
/// pages' events up to [`KEPT_BYTES`], and then read forward a page at a time: a gap that fits is
/// fetched and decrypted once, and a longer one costs that much memory, its older pages being
/// fetched again when their turn comes.
pub(crate) struct Gap {
    /// Page bounds, newest first: page `i` lies between `bounds[i + 1]` (older; `None` is the room's
    /// beginning) and `bounds[i]`.
    bounds: Vec<Option<String>>,
    stop_at: Option<String>,
    /// The events of page `i` (as in `bounds`), oldest first, for the newest pages: taken by `read`.
    kept: Vec<Option<Vec<TimelineEvent>>>,
    /// The gap's membership events, newest first (noted on the way back, at most
    /// `MAX_MEMBER_CHANGES`): who was in the room before the gap is the members after it with these
    /// undone.
    pub member_changes: Vec<Value>,
}

/// Membership events a gap keeps for working out who was in the room before it; beyond this the
/// members at its start are taken as they are at its end.
const MAX_MEMBER_CHANGES: usize = 10_000;

/// Event text (as received) of a gap's newest pages kept from the way back for the way forward: a
/// bot that was down for a while catches up without reading and decrypting its gap twice. Measured:
/// catch-up of 1,000 encrypted messages at twice the rate it had when every page was read twice
/// (docs/benchmarks.md).
const KEPT_BYTES: usize = 8 << 20;

impl Gap {
    pub async fn find(room: &Room, from: &str, stop_at: Option<&str>) -> Result<Gap, MatrixError> {
        let mut bounds = vec![Some(from.to_owned())];
        let mut events = 0usize;
        let mut member_changes = Vec::new();
        let (mut kept, mut kept_bytes) = (Vec::new(), 0);
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
            let page_bytes: usize = page.chunk.iter().map(|e| e.raw().json().get().len()).sum();
            kept_bytes += page_bytes;
            let mut chunk = (kept_bytes <= KEPT_BYTES).then(Vec::new);
            for event in &page.chunk {
                if stop_at.is_some() && event.event_id().as_deref().map(|e| e.as_str()) == stop_at {
                    kept.push(chunk.map(oldest_first));
                    break 'pages;
                }
                if let Some(chunk) = chunk.as_mut() {
                    chunk.push(event.clone());
                }
                events += 1;
                if member_changes.len() < MAX_MEMBER_CHANGES
                    && let Some(change) = super::member_event(event)
                {
                    member_changes.push(change);
                }
            }
            kept.push(chunk.map(oldest_first));
        }
        tracing::info!(
            room = %room.room_id(),
            events,
            pages = kept.len(),
            pages_kept = kept.iter().filter(|p| p.is_some()).count(),
            back_to = stop_at.unwrap_or("the room's beginning"),
            "read the room's history across a gap in its timeline"
        );
        Ok(Gap {
            bounds,
            stop_at: stop_at.map(str::to_owned),
            kept,
            member_changes,
        })
    }

    pub fn pages(&self) -> usize {
        self.bounds.len() - 1
    }

    /// The events of page `n` counting from the oldest, oldest first; the oldest page without the
    /// events up to the last one captured. A page kept from the way back is handed out (once).
    pub async fn read(&mut self, room: &Room, n: usize) -> Result<Vec<TimelineEvent>, MatrixError> {
        let i = self.pages() - 1 - n;
        if let Some(events) = self.kept.get_mut(i).and_then(Option::take) {
            return Ok(events);
        }
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

/// A backward page's events (newest first), oldest first.
fn oldest_first(mut events: Vec<TimelineEvent>) -> Vec<TimelineEvent> {
    events.reverse();
    events
}
