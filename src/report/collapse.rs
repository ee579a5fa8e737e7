//! Repeats of one kind of event within a window collapse into one event with a count, so a flapping
//! bucket or a disk hovering at its limit does not flood the operators' topic.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::events::{Event, EventKind};

/// Per kind: when its window opened, and what came since.
struct Window {
    opened: Instant,
    repeats: u64,
    last: Option<Event>,
}

pub struct Collapser {
    window: Duration,
    open: HashMap<EventKind, Window>,
}

impl Collapser {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            open: HashMap::new(),
        }
    }

    /// The event to publish now, or `None` when one of its kind went out less than a window ago
    /// (it is then counted, and reported with the count when the window closes).
    pub fn offer(&mut self, event: Event, now: Instant) -> Option<Event> {
        match self.open.get_mut(&event.kind) {
            Some(w) if now.duration_since(w.opened) < self.window => {
                w.repeats += 1;
                w.last = Some(event);
                None
            }
            _ => {
                self.open.insert(
                    event.kind,
                    Window {
                        opened: now,
                        repeats: 0,
                        last: None,
                    },
                );
                Some(event)
            }
        }
    }

    /// One summary per window that closed with repeats. A summary opens a new window, so a steady
    /// stream of one error gives one event per window.
    pub fn due(&mut self, now: Instant) -> Vec<Event> {
        let window = self.window;
        let mut out = Vec::new();
        self.open.retain(|_, w| {
            if now.duration_since(w.opened) < window {
                return true;
            }
            match w.last.take() {
                Some(last) => {
                    out.push(summary(last, w.repeats, window));
                    *w = Window {
                        opened: now,
                        repeats: 0,
                        last: None,
                    };
                    true
                }
                None => false,
            }
        });
        out
    }

    /// Summaries of every open window with repeats (at shutdown).
    pub fn drain(&mut self) -> Vec<Event> {
        let window = self.window;
        self.open
            .drain()
            .filter_map(|(_, w)| w.last.map(|last| summary(last, w.repeats, window)))
            .collect()
    }
}

fn summary(last: Event, repeats: u64, window: Duration) -> Event {
    let times = if repeats == 1 { "time" } else { "times" };
    Event::new(
        last.kind,
        format!(
            "{} (repeated {repeats} more {times} within {} s)",
            last.message,
            window.as_secs()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failing(n: u32) -> Event {
        Event::new(EventKind::S3Failing, format!("S3 upload failing ({n})"))
    }

    #[test]
    fn repeats_within_a_window_become_one_event_with_a_count() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut c = Collapser::new(Duration::from_secs(10));
        assert_eq!(c.offer(failing(1), t0), Some(failing(1)));
        assert_eq!(c.offer(failing(2), t0 + s), None);
        assert_eq!(c.offer(failing(3), t0 + 2 * s), None);
        let other = Event::new(EventKind::S3Recovered, "recovered");
        assert_eq!(c.offer(other.clone(), t0 + 2 * s), Some(other), "other kinds pass");
        assert!(c.due(t0 + 9 * s).is_empty());
        let due = c.due(t0 + 10 * s);
        assert_eq!(due.len(), 1);
        assert_eq!(
            due[0].message,
            "S3 upload failing (3) (repeated 2 more times within 10 s)"
        );
        // The summary opened a new window: a further repeat is held again.
        assert_eq!(c.offer(failing(4), t0 + 11 * s), None);
        assert_eq!(c.drain().len(), 1);
    }

    #[test]
    fn a_window_without_repeats_closes_quietly() {
        let t0 = Instant::now();
        let mut c = Collapser::new(Duration::from_secs(10));
        assert!(c.offer(failing(1), t0).is_some());
        assert!(c.due(t0 + Duration::from_secs(10)).is_empty());
        assert!(c.offer(failing(2), t0 + Duration::from_secs(11)).is_some());
    }
}
