//! The Matrix source: the bot is a user on a homeserver, a member of every room it is invited to, and
//! writes every room event it sees (decrypted, where the room is end-to-end encrypted) as a line in the
//! original's format, with media saved as attachments.
//!
//! Capture is a loop of `/sync` calls. A sync's events are written and fsync'd before its `next_batch`
//! is saved, so a restart (or kill -9) resumes from a point whose events are all on disk: nothing is
//! lost, at worst the events of one sync are written twice. matrix-sdk keeps its state and crypto store
//! (the device's keys and the rooms' Megolm sessions) in the state directory, encrypted. An event whose
//! key has not arrived is written with the reason, kept, and written again in full once the key comes.

mod calls;
mod context;
mod coverage;
mod gap;
mod login;
mod media;
mod members;
mod position;

pub mod translate;
mod undecrypted;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use matrix_sdk::Client;
use matrix_sdk::config::{SyncSettings, SyncToken};
use matrix_sdk::deserialized_responses::{TimelineEvent, TimelineEventKind};
use matrix_sdk::ruma::OwnedRoomId;
use matrix_sdk::ruma::api::client::filter::FilterDefinition;
use matrix_sdk::ruma::api::client::sync::sync_events::v3::Filter;
use matrix_sdk::ruma::api::error::ErrorKind;
use matrix_sdk::ruma::events::room::MediaSource;
use matrix_sdk::ruma::serde::Raw;
use matrix_sdk::sync::Timeline;
use serde_json::Value;

use crate::config::MatrixConfig;
use crate::durable;
use crate::error_chain::Chain;
use crate::events::Events;
use crate::identity::Identity;
use crate::message::{Lines, Message};
use crate::metrics::{Counter, Metrics};
use crate::source::Intake;
use crate::source::recent::Recent;
use crate::spool::{PartialAttachment, SpoolError, safe_attachment_name};
use calls::Calls;
use gap::Gap;
use media::NotSaved;
use members::Members;
use position::Position;
use translate::{Delivery, MediaRef, Translated};
use undecrypted::Undecrypted;

/// How long one `/sync` waits on the homeserver for something new.
const SYNC_WAIT: Duration = Duration::from_secs(30);
/// Events per room per sync, and per page when filling a gap; a room with more is paged back.
const PAGE: u32 = 100;
/// Event IDs remembered to skip repeats (e.g. a sync read again after an error).
const SEEN_CAPACITY: usize = 100_000;
/// Forward requests for one page of a gap at most (each `PAGE` events): a bound on what one page
/// can grow to between the backward pass and the forward one.
const MAX_READS_PER_PAGE: usize = 100;
/// Tries of a media download before its message is written without the file.
const MEDIA_TRIES: u32 = 4;

/// Each says what failed; its cause, when it has one, is kept whole as `source()`.
#[derive(Debug, thiserror::Error)]
pub enum MatrixError {
    /// The homeserver refused the login or the password change: an operator must act.
    #[error("{0}")]
    Refused(String),
    /// The bot's own state (its files, its account) is not as it must be.
    #[error("{what}")]
    State {
        what: String,
        #[source]
        cause: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("cannot open the Matrix client store in {path}")]
    Store {
        path: PathBuf,
        #[source]
        error: Box<matrix_sdk::ClientBuildError>,
    },
    #[error("Matrix request failed: {what}")]
    Request {
        what: String,
        #[source]
        error: Box<matrix_sdk::Error>,
    },
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

impl MatrixError {
    fn state(what: impl Into<String>) -> Self {
        MatrixError::State {
            what: what.into(),
            cause: None,
        }
    }

    fn state_from(what: impl Into<String>, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        MatrixError::State {
            what: what.into(),
            cause: Some(Box::new(cause)),
        }
    }

    fn request(what: impl Into<String>, error: matrix_sdk::Error) -> Self {
        Self::Request {
            what: what.into(),
            error: Box::new(error),
        }
    }

    fn io(path: &Path, error: std::io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            error,
        }
    }
}

