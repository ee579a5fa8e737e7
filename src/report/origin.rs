//! Who sends the events and the SNS message that carries one: the original's JSON object, key for
//! key, so the original's subscribers and filters keep working.

use serde::Serialize;

use crate::events::{Event, Severity};

/// The keys of the original's SNS message, in the order serde writes them (alphabetical, as the
/// original's). Subscribers and filter policies match on these: the message has exactly these.
pub const NOTIFICATION_KEYS: [&str; 8] = [
    "complianceBot",
    "dateTime",
    "device",
    "dockerImage",
    "dockerTag",
    "message",
    "notificationType",
    "severity",
];

/// Who sends the events: the original's `complianceBot`, `device`, `dockerImage` and `dockerTag`.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    pub bot_name: String,
    /// The host name (in a container, the container's).
    pub device: String,
    /// `RETENTION_BOT_IMAGE` (set by the container image), else the program's name.
    pub image: String,
    /// This build's version.
    pub tag: String,
}

impl Origin {
    pub(crate) fn of_this_process(bot_name: &str) -> Self {
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
    pub(crate) fn notification(&self, event: &Event, at: chrono::DateTime<chrono::Utc>) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventKind;

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
        assert_eq!(keys, NOTIFICATION_KEYS);
        assert_eq!(v["dateTime"], "2022-10-12T13:05:39");
        assert_eq!(v["notificationType"], "Bot Event");
        assert_eq!(v["severity"], "critical");
    }
}
