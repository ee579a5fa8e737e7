//! Reporting: how the bot tells its operators what it is doing. Events go to SNS in the original's
//! shape, counters to CloudWatch every interval, and a watchdog turns a stalled pipeline or a filling
//! disk into events and metrics. Nothing here can slow or stop capture: events are queued without
//! waiting, and every publishing failure is logged and counted, never fatal.

pub(crate) mod archive_check;
pub mod cloudwatch;
pub(crate) mod collapse;
pub mod origin;
pub mod sns;
pub mod watchdog;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

pub use crate::events::Severity;
pub use crate::events::{EventKind, Events};

use crate::config::ReportingConfig;
use crate::metrics::Metrics;

/// The SNS publisher and the CloudWatch exporter, when configured.
pub struct Reporter {
    pub events: Events,
    stop: crate::shutdown::Trigger,
    tasks: JoinSet<()>,
}

impl Reporter {
    /// Starts the publishers. No network call is made until there is something to send.
    pub async fn start(config: &ReportingConfig, metrics: Arc<Metrics>, aws: &crate::aws::Aws) -> Self {
        let (stop, stop_rx) = crate::shutdown::channel();
        let mut tasks = JoinSet::new();
        let events = match &config.sns {
            Some(sns) => {
                let (events, queue) = Events::channel();
                let origin = origin::Origin::of_this_process(&config.bot_name);
                let publisher = sns::SnsPublisher::new(sns, origin, metrics.clone(), aws).await;
                let collapser = collapse::Collapser::new(config.event_repeat);
                tasks.spawn(publisher.run(queue, collapser, stop_rx.clone()));
                events
            }
            None => Events::none(),
        };
        if let Some(cw) = &config.cloudwatch {
            let exporter = cloudwatch::CloudWatchExporter::new(cw, &config.bot_name, metrics, aws).await;
            tasks.spawn(exporter.run(stop_rx));
        }
        Self { events, stop, tasks }
    }

    /// Publishes what is queued (and the last CloudWatch datapoint), giving up after `within`.
    pub async fn close(mut self, within: Duration) {
        self.stop.fire();
        let all_done = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(within, all_done).await.is_err() {
            tracing::warn!(
                secs = within.as_secs(),
                "events or metrics still unpublished at exit are dropped"
            );
            self.tasks.abort_all();
        }
    }
}
