//! One receiver: long-poll a batch, check each message, make the valid ones durable in one append,
//! then delete them. Refused messages are left to the queue's redrive policy; nothing is deleted
//! before its fsync.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, Message as SqsMessage, MessageSystemAttributeName};
use serde_json::Value;

use super::payload::{self, FetchError};
use super::{LATER_RETURNS_AFTER, REFUSED_RETURNS_AFTER, SqsSource, VISIBILITY, WAIT};
use crate::error_chain::Chain;
use crate::events::{EventKind, Events};
use crate::message::{self, Lines, Message};
use crate::metrics::{Counter, Gauge};
use crate::shutdown::Shutdown;
use crate::source::Intake;
use crate::source::recent::Recent;
use crate::spool::{SpoolError, safe_attachment_name};

/// What the receivers share.
pub(super) struct Receiver {
    pub source: SqsSource,
    pub intake: Intake,
    pub events: Events,
    /// Messages refused lately: each is counted and reported once, however often it returns.
    pub refused: Mutex<Recent<()>>,
    /// When the oldest message of each batch in hand was sent (ms), by batch: the gauge is the oldest.
    pub in_hand: Mutex<HashMap<u64, u64>>,
    pub next_batch: AtomicU64,
}

/// What became of one queue message.
enum Outcome {
    /// Its lines, to append with the batch's.
    Lines(Lines, Option<payload::S3Ref>),
    /// A file message with its bytes copied from S3: the line is written with the attachment.
    Attachment(crate::spool::PartialAttachment, String, Message),
    /// It fails the checks: left for the redrive policy.
    Refused(String),
    /// What it keeps in S3 could not be read now: left to return.
    Later(String),
}

/// A batch's messages the spool could not take: nothing of it was deleted.
struct Paused(SpoolError);

