//! The one-shot commands: `healthcheck`, `decrypt` and `legal-hold` (`verify` has its own file).

use super::*;
use retention_bot::error_chain::Chain;

/// One GET over plain TCP. A full HTTP client for a single loopback request would add a dependency
/// tree to the binary for nothing; HTTP/1.0 without keep-alive keeps this to a few lines.
pub(super) fn healthcheck() -> ExitCode {
    let mut addr = match config::ingest_addr(|k| std::env::var(k).ok()) {
        Ok(a) => a,
        Err(e) => {
            esay!("retention-bot: configuration error: {e}", e = Chain(&e));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let answer = (|| {
        let mut conn = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        conn.set_read_timeout(Some(Duration::from_secs(3)))?;
        conn.write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut head = String::new();
        conn.take(64).read_to_string(&mut head)?;
        Ok::<_, std::io::Error>(head)
    })();
    match answer {
        Ok(head) if head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200") => ExitCode::SUCCESS,
        Ok(head) => {
            esay!("unhealthy: {addr} answered {:?}", head.lines().next().unwrap_or(""));
            ExitCode::FAILURE
        }
        Err(e) => {
            esay!("unhealthy: cannot reach {addr}: {e}", e = Chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// A runtime for a one-shot command that talks to AWS.
pub(super) fn tool_runtime(command: &str) -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => Some(rt),
        Err(e) => {
            esay!(
                "retention-bot {command}: cannot start the async runtime: {e}",
                e = Chain(&e)
            );
            None
        }
    }
}

pub(super) fn legal_hold(options: &retention_bot::legal_hold::Options) -> ExitCode {
    use retention_bot::legal_hold::Hold;
    if let (Some(from), Some(to)) = (options.from, options.to)
        && from > to
    {
        esay!("retention-bot legal-hold: --from {from} is after --to {to}: the period is empty");
        return ExitCode::from(EXIT_CONFIG);
    }
    let Some(runtime) = tool_runtime("legal-hold") else {
        return ExitCode::FAILURE;
    };
    let summary = match runtime.block_on(retention_bot::legal_hold::run(options)) {
        Ok(s) => s,
        Err(e) => {
            esay!("retention-bot legal-hold: {e}", e = Chain(&e));
            return ExitCode::FAILURE;
        }
    };
    let (bucket, state) = (
        &options.archive.bucket,
        match options.state {
            Hold::On => "ON",
            Hold::Off => "OFF",
        },
    );
    for key in &summary.changed {
        say!("legal hold {state}: s3://{bucket}/{key}");
    }
    for (key, e) in &summary.unreadable_manifests {
        esay!(
            "UNREADABLE manifest s3://{bucket}/{key}: {e} (the files it lists may be missing from the selection)",
            e = Chain(&e)
        );
    }
    for (key, e) in &summary.failed {
        esay!("FAILED s3://{bucket}/{key}: {e}", e = Chain(&e));
    }
    say!(
        "legal hold {state} on {} object(s) under s3://{bucket}/{}, {} failed, {} manifest(s) unreadable",
        summary.changed.len(),
        options.archive.prefix,
        summary.failed.len(),
        summary.unreadable_manifests.len()
    );
    if summary.changed.is_empty() && summary.failed.is_empty() && summary.unreadable_manifests.is_empty() {
        esay!(
            "retention-bot legal-hold: nothing selected under s3://{bucket}/{}: check --prefix (and the period)",
            options.archive.prefix
        );
        return ExitCode::FAILURE;
    }
    if summary.failed.is_empty() && summary.unreadable_manifests.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

pub(super) fn decrypt(options: &retention_bot::decrypt::Options, public_key: Vec<PathBuf>) -> ExitCode {
    use retention_bot::decrypt::Outcome;
    let Some(runtime) = tool_runtime("decrypt") else {
        return ExitCode::FAILURE;
    };
    let summary = match runtime.block_on(retention_bot::decrypt::run(options)) {
        Ok(s) => s,
        Err(e) => {
            esay!("retention-bot decrypt: {e}", e = Chain(&e));
            return ExitCode::FAILURE;
        }
    };
    let bucket = &options.archive.bucket;
    for (key, outcome) in &summary.restored {
        let (verb, path) = match outcome {
            Outcome::Decrypted(p) => ("decrypted", p),
            Outcome::Copied(p) => ("copied", p),
            Outcome::AlreadyThere(p) => ("already there", p),
        };
        say!("{verb}: s3://{bucket}/{key} -> {}", path.display());
    }
    for (key, e) in &summary.failed {
        esay!("FAILED s3://{bucket}/{key}: {e}", e = Chain(&e));
    }
    say!(
        "{} object(s) restored to {}, {} failed",
        summary.restored.len(),
        options.dest.display(),
        summary.failed.len()
    );
    let verified = if public_key.is_empty() {
        ExitCode::SUCCESS
    } else {
        super::verify::verify_dir_with(&options.dest, public_key)
    };
    if summary.failed.is_empty() {
        verified
    } else {
        ExitCode::FAILURE
    }
}
