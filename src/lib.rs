//! retention-bot: a data retention daemon. Sources capture messages and files, the spool writes them
//! durably to rotating files, and the sink keeps or ships the closed files. See docs/architecture.md
//! for the data path.

pub mod aws;
pub(crate) mod clock;
pub mod config;
pub mod daemon;
pub mod decrypt;
pub(crate) mod durable;
pub mod envelope;
pub mod error_chain;
pub(crate) mod events;
pub mod export;
pub mod identity;
pub mod legal_hold;
pub mod lock;
pub mod log_repeats;
pub mod manifest;
pub mod message;
pub mod metrics;
pub mod objects;
pub(crate) mod period;
pub mod privileges;
pub mod report;
pub(crate) mod serve;
pub mod shred;
pub(crate) mod shutdown;
pub mod sink;
pub mod source;
pub(crate) mod spool;
mod sync;

/// Entry points for the fuzz targets in `fuzz/` (`cargo fuzz`), which reach internals that no
/// public API needs. Not part of the bot's interface.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
