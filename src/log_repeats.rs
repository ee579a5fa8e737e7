//! A warning that repeats is logged once, then once a window with how often it came: the log's side
//! of what `report::collapse` does for the SNS topic. A chatty dependency (matrix-sdk warns each time
//! it cannot back up a room key, which the bot never asked it to) must not bury the lines an
//! operator needs. Information and debug lines pass untouched.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer};

use crate::report::collapse::Repeats;

/// How long repeats of a warning are counted before the count is logged.
pub const WINDOW: Duration = Duration::from_secs(600);
/// Different warnings followed at once at most; beyond this a new one is written as it comes (the
/// text of some is chosen by others: a file name, a room).
const MAX_FOLLOWED: usize = 1_000;
/// A warning's text is compared on this many bytes at most.
const MAX_KEY: usize = 1_024;
/// The target of the count's own line.
const TARGET: &str = "retention_bot::log_repeats";

/// The layer; add it to the subscriber beside the formatter, with the formatter's writer and format.
pub struct RepeatedWarnings<W> {
    repeats: Mutex<Repeats<String, String>>,
    writer: W,
    json: bool,
}

impl<W: for<'a> MakeWriter<'a>> RepeatedWarnings<W> {
    pub fn new(window: Duration, writer: W, json: bool) -> Self {
        Self {
            repeats: Mutex::new(Repeats::new(window)),
            writer,
            json,
        }
    }

    /// Writes the count's line itself, in the formatter's shape: tracing drops an event sent from
    /// within another's dispatch, so it cannot be logged the usual way from here.
    fn write_count(&self, line: &str, n: u64, window: Duration) {
        let message = format!("this warning repeated {n} more times in {} s: {line}", window.as_secs());
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let text = if self.json {
            let json = serde_json::json!({ "timestamp": now, "level": "WARN",
                "fields": { "message": message, "repeats": n }, "target": TARGET });
            format!("{json}\n")
        } else {
            format!("{now}  WARN {TARGET}: {message}\n")
        };
        let _ = self.writer.make_writer().write_all(text.as_bytes());
    }
}

/// A line's fields as text: the same text is the same warning.
struct Text(String);

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={value:?}", field.name());
    }
}

impl<S: Subscriber, W: for<'a> MakeWriter<'a> + 'static> Layer<S> for RepeatedWarnings<W> {
    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        let meta = event.metadata();
        if *meta.level() > Level::INFO {
            return true;
        }
        let now = Instant::now();
        let warning = *meta.level() <= Level::WARN;
        let text = warning.then(|| {
            let mut text = Text(meta.target().to_owned());
            event.record(&mut text);
            let mut cut = text.0.len().min(MAX_KEY);
            while !text.0.is_char_boundary(cut) {
                cut -= 1;
            }
            text.0.truncate(cut);
            text.0
        });
        // Any line of the log brings the counts of windows that closed: a burst's count is written
        // soon after it ends, not only when the same warning comes again.
        let (due, pass, window) = match self.repeats.lock() {
            Ok(mut repeats) => {
                let due = repeats.due(now);
                let pass = match text {
                    Some(text) if repeats.len() < MAX_FOLLOWED || repeats.follows(&text) => {
                        repeats.offer(text.clone(), text, now).is_some()
                    }
                    _ => true,
                };
                (due, pass, repeats.window())
            }
            Err(_) => return true,
        };
        for (line, n) in due {
            self.write_count(&line, n, window);
        }
        pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tracing_subscriber::layer::SubscriberExt as _;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_repeated_warning_is_logged_once_then_with_its_count() {
        let buffer = Buffer::default();
        let (writer, counts) = (buffer.clone(), buffer.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish()
            .with(RepeatedWarnings::new(
                Duration::from_millis(300),
                move || counts.clone(),
                false,
            ));
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..50 {
                tracing::warn!("Trying to backup room keys but no backup key was found");
                tracing::info!("an info line passes");
            }
            tracing::warn!(room = "!a", "another warning");
            tracing::warn!(room = "!b", "another warning");
            std::thread::sleep(Duration::from_millis(350));
            tracing::info!("an info line brings the count");
        });
        let out = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert_eq!(out.matches("Trying to backup room keys").count(), 2, "{out}");
        assert!(out.contains("repeated 49 more times in 0 s"), "{out}");
        assert_eq!(out.matches("an info line passes").count(), 50);
        assert_eq!(
            out.matches("another warning").count(),
            2,
            "different fields, different warnings"
        );
        let count = out.find("repeated 49 more times").unwrap();
        assert!(count < out.find("an info line brings the count").unwrap(), "{out}");
    }
}
