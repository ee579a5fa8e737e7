//! A long read's progress on one terminal line (stderr): files and bytes, rate, time left. Quiet
//! when stderr is not a terminal.

use std::sync::Mutex;
use std::time::Instant;

use retention_bot::manifest::verify::Progress;

/// The progress of a bucket check on one terminal line (stderr): objects and bytes, rate, time left.
pub(super) struct ProgressLine {
    on: bool,
    started: Instant,
    last: Mutex<Option<Instant>>,
}

impl ProgressLine {
    pub(super) fn new(on: bool) -> Self {
        Self {
            on,
            started: Instant::now(),
            last: Mutex::new(None),
        }
    }

    pub(super) fn show(&self, p: Progress) {
        if !self.on {
            return;
        }
        let Ok(mut last) = self.last.lock() else { return };
        let done = p.objects == p.objects_total;
        if !done && last.is_some_and(|t| t.elapsed().as_millis() < 200) {
            return;
        }
        *last = Some(Instant::now());
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = p.bytes as f64 / secs;
        let left = if rate > 0.0 {
            format!("{:.0} s", p.bytes_total.saturating_sub(p.bytes) as f64 / rate)
        } else {
            "?".to_owned()
        };
        let mib = |b: u64| b as f64 / f64::from(1 << 20);
        esay_inline(&format!(
            "\r{}/{} objects, {:.1}/{:.1} MiB, {:.1} MiB/s, {left} left   ",
            p.objects,
            p.objects_total,
            mib(p.bytes),
            mib(p.bytes_total),
            mib(rate as u64)
        ));
    }

    pub(super) fn clear(&self) {
        if self.on {
            esay_inline("\r\x1b[2K");
        }
    }
}

fn esay_inline(text: &str) {
    use std::io::Write as _;
    let mut err = std::io::stderr();
    let _ = err.write_all(text.as_bytes());
    let _ = err.flush();
}
