//! The SQS source: producers send WickrIO messages to an SQS queue, and any number of bots drain it.
//! A queue message is deleted only once everything it carried is fsync'd (the same group commit
//! that answers an HTTP producer's `202`), so the queue, not one host's disk, holds what is not yet
//! archived. At least once: a message whose delete was lost (a crash between the fsync and the
//! delete) comes back and is archived again.
//!
//! Several receivers long-poll the queue (20 s waits, 10 messages a call). A receiver's batch is
//! checked message by message, its valid messages written in one append (one fsync), and deleted in
//! one call. A message that fails the checks is never deleted: it returns, and the queue's own
//! redrive policy moves it to the dead-letter queue after `maxReceiveCount`. A failed write or a full
//! disk deletes nothing and pauses receiving; `/readyz` says why.

mod payload;
mod receive;

use std::sync::Arc;
use std::time::Duration;

use crate::config::SqsConfig;
use crate::events::Events;
use crate::source::Intake;

pub use payload::{LEGACY_POINTER, POINTER};

/// How long a received message stays invisible to other receivers; renewed every third of it while
/// it waits for its fsync, so a slow disk never hands it to another bot meanwhile. Short, because a
/// receive call the bot gave up on (at a stop) still takes messages on the queue's side until its
/// long poll ends: they return after this, within the default shutdown grace (8 s).
const VISIBILITY: Duration = Duration::from_secs(6);
/// A refused message returns after this long (then the redrive policy counts its receives).
const REFUSED_RETURNS_AFTER: Duration = Duration::from_secs(10);
/// A message whose payload S3 could not give now returns after this long.
const LATER_RETURNS_AFTER: Duration = Duration::from_secs(60);
/// Long-poll wait of one receive call: the most SQS allows.
const WAIT: Duration = Duration::from_secs(20);

/// Why the SQS source could not run.
#[derive(Debug, thiserror::Error)]
pub enum SqsError {
    #[error(
        "cannot reach the SQS queue {queue}; check WICKRIO_SQS_QUEUE_URL, WICKRIO_SQS_REGION and the bot's sqs:GetQueueAttributes permission"
    )]
    Unreachable {
        queue: String,
        #[source]
        cause: crate::aws::AwsFailure,
    },
}

/// A queue, ready to drain. Cheap to clone (the clients are handles).
#[derive(Clone)]
pub struct SqsSource {
    config: SqsConfig,
    sqs: aws_sdk_sqs::Client,
    s3: aws_sdk_s3::Client,
    max_body: usize,
    /// `WICKRIO_SHUTDOWN_GRACE_SECS`: what is in hand at a stop is given back after this long.
    grace: Duration,
}

impl std::fmt::Debug for SqsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqsSource")
            .field("queue", &self.config.queue_url.as_str())
            .finish_non_exhaustive()
    }
}

/// Builds the clients and checks the queue answers (so a wrong URL or a missing permission stops the
/// bot at start-up, not silently later). Payloads in S3 are fetched in the queue's region.
pub async fn connect(
    config: &SqsConfig,
    max_body: usize,
    grace: Duration,
    aws: &crate::aws::Aws,
) -> Result<SqsSource, SqsError> {
    let sdk = aws.sdk_config(&config.region).await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let s3 = crate::aws::s3_client(&sdk);
    sqs.get_queue_attributes()
        .queue_url(config.queue_url.as_str())
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout)
        .send()
        .await
        .map_err(|e| SqsError::Unreachable {
            queue: config.queue_url.to_string(),
            cause: crate::aws::failure("read the queue's attributes", e),
        })?;
    tracing::info!(queue = %config.queue_url, receivers = config.receivers, "draining the SQS queue");
    Ok(SqsSource {
        config: config.clone(),
        sqs,
        s3,
        max_body,
        grace,
    })
}

impl SqsSource {
    /// Receives until `stop` fires, then finishes what is in hand and gives back (visibility 0) what
    /// it has not begun.
    pub async fn capture(
        self,
        intake: Intake,
        events: Events,
        stop: crate::shutdown::Shutdown,
    ) -> Result<(), SqsError> {
        let shared = Arc::new(receive::Receiver {
            source: self,
            intake,
            events,
            refused: std::sync::Mutex::new(crate::source::recent::Recent::new(100_000)),
            in_hand: std::sync::Mutex::default(),
            next_batch: std::sync::atomic::AtomicU64::new(0),
        });
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..shared.source.config.receivers {
            let (receiver, stop) = (shared.clone(), stop.clone());
            tasks.spawn(async move { receiver.run(stop).await });
        }
        while tasks.join_next().await.is_some() {}
        Ok(())
    }

    /// Makes `messages` visible again after `after` (zero: at once).
    async fn change_visibility(&self, messages: &[aws_sdk_sqs::types::Message], after: Duration) {
        use aws_sdk_sqs::types::ChangeMessageVisibilityBatchRequestEntry as Entry;
        for chunk in messages.chunks(10) {
            let entries: Vec<Entry> = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, m)| {
                    Entry::builder()
                        .id(i.to_string())
                        .receipt_handle(m.receipt_handle()?)
                        .visibility_timeout(after.as_secs() as i32)
                        .build()
                        .ok()
                })
                .collect();
            let changed = self
                .sqs
                .change_message_visibility_batch()
                .queue_url(self.config.queue_url.as_str())
                .set_entries(Some(entries))
                .send()
                .await;
            if let Err(e) = changed {
                tracing::debug!(error = %crate::error_chain::Chain(&crate::aws::failure("change the messages' visibility", e)), "cannot change SQS messages' visibility");
            }
        }
    }
}
