//! Publishes the counters to CloudWatch: every interval one `PutMetricData` to namespace `WickrIO`,
//! each of the original's twelve metrics (and `Spool_Write_Errors`, `S3_Key_Conflicts` and
//! `KMS_Requests`, which an operator alarms or bills on) as
//! what it counted during the interval, plus the S3 backlog levels, all with the dimension `BotName`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};

use crate::aws::{self, failure};
use crate::config::reporting::CloudWatchConfig;
use crate::metrics::{Counter, Gauge, Metrics};

pub(crate) const NAMESPACE: &str = "WickrIO";

/// The original's metrics, in its order, then ours worth an alarm.
const COUNTERS: &[Counter] = &[
    Counter::MessagesRx,
    Counter::MessagesRxFailed,
    Counter::MessagesSaved,
    Counter::MessagesSavedFailed,
    Counter::FilesSaved,
    Counter::FilesSavedBytes,
    Counter::FilesSavedFailed,
    Counter::Logins,
    Counter::LoginFailures,
    Counter::S3PostErrors,
    Counter::WatchdogFailures,
    Counter::WatchdogWarnings,
    Counter::SpoolWriteErrors,
    Counter::S3KeyConflicts,
    Counter::KmsRequests,
    Counter::SqsReceived,
    Counter::SqsDeleted,
    Counter::SqsRefused,
    Counter::SqsReceiveErrors,
];
const LEVELS: &[Gauge] = &[
    Gauge::S3BacklogFiles,
    Gauge::S3BacklogBytes,
    Gauge::ArchiveProblems,
    Gauge::KmsPeriodKeysMissing,
    Gauge::MatrixRoomsLost,
    Gauge::SqsOldestInHandSecs,
];

pub(crate) struct CloudWatchExporter {
    client: aws_sdk_cloudwatch::Client,
    bot_name: String,
    metrics: Arc<Metrics>,
    interval: Duration,
    /// Counter values CloudWatch has already been told about. Advanced only when a put succeeds,
    /// so what a failed put carried goes out with the next one.
    published: Vec<u64>,
}

impl CloudWatchExporter {
    pub async fn new(config: &CloudWatchConfig, bot_name: &str, metrics: Arc<Metrics>, aws: &aws::Aws) -> Self {
        tracing::info!(
            region = %config.region,
            interval_secs = config.interval.as_secs(),
            "metrics go to CloudWatch namespace {NAMESPACE}"
        );
        Self {
            client: aws_sdk_cloudwatch::Client::new(&aws.sdk_config(&config.region).await),
            bot_name: bot_name.to_owned(),
            metrics,
            interval: config.interval,
            published: vec![0; COUNTERS.len()],
        }
    }

    /// Publishes every interval until `stop`, then once more.
    pub async fn run(mut self, mut stop: crate::shutdown::Shutdown) {
        let start = tokio::time::Instant::now() + self.interval;
        let mut tick = tokio::time::interval_at(start, self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.publish().await,
                () = stop.recv() => break,
            }
        }
        self.publish().await;
    }

    async fn publish(&mut self) {
        let now: Vec<u64> = COUNTERS.iter().map(|&c| self.metrics.get(c)).collect();
        let at = DateTime::from(SystemTime::now());
        let datum = |name: &str, unit: StandardUnit, value: u64| {
            MetricDatum::builder()
                .metric_name(name)
                .dimensions(Dimension::builder().name("BotName").value(&self.bot_name).build())
                .unit(unit)
                .value(value as f64)
                .timestamp(at)
                .build()
        };
        let mut data: Vec<MetricDatum> = COUNTERS
            .iter()
            .zip(now.iter().zip(&self.published))
            .map(|(&c, (&now, &before))| {
                let unit = if c == Counter::FilesSavedBytes {
                    StandardUnit::Bytes
                } else {
                    StandardUnit::Count
                };
                datum(c.name(), unit, now.saturating_sub(before))
            })
            .collect();
        data.extend(LEVELS.iter().map(|&g| {
            let unit = if g == Gauge::S3BacklogBytes {
                StandardUnit::Bytes
            } else {
                StandardUnit::Count
            };
            datum(g.name(), unit, self.metrics.level(g))
        }));
        let sent = self
            .client
            .put_metric_data()
            .namespace(NAMESPACE)
            .set_metric_data(Some(data))
            .send()
            .await;
        match sent {
            Ok(_) => {
                tracing::debug!("metrics published to CloudWatch");
                self.published = now;
            }
            Err(e) => {
                let e = failure("publish metrics to CloudWatch", e);
                tracing::warn!(error = %crate::error_chain::Chain(&e), "metrics not published; the counts go out with the next publication");
                self.metrics.incr(Counter::CloudWatchErrors);
            }
        }
    }
}
