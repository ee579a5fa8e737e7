//! The wall clock that names files and picks their key period. Tests that need a period boundary
//! (a month's end) within seconds start it elsewhere with `RETENTION_BOT_TEST_CLOCK` (an RFC 3339
//! time): the clock then runs on from there at the real rate. It moves file names and periods only;
//! nothing an operator sets, so it is not in `--help`, and a start with it set logs a warning.

use std::sync::OnceLock;

use chrono::{DateTime, Utc};

pub(crate) const TEST_CLOCK_VAR: &str = "RETENTION_BOT_TEST_CLOCK";

static OFFSET: OnceLock<chrono::Duration> = OnceLock::new();

/// Sets the clock going (reads the test start, if any) before the first file is named.
pub fn start() {
    let _ = now();
}

/// Now, as files are named.
pub fn now() -> DateTime<Utc> {
    Utc::now() + *OFFSET.get_or_init(offset)
}

fn offset() -> chrono::Duration {
    let Some(start) = std::env::var(TEST_CLOCK_VAR).ok() else {
        return chrono::Duration::zero();
    };
    match DateTime::parse_from_rfc3339(&start) {
        Ok(start) => {
            tracing::warn!(start = %start, "{TEST_CLOCK_VAR} is set: files are named as if the clock started then (for tests only)");
            start.with_timezone(&Utc) - Utc::now()
        }
        Err(e) => {
            tracing::error!(value = %start, error = %crate::error_chain::Chain(&e), "{TEST_CLOCK_VAR} is not an RFC 3339 time; the real clock is used");
            chrono::Duration::zero()
        }
    }
}
