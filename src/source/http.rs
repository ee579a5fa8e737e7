//! The HTTP source: producers POST WickrIO messages (JSON, NDJSON, or multipart with an attachment)
//! and get 202 only once what they sent is fsync'd. Also serves health, readiness and metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::sync::{Notify, Semaphore, SemaphorePermit};

use crate::config::{IngestConfig, Secret};
use crate::message::{InvalidMessage, Lines, MSGTYPE_FILE, Message, parse_ndjson};
use crate::metrics::{Counter, Metrics};
use crate::spool::{PartialAttachment, Spool, SpoolError, safe_attachment_name};

/// At most this many invalid lines are listed in a 400 answer.
const MAX_LISTED_ERRORS: usize = 100;

/// What the handlers share.
pub struct HttpState {
    pub spool: Spool,
    pub metrics: Arc<Metrics>,
    pub bot_name: String,
    pub config: IngestConfig,
    pub drain: Drain,
    /// KiB of request bodies that may be in memory at once (`WICKRIO_INGEST_MAX_BUFFER`).
    memory: Semaphore,
}

impl HttpState {
    pub fn new(spool: Spool, metrics: Arc<Metrics>, bot_name: String, config: IngestConfig) -> Self {
        let memory = Semaphore::new(config.max_buffered.div_ceil(1024));
        Self {
            spool,
            metrics,
            bot_name,
            config,
            drain: Drain::default(),
            memory,
        }
    }

    /// Waits until `bytes` more of request body may be held in memory. A request reserves all it
    /// may need at once (never piecemeal), so waiting requests cannot deadlock each other.
    async fn reserve_memory(&self, bytes: usize) -> Result<SemaphorePermit<'_>, ApiError> {
        let kib = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX);
        self.memory
            .acquire_many(kib)
            .await
            .map_err(|_| SpoolError::ShuttingDown.into())
    }
}

/// Shutdown bookkeeping: once draining, ingest answers 503; `idle` fires when the last in-flight
/// ingest request has finished.
#[derive(Default)]
pub struct Drain {
    draining: AtomicBool,
    in_flight: AtomicUsize,
    idle: Notify,
}

impl Drain {
    pub fn start(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Resolves once no ingest request is in flight.
    pub async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Counts one in-flight request for as long as it lives, even if the client goes away.
struct InFlight<'a>(&'a Drain);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// With `ingest` false (another source feeds the spool) only health, readiness and metrics are served.
pub fn router(state: Arc<HttpState>, ingest: bool) -> Router {
    let mut router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics));
    if ingest {
        router = router.merge(
            Router::new()
                .route("/v1/messages", post(post_messages))
                .layer(middleware::from_fn_with_state(state.clone(), guard)),
        );
    }
    router
        // Limits are enforced per body kind in the handlers (attachments may be far larger).
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// An error answer: a status and a JSON body that says what was wrong.
struct ApiError {
    status: StatusCode,
    body: serde_json::Value,
}

impl ApiError {
    fn new(status: StatusCode, error: impl std::fmt::Display) -> Self {
        Self {
            status,
            body: json!({ "error": error.to_string() }),
        }
    }
}

impl From<SpoolError> for ApiError {
    fn from(e: SpoolError) -> Self {
        let status = match e {
            SpoolError::DiskLow { .. } | SpoolError::DiskFull { .. } => StatusCode::INSUFFICIENT_STORAGE,
            SpoolError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            // The device failed: nothing was acknowledged, and the producer should retry shortly.
            SpoolError::ShuttingDown | SpoolError::Io { .. } => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, e)
    }
}

impl From<Vec<InvalidMessage>> for ApiError {
    fn from(errors: Vec<InvalidMessage>) -> Self {
        let listed: Vec<_> = errors.iter().take(MAX_LISTED_ERRORS).collect();
        let summary = errors.first().map(ToString::to_string).unwrap_or_default();
        let body = json!({
            "error": format!("{} invalid message(s), nothing of this request was written; first: {summary}", errors.len()),
            "invalid": listed,
        });
        ApiError {
            status: StatusCode::BAD_REQUEST,
            body,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body)).into_response();
        match self.status {
            StatusCode::UNAUTHORIZED => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::INSUFFICIENT_STORAGE => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            _ => {}
        }
        response
    }
}

