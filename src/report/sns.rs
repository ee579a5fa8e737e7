//! Publishes events to the SNS topic, one message per event, in the order they came.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::collapse::Collapser;
use super::origin::Origin;
use crate::aws::{self, failure};
use crate::config::reporting::SnsConfig;
use crate::events::Event;
use crate::metrics::{Counter, Metrics};

/// Attempts per event before it is given up (and counted in `SNS_Publish_Errors`).
const ATTEMPTS: u32 = 4;

pub(crate) struct SnsPublisher {
    client: aws_sdk_sns::Client,
    topic_arn: String,
    origin: Origin,
    metrics: Arc<Metrics>,
}

impl SnsPublisher {
    pub async fn new(config: &SnsConfig, origin: Origin, metrics: Arc<Metrics>, aws: &aws::Aws) -> Self {
        tracing::info!(topic = %config.topic_arn, "events go to SNS");
        Self {
            client: aws_sdk_sns::Client::new(&aws.sdk_config(&config.region).await),
            topic_arn: config.topic_arn.clone(),
            origin,
            metrics,
        }
    }

    /// Publishes until `stop`, then publishes what is still queued and the held repeat counts.
    pub async fn run(
        self,
        mut queue: mpsc::Receiver<Event>,
        mut repeats: Collapser,
        mut stop: crate::shutdown::Shutdown,
    ) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                event = queue.recv() => match event {
                    Some(event) => {
                        if let Some(event) = repeats.offer(event, Instant::now()) {
                            self.publish(&event).await;
                        }
                    }
                    None => break,
                },
                _ = tick.tick() => {
                    for event in repeats.due(Instant::now()) {
                        self.publish(&event).await;
                    }
                }
                () = stop.recv() => break,
            }
        }
        while let Ok(event) = queue.try_recv() {
            if let Some(event) = repeats.offer(event, Instant::now()) {
                self.publish(&event).await;
            }
        }
        for event in repeats.drain() {
            self.publish(&event).await;
        }
    }

    async fn publish(&self, event: &Event) {
        let message = self.origin.notification(event, chrono::Utc::now());
        let mut wait = Duration::from_secs(1);
        for attempt in 1..=ATTEMPTS {
            let sent = self
                .client
                .publish()
                .topic_arn(&self.topic_arn)
                .subject("Bot Event")
                .message(&message)
                .send()
                .await;
            match sent {
                Ok(_) => {
                    tracing::debug!(kind = ?event.kind, "event published to SNS");
                    return;
                }
                Err(e) if attempt == ATTEMPTS => {
                    let e = failure(&format!("publish an event to {}", self.topic_arn), e);
                    tracing::warn!(error = %crate::error_chain::Chain(&e), event = %event.message, "event not published; it is only in this log");
                    self.metrics.incr(Counter::SnsPublishErrors);
                }
                Err(_) => {
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
            }
        }
    }
}
