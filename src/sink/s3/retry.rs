//! When a failed upload is tried again: a pure function of the failure and the attempt, so that the
//! policy is tested on its own (with paused time) and the uploader keeps only the side effects
//! (waiting, metrics, events, logs).

use std::time::Duration;

use crate::aws::Retry;

/// Transient failures are tried this many times by the worker (1 s, then 2 s apart) before the
/// file waits aside.
pub(crate) const TRIES_IN_PLACE: u32 = 3;
const IN_PLACE_WAIT: Duration = Duration::from_secs(1);
/// A file's first wait aside; it doubles with each round of failures, up to `MAX_BACKOFF`.
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Refusals (access denied, no such bucket, key disabled, a key or request S3 will not take, a key
/// that holds another object) retry this often: they need an operator, or concern this one file.
pub(crate) const REFUSED_RETRY: Duration = Duration::from_secs(120);

/// What the uploader does after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Try again on this worker after this short wait.
    InPlace(Duration),
    /// Set the file aside for this long; the worker goes on with the files behind it.
    Aside(Duration),
}

/// The next step after attempt `try_here` (1-based, on this worker) failed, and the file's backoff
/// from then on. `spread` in `[0, 1]` (drawn at random by the caller) jitters the waits of passing
/// troubles, so that bots that failed together do not retry together.
pub fn next(retry: Retry, try_here: u32, backoff: Duration, spread: f64) -> (Next, Duration) {
    match retry {
        Retry::Slowly => (Next::Aside(REFUSED_RETRY), backoff),
        // Short waits only: a longer one would hold this worker from the files behind.
        Retry::Soon if try_here < TRIES_IN_PLACE => (Next::InPlace(jitter(IN_PLACE_WAIT * try_here, spread)), backoff),
        // Transient, but not passing: it waits aside, longer each time, up to MAX_BACKOFF.
        Retry::Soon => (Next::Aside(jitter(backoff, spread)), (backoff * 2).min(MAX_BACKOFF)),
    }
}

/// `d` scaled into `[d/2, d]` by `spread`.
fn jitter(d: Duration, spread: f64) -> Duration {
    d.mul_f64(0.5 + spread.clamp(0.0, 1.0) / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn a_passing_trouble_is_tried_in_place_then_set_aside_for_longer_each_round_up_to_a_minute() {
        assert_eq!(next(Retry::Soon, 1, S(1), 1.0), (Next::InPlace(S(1)), S(1)));
        assert_eq!(next(Retry::Soon, 2, S(1), 1.0), (Next::InPlace(S(2)), S(1)));
        assert_eq!(next(Retry::Soon, 3, S(1), 1.0), (Next::Aside(S(1)), S(2)));
        assert_eq!(next(Retry::Soon, 3, S(16), 1.0), (Next::Aside(S(16)), S(32)));
        assert_eq!(next(Retry::Soon, 3, S(32), 1.0), (Next::Aside(S(32)), S(60)));
        assert_eq!(next(Retry::Soon, 3, S(60), 1.0), (Next::Aside(S(60)), S(60)));
    }

    #[test]
    fn a_refusal_waits_two_minutes_at_once_and_leaves_the_backoff_alone() {
        for try_here in 1..=TRIES_IN_PLACE {
            assert_eq!(next(Retry::Slowly, try_here, S(8), 0.3), (Next::Aside(S(120)), S(8)));
        }
    }

    #[test]
    fn jitter_keeps_a_wait_between_half_and_whole() {
        assert_eq!(next(Retry::Soon, 3, S(10), 0.0).0, Next::Aside(S(5)));
        assert_eq!(
            next(Retry::Soon, 2, S(1), 0.5).0,
            Next::InPlace(Duration::from_millis(1500))
        );
        // Out of range is clamped, never a longer or negative wait.
        assert_eq!(next(Retry::Soon, 3, S(10), 7.0).0, Next::Aside(S(10)));
        assert_eq!(next(Retry::Soon, 3, S(10), -1.0).0, Next::Aside(S(5)));
    }

    /// Follows a file that fails for an hour the way the uploader does (waiting on the tokio clock,
    /// here paused), and checks what operators are promised: it is never left more than a minute
    /// and a few seconds between attempts, yet not hammered (no more than 3 attempts a minute once
    /// the backoff has grown).
    #[tokio::test(start_paused = true)]
    async fn a_file_failing_for_an_hour_is_tried_at_least_once_a_minute_and_at_most_3_times_a_minute_later() {
        let start = tokio::time::Instant::now();
        let mut attempts = Vec::new();
        let mut backoff = FIRST_BACKOFF;
        'file: while start.elapsed() < S(3600) {
            for try_here in 1.. {
                attempts.push(start.elapsed());
                let (step, next_backoff) = next(Retry::Soon, try_here, backoff, 1.0);
                backoff = next_backoff;
                match step {
                    Next::InPlace(wait) => tokio::time::sleep(wait).await,
                    Next::Aside(wait) => {
                        tokio::time::sleep(wait).await;
                        continue 'file;
                    }
                }
            }
        }
        let longest_gap = attempts.windows(2).map(|w| w[1] - w[0]).max().unwrap();
        assert_eq!(longest_gap, S(60));
        let last_hour_minute = attempts.iter().filter(|t| **t >= S(3000) && **t < S(3060)).count();
        assert!(
            (2..=3).contains(&last_hour_minute),
            "{last_hour_minute} attempts in a minute"
        );
        assert_eq!(attempts.first(), Some(&S(0)));
    }
}
