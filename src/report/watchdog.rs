//! The watchdog: notices a stalled pipeline and a filling disk, and says so (log, metrics, events).
//!
//! A stage is stalled when it has pending work and its progress measure has not moved: the spool
//! (messages handed to the writer, not yet answered) and the S3 uploader (files waiting, no part or
//! object accepted). No progress for `WICKRIO_WATCHDOG_SECS` is a warning (`Watchdog_Warnings`);
//! for five times as long, a failure (`Watchdog_Failures`, a critical event). Each stall counts once
//! per level; progress ends it with a "recovered" event.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{EventKind, Events};
use crate::durable;
use crate::events::announce;
use crate::metrics::{Counter, Gauge, Metrics};

/// A failure after this many warning periods without progress.
const FAILURE_AFTER: u32 = 5;

/// One stage of the pipeline as the watchdog sees it.
struct Stage {
    name: &'static str,
    pending: Reading,
    progress: Reading,
    stall: Stall,
}

/// Reads one figure of a stage from the metrics.
type Reading = fn(&Metrics) -> u64;

/// Each stage: its name, its pending work, its progress measure.
const STAGES: [(&str, Reading, Reading); 2] = [
    (
        "spool writer",
        |m| m.level(Gauge::MessagesPending),
        |m| m.get(Counter::MessagesSaved) + m.get(Counter::MessagesSavedFailed),
    ),
    (
        "S3 uploader",
        |m| m.level(Gauge::S3BacklogFiles),
        |m| m.get(Counter::S3PartsUploaded),
    ),
];

/// Whether a stage is moving, from its pending work and progress measure over time.
#[derive(Debug)]
struct Stall {
    progress: u64,
    since: Instant,
    level: Level,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Moving,
    Warned,
    Failed,
}

#[derive(Debug, PartialEq, Eq)]
enum Change {
    Warn(Duration),
    Fail(Duration),
    Recovered,
}

impl Stall {
    fn new(progress: u64, now: Instant) -> Self {
        Self {
            progress,
            since: now,
            level: Level::Moving,
        }
    }

    fn observe(&mut self, pending: u64, progress: u64, now: Instant, after: Duration) -> Option<Change> {
        if pending == 0 || progress != self.progress {
            let was = self.level;
            *self = Self::new(progress, now);
            return (was != Level::Moving).then_some(Change::Recovered);
        }
        let stalled = now.duration_since(self.since);
        match self.level {
            Level::Moving if stalled >= after => {
                self.level = Level::Warned;
                Some(Change::Warn(stalled))
            }
            Level::Warned if stalled >= after * FAILURE_AFTER => {
                self.level = Level::Failed;
                Some(Change::Fail(stalled))
            }
            _ => None,
        }
    }
}

/// Free space on a destination, as the spool will treat it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Space {
    Enough,
    /// Under twice the minimum: new data will soon be refused.
    Low,
    /// Under the minimum: new data is being refused.
    Full,
}

fn space(free: u64, min_free: u64) -> Space {
    if free < min_free {
        Space::Full
    } else if free < min_free.saturating_mul(2) {
        Space::Low
    } else {
        Space::Enough
    }
}

pub(crate) struct Watchdog {
    metrics: Arc<Metrics>,
    events: Events,
    after: Duration,
    stages: Vec<Stage>,
    /// The destinations and what was last seen of each.
    disks: Vec<(PathBuf, Space)>,
    min_free: u64,
}

impl Watchdog {
    pub fn new(metrics: Arc<Metrics>, events: Events, after: Duration, dirs: Vec<PathBuf>, min_free: u64) -> Self {
        let now = Instant::now();
        let stages = STAGES
            .iter()
            .map(|&(name, pending, progress)| Stage {
                name,
                pending,
                progress,
                stall: Stall::new(progress(&metrics), now),
            })
            .collect();
        // One entry per file system: two destinations on one disk would report everything twice.
        let mut devices = Vec::new();
        let disks = dirs
            .into_iter()
            .filter(|d| {
                let device = std::fs::metadata(d)
                    .map(|m| std::os::unix::fs::MetadataExt::dev(&m))
                    .ok();
                let new = !devices.contains(&device);
                devices.push(device);
                new
            })
            .map(|d| (d, Space::Enough))
            .collect();
        Self {
            metrics,
            events,
            after,
            stages,
            disks,
            min_free,
        }
    }