/// Bearer token and shutdown gate in front of every ingest route.
async fn guard(State(state): State<Arc<HttpState>>, req: Request, next: Next) -> Response {
    if let Some(token) = &state.config.token
        && !authorized(req.headers(), token)
    {
        state.metrics.incr(Counter::RequestsRefused);
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token (Authorization: Bearer <WICKRIO_INGEST_TOKEN>)",
        )
        .into_response();
    }
    state.drain.in_flight.fetch_add(1, Ordering::SeqCst);
    let _in_flight = InFlight(&state.drain);
    if state.drain.is_draining() {
        state.metrics.incr(Counter::RequestsRefused);
        return ApiError::from(SpoolError::ShuttingDown).into_response();
    }
    next.run(req).await
}

fn authorized(headers: &HeaderMap, token: &Secret) -> bool {
    let Some(given) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some(given) = given.strip_prefix("Bearer ") else {
        return false;
    };
    bool::from(given.trim().as_bytes().ct_eq(token.expose().as_bytes()))
}

async fn post_messages(State(state): State<Arc<HttpState>>, req: Request) -> Response {
    let result = match content_type(req.headers()).as_deref() {
        Some("application/json") => post_json(&state, req, false).await,
        Some("application/x-ndjson" | "application/jsonl" | "application/x-jsonlines") => {
            post_json(&state, req, true).await
        }
        Some("multipart/form-data") => post_attachment(&state, req).await,
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "unsupported Content-Type {:?}; send application/json (one message), application/x-ndjson (one per line) or multipart/form-data (a message and its file)",
                other.unwrap_or("none")
            ),
        )),
    };
    match result {
        Ok(body) => (StatusCode::ACCEPTED, axum::Json(body)).into_response(),
        Err(e) => {
            state.metrics.incr(Counter::RequestsRefused);
            e.into_response()
        }
    }
}

fn content_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(value.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
}

async fn post_json(state: &HttpState, req: Request, ndjson: bool) -> Result<serde_json::Value, ApiError> {
    let max = state.config.max_body;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(too_large(max));
    }
    let _budget = state.reserve_memory(declared.unwrap_or(max)).await?;
    let body = read_limited(req.into_body().into_data_stream(), max).await?;
    let parsed = if ndjson {
        parse_ndjson(&body)
    } else {
        let mut lines = Lines::default();
        Message::parse(&body, 1)
            .map(|m| lines.push(&m))
            .map(|()| lines)
            .map_err(|e| (1, vec![e]))
    };
    let lines = match parsed {
        Ok(lines) => lines,
        Err((seen, errors)) => {
            state.metrics.add(Counter::MessagesRx, seen as u64);
            state.metrics.add(Counter::MessagesRxFailed, seen as u64);
            return Err(errors.into());
        }
    };
    let count = lines.count;
    state.metrics.add(Counter::MessagesRx, count as u64);
    if count > 0 {
        state.spool.append(lines).await?;
    }
    Ok(json!({ "accepted": count }))
}

fn too_large(max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("body larger than WICKRIO_INGEST_MAX_BODY ({max} bytes)"),
    )
}

