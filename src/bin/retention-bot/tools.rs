//! The one-shot commands: `healthcheck`, `decrypt` and `verify`.

use super::*;

/// One GET over plain TCP. A full HTTP client for a single loopback request would add a dependency
/// tree to the binary for nothing; HTTP/1.0 without keep-alive keeps this to a few lines.
pub(super) fn healthcheck() -> ExitCode {
    let mut addr = match config::ingest_addr(|k| std::env::var(k).ok()) {
        Ok(a) => a,
        Err(e) => {
            esay!("retention-bot: configuration error: {e}");
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
            esay!("unhealthy: cannot reach {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}

pub(super) fn decrypt(options: &retention_bot::decrypt::Options, public_key: Option<PathBuf>) -> ExitCode {
    use retention_bot::decrypt::Outcome;
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            esay!("retention-bot decrypt: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let summary = match runtime.block_on(retention_bot::decrypt::run(options)) {
        Ok(s) => s,
        Err(e) => {
            esay!("retention-bot decrypt: {e}");
            return ExitCode::FAILURE;
        }
    };
    let bucket = &options.bucket;
    for (key, outcome) in &summary.restored {
        let (verb, path) = match outcome {
            Outcome::Decrypted(p) => ("decrypted", p),
            Outcome::Copied(p) => ("copied", p),
            Outcome::AlreadyThere(p) => ("already there", p),
        };
        say!("{verb}: s3://{bucket}/{key} -> {}", path.display());
    }
    for (key, e) in &summary.failed {
        esay!("FAILED s3://{bucket}/{key}: {e}");
    }
    say!(
        "{} object(s) restored to {}, {} failed",
        summary.restored.len(),
        options.dest.display(),
        summary.failed.len()
    );
    let verified = match public_key {
        Some(key) => verify(&options.dest, Some(key)),
        None => ExitCode::SUCCESS,
    };
    if summary.failed.is_empty() {
        verified
    } else {
        ExitCode::FAILURE
    }
}

pub(super) fn verify(dir: &std::path::Path, public_key: Option<PathBuf>) -> ExitCode {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let key_path = public_key
        .or_else(|| env("WICKRIO_STATE_DIR").map(|d| PathBuf::from(d).join(identity::PUBLIC_KEY_FILE)))
        .or_else(|| {
            env("WICKRIO_BOT_NAME").map(|b| {
                PathBuf::from("/tmp")
                    .join(b)
                    .join("state")
                    .join(identity::PUBLIC_KEY_FILE)
            })
        });
    let Some(key_path) = key_path else {
        esay!(
            "retention-bot verify: no public key: pass --public-key FILE, or set WICKRIO_STATE_DIR or WICKRIO_BOT_NAME"
        );
        return ExitCode::from(EXIT_CONFIG);
    };
    let key = match retention_bot::manifest::verify::read_public_key(&key_path) {
        Ok(k) => k,
        Err(e) => {
            esay!("retention-bot verify: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match retention_bot::manifest::verify::verify_dir(dir, &key) {
        Ok(report) => {
            for p in &report.problems {
                say!("{p}");
            }
            say!(
                "{}: {} manifest(s), {} entr{}, {} problem(s)",
                dir.display(),
                report.manifests,
                report.entries,
                if report.entries == 1 { "y" } else { "ies" },
                report.problems.len()
            );
            if report.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            esay!("retention-bot verify: cannot read {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}
