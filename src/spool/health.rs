//! Whether the spool's disk takes writes. Shared by the writer thread and the attachment receivers:
//! a failed write or sync anywhere makes the spool unready (and tells the operators once) until a
//! write and an fsync succeed again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::SpoolError;
use crate::error_chain::Chain;
use crate::events::{EventKind, Events, announce};
use crate::metrics::{Counter, Metrics};

pub(crate) struct Health {
    healthy: AtomicBool,
    metrics: Arc<Metrics>,
    events: Events,
}

impl Health {
    pub(crate) fn new(metrics: Arc<Metrics>, events: Events) -> Self {
        Self {
            healthy: AtomicBool::new(true),
            metrics,
            events,
        }
    }

    pub(crate) fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// The device failed a write, fsync, rename or directory fsync (a full disk is not such a
    /// failure: it has its own checks). Counted every time; reported on the first since healthy.
    pub(crate) fn failed(&self, e: &SpoolError) {
        self.metrics.incr(Counter::SpoolWriteErrors);
        if self.healthy.swap(false, Ordering::Relaxed) {
            let message = format!(
                "writing the spool failed: {e}; the affected requests were refused (none acknowledged), a message file it hit was closed as suspect, and /readyz answers 503 until a write and an fsync succeed again",
                e = Chain(&e)
            );
            announce!(self.events, tracing::Level::ERROR, EventKind::SpoolFailing, message);
        } else {
            tracing::error!(error = %Chain(&e), "writing the spool failed again");
        }
    }

    /// A write and an fsync succeeded.
    pub(crate) fn recovered(&self) {
        if !self.healthy.swap(true, Ordering::Relaxed) {
            let message = "writing the spool works again: new data is accepted";
            announce!(self.events, tracing::Level::INFO, EventKind::SpoolRecovered, message);
        }
    }
}
