//! Hostile clients, shared by the abuse tests and the ingest benchmark: each attack opens its own
//! connection to a bot on 127.0.0.1 and returns how the bot answered.
#![allow(dead_code)] // the benchmark uses part of it

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MIB: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attack {
    /// Half a request header, then one byte a second.
    HalfHeader,
    /// A full header promising the largest body, then nothing.
    PromisedBody,
    /// A body sent one byte a second: within the idle limit, so it is held, but holds nothing.
    TrickledBody,
    /// A multipart body whose boundary never comes.
    NoBoundary,
    /// A multipart body whose first part's headers never end.
    EndlessPartHeaders,
    /// The largest body, every line invalid.
    InvalidLines,
    /// The largest body, one JSON array of zeros.
    NumberArray,
    /// A message with a field nested far deeper than any parser's stack.
    DeepNesting,
    /// The largest body, one message with a million distinct fields.
    ManyFields,
    /// The largest body (valid messages but the last), and a hang-up as soon as it is sent: the bot
    /// checks it after its client has gone.
    SendAndHangUp,
}

pub const ATTACKS: [Attack; 10] = [
    Attack::HalfHeader,
    Attack::PromisedBody,
    Attack::TrickledBody,
    Attack::NoBoundary,
    Attack::EndlessPartHeaders,
    Attack::InvalidLines,
    Attack::NumberArray,
    Attack::DeepNesting,
    Attack::ManyFields,
    Attack::SendAndHangUp,
];

fn head(port: u16, content_type: &str, length: usize) -> Vec<u8> {
    format!(
        "POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n"
    )
    .into_bytes()
}

/// Sends `body` as fast as the bot takes it (stopping if it closes), then reads the answer's status.
async fn send_and_read(port: u16, content_type: &str, body: Vec<u8>) -> Option<u16> {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    conn.write_all(&head(port, content_type, body.len())).await.ok()?;
    let (mut reader, mut writer) = conn.into_split();
    let sender = tokio::spawn(async move {
        let _ = writer.write_all(&body).await;
        writer
    });
    let status = read_status(&mut reader).await;
    sender.abort();
    status
}

/// The status of the answer on `reader`, or `None` if the connection closed without one.
async fn read_status(reader: &mut (impl AsyncReadExt + Unpin)) -> Option<u16> {
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    loop {
        let n = tokio::time::timeout(Duration::from_secs(60), reader.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if got.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&got);
    text.split_whitespace().nth(1)?.parse().ok()
}

/// One attack; returns how the bot answered it (`None`: it closed the connection without a word).
pub async fn attack(kind: Attack, port: u16, max_body: usize) -> Option<u16> {
    match kind {
        Attack::HalfHeader => {
            let mut conn = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
            conn.write_all(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Le")
                .await
                .ok()?;
            for _ in 0..60 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if conn.write_all(b"n").await.is_err() {
                    break;
                }
            }
            read_status(&mut conn).await
        }
        Attack::PromisedBody => {
            let mut conn = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
            conn.write_all(&head(port, "application/x-ndjson", max_body))
                .await
                .ok()?;
            read_status(&mut conn).await
        }
        Attack::TrickledBody => {
            let mut conn = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
            conn.write_all(&head(port, "application/json", 1000)).await.ok()?;
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                conn.write_all(b" ").await.ok()?;
            }
            // Hangs up: the request is abandoned.
            Some(0)
        }
        Attack::NoBoundary => {
            send_and_read(port, "multipart/form-data; boundary=NeverComes", vec![b'z'; 32 * MIB]).await
        }
        Attack::EndlessPartHeaders => {
            let mut body = b"--B\r\nContent-Disposition: form-data; name=\"message\"\r\nX-Junk: ".to_vec();
            body.extend(vec![b'j'; 8 * MIB]);
            send_and_read(port, "multipart/form-data; boundary=B", body).await
        }
        Attack::InvalidLines => send_and_read(port, "application/x-ndjson", b"{x}\n".repeat(max_body / 4)).await,
        Attack::NumberArray => {
            let mut body = b"[".to_vec();
            body.extend(b"0,".repeat(max_body / 2 - 1));
            body.push(b']');
            send_and_read(port, "application/json", body).await
        }
        Attack::ManyFields => {
            let mut body = br#"{"msgtype":1000,"message_id":"m","msg_ts":"1","sender":"x""#.to_vec();
            let mut i = 0u32;
            while body.len() < max_body - 32 {
                body.extend_from_slice(format!(r#","f{i:x}":0"#).as_bytes());
                i += 1;
            }
            body.push(b'}');
            send_and_read(port, "application/json", body).await
        }
        Attack::SendAndHangUp => {
            let line = br#"{"msgtype":1000,"message_id":"h","msg_ts":"1","sender":"x","message":"hang up"}"#;
            let mut body = Vec::with_capacity(max_body);
            while body.len() + line.len() + 8 < max_body {
                body.extend_from_slice(line);
                body.push(b'\n');
            }
            body.extend_from_slice(b"invalid");
            let mut conn = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
            conn.write_all(&head(port, "application/x-ndjson", body.len()))
                .await
                .ok()?;
            conn.write_all(&body).await.ok()?;
            // Gone before the answer: whatever the bot does with the body, it accounts for it.
            drop(conn);
            Some(0)
        }
        Attack::DeepNesting => {
            let depth = 100_000;
            let body = format!(
                r#"{{"msgtype":1000,"message_id":"deep","msg_ts":"1","sender":"x","n":{}{}}}"#,
                "[".repeat(depth),
                "]".repeat(depth)
            );
            send_and_read(port, "application/json", body.into_bytes()).await
        }
    }
}

/// What an attack may be answered with: a refusal, a timeout, or a closed connection; never 202.
pub fn acceptable(kind: Attack, answer: Option<u16>) -> bool {
    match kind {
        Attack::TrickledBody | Attack::SendAndHangUp => true,
        Attack::HalfHeader | Attack::PromisedBody => matches!(answer, None | Some(408)),
        // 408: a body that waited for the budget and then was not whole in time.
        _ => matches!(answer, None | Some(400 | 408 | 413 | 503)),
    }
}
