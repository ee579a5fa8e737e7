//! How the HTTP source listens and what it accepts: the address and token, and the limits that keep
//! hostile or broken clients from holding the bot's memory or connections.

use std::net::SocketAddr;
use std::time::Duration;

use super::{ConfigError, Secret, ingest_addr, parse_size, parse_u64, parse_u64_in};

#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub addr: SocketAddr,
    pub token: Option<Secret>,
    pub max_body: usize,
    /// Bytes of request bodies held in memory at once, across all requests.
    pub max_buffered: usize,
    pub max_file: u64,
    /// A request whose headers take longer, or whose body makes no progress for this long, is
    /// answered 408 (or its connection closed) and its memory released.
    pub idle: Duration,
    /// Connections served at once; more are answered 503 and closed.
    pub max_connections: usize,
    pub shutdown_grace: Duration,
}

pub(super) fn ingest_config(
    env: &impl Fn(&str) -> Option<String>,
    get: &impl Fn(&str) -> Option<String>,
) -> Result<IngestConfig, ConfigError> {
    let addr = ingest_addr(env)?;
    let token = env("WICKRIO_INGEST_TOKEN").filter(|t| !t.is_empty()).map(Secret::new);
    if let Some(t) = &token
        && (t.expose().len() < 16 || t.expose().chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        return Err(ConfigError::new(
            "WICKRIO_INGEST_TOKEN",
            "too short or contains whitespace",
            "at least 16 visible characters",
        ));
    }
    if token.is_none() && !addr.ip().is_loopback() {
        return Err(ConfigError::new(
            "WICKRIO_INGEST_TOKEN",
            format!("not set, but WICKRIO_INGEST_ADDR={addr} accepts connections from other hosts"),
            "set a bearer token of at least 16 characters, or listen on a loopback address such as 127.0.0.1:8080",
        ));
    }
    let max_body = parse_size(get, "WICKRIO_INGEST_MAX_BODY", 16 << 20)?;
    let max_body = usize::try_from(max_body)
        .map_err(|_| ConfigError::new("WICKRIO_INGEST_MAX_BODY", "too large", "a size that fits in memory"))?;
    if max_body == 0 {
        return Err(ConfigError::new(
            "WICKRIO_INGEST_MAX_BODY",
            "0 would refuse every request",
            "a size of at least 1 byte, e.g. 16MiB",
        ));
    }
    let max_buffered = parse_size(get, "WICKRIO_INGEST_MAX_BUFFER", 256 << 20)?;
    let max_buffered = usize::try_from(max_buffered)
        .unwrap_or(usize::MAX)
        .min(u32::MAX as usize * 1024);
    if max_buffered < max_body {
        return Err(ConfigError::new(
            "WICKRIO_INGEST_MAX_BUFFER",
            format!("{max_buffered} bytes is less than WICKRIO_INGEST_MAX_BODY ({max_body} bytes)"),
            "a size at least as large as WICKRIO_INGEST_MAX_BODY, e.g. 256MiB",
        ));
    }
    let max_file = parse_size(get, "WICKRIO_INGEST_MAX_FILE", 60 << 30)?;
    let idle = parse_u64_in(get, "WICKRIO_INGEST_IDLE_SECS", 30, 1..=3600, "seconds")?;
    let max_connections = parse_u64_in(get, "WICKRIO_INGEST_MAX_CONNECTIONS", 512, 1..=65_536, "connections")?;
    let grace = parse_u64(get, "WICKRIO_SHUTDOWN_GRACE_SECS", 8)?;
    Ok(IngestConfig {
        addr,
        token,
        max_body,
        max_buffered,
        max_file,
        idle: Duration::from_secs(idle),
        max_connections: max_connections as usize,
        shutdown_grace: Duration::from_secs(grace),
    })
}