/// A logged-in client, ready to capture.
pub struct MatrixSource {
    client: Client,
    dir: PathBuf,
    position: Position,
    /// Events captured lately (a repeat is skipped), and who sent them.
    seen: Recent<()>,
    senders: Recent<String>,
    undecrypted: Undecrypted,
    members: Members,
    calls: Calls,
    /// The bot's user ID, and its homeserver's name (the `network` of every line).
    bot: String,
    network: String,
    /// The position holds what is not yet saved (a room lost or regained).
    position_changed: bool,
    /// Rooms a tombstone sent the bot into that were no replacement: left, and never captured.
    refused: BTreeSet<String>,
    /// Replacement rooms the bot joined following an upgrade: nothing was said there before it came.
    followed: BTreeSet<String>,
    events: Events,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for MatrixSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MatrixSource")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Opens the encrypted store in `<state_dir>/matrix` and logs in, changing the homeserver's password
/// when this start-up generated or rotated the bot's. Retries while the homeserver is unreachable.
pub async fn connect(
    config: &MatrixConfig,
    state_dir: &Path,
    identity: &Identity,
) -> Result<MatrixSource, MatrixError> {
    let dir = state_dir.join("matrix");
    std::fs::create_dir_all(&dir).map_err(|e| MatrixError::io(&dir, e))?;
    let store = dir.join("store");
    let passphrase = login::store_passphrase(identity.signing_key());
    let client = Client::builder()
        .homeserver_url(config.homeserver.as_str())
        .sqlite_store(&store, Some(passphrase.expose()))
        .build()
        .await
        .map_err(|error| MatrixError::Store {
            path: store.clone(),
            error: Box::new(error),
        })?;
    login::log_in(
        &client,
        &dir,
        &config.user,
        identity.password(),
        identity.previous_password(),
        identity.signing_key(),
    )
    .await?;
    tracing::info!(
        user = %client.user_id().map(|u| u.to_string()).unwrap_or_default(),
        device = %client.device_id().map(|d| d.to_string()).unwrap_or_default(),
        homeserver = %config.homeserver,
        "logged in to the Matrix homeserver"
    );
    let position = Position::load(&dir)?;
    let undecrypted = Undecrypted::load(&dir)?;
    let bot = client.user_id().map(|u| u.to_string()).unwrap_or_default();
    let network = client
        .user_id()
        .map(|u| u.server_name().to_string())
        .unwrap_or_default();
    Ok(MatrixSource {
        client,
        dir,
        position,
        seen: Recent::new(SEEN_CAPACITY),
        senders: Recent::new(SEEN_CAPACITY),
        undecrypted,
        members: Members::default(),
        calls: Calls::default(),
        bot,
        network,
        position_changed: false,
        refused: BTreeSet::new(),
        followed: BTreeSet::new(),
        events: Events::none(),
        metrics: Arc::default(),
    })
}

impl MatrixSource {
    /// Syncs and captures until `stop` turns true. Errors are retried with backoff (the events wait
    /// on the homeserver), except a revoked session: that ends capture with an error, so the bot
    /// stops (and, restarted, logs in again) rather than wait for ever.
    pub async fn capture(
        mut self,
        intake: Intake,
        events: Events,
        mut stop: crate::shutdown::Shutdown,
    ) -> Result<(), MatrixError> {
        self.events = events;
        self.metrics = intake.metrics.clone();
        self.publish_lost();
        if !self.position.lost.is_empty() {
            let rooms: Vec<&str> = self.position.lost.keys().map(String::as_str).collect();
            crate::events::announce!(
                self.events,
                tracing::Level::WARN,
                crate::events::EventKind::MatrixRoomLost,
                format!(
                    "the bot still cannot capture Matrix room(s) {}: invite it back",
                    rooms.join(", ")
                )
            );
        }
        let mut backoff = Duration::from_secs(1);
        let mut filter = FilterDefinition::default();
        filter.room.timeline.limit = Some(PAGE.into());
        let mut keys = undecrypted::key_notices(&self.client).await;
        loop {
            // Never matrix-sdk's own token (`ReusePrevious`): its store may be ahead of what is durable.
            let token = match &self.position.next_batch {
                Some(token) => SyncToken::Specific(token.clone()),
                None => SyncToken::NoToken,
            };
            let settings = SyncSettings::default()
                .timeout(SYNC_WAIT)
                .filter(Filter::FilterDefinition(filter.clone()))
                .token(token);
            let synced = tokio::select! {
                synced = self.client.sync_once(settings) => synced,
                () = stop.recv() => return Ok(()),
            };
            let result = match synced {
                Ok(response) => {
                    self.join_invited(response.rooms.invited.keys()).await;
                    let rooms = response
                        .rooms
                        .joined
                        .into_iter()
                        .map(|(id, r)| (id, r.timeline))
                        .chain(response.rooms.left.into_iter().map(|(id, r)| (id, r.timeline)));
                    match self.capture_sync(rooms.collect(), response.next_batch, &intake).await {
                        Ok(()) => {
                            self.note_keys(keys.as_mut());
                            self.decrypt_late(&intake).await
                        }
                        Err(e) => Err(e),
                    }
                }
                Err(e) if matches!(e.client_api_error_kind(), Some(ErrorKind::UnknownToken(_))) => {
                    return Err(MatrixError::Refused(format!(
                        "the homeserver ended the bot's session ({e}), e.g. after its password was changed elsewhere; restart the bot to log in again",
                        e = Chain(&e)
                    )));
                }
                Err(e) => Err(MatrixError::request("sync", e)),
            };
            match result {
                Ok(()) => backoff = Duration::from_secs(1),
                Err(e) => {
                    tracing::warn!(error = %Chain(&e), retry_in_secs = backoff.as_secs(), "Matrix capture interrupted; the events wait on the homeserver and are read again");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = stop.recv() => return Ok(()),
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                }
            }
        }
    }

