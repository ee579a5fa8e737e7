//! Which network the bot captures (`WICKRIO_NETWORK`): producers posting to the HTTP source, a
//! Matrix homeserver the bot logs into as a member, or an SQS queue a fleet of bots drains.

use super::ConfigError;

/// Where messages come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    /// Producers POST WickrIO messages to the HTTP source (the default).
    Http,
    /// The bot is a user on a Matrix homeserver and captures every room it is in.
    Matrix(MatrixConfig),
    /// Producers send to an SQS queue; any number of bots drain it.
    Sqs(SqsConfig),
}

/// Which queue, and how the bot drains it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqsConfig {
    /// `WICKRIO_SQS_QUEUE_URL`, e.g. `https://sqs.eu-west-1.amazonaws.com/123456789012/messages`.
    pub queue_url: url::Url,
    /// `WICKRIO_SQS_REGION`, else the URL's, else `AWS_DEFAULT_REGION`, else `us-east-1`.
    pub region: String,
    /// `WICKRIO_SQS_RECEIVERS`: long-polling receivers (each up to 10 messages a call).
    pub receivers: usize,
    /// `WICKRIO_SQS_DELETE_PAYLOADS`: delete a payload the SQS Extended Client put in S3 once its
    /// message is archived.
    pub delete_payloads: bool,
    /// `WICKRIO_SQS_PAYLOAD_BUCKETS`: the only buckets payloads and attachments are read from (a
    /// producer must not make the bot read, or delete, any object it can reach).
    pub payload_buckets: Vec<String>,
}

/// How the bot reaches its homeserver and who it is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatrixConfig {
    /// `WICKRIO_MATRIX_HOMESERVER`, e.g. `https://matrix.example.org`.
    pub homeserver: url::Url,
    /// `WICKRIO_BOT_NAME`: a localpart (`compliancebot`) or a full user ID (`@compliancebot:example.org`).
    pub user: String,
}

pub(super) fn from_lookup(get: &impl Fn(&str) -> Option<String>, bot_name: &str) -> Result<Network, ConfigError> {
    let network = get("WICKRIO_NETWORK").map(|v| v.to_ascii_lowercase());
    if network.as_deref() != Some("sqs") && get("WICKRIO_SQS_QUEUE_URL").is_some() {
        return Err(ConfigError::new(
            "WICKRIO_SQS_QUEUE_URL",
            "is set, but WICKRIO_NETWORK is not sqs",
            "set WICKRIO_NETWORK=sqs to drain the queue, or unset WICKRIO_SQS_QUEUE_URL",
        ));
    }
    match network.as_deref() {
        Some("sqs") => sqs(get).map(Network::Sqs),
        None | Some("http") => {
            if get("WICKRIO_MATRIX_HOMESERVER").is_some() {
                return Err(ConfigError::new(
                    "WICKRIO_MATRIX_HOMESERVER",
                    "is set, but WICKRIO_NETWORK is not matrix",
                    "set WICKRIO_NETWORK=matrix to capture the homeserver, or unset WICKRIO_MATRIX_HOMESERVER",
                ));
            }
            Ok(Network::Http)
        }
        Some("matrix") => {
            let var = "WICKRIO_MATRIX_HOMESERVER";
            let text = get(var).ok_or_else(|| {
                ConfigError::new(
                    var,
                    "not set, but WICKRIO_NETWORK is matrix",
                    "the homeserver's client URL, e.g. https://matrix.example.org",
                )
            })?;
            let homeserver = url::Url::parse(&text)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                .ok_or_else(|| {
                    ConfigError::new(
                        var,
                        format!("{text:?} is not an http(s) URL"),
                        "the homeserver's client URL, e.g. https://matrix.example.org",
                    )
                })?;
            if bot_name.starts_with('@') && !bot_name.contains(':') {
                return Err(ConfigError::new(
                    "WICKRIO_BOT_NAME",
                    format!("{bot_name:?} starts like a Matrix user ID but has no server part"),
                    "a localpart such as compliancebot, or a full user ID such as @compliancebot:example.org",
                ));
            }
            Ok(Network::Matrix(MatrixConfig {
                homeserver,
                user: bot_name.to_owned(),
            }))
        }
        Some(other) => Err(ConfigError::new(
            "WICKRIO_NETWORK",
            format!("unknown network {other:?}"),
            "accepted: http (the default), matrix, sqs",
        )),
    }
}

