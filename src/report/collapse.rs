//! Repeats of one kind of event within a window collapse into one event with a count, so a flapping
//! bucket or a disk hovering at its limit does not flood the operators' topic.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use crate::events::{Event, EventKind};

/// Per key: when its window opened, and what came since.
struct Window<T> {
    opened: Instant,
    repeats: u64,
    last: Option<T>,
}

/// Repeats of anything with a key (an event's kind, a log line's text) within a window: the first
/// goes out, the rest are counted, and the last of them comes back with the count when the window
/// closes.
pub(crate) struct Repeats<K, T> {
    window: Duration,
    open: HashMap<K, Window<T>>,
}

impl<K: Hash + Eq, T> Repeats<K, T> {
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            window,
            open: HashMap::new(),
        }
    }

    /// `item` if it is to go out now; `None` when one of its key went out less than a window ago
    /// (it is then counted).
    pub(crate) fn offer(&mut self, key: K, item: T, now: Instant) -> Option<T> {
        match self.open.get_mut(&key) {
            Some(w) if now.duration_since(w.opened) < self.window => {
                w.repeats += 1;
                w.last = Some(item);
                None
            }
            _ => {
                self.open.insert(
                    key,
                    Window {
                        opened: now,
                        repeats: 0,
                        last: None,
                    },
                );
                Some(item)
            }
        }
    }

    /// The last repeat of each window that closed with repeats, and their count. A window that
    /// closes with repeats opens a new one, so a steady stream gives one item per window; one that
    /// closes quietly is forgotten.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<(T, u64)> {
        let window = self.window;
        let mut out = Vec::new();
        self.open.retain(|_, w| {
            if now.duration_since(w.opened) < window {
                return true;
            }
            match w.last.take() {
                Some(last) => {
                    out.push((last, w.repeats));
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

    /// The last repeat and count of every open window with repeats (at shutdown).
    pub(crate) fn drain(&mut self) -> Vec<(T, u64)> {
        self.open
            .drain()
            .filter_map(|(_, w)| w.last.map(|last| (last, w.repeats)))
            .collect()
    }

    pub(crate) fn window(&self) -> Duration {
        self.window
    }

    /// Keys with an open window.
    pub(crate) fn len(&self) -> usize {
        self.open.len()
    }

    pub(crate) fn follows(&self, key: &K) -> bool {
        self.open.contains_key(key)
    }
}

/// Events collapsed by kind, each summary saying how often its kind repeated.
pub(crate) struct Collapser(Repeats<EventKind, Event>);

impl Collapser {
    pub fn new(window: Duration) -> Self {
        Self(Repeats::new(window))
    }

    /// The event to publish now, or `None` when one of its kind went out less than a window ago
    /// (it is then counted, and reported with the count when the window closes).
    pub fn offer(&mut self, event: Event, now: Instant) -> Option<Event> {
        self.0.offer(event.kind, event, now)
    }

    /// One summary per window that closed with repeats.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<Event> {
        let window = self.0.window();
        self.0
            .due(now)
            .into_iter()
            .map(|(e, n)| summary(e, n, window))
            .collect()
    }

    /// Summaries of every open window with repeats (at shutdown).
    pub fn drain(&mut self) -> Vec<Event> {
        let window = self.0.window();
        self.0.drain().into_iter().map(|(e, n)| summary(e, n, window)).collect()
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
