//! Which network the bot captures (`WICKRIO_NETWORK`): producers posting to the HTTP source, or a
//! Matrix homeserver the bot logs into as a member.

use super::ConfigError;

/// Where messages come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    /// Producers POST WickrIO messages to the HTTP source (the default).
    Http,
    /// The bot is a user on a Matrix homeserver and captures every room it is in.
    Matrix(MatrixConfig),
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
    match network.as_deref() {
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
            "accepted: http (the default), matrix",
        )),
    }
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