/// `WICKRIO_SQS_*`, with `WICKRIO_NETWORK=sqs`.
fn sqs(get: &impl Fn(&str) -> Option<String>) -> Result<SqsConfig, ConfigError> {
    let var = "WICKRIO_SQS_QUEUE_URL";
    let example = "the queue's URL, e.g. https://sqs.eu-west-1.amazonaws.com/123456789012/messages";
    let text = get(var).ok_or_else(|| ConfigError::new(var, "not set, but WICKRIO_NETWORK is sqs", example))?;
    let queue_url = url::Url::parse(&text)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .filter(|u| {
            u.path_segments()
                .is_some_and(|s| s.filter(|p| !p.is_empty()).count() == 2)
        })
        .filter(|u| u.query().is_none() && u.fragment().is_none())
        .ok_or_else(|| ConfigError::new(var, format!("{text:?} is not an SQS queue URL"), example))?;
    let region = match get("WICKRIO_SQS_REGION") {
        Some(region) => {
            super::aws_names::check_region("WICKRIO_SQS_REGION", &region)?;
            region
        }
        None => region_of(&queue_url)
            .or_else(|| get("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "us-east-1".to_owned()),
    };
    let receivers = match get("WICKRIO_SQS_RECEIVERS") {
        None => 4,
        Some(n) => n
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=64).contains(n))
            .ok_or_else(|| {
                ConfigError::new(
                    "WICKRIO_SQS_RECEIVERS",
                    format!("{n:?} is not a number from 1 to 64"),
                    "e.g. 4",
                )
            })?,
    };
    let delete_payloads = match get("WICKRIO_SQS_DELETE_PAYLOADS")
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ConfigError::new(
                "WICKRIO_SQS_DELETE_PAYLOADS",
                format!("{other:?} is not true or false"),
                "true to delete payloads the SQS Extended Client put in S3 once archived; false (the default) to keep them",
            ));
        }
    };
    let payload_buckets = get("WICKRIO_SQS_PAYLOAD_BUCKETS")
        .map(|list| {
            list.split(',')
                .map(|b| b.trim().to_owned())
                .filter(|b| !b.is_empty())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    if let Some(bad) = payload_buckets
        .iter()
        .find(|b| !b.chars().all(|c| c.is_ascii_alphanumeric() || "-._".contains(c)))
    {
        return Err(ConfigError::new(
            "WICKRIO_SQS_PAYLOAD_BUCKETS",
            format!("{bad:?} is not a bucket name"),
            "bucket names, separated by commas, e.g. producer-payloads,producer-files",
        ));
    }
    Ok(SqsConfig {
        queue_url,
        region,
        receivers,
        delete_payloads,
        payload_buckets,
    })
}

/// The region an AWS queue URL names (`sqs.<region>.amazonaws.com`, or the legacy
/// `<region>.queue.amazonaws.com`); `None` for any other host (a local stand-in).
fn region_of(url: &url::Url) -> Option<String> {
    let host = url.host_str()?;
    let region = host
        .strip_prefix("sqs.")
        .and_then(|h| h.split_once(".amazonaws.com"))
        .map(|(r, _)| r)
        .or_else(|| host.strip_suffix(".queue.amazonaws.com"))?;
    Some(region.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(vars: &[(&str, &str)], bot: &str) -> Result<Network, ConfigError> {
        let get = |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string());
        from_lookup(&get, bot)
    }

    #[test]
    fn http_is_the_default() {
        assert_eq!(parse(&[], "bot").unwrap(), Network::Http);
    }

    #[test]
    fn matrix_needs_an_http_url() {
        let ok = parse(
            &[
                ("WICKRIO_NETWORK", "Matrix"),
                ("WICKRIO_MATRIX_HOMESERVER", "https://hs.example"),
            ],
            "bot",
        )
        .unwrap();
        let Network::Matrix(m) = ok else { panic!("not matrix") };
        assert_eq!(m.homeserver.as_str(), "https://hs.example/");
        assert_eq!(m.user, "bot");
        let missing = parse(&[("WICKRIO_NETWORK", "matrix")], "bot").unwrap_err();
        assert_eq!(missing.var, "WICKRIO_MATRIX_HOMESERVER");
        let bad = parse(
            &[("WICKRIO_NETWORK", "matrix"), ("WICKRIO_MATRIX_HOMESERVER", "ftp://x")],
            "bot",
        )
        .unwrap_err();
        assert!(bad.problem.contains("not an http(s) URL"), "{bad}");
    }

    #[test]
    fn sqs_needs_a_queue_url_and_takes_its_region() {
        let ok = parse(
            &[
                ("WICKRIO_NETWORK", "sqs"),
                (
                    "WICKRIO_SQS_QUEUE_URL",
                    "https://sqs.eu-west-1.amazonaws.com/123456789012/msgs.fifo",
                ),
            ],
            "bot",
        )
        .unwrap();
        let Network::Sqs(q) = ok else { panic!("not sqs") };
        assert_eq!(
            (q.region.as_str(), q.receivers, q.delete_payloads),
            ("eu-west-1", 4, false)
        );
        let local = parse(
            &[
                ("WICKRIO_NETWORK", "sqs"),
                ("WICKRIO_SQS_QUEUE_URL", "http://127.0.0.1:5000/123456789012/q"),
                ("AWS_DEFAULT_REGION", "us-west-2"),
                ("WICKRIO_SQS_DELETE_PAYLOADS", "true"),
            ],
            "bot",
        )
        .unwrap();
        let Network::Sqs(q) = local else { panic!("not sqs") };
        assert_eq!((q.region.as_str(), q.delete_payloads), ("us-west-2", true));
        assert!(q.payload_buckets.is_empty(), "no bucket unless listed");
        let listed = parse(
            &[
                ("WICKRIO_NETWORK", "sqs"),
                ("WICKRIO_SQS_QUEUE_URL", "https://h/1/q"),
                ("WICKRIO_SQS_PAYLOAD_BUCKETS", "a-b, c.d"),
            ],
            "bot",
        )
        .unwrap();
        let Network::Sqs(q) = listed else { panic!("not sqs") };
        assert_eq!(q.payload_buckets, ["a-b", "c.d"]);
        let bad = parse(
            &[
                ("WICKRIO_NETWORK", "sqs"),
                ("WICKRIO_SQS_QUEUE_URL", "https://h/1/q"),
                ("WICKRIO_SQS_PAYLOAD_BUCKETS", "a/b"),
            ],
            "bot",
        )
        .unwrap_err();
        assert_eq!(bad.var, "WICKRIO_SQS_PAYLOAD_BUCKETS");
        for bad in [
            "not a url",
            "ftp://sqs.x/1/q",
            "https://sqs.eu-west-1.amazonaws.com/q",
            "https://h/1/q?x=1",
        ] {
            let e = parse(&[("WICKRIO_NETWORK", "sqs"), ("WICKRIO_SQS_QUEUE_URL", bad)], "bot").unwrap_err();
            assert_eq!(e.var, "WICKRIO_SQS_QUEUE_URL", "{bad}");
        }
        assert_eq!(
            parse(&[("WICKRIO_NETWORK", "sqs")], "bot").unwrap_err().var,
            "WICKRIO_SQS_QUEUE_URL"
        );
        let stray = parse(&[("WICKRIO_SQS_QUEUE_URL", "https://h/1/q")], "bot").unwrap_err();
        assert_eq!(stray.var, "WICKRIO_SQS_QUEUE_URL");
        let many = parse(
            &[
                ("WICKRIO_NETWORK", "sqs"),
                ("WICKRIO_SQS_QUEUE_URL", "https://h/1/q"),
                ("WICKRIO_SQS_RECEIVERS", "0"),
            ],
            "bot",
        )
        .unwrap_err();
        assert_eq!(many.var, "WICKRIO_SQS_RECEIVERS");
    }

    #[test]
    fn refuses_unknown_networks_and_a_stray_homeserver() {
        assert_eq!(
            parse(&[("WICKRIO_NETWORK", "wickr")], "bot").unwrap_err().var,
            "WICKRIO_NETWORK"
        );
        let stray = parse(&[("WICKRIO_MATRIX_HOMESERVER", "https://hs.example")], "bot").unwrap_err();
        assert_eq!(stray.var, "WICKRIO_MATRIX_HOMESERVER");
        let half = parse(
            &[
                ("WICKRIO_NETWORK", "matrix"),
                ("WICKRIO_MATRIX_HOMESERVER", "https://hs.example"),
            ],
            "@bot",
        )
        .unwrap_err();
        assert_eq!(half.var, "WICKRIO_BOT_NAME");
    }
}
