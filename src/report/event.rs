//! Events: what the bot tells its operators through SNS, in the original's message shape.

use serde::Serialize;
use tokio::sync::mpsc;

/// How urgent an event is. `critical`: the bot stopped, will not start, or is no longer capturing
/// or shipping data; an operator must act. Everything else is `normal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Normal,
    Critical,
}

/// What happened. Repeats of one kind collapse (see [`Collapser`](super::collapse::Collapser)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    Started,
    Stopping,
    Stopped,
    /// An exit caused by an error: bad configuration, a refused login, a fatal runtime error.
    Fatal,
    LoginFailed,
    PasswordGenerated,
    PasswordRotated,
    SecretUpdateFailed,
    S3Failing,
    S3Recovered,
    KmsFailing,
    KmsRecovered,
    /// A write or fsync of a message file or attachment failed: requests are refused (not acknowledged).
    SpoolFailing,
    SpoolRecovered,
    DiskLow,
    DiskFull,
    DiskRecovered,
    WatchdogWarning,
    WatchdogFailure,
    WatchdogRecovered,
}

impl EventKind {
    pub fn severity(self) -> Severity {
        use EventKind::*;
        match self {
            Fatal | LoginFailed | SecretUpdateFailed | SpoolFailing | DiskFull | WatchdogFailure => Severity::Critical,
            _ => Severity::Normal,
        }
    }
}

/// One event for the operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub message: String,
}

impl Event {
    pub fn new(kind: EventKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// Who sends the events: the original's `complianceBot`, `device`, `dockerImage` and `dockerTag`.
#[derive(Debug, Clone)]
pub struct Origin {
    pub bot_name: String,
    /// The host name (in a container, the container's).
    pub device: String,
    /// `RETENTION_BOT_IMAGE` (set by the container image), else the program's name.
    pub image: String,
    /// This build's version.
    pub tag: String,
}

impl Origin {
    pub fn of_this_process(bot_name: &str) -> Self {
        let device = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "unknown".to_owned());
        let image = std::env::var("RETENTION_BOT_IMAGE")
            .ok()
            .filter(|i| !i.is_empty())
            .unwrap_or_else(|| env!("CARGO_PKG_NAME").to_owned());
        Self {
            bot_name: bot_name.to_owned(),
            device,
            image,
            tag: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }

    /// The SNS message: the original's JSON object, with these keys exactly.
    pub fn notification(&self, event: &Event, at: chrono::DateTime<chrono::Utc>) -> String {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Notification<'a> {
            compliance_bot: &'a str,
            date_time: String,
            device: &'a str,
            docker_image: &'a str,
            docker_tag: &'a str,
            message: &'a str,
            notification_type: &'static str,
            severity: &'static str,
        }
        let n = Notification {
            compliance_bot: &self.bot_name,
            date_time: at.format("%Y-%m-%dT%H:%M:%S").to_string(),
            device: &self.device,
            docker_image: &self.image,
            docker_tag: &self.tag,
            message: &event.message,
            notification_type: "Bot Event",
            severity: match event.kind.severity() {
                Severity::Normal => "normal",
                Severity::Critical => "critical",
            },
        };
        serde_json::to_string(&n).unwrap_or_default()
    }
}

/// Events waiting for the publisher at most; beyond it new events are dropped (and logged).
pub const QUEUE: usize = 256;

/// Where any part of the bot sends events. Cheap to clone; sending never waits.
#[derive(Debug, Clone, Default)]
pub struct Events {
    tx: Option<mpsc::Sender<Event>>,
}

impl Events {
    /// Events that go nowhere: no topic is configured (they are logged where they arise).
    pub fn none() -> Self {
        Self::default()
    }

    pub(super) fn channel() -> (Self, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (Self { tx: Some(tx) }, rx)
    }

    /// Queues the event for publishing; never blocks. A full queue drops it with a warning.
    pub fn send(&self, kind: EventKind, message: impl Into<String>) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(Event::new(kind, message)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(e)) => {
                tracing::warn!(kind = ?e.kind, message = %e.message, "event queue full: event not published")
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notification_has_exactly_the_original_keys() {
        let origin = Origin {
            bot_name: "bot1".into(),
            device: "host".into(),
            image: "retention-bot".into(),
            tag: "0.1.0".into(),
        };
        let at = chrono::DateTime::from_timestamp(1_665_579_939, 0).unwrap();
        let text = origin.notification(&Event::new(EventKind::LoginFailed, "wrong password"), at);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "complianceBot",
                "dateTime",
                "device",
                "dockerImage",
                "dockerTag",
                "message",
                "notificationType",
                "severity"
            ]
        );
        assert_eq!(v["dateTime"], "2022-10-12T13:05:39");
        assert_eq!(v["notificationType"], "Bot Event");
        assert_eq!(v["severity"], "critical");
    }
}