/// Reads a body or a multipart part into memory, refusing (413) anything over `max` bytes.
async fn read_limited<S, E>(mut stream: S, max: usize) -> Result<Vec<u8>, ApiError>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("cannot read request body: {e}")))?;
        if buf.len() + chunk.len() > max {
            return Err(too_large(max));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// `multipart/form-data`: part `message` (a msgtype 6000 message), then part `file` (the bytes).
/// The bytes stream to disk; the message line is written only once the file is durable.
async fn post_attachment(state: &HttpState, req: Request) -> Result<serde_json::Value, ApiError> {
    let bad = |msg: String| ApiError::new(StatusCode::BAD_REQUEST, msg);
    let mut multipart = Multipart::from_request(req, &())
        .await
        .map_err(|e| bad(format!("not a valid multipart body: {e}")))?;

    let field = next_part(&mut multipart).await?.filter(|f| f.name() == Some("message"));
    let Some(field) = field else {
        return Err(bad(
            "the first part must be named `message` (a msgtype 6000 message), followed by a part named `file`".into(),
        ));
    };
    let budget = state.reserve_memory(state.config.max_body).await?;
    let text = read_limited(field, state.config.max_body).await?;
    drop(budget);
    state.metrics.incr(Counter::MessagesRx);
    let refused = |e: ApiError| {
        state.metrics.incr(Counter::MessagesRxFailed);
        e
    };
    let message = Message::parse(&text, 1)
        .and_then(require_file_message)
        .map_err(|e| refused(vec![e].into()))?;
    let requested = message.file().and_then(|f| f.get("filename")).and_then(|v| v.as_str());
    let safe = requested
        .map(safe_attachment_name)
        .transpose()
        .map_err(|e| refused(bad(format!("field `file.filename`: {e}; nothing was written"))))?;

    let Some(field) = next_part(&mut multipart).await?.filter(|f| f.name() == Some("file")) else {
        return Err(refused(bad(
            "the `message` part must be followed by a part named `file` with the attachment's bytes".into(),
        )));
    };
    let safe = match safe {
        Some(name) => name,
        None => safe_attachment_name(field.file_name().unwrap_or(""))
            .map_err(|e| refused(bad(format!("file name of part `file`: {e}; nothing was written"))))?,
    };

    let failed = |e: ApiError| {
        state.metrics.incr(Counter::FilesSavedFailed);
        e
    };
    let partial = receive_file(state, field).await.map_err(failed)?;
    if next_part(&mut multipart).await.map_err(failed)?.is_some() {
        return Err(failed(bad(
            "unexpected part after `file`; send exactly `message` then `file`".into(),
        )));
    }
    // From here on the work runs to its end even if the client hangs up.
    let stored = state.spool.store_attachment(partial, safe, message).await?;
    let local = stored.path.to_string_lossy();
    Ok(json!({ "accepted": 1, "localfilename": local, "bytes": stored.bytes }))
}

/// Streams the `file` part to a partial file; dropping the result removes it again.
async fn receive_file(
    state: &HttpState,
    mut field: axum::extract::multipart::Field<'_>,
) -> Result<PartialAttachment, ApiError> {
    let mut partial = state.spool.begin_attachment(state.config.max_file).await?;
    while let Some(chunk) = field
        .chunk()
        .await
        .map_err(|e| ApiError::new(e.status(), format!("attachment upload broke off: {e}")))?
    {
        partial.write(&chunk).await?;
    }
    Ok(partial)
}

async fn next_part(m: &mut Multipart) -> Result<Option<axum::extract::multipart::Field<'_>>, ApiError> {
    m.next_field()
        .await
        .map_err(|e| ApiError::new(e.status(), format!("malformed multipart body: {e}")))
}

fn require_file_message(m: Message) -> Result<Message, InvalidMessage> {
    if m.msgtype() == MSGTYPE_FILE {
        return Ok(m);
    }
    Err(InvalidMessage {
        line: 1,
        field: Some("msgtype".into()),
        problem: format!("must be {MSGTYPE_FILE} for a message with a file"),
    })
}

async fn readyz(State(state): State<Arc<HttpState>>) -> Response {
    if state.drain.is_draining() {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    let spool = state.spool.clone();
    match tokio::task::spawn_blocking(move || spool.readiness()).await {
        Ok(Ok(())) => (StatusCode::OK, axum::Json(json!({ "ready": true }))).into_response(),
        Ok(Err(why)) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}

async fn metrics(State(state): State<Arc<HttpState>>) -> Response {
    let text = state.metrics.render_prometheus(&state.bot_name);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
