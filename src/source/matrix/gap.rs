//! A gap in a room's timeline (more events than one sync carries), read back to the last event
//! captured.

use matrix_sdk::Room;
use matrix_sdk::deserialized_responses::TimelineEvent;
use matrix_sdk::ruma::api::Direction;
use matrix_sdk::ruma::api::client::message::get_message_events;
use matrix_sdk::ruma::events::{AnySyncMessageLikeEvent, AnySyncTimelineEvent, AnyTimelineEvent, SyncMessageLikeEvent};
use matrix_sdk::ruma::serde::Raw;
use serde_json::Value;
use tokio::task::JoinHandle;

use super::{MAX_READS_PER_PAGE, MatrixError, PAGE};

/// The part of a room's timeline a limited sync skipped: from its `prev_batch` back to the last event
/// captured (or the room's beginning). Found by paging back, keeping the pages' bounds and the newest
/// pages' events up to [`KEPT_BYTES`], and then read forward a page at a time: a gap that fits is
/// fetched and decrypted once, and a longer one costs that much memory, its older pages being
/// fetched again when their turn comes. A kept page is decrypted while the next one is fetched.
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
        let (mut decrypting, mut kept_bytes) = (Vec::new(), 0);
        'pages: while let Some(Some(from)) = bounds.last().cloned() {
            let page = fetch(room, Direction::Backward, Some(from), None).await?;
            if page.chunk.is_empty() {
                break;
            }
            bounds.push(page.end);
            kept_bytes += page.chunk.iter().map(|e| e.json().get().len()).sum::<usize>();
            let keep = kept_bytes <= KEPT_BYTES;
            let mut gap_events = Vec::new();
            let mut reached = false;
            for event in page.chunk {
                if stop_at.is_some() && event.get_field::<String>("event_id").ok().flatten().as_deref() == stop_at {
                    reached = true;
                    break;
                }
                events += 1;
                if member_changes.len() < MAX_MEMBER_CHANGES
                    && let Some(change) = super::member_event(&event)
                {
                    member_changes.push(change);
                }
                if keep {
                    gap_events.push(event);
                }
            }
            gap_events.reverse();
            decrypting.push(keep.then(|| tokio::spawn(decrypt(room.clone(), gap_events))));
            if reached {
                break 'pages;
            }
        }
        let mut kept = Vec::with_capacity(decrypting.len());
        for task in decrypting {
            kept.push(decrypted(task).await?);
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
            let page = fetch(room, Direction::Forward, from, self.bounds[i].clone()).await?;
            let done = page.chunk.is_empty() || page.end.is_none() || page.end == self.bounds[i];
            events.extend(decrypt(room.clone(), page.chunk).await);
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

/// A page of the room's timeline as the homeserver sent it, not yet decrypted.
struct RawPage {
    chunk: Vec<Raw<AnyTimelineEvent>>,
    end: Option<String>,
}

/// One page of `/messages` (`PAGE` events at most).
async fn fetch(room: &Room, dir: Direction, from: Option<String>, to: Option<String>) -> Result<RawPage, MatrixError> {
    let mut request = get_message_events::v3::Request::new(room.room_id().to_owned(), dir);
    request.from = from;
    request.to = to;
    request.limit = PAGE.into();
    let response = room
        .client()
        .send(request)
        .await
        .map_err(|e| MatrixError::request(format!("cannot read room {}", room.room_id()), e.into()))?;
    Ok(RawPage {
        chunk: response.chunk,
        end: response.end,
    })
}

/// A page's events decrypted as `Room::messages` decrypts them (an original `m.room.encrypted` event
/// is decrypted, or kept as undecryptable; anything else is taken as it is), without the push rules
/// that call evaluates for every event: whom to notify is nothing the bot records.
async fn decrypt(room: Room, chunk: Vec<Raw<AnyTimelineEvent>>) -> Vec<TimelineEvent> {
    let room = &room;
    futures_util::future::join_all(chunk.into_iter().map(|event| async move {
        if let Ok(AnySyncTimelineEvent::MessageLike(AnySyncMessageLikeEvent::RoomEncrypted(
            SyncMessageLikeEvent::Original(_),
        ))) = event.deserialize_as::<AnySyncTimelineEvent>()
            && let Ok(decrypted) = room.decrypt_event(event.cast_ref_unchecked(), None).await
        {
            return decrypted;
        }
        TimelineEvent::from_plaintext(event.cast())
    }))
    .await
}

/// A kept page's events once its decryption is done.
async fn decrypted(task: Option<JoinHandle<Vec<TimelineEvent>>>) -> Result<Option<Vec<TimelineEvent>>, MatrixError> {
    match task {
        Some(task) => task
            .await
            .map(Some)
            .map_err(|e| MatrixError::state_from("a page of history could not be decrypted", e)),
        None => Ok(None),
    }
}