    /// Checks a few times per period until `stop`.
    pub async fn run(mut self, mut stop: crate::shutdown::Shutdown) {
        let every = (self.after / 4).clamp(Duration::from_millis(250), Duration::from_secs(5));
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {
                    self.check_stages(Instant::now());
                    self.check_disks().await;
                }
                () = stop.recv() => break,
            }
        }
    }

    fn check_stages(&mut self, now: Instant) {
        for stage in &mut self.stages {
            let (pending, progress) = ((stage.pending)(&self.metrics), (stage.progress)(&self.metrics));
            let Some(change) = stage.stall.observe(pending, progress, now, self.after) else {
                continue;
            };
            match change {
                Change::Warn(stalled) => {
                    self.metrics.incr(Counter::WatchdogWarnings);
                    let message = format!(
                        "watchdog: the {} has pending work ({pending}) and has made no progress for {} s",
                        stage.name,
                        stalled.as_secs()
                    );
                    announce!(self.events, tracing::Level::WARN, EventKind::WatchdogWarning, message);
                }
                Change::Fail(stalled) => {
                    self.metrics.incr(Counter::WatchdogFailures);
                    let message = format!(
                        "watchdog: the {} is STALLED: pending work ({pending}) and no progress for {} s; data waits on local disk",
                        stage.name,
                        stalled.as_secs()
                    );
                    announce!(self.events, tracing::Level::ERROR, EventKind::WatchdogFailure, message);
                }
                Change::Recovered => {
                    let message = format!("watchdog: the {} is making progress again", stage.name);
                    announce!(self.events, tracing::Level::INFO, EventKind::WatchdogRecovered, message);
                }
            }
        }
    }

    async fn check_disks(&mut self) {
        let dirs: Vec<PathBuf> = self.disks.iter().map(|(d, _)| d.clone()).collect();
        // statvfs on a network file system can block: keep it off the async threads.
        let Ok(free) =
            tokio::task::spawn_blocking(move || dirs.iter().map(|d| durable::free_bytes(d)).collect::<Vec<_>>()).await
        else {
            return;
        };
        let (min_free, events) = (self.min_free, &self.events);
        for ((dir, seen), free) in self.disks.iter_mut().zip(free) {
            let Ok(free) = free else { continue };
            let now = space(free, min_free);
            if now == *seen {
                continue;
            }
            let (free_mib, min_mib, dir_shown) = (free >> 20, min_free >> 20, dir.display());
            match now {
                Space::Full => announce!(
                    events,
                    tracing::Level::ERROR,
                    EventKind::DiskFull,
                    format!(
                        "disk full: {free_mib} MiB free under {dir_shown}, below WICKRIO_COMP_MIN_FREE_MB={min_mib}: new messages and files are REFUSED until space is freed"
                    )
                ),
                Space::Low => announce!(
                    events,
                    tracing::Level::WARN,
                    EventKind::DiskLow,
                    format!(
                        "disk low: {free_mib} MiB free under {dir_shown}; new data will be refused below {min_mib} MiB (WICKRIO_COMP_MIN_FREE_MB)"
                    )
                ),
                Space::Enough => announce!(
                    events,
                    tracing::Level::INFO,
                    EventKind::DiskRecovered,
                    format!("disk space recovered: {free_mib} MiB free under {dir_shown}")
                ),
            }
            *seen = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stall_warns_once_then_fails_once_then_recovers() {
        let t0 = Instant::now();
        let after = Duration::from_secs(10);
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut stall = Stall::new(7, t0);
        assert_eq!(stall.observe(3, 7, s(9), after), None);
        assert_eq!(stall.observe(3, 7, s(10), after), Some(Change::Warn(after)));
        assert_eq!(stall.observe(3, 7, s(20), after), None, "one warning per stall");
        assert_eq!(
            stall.observe(3, 7, s(50), after),
            Some(Change::Fail(Duration::from_secs(50)))
        );
        assert_eq!(stall.observe(3, 7, s(500), after), None, "one failure per stall");
        assert_eq!(stall.observe(3, 8, s(501), after), Some(Change::Recovered));
        assert_eq!(stall.observe(3, 8, s(505), after), None);
    }

    #[test]
    fn no_pending_work_is_never_a_stall() {
        let t0 = Instant::now();
        let mut stall = Stall::new(0, t0);
        assert_eq!(
            stall.observe(0, 0, t0 + Duration::from_secs(3600), Duration::from_secs(1)),
            None
        );
    }

    #[test]
    fn space_is_low_under_twice_the_minimum_and_full_under_it() {
        assert_eq!(space(100, 50), Space::Enough);
        assert_eq!(space(99, 50), Space::Low);
        assert_eq!(space(49, 50), Space::Full);
        assert_eq!(space(0, 0), Space::Enough);
    }
}
