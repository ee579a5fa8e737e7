//! How the bot reports on itself: SNS events, CloudWatch metrics and the watchdog. Parsed on its own
//! as well as inside [`Config`](super::Config), so that even a refused configuration can be reported
//! to the SNS topic when the topic itself is fine.

use std::time::Duration;

use super::ConfigError;
use super::aws_names::{SNS_TOPIC, arn_region, check_region};

#[derive(Debug, Clone)]
pub struct ReportingConfig {
    /// For the events' `complianceBot` and the metrics' `BotName` dimension.
    pub bot_name: String,
    pub sns: Option<SnsConfig>,
    pub cloudwatch: Option<CloudWatchConfig>,
    /// Repeats of one kind of event within this long are sent as one event with a count.
    pub event_repeat: Duration,
    /// Pending work without progress for this long is a watchdog warning; five times as long, a failure.
    pub watchdog_after: Duration,
}

/// `WICKRIO_SNS_TOPIC_ARN`: the topic and, from its ARN, its region.
#[derive(Debug, Clone)]
pub struct SnsConfig {
    pub topic_arn: String,
    pub region: String,
}

/// `WICKRIO_METRICS_TYPE=cloudwatch`.
#[derive(Debug, Clone)]
pub struct CloudWatchConfig {
    /// `AWS_DEFAULT_REGION`, else us-east-1, as in the original.
    pub region: String,
    pub interval: Duration,
}

/// Reads the reporting settings through `get` (environment, then secret).
pub fn from_lookup(get: &impl Fn(&str) -> Option<String>) -> Result<ReportingConfig, ConfigError> {
    let get = |name: &str| get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let sns = match get("WICKRIO_SNS_TOPIC_ARN") {
        None => None,
        Some(topic_arn) => {
            let region = arn_region("WICKRIO_SNS_TOPIC_ARN", &topic_arn, &SNS_TOPIC)?;
            Some(SnsConfig { topic_arn, region })
        }
    };
    let default_region = get("AWS_DEFAULT_REGION").unwrap_or_else(|| "us-east-1".to_owned());
    let cloudwatch = match get("WICKRIO_METRICS_TYPE").map(|t| t.to_ascii_lowercase()).as_deref() {
        None | Some("none") => None,
        Some("cloudwatch") => {
            check_region("AWS_DEFAULT_REGION", &default_region)?;
            let secs = seconds(&get, "WICKRIO_METRICS_INTERVAL_SECS", 60)?;
            Some(CloudWatchConfig {
                region: default_region,
                interval: Duration::from_secs(secs),
            })
        }
        Some(other) => {
            return Err(ConfigError::new(
                "WICKRIO_METRICS_TYPE",
                format!("unknown metrics type {other:?}"),
                "cloudwatch (Prometheus metrics are always served at GET /metrics)",
            ));
        }
    };
    Ok(ReportingConfig {
        bot_name: get("WICKRIO_BOT_NAME").unwrap_or_else(|| "(unnamed)".to_owned()),
        sns,
        cloudwatch,
        event_repeat: Duration::from_secs(seconds(&get, "WICKRIO_EVENT_REPEAT_SECS", 300)?),
        watchdog_after: Duration::from_secs(seconds(&get, "WICKRIO_WATCHDOG_SECS", 120)?),
    })
}

/// A whole number of seconds, from 1 s to a day.
fn seconds(get: &impl Fn(&str) -> Option<String>, var: &'static str, default: u64) -> Result<u64, ConfigError> {
    super::parse_u64_in(get, var, default, 1..=86_400, "seconds")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<ReportingConfig, ConfigError> {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        from_lookup(&|name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    #[test]
    fn nothing_is_reported_by_default() {
        let c = parse(&[]).unwrap();
        assert!(c.sns.is_none() && c.cloudwatch.is_none());
        assert_eq!(c.event_repeat, Duration::from_secs(300));
    }

    #[test]
    fn sns_region_comes_from_the_topic_arn() {
        let c = parse(&[(
            "WICKRIO_SNS_TOPIC_ARN",
            "arn:aws:sns:eu-central-1:123456789012:bot-events",
        )])
        .unwrap();
        assert_eq!(c.sns.unwrap().region, "eu-central-1");
        for bad in [
            "bot-events",
            "arn:aws:sns:eu-central-1:1234:t",
            "arn:aws:sqs:eu-central-1:123456789012:t",
        ] {
            assert_eq!(
                parse(&[("WICKRIO_SNS_TOPIC_ARN", bad)]).unwrap_err().var,
                "WICKRIO_SNS_TOPIC_ARN"
            );
        }
    }

    #[test]
    fn cloudwatch_uses_the_default_region_and_interval() {
        let c = parse(&[
            ("WICKRIO_METRICS_TYPE", "CloudWatch"),
            ("AWS_DEFAULT_REGION", "eu-west-1"),
        ])
        .unwrap();
        let cw = c.cloudwatch.unwrap();
        assert_eq!((cw.region.as_str(), cw.interval.as_secs()), ("eu-west-1", 60));
        let e = parse(&[("WICKRIO_METRICS_TYPE", "statsd")]).unwrap_err();
        assert_eq!(e.var, "WICKRIO_METRICS_TYPE");
        let e = parse(&[
            ("WICKRIO_METRICS_TYPE", "cloudwatch"),
            ("WICKRIO_METRICS_INTERVAL_SECS", "0"),
        ])
        .unwrap_err();
        assert_eq!(e.var, "WICKRIO_METRICS_INTERVAL_SECS");
    }
}
