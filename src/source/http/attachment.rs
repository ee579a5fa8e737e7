//! `multipart/form-data`: part `message` (a msgtype 6000 message), then part `file` (the bytes). The
//! bytes stream to disk; the message line is written only once the file is durable. Memory: the
//! message part is read within the budget, the file part never held whole, and the framing between
//! parts is bounded ([`super::framing`]).

use std::time::Duration;

use tokio::time::Instant;

use axum::extract::Request;
use axum::http::{StatusCode, header};
use futures_util::StreamExt;
use serde_json::json;

use super::body::{self, Limits, Share};
use super::framing::Framing;
use super::{ApiError, HttpState};
use crate::error_chain::Chain;
use crate::message::{self, InvalidMessage, Lines, MSGTYPE_FILE};
use crate::metrics::Counter;
use crate::spool::{PartialAttachment, safe_attachment_name};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub(super) async fn post_attachment(state: &HttpState, req: Request) -> Result<serde_json::Value, ApiError> {
    let bad = |msg: String| ApiError::new(StatusCode::BAD_REQUEST, msg);
    let started = Instant::now();
    let mut multipart = open_multipart(req)?;
    let idle = state.config.idle;
    let (text, share, safe) = message_part(state, &mut multipart).await?;
    let refused = |e: ApiError| {
        state.intake.metrics.incr(Counter::MessagesRxFailed);
        e
    };

    let field = next_part(&mut multipart, idle)
        .await?
        .filter(|f| f.name() == Some("file"));
    let Some(field) = field else {
        return Err(refused(bad(
            "the `message` part must be followed by a part named `file` with the attachment's bytes".into(),
        )));
    };
    let safe = match safe {
        Some(name) => name,
        None => safe_attachment_name(field.file_name().unwrap_or("")).map_err(|e| {
            refused(bad(format!(
                "file name of part `file`: {e}; nothing was written",
                e = Chain(&e)
            )))
        })?,
    };

    let failed = |e: ApiError| {
        state.intake.metrics.incr(Counter::FilesSavedFailed);
        e
    };
    let partial = receive_file(state, field, started).await.map_err(failed)?;
    if next_part(&mut multipart, idle).await.map_err(failed)?.is_some() {
        return Err(failed(bad(
            "unexpected part after `file`; send exactly `message` then `file`".into(),
        )));
    }
    // From here on the work runs to its end even if the client hangs up.
    // The message's share goes with its text, and then with its line into the spool's queue.
    let line = move |local: &str| {
        let mut lines = Lines::default();
        // The text was checked above, so it parses again.
        if let Ok(bytes) = message::with_local_filename(&text, local) {
            lines.bytes = bytes;
            lines.count = 1;
        }
        lines.accounted = Some(Box::new(share));
        lines
    };
    let stored = state.intake.spool.store_attachment(partial, safe, line).await?;
    let local = stored.path.to_string_lossy();
    Ok(json!({ "accepted": 1, "localfilename": local, "bytes": stored.bytes }))
}

/// The body as multipart parts, its framing bounded as it streams.
fn open_multipart(req: Request) -> Result<multer::Multipart<'static>, ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let boundary = multer::parse_boundary(content_type).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "not a valid multipart body: {e} (Content-Type needs a boundary)",
                e = Chain(&e)
            ),
        )
    })?;
    let mut framing = Framing::new(&boundary);
    let stream = req.into_body().into_data_stream().map(move |chunk| {
        let chunk = chunk.map_err(BoxError::from)?;
        framing.follow(&chunk).map_err(BoxError::from)?;
        Ok::<_, BoxError>(chunk)
    });
    Ok(multer::Multipart::new(OneChunkAtATime::new(stream), boundary))
}

/// The `message` part, read within the budget and checked: its text, the budget it holds, and the
/// safe form of the file name it gives (if it gives one).
async fn message_part(
    state: &HttpState,
    multipart: &mut multer::Multipart<'static>,
) -> Result<(Vec<u8>, Share, Option<String>), ApiError> {
    let bad = |msg: String| ApiError::new(StatusCode::BAD_REQUEST, msg);
    let idle = state.config.idle;
    let field = next_part(multipart, idle)
        .await?
        .filter(|f| f.name() == Some("message"));
    let Some(field) = field else {
        return Err(bad(
            "the first part must be named `message` (a msgtype 6000 message), followed by a part named `file`".into(),
        ));
    };
    let mut share = Share::default();
    let limits = Limits {
        max: state.config.max_body,
        idle,
    };
    let mut text = body::read(field, limits, &state.budget, &mut share).await?;
    // The line made from it later is about as long again; what the buffer held beyond the text
    // goes back before the file streams (which may take long).
    text.shrink_to_fit();
    state.budget.cover(&mut share, 2 * text.len()).await?;
    state.budget.shrink(&mut share, 2 * text.len());
    state.intake.metrics.incr(Counter::MessagesRx);
    let refused = |e: ApiError| {
        state.intake.metrics.incr(Counter::MessagesRxFailed);
        e
    };
    let len = text.len();
    let check = move || {
        let checked = message::check_line(&text, 1).and_then(|c| require_file_message(c.msgtype));
        let name = message::file_name(&text);
        (text, checked, name)
    };
    let (text, checked, requested) = super::check_off_the_workers(len, "the message", check).await?;
    checked.map_err(|e| refused(ApiError::invalid(&[e], 0)))?;
    let safe = requested
        .map(|name| safe_attachment_name(&name))
        .transpose()
        .map_err(|e| {
            refused(bad(format!(
                "field `file.filename`: {e}; nothing was written",
                e = Chain(&e)
            )))
        })?;
    Ok((text, share, safe))
}