    async fn join_invited<'a>(&self, rooms: impl Iterator<Item = &'a OwnedRoomId>) {
        for id in rooms {
            let Some(room) = self.client.get_room(id) else { continue };
            match room.join().await {
                Ok(()) => tracing::info!(room = %id, "invited: joined the room"),
                // The invite stays; the next sync offers it again.
                Err(e) => {
                    tracing::warn!(room = %id, error = %Chain(&e), "cannot join the room it was invited to; will retry")
                }
            }
        }
    }

    /// Writes one sync's events, then saves its position.
    async fn capture_sync(
        &mut self,
        rooms: Vec<(OwnedRoomId, Timeline)>,
        next_batch: String,
        intake: &Intake,
    ) -> Result<(), MatrixError> {
        for (room_id, timeline) in rooms {
            if self.refused.contains(room_id.as_str()) {
                continue;
            }
            let room = self.client.get_room(&room_id);
            let mut gap = None;
            if timeline.limited
                && let (Some(from), Some(room)) = (timeline.prev_batch.as_deref(), &room)
            {
                let stop_at = self.position.rooms.get(room_id.as_str()).cloned();
                gap = Some(Gap::find(room, from, stop_at.as_deref()).await?);
            }
            // Who is in the room before this sync: the store's members with the sync's changes undone.
            let undo = timeline.events.iter().rev().filter_map(|e| member_event(e.raw()));
            let gap_undo = gap.iter().flat_map(|g| g.member_changes.iter().cloned());
            self.seed_members(room.as_ref(), room_id.as_str(), undo.chain(gap_undo))
                .await;
            if let (Some(mut gap), Some(room)) = (gap, &room) {
                // Oldest page first, one page in memory at a time, however long the gap.
                for page in 0..gap.pages() {
                    let events = gap.read(room, page).await?;
                    let events = events.iter().filter_map(event_json).collect();
                    self.capture_room(&room_id, events, intake).await?;
                }
            }
            let events = timeline.events.iter().filter_map(event_json).collect();
            self.capture_room(&room_id, events, intake).await?;
        }
        self.save_undecrypted().await?;
        if self.position_changed || self.position.next_batch.as_deref() != Some(next_batch.as_str()) {
            self.position.next_batch = Some(next_batch);
            let (path, bytes) = self.position.to_save(&self.dir)?;
            write_state(path, bytes).await?;
            self.position_changed = false;
        }
        Ok(())
    }

    async fn save_undecrypted(&mut self) -> Result<(), MatrixError> {
        if let Some((path, bytes)) = self.undecrypted.to_save(&self.dir)? {
            write_state(path, bytes).await?;
            self.undecrypted.saved();
        }
        Ok(())
    }