impl Receiver {
    /// Receives until `stop`; a failed write or a full disk pauses it (with back-off), and what it
    /// received but could not archive returns to the queue.
    pub async fn run(self: Arc<Self>, mut stop: Shutdown) {
        let mut backoff = Duration::from_secs(1);
        while !stop.is_fired() {
            // Every receiver pauses while the spool cannot take writes (a failed fsync, until its
            // probe succeeds; a low disk): a message received then would only return, and each
            // return counts towards the redrive policy's maxReceiveCount.
            if let Err(e) = self.intake.spool.readiness() {
                tracing::debug!(error = %e, "SQS receiving paused: the spool is not ready");
                if sleep_or_stop(&mut stop, Duration::from_secs(1)).await {
                    break;
                }
                continue;
            }
            let receive = self.receive();
            tokio::pin!(receive);
            let received = tokio::select! {
                r = &mut receive => r,
                () = stop.recv() => {
                    // A receive in progress may already hold messages: let it answer (briefly) and
                    // give them back, rather than leave them invisible for the visibility timeout.
                    if let Ok(Ok(batch)) = tokio::time::timeout(Duration::from_secs(2), &mut receive).await {
                        self.source.change_visibility(&batch, Duration::ZERO).await;
                    }
                    break;
                }
            };
            let batch = match received {
                Ok(batch) => batch,
                Err(e) => {
                    self.intake.metrics.incr(Counter::SqsReceiveErrors);
                    tracing::warn!(error = %Chain(&e), retry_in_secs = backoff.as_secs(), "cannot receive from the SQS queue");
                    if sleep_or_stop(&mut stop, backoff).await {
                        break;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                    continue;
                }
            };
            if batch.is_empty() {
                continue;
            }
            self.intake.metrics.add(Counter::SqsReceived, batch.len() as u64);
            match self.handle(&batch, stop.clone()).await {
                Ok(()) => backoff = Duration::from_secs(1),
                Err(Paused(e)) => {
                    tracing::warn!(error = %Chain(&e), retry_in_secs = backoff.as_secs(), "SQS messages not archived (the spool refused them): nothing deleted; receiving pauses");
                    if sleep_or_stop(&mut stop, backoff).await {
                        break;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    async fn receive(&self) -> Result<Vec<SqsMessage>, crate::aws::AwsFailure> {
        let out = self
            .source
            .sqs
            .receive_message()
            .queue_url(self.source.config.queue_url.as_str())
            .max_number_of_messages(10)
            .wait_time_seconds(WAIT.as_secs() as i32)
            .visibility_timeout(VISIBILITY.as_secs() as i32)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .send()
            .await
            .map_err(|e| crate::aws::failure("receive messages", e))?;
        Ok(out.messages.unwrap_or_default())
    }

    /// Archives a batch: each message checked in order, the valid ones' lines appended at once (in
    /// the batch's order: a FIFO group's order is kept), then deleted. Its visibility is renewed
    /// while it waits; at shutdown, what cannot finish within the grace period is given back.
    async fn handle(&self, batch: &[SqsMessage], mut stop: Shutdown) -> Result<(), Paused> {
        let token = self.next_batch.fetch_add(1, Ordering::Relaxed);
        self.hold(token, batch);
        // Dropped with this call, however it ends: the renewal never outlives the batch.
        let _renewal = AbortOnDrop(self.renew_while_in_hand(batch));
        let work = self.archive(batch);
        tokio::pin!(work);
        // The daemon cuts capture off at the end of the grace period: give back a second before.
        let give_back_after = self.source.grace.saturating_sub(Duration::from_secs(1));
        let result = tokio::select! {
            r = &mut work => r,
            () = async { stop.recv().await; tokio::time::sleep(give_back_after).await } => {
                // Shutting down and still not done: give it all back; what was written is archived
                // again when it returns (at least once).
                self.source.change_visibility(batch, Duration::ZERO).await;
                Ok(())
            }
        };
        self.release(token);
        result
    }

    async fn archive(&self, batch: &[SqsMessage]) -> Result<(), Paused> {
        let mut lines = Lines::default();
        let (mut done, mut refused, mut later, mut payloads) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for m in batch {
            match self.check(m).await {
                Ok(Outcome::Lines(more, payload)) => {
                    self.intake.metrics.add(Counter::MessagesRx, more.count as u64);
                    lines.bytes.extend_from_slice(&more.bytes);
                    lines.count += more.count;
                    done.push(m);
                    payloads.push(payload);
                }
                Ok(Outcome::Attachment(partial, name, message)) => {
                    self.intake.metrics.incr(Counter::MessagesRx);
                    // What came before it is written first: the batch's order is kept.
                    if lines.count > 0 {
                        self.append(std::mem::take(&mut lines)).await?;
                    }
                    self.intake
                        .spool
                        .store_message_attachment(partial, name, message)
                        .await
                        .map_err(Paused)?;
                    done.push(m);
                    payloads.push(None);
                }
                Ok(Outcome::Refused(why)) => {
                    self.intake.metrics.incr(Counter::MessagesRxFailed);
                    refused.push((m, why));
                }
                Ok(Outcome::Later(why)) => later.push((m, why)),
                Err(e) => return Err(Paused(e)),
            }
        }
        if lines.count > 0 {
            self.append(lines).await?;
        }
        let deleted = self.delete(&done).await;
        for (m, why) in refused {
            self.refuse(m, &why).await;
        }
        for (m, why) in later {
            self.later(m, &why).await;
        }
        if self.source.config.delete_payloads {
            // Only a deleted message's payload: one whose delete failed returns, and needs it.
            let deleted_payloads = payloads
                .into_iter()
                .zip(deleted)
                .filter(|(_, d)| *d)
                .filter_map(|(p, _)| p);
            for at in deleted_payloads {
                if let Err(e) = self
                    .source
                    .s3
                    .delete_object()
                    .bucket(&at.bucket)
                    .key(&at.key)
                    .send()
                    .await
                {
                    tracing::warn!(payload = %at, error = %Chain(&crate::aws::failure("delete the payload", e)), "cannot delete an archived message's payload from S3");
                }
            }
        }
        Ok(())
    }

    async fn append(&self, lines: Lines) -> Result<(), Paused> {
        self.intake.spool.append(lines).await.map_err(Paused)
    }

    /// A message's lines, checked exactly as the HTTP source checks a body: one message (JSON), or
    /// NDJSON lines. A pointer's body is fetched from S3 first (from a bucket allowed); a file message
    /// naming its bytes in S3 has them copied into the attachment store.
    async fn check(&self, m: &SqsMessage) -> Result<Outcome, SpoolError> {
        let body = m.body().unwrap_or_default();
        let max = self.source.max_body as u64;
        let (bytes, pointer) = match payload::pointer(body) {
            Some(at) => {
                if let Err(why) = payload::allowed(&at, &self.source.config.payload_buckets) {
                    return Ok(Outcome::Refused(why));
                }
                match payload::fetch_body(&self.source.s3, &at, max).await {
                    Ok(bytes) => {
                        self.intake.metrics.incr(Counter::SqsPayloadsFetched);
                        (bytes, Some(at))
                    }
                    Err(FetchError::Refused(why)) => return Ok(Outcome::Refused(why)),
                    Err(FetchError::Unavailable(why)) => return Ok(Outcome::Later(why)),
                    Err(FetchError::Spool(e)) => return Err(e),
                }
            }
            None => (body.as_bytes().to_vec(), None),
        };
        if bytes.len() as u64 > max {
            return Ok(Outcome::Refused(format!(
                "its body is {} bytes, over WICKRIO_INGEST_MAX_BODY ({max})",
                bytes.len()
            )));
        }
        // Large bodies are checked on the blocking pool, as the HTTP source does.
        let parse = move || parse_body(bytes);
        let parsed = if body.len() <= crate::source::http::PARSE_INLINE {
            parse()
        } else {
            match tokio::task::spawn_blocking(parse).await {
                Ok(parsed) => parsed,
                Err(e) => return Ok(Outcome::Later(format!("its check failed: {e}", e = Chain(&e)))),
            }
        };
        match parsed {
            Ok(Body::One(lines, true)) => self.attachment(lines).await,
            Ok(Body::One(lines, false) | Body::Many(lines)) => Ok(Outcome::Lines(lines, pointer)),
            Err(why) => Ok(Outcome::Refused(why)),
        }
    }

    /// A file message: if it names its bytes in S3 (`file.s3`), they are copied into a partial
    /// attachment (same naming, checks and fsync as an upload), to be stored with its line; if not, it
    /// is a line like any.
    async fn attachment(&self, lines: Lines) -> Result<Outcome, SpoolError> {
        let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(&lines.bytes) else {
            return Ok(Outcome::Lines(lines, None));
        };
        let file = object.get("file").and_then(Value::as_object);
        let at = match file.map(payload::attachment_ref) {
            Some(Ok(Some(at))) => at,
            Some(Err(why)) => return Ok(Outcome::Refused(why)),
            Some(Ok(None)) | None => return Ok(Outcome::Lines(lines, None)),
        };
        if let Err(why) = payload::allowed(&at, &self.source.config.payload_buckets) {
            return Ok(Outcome::Refused(why));
        }
        let requested = file
            .and_then(|f| f.get("filename"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let name = match safe_attachment_name(requested) {
            Ok(name) => name,
            Err(e) => {
                return Ok(Outcome::Refused(format!(
                    "file.filename is no safe file name: {e}",
                    e = Chain(&e)
                )));
            }
        };
        let message = match Message::from_object(object, 1) {
            Ok(message) => message,
            Err(e) => return Ok(Outcome::Refused(crate::error_chain::chain(&e))),
        };
        let max = self.intake.max_file;
        let mut partial = self.intake.spool.begin_attachment(max).await?;
        match payload::fetch_attachment(&self.source.s3, &at, &mut partial, max).await {
            Ok(()) => {}
            Err(FetchError::Refused(why)) => return Ok(Outcome::Refused(why)),
            Err(FetchError::Unavailable(why)) => return Ok(Outcome::Later(why)),
            Err(FetchError::Spool(e)) => return Err(e),
        }
        self.intake.metrics.incr(Counter::SqsPayloadsFetched);
        Ok(Outcome::Attachment(partial, name, message))
    }

    /// Deletes archived messages, ten a call; which were deleted. A delete that fails leaves its
    /// message to return and be archived again (at least once).
    async fn delete(&self, done: &[&SqsMessage]) -> Vec<bool> {
        let mut deleted = Vec::with_capacity(done.len());
        for chunk in done.chunks(10) {
            let entries: Vec<DeleteMessageBatchRequestEntry> = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, m)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(m.receipt_handle()?)
                        .build()
                        .ok()
                })
                .collect();
            let sent = self
                .source
                .sqs
                .delete_message_batch()
                .queue_url(self.source.config.queue_url.as_str())
                .set_entries(Some(entries))
                .send()
                .await;
            match sent {
                Ok(out) => {
                    self.intake
                        .metrics
                        .add(Counter::SqsDeleted, out.successful.len() as u64);
                    for failed in &out.failed {
                        tracing::warn!(code = %failed.code, "an archived SQS message could not be deleted: it returns and is archived again");
                    }
                    let ok: std::collections::HashSet<&str> = out.successful.iter().map(|e| e.id.as_str()).collect();
                    deleted.extend((0..chunk.len()).map(|i| ok.contains(i.to_string().as_str())));
                }
                Err(e) => {
                    tracing::warn!(error = %Chain(&crate::aws::failure("delete the messages", e)), "archived SQS messages could not be deleted: they return and are archived again");
                    deleted.extend(std::iter::repeat_n(false, chunk.len()));
                }
            }
        }
        deleted
    }

    /// A message whose payload or attachment S3 could not give now: it returns later, reported once.
    /// (Each return counts towards the redrive policy's maxReceiveCount: set it to outlast an S3
    /// outage, see docs/sqs.md.)
    async fn later(&self, m: &SqsMessage, why: &str) {
        let id = m.message_id().unwrap_or_default();
        if self.first_time(&format!("later:{id}")) {
            tracing::warn!(message_id = id, error = %why, "SQS message left to return: what it keeps in S3 could not be read now");
        }
        self.source
            .change_visibility(std::slice::from_ref(m), LATER_RETURNS_AFTER)
            .await;
    }

    /// Whether `key` is new to the lately-seen set (and now in it).
    fn first_time(&self, key: &str) -> bool {
        self.refused
            .lock()
            .map(|mut seen| {
                let first = !seen.contains(key);
                seen.insert(key.to_owned(), ());
                first
            })
            .unwrap_or(true)
    }

    /// A message that fails the checks: counted and reported once (by its id, never its content),
    /// and left to return soon, so the redrive policy moves it to the dead-letter queue.
    async fn refuse(&self, m: &SqsMessage, why: &str) {
        let id = m.message_id().unwrap_or_default().to_owned();
        if self.first_time(&id) {
            self.intake.metrics.incr(Counter::SqsRefused);
            crate::events::announce!(
                self.events,
                tracing::Level::WARN,
                EventKind::SqsMessageRefused,
                format!(
                    "SQS message {id} refused, not deleted (the queue's redrive policy moves it to its dead-letter queue): {why}"
                )
            );
        }
        self.source
            .change_visibility(std::slice::from_ref(m), REFUSED_RETURNS_AFTER)
            .await;
    }

    /// Renews the batch's visibility every third of it until aborted: a message waiting on a slow
    /// disk is never handed to another receiver meanwhile.
    fn renew_while_in_hand(&self, batch: &[SqsMessage]) -> tokio::task::AbortHandle {
        let (batch, source) = (batch.to_vec(), self.source.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(VISIBILITY / 3).await;
                source.change_visibility(&batch, VISIBILITY).await;
            }
        })
        .abort_handle()
    }

    /// Notes a batch in hand (when its oldest message was sent) for `SQS_Oldest_In_Hand_Seconds`.
    fn hold(&self, token: u64, batch: &[SqsMessage]) {
        let oldest = batch
            .iter()
            .filter_map(|m| {
                m.attributes()?
                    .get(&MessageSystemAttributeName::SentTimestamp)?
                    .parse::<u64>()
                    .ok()
            })
            .min();
        if let (Some(sent), Ok(mut in_hand)) = (oldest, self.in_hand.lock()) {
            in_hand.insert(token, sent);
            self.publish_oldest(&in_hand);
        }
    }

    fn release(&self, token: u64) {
        if let Ok(mut in_hand) = self.in_hand.lock() {
            in_hand.remove(&token);
            self.publish_oldest(&in_hand);
        }
    }

    /// `SQS_Oldest_In_Hand_Seconds`: how long the oldest message in hand (of any receiver) has been
    /// in the queue; 0 when none is.
    fn publish_oldest(&self, in_hand: &HashMap<u64, u64>) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        let age = in_hand
            .values()
            .min()
            .map_or(0, |sent| now.saturating_sub(*sent) / 1000);
        self.intake.metrics.set(Gauge::SqsOldestInHandSecs, age);
    }
}

/// A body, checked.
enum Body {
    /// One message; `true` if it is a file message that may name its bytes in S3.
    One(Lines, bool),
    /// NDJSON lines, none naming bytes in S3.
    Many(Lines),
}

/// Checks a body as the HTTP source would: one message (perhaps pretty-printed), else NDJSON. Only a
/// body of one message may name its attachment's bytes in S3 (`file.s3`): in NDJSON such a line is
/// refused, never archived without its bytes.
fn parse_body(bytes: Vec<u8>) -> Result<Body, String> {
    let first_reason = |refused: message::Refused| {
        refused
            .listed
            .first()
            .map_or_else(|| "no message in it".to_owned(), ToString::to_string)
    };
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
        && let Ok((lines, checked)) = message::parse_one(bytes.clone())
    {
        return Ok(Body::One(lines, checked.msgtype == crate::message::MSGTYPE_FILE));
    }
    let lines = message::parse_ndjson(bytes).map_err(first_reason)?;
    // Cheap first: only a body that mentions "s3" is read line by line.
    if memchr::memmem::find(&lines.bytes, b"\"s3\"").is_some() {
        for (n, line) in lines.bytes.split(|b| *b == b'\n').enumerate() {
            let names_s3 = serde_json::from_slice::<Value>(line)
                .ok()
                .is_some_and(|v| v.pointer("/file/s3").is_some());
            if names_s3 {
                return Err(format!(
                    "line {}: file.s3 is taken only in a body of one message (its bytes are copied with it)",
                    n + 1
                ));
            }
        }
    }
    Ok(Body::Many(lines))
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sleeps; `true` if `stop` fired meanwhile.
async fn sleep_or_stop(stop: &mut Shutdown, time: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(time) => false,
        () = stop.recv() => true,
    }
}
