//! Sources: where messages come from. Each turns its world into validated messages and attachments
//! and acknowledges its producer only after the spool says the data is durable.

pub mod http;
pub mod import;
pub mod matrix;
pub(crate) mod recent;
pub mod sqs;

use std::sync::Arc;

use crate::metrics::Metrics;
use crate::spool::Spool;

/// What every source hands its captured data to: the spool (which acknowledges only what is
/// durable), the counters, and the per-file limit. Not to be confused with [`crate::sink::Sink`],
/// the far end of the pipeline.
#[derive(Clone)]
pub struct Intake {
    pub spool: Spool,
    pub metrics: Arc<Metrics>,
    /// `WICKRIO_INGEST_MAX_FILE`: larger files are refused (HTTP) or recorded but not saved (Matrix).
    pub max_file: u64,
}