    /// Writes a room's events in order. A late decryption rewrites an event already counted and
    /// captured, so it skips the repeat check and leaves the room's position where it is.
    async fn capture_room(
        &mut self,
        room_id: &OwnedRoomId,
        events: Vec<(Value, Delivery)>,
        intake: &Intake,
    ) -> Result<(), MatrixError> {
        let room = self.client.get_room(room_id);
        let undo: Vec<Value> = events.iter().rev().filter_map(|(e, _)| member_event_json(e)).collect();
        self.seed_members(room.as_ref(), room_id.as_str(), undo.into_iter())
            .await;
        let mut lines = Lines::default();
        let mut ids = Vec::new();
        let mut changes = Vec::new();
        for (json, delivery) in events {
            let late = matches!(delivery, Delivery::DecryptedLate(_));
            let text = |key: &str| json.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
            let (id, sender) = (text("event_id"), text("sender"));
            if !late {
                if self.seen.contains(&id) {
                    self.members.apply(room_id.as_str(), &json);
                    continue;
                }
                intake.metrics.incr(Counter::MessagesRx);
                if matches!(delivery, Delivery::Undecryptable(_)) {
                    intake.metrics.incr(Counter::MessagesRxFailed);
                    let members = self.members.of(room_id.as_str());
                    self.undecrypted.push(room_id.as_str(), &json, members);
                }
            }
            let target_sender = self.target_sender(room.as_ref(), &json).await;
            self.senders.insert(id.clone(), sender);
            let change = (!late).then(|| coverage::room_change(&json, &self.bot)).flatten();
            let translated = match self.translate(room.as_ref(), room_id, &json, &delivery, target_sender, &change) {
                Ok(t) => t,
                Err(e) => {
                    // Only a malformed event (no sender, no ID) can fail validation.
                    intake.metrics.incr(Counter::MessagesRxFailed);
                    tracing::warn!(room = %room_id, event = %id, error = %Chain(&e), "event not captured: malformed");
                    continue;
                }
            };
            changes.extend(change);
            if translated.iter().all(|t| t.media.is_none()) {
                for Translated { mut message, .. } in translated {
                    self.calls.note(&mut message, &json);
                    lines.push(&message);
                }
                if !late {
                    ids.push(id);
                }
                continue;
            }
            // Keep the file order: what came before is written first (and what it changed acted on);
            // the event counts as captured once each of its lines (a file, its thumbnail) is durable.
            self.commit(room_id, std::mem::take(&mut lines), std::mem::take(&mut ids), intake)
                .await?;
            for change in changes.drain(..) {
                self.on_room_change(room_id.as_str(), change).await;
            }
            for Translated { message, media } in translated {
                self.store_line(message, media, intake).await?;
            }
            if !late {
                self.remember(room_id, vec![id]);
            }
        }
        self.commit(room_id, lines, ids, intake).await?;
        for change in changes {
            self.on_room_change(room_id.as_str(), change).await;
        }
        Ok(())
    }

    /// Makes one line durable, with its attachment if it has media.
    async fn store_line(
        &mut self,
        mut message: Message,
        media: Option<MediaRef>,
        intake: &Intake,
    ) -> Result<(), MatrixError> {
        let received = match &media {
            Some(media) => self.save_media(media, intake, &mut message).await?,
            None => None,
        };
        match received {
            Some((partial, name)) => {
                intake.spool.store_message_attachment(partial, name, message).await?;
                Ok(())
            }
            None => {
                let mut one = Lines::default();
                one.push(&message);
                intake.spool.append(one).await?;
                Ok(())
            }
        }
    }

    /// Makes `lines` durable, then remembers their events as captured.
    async fn commit(
        &mut self,
        room_id: &OwnedRoomId,
        lines: Lines,
        ids: Vec<String>,
        intake: &Intake,
    ) -> Result<(), MatrixError> {
        if lines.count == 0 {
            return Ok(());
        }
        intake.spool.append(lines).await?;
        self.remember(room_id, ids);
        Ok(())
    }