/// Streams the `file` part to a partial file; dropping the result removes it again. Nothing may
/// arrive for `WICKRIO_INGEST_IDLE_SECS`, and once the request (which began at `started`) has taken
/// four times that, each further span of that length must bring [`body::MIN_FILE_RATE`] on average:
/// a fast start buys no hours of trickling.
async fn receive_file(
    state: &HttpState,
    mut field: multer::Field<'static>,
    started: Instant,
) -> Result<PartialAttachment, ApiError> {
    let mut partial = state.intake.spool.begin_attachment(state.intake.max_file).await?;
    let idle = state.config.idle;
    let span = idle * 4;
    // The span being judged: when it began, and the bytes it has brought.
    let (mut since, mut brought) = (started, 0u64);
    let mut last_data = Instant::now();
    loop {
        // Wake when the idle limit runs out, and when the span ends, to judge its rate.
        let idle_left = idle.saturating_sub(last_data.elapsed());
        let wait = idle_left.min((since + span).saturating_duration_since(Instant::now()));
        let chunk = match tokio::time::timeout(wait, field.chunk()).await {
            Ok(chunk) => Some(chunk.map_err(|e| multipart_error("the attachment upload broke off", &e))?),
            Err(_) => None,
        };
        if let Some(None) = chunk {
            return Ok(partial);
        }
        if let Some(Some(chunk)) = &chunk {
            brought += chunk.len() as u64;
            last_data = Instant::now();
            partial.write(chunk).await?;
        } else if last_data.elapsed() >= idle {
            return Err(body::idle(idle));
        }
        if since.elapsed() >= span {
            let rate = (brought as f64 / since.elapsed().as_secs_f64()) as u64;
            if rate < body::MIN_FILE_RATE {
                return Err(body::too_slow(rate, started.elapsed()));
            }
            (since, brought) = (Instant::now(), 0);
        }
    }
}

async fn next_part(
    m: &mut multer::Multipart<'static>,
    idle: Duration,
) -> Result<Option<multer::Field<'static>>, ApiError> {
    tokio::time::timeout(idle, m.next_field())
        .await
        .map_err(|_| body::idle(idle))?
        .map_err(|e| multipart_error("malformed multipart body", &e))
}

fn multipart_error(what: &str, e: &multer::Error) -> ApiError {
    let status = match e {
        multer::Error::FieldSizeExceeded { .. } | multer::Error::StreamSizeExceeded { .. } => {
            StatusCode::PAYLOAD_TOO_LARGE
        }
        _ => StatusCode::BAD_REQUEST,
    };
    ApiError::new(status, format!("{what}: {e}", e = Chain(&e)))
}

/// Hands multer one chunk per poll. multer reads its stream until it is not ready before it yields
/// any of a part's data, so from a fast client it would gather as much as the socket holds (megabytes
/// per connection); a `Pending` (with an immediate wake) after each chunk makes it pass each chunk on.
struct OneChunkAtATime<S> {
    inner: S,
    just_gave: bool,
}

impl<S> OneChunkAtATime<S> {
    fn new(inner: S) -> Self {
        Self {
            inner,
            just_gave: false,
        }
    }
}

impl<S: futures_util::Stream + Unpin> futures_util::Stream for OneChunkAtATime<S> {
    type Item = S::Item;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<S::Item>> {
        if std::mem::take(&mut self.just_gave) {
            cx.waker().wake_by_ref();
            return std::task::Poll::Pending;
        }
        let next = std::pin::Pin::new(&mut self.inner).poll_next(cx);
        self.just_gave = matches!(next, std::task::Poll::Ready(Some(_)));
        next
    }
}

fn require_file_message(msgtype: i64) -> Result<(), InvalidMessage> {
    if msgtype == MSGTYPE_FILE {
        return Ok(());
    }
    Err(InvalidMessage {
        line: 1,
        field: Some("msgtype".into()),
        problem: format!("must be {MSGTYPE_FILE} for a message with a file"),
    })
}