    /// Events whose lines are durable: the sync position moves past them.
    fn remember(&mut self, room_id: &OwnedRoomId, ids: Vec<String>) {
        if let Some(last) = ids.last() {
            self.position.rooms.insert(room_id.to_string(), last.clone());
        }
        for id in ids {
            self.seen.insert(id, ());
        }
    }

    /// Downloads (and decrypts) a message's media into an attachment. A download that keeps failing,
    /// or a file over the size limit, is noted in the line (`matrix.media_error`) instead; a full
    /// disk is an error, so the sync is read again once there is space.
    async fn save_media(
        &self,
        media: &MediaRef,
        intake: &Intake,
        message: &mut Message,
    ) -> Result<Option<(PartialAttachment, String)>, MatrixError> {
        let failed = |message: &mut Message, why: String| {
            intake.metrics.incr(Counter::FilesSavedFailed);
            tracing::warn!(file = %media.filename, error = %why, "media not saved; its message is kept with the reason");
            message.set_matrix_field("media_error", Value::String(why));
            Ok(None)
        };
        let source: MediaSource = match serde_json::from_value(media.source.clone()) {
            Ok(s) => s,
            Err(e) => return failed(message, format!("the event names no usable media ({e})", e = Chain(&e))),
        };
        let mut tries = 0;
        loop {
            tries += 1;
            match media::download(&self.client, &source, &intake.spool, intake.max_file).await? {
                Ok(partial) => return Ok(Some((partial, safe_network_name(&media.filename)))),
                Err(NotSaved::Retry(why)) if tries < MEDIA_TRIES => {
                    tracing::debug!(error = %why, tries, "media download failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1 << tries)).await;
                }
                Err(NotSaved::Retry(why) | NotSaved::Refused(why)) => return failed(message, why),
            }
        }
    }
}

/// Replaces a state file atomically (fsync'd), off the async threads.
async fn write_state(path: PathBuf, bytes: Vec<u8>) -> Result<(), MatrixError> {
    tokio::task::spawn_blocking(move || durable::write_atomically(&path, &bytes).map_err(|e| MatrixError::io(&path, e)))
        .await
        .map_err(|e| MatrixError::state_from("the task writing a state file failed", e))?
}

/// A membership event's JSON (they are never encrypted), for following who is in a room.
fn member_event<T>(raw: &Raw<T>) -> Option<Value> {
    (raw.get_field::<String>("type").ok().flatten().as_deref() == Some("m.room.member"))
        .then(|| serde_json::from_str(raw.json().get()).ok())
        .flatten()
}

/// `member_event` of an event already read.
fn member_event_json(event: &Value) -> Option<Value> {
    (event.get("type").and_then(Value::as_str) == Some("m.room.member")).then(|| event.clone())
}

/// The event's JSON as the bot sees it (the plaintext, if it decrypted it), and how it arrived.
fn event_json(event: &TimelineEvent) -> Option<(Value, Delivery)> {
    let (raw, delivery) = match &event.kind {
        TimelineEventKind::Decrypted(d) => (d.event.json().get(), Delivery::Decrypted),
        TimelineEventKind::UnableToDecrypt { event, utd_info } => (
            event.json().get(),
            Delivery::Undecryptable(format!("{:?}", utd_info.reason)),
        ),
        TimelineEventKind::PlainText { event } => (event.json().get(), Delivery::Plain),
    };
    serde_json::from_str(raw).ok().map(|v| (v, delivery))
}

/// A file name from the network is whatever the sender chose: make it safe rather than refuse it.
fn safe_network_name(name: &str) -> String {
    safe_attachment_name(name).unwrap_or_else(|_| {
        let cleaned: String = name.chars().filter(|c| !c.is_control()).collect();
        safe_attachment_name(&cleaned.replace("..", "_")).unwrap_or_else(|_| "unnamed".into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_file_names_are_made_safe_not_refused() {
        assert_eq!(safe_network_name("report.pdf"), "report.pdf");
        assert_eq!(safe_network_name("../../etc/passwd"), "____etc_passwd");
        assert_eq!(safe_network_name("a\0b"), "ab");
        assert_eq!(safe_network_name(""), "unnamed");
    }
}
