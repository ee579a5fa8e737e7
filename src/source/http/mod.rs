//! The HTTP source: producers POST WickrIO messages (JSON, NDJSON, or multipart with an attachment)
//! and get 202 only once what they sent is fsync'd.
//!
//! Built for a network it does not control: a request without a valid token is refused before it
//! holds anything; bodies are held in memory only within `WICKRIO_INGEST_MAX_BUFFER`, reserved as
//! bytes arrive; a body that stalls is dropped after `WICKRIO_INGEST_IDLE_SECS`; and a message is
//! checked where it lies, so no request costs more memory than its body.

mod attachment;
mod body;
pub(crate) mod framing;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::config::{IngestConfig, Secret};
use crate::message::{self, InvalidMessage, Refused};
use crate::metrics::Counter;
use crate::shutdown::Drain;
use crate::source::Intake;
use crate::spool::SpoolError;
use body::{Budget, Limits, Share};

/// Bodies up to this size are checked on the async worker (a few microseconds); larger ones on the
/// blocking pool.
pub(crate) const PARSE_INLINE: usize = 64 << 10;

/// Runs a check of `len` bytes of a producer's text: here when small (a few microseconds), else on
/// the blocking pool, so that megabytes of (perhaps hostile) JSON never hold the async workers
/// every other request needs.
pub(super) async fn check_off_the_workers<T: Send + 'static>(
    len: usize,
    what: &str,
    check: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    if len <= PARSE_INLINE {
        return Ok(check());
    }
    tokio::task::spawn_blocking(check).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the check of {what} failed: {e}", e = crate::error_chain::Chain(&e)),
        )
    })
}

/// What the handlers share.
pub(crate) struct HttpState {
    pub intake: Intake,
    pub config: IngestConfig,
    pub drain: Arc<Drain>,
    budget: Budget,
}

impl HttpState {
    pub fn new(intake: Intake, config: IngestConfig, drain: Arc<Drain>) -> Self {
        let budget = Budget::new(config.max_buffered);
        Self {
            intake,
            config,
            drain,
            budget,
        }
    }
}

/// The ingest routes, behind the token check and the shutdown gate.
pub(crate) fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/v1/messages", post(post_messages))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        // Limits are enforced per body kind in the handlers (attachments may be far larger).
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// An error answer: a status and a JSON body that says what was wrong.
pub(crate) struct ApiError {
    status: StatusCode,
    body: serde_json::Value,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl std::fmt::Display) -> Self {
        Self {
            status,
            body: json!({ "error": error.to_string() }),
        }
    }

    /// 400 for invalid messages: the first few listed, and how many lines after them went unchecked.
    fn invalid(listed: &[InvalidMessage], unchecked: usize) -> Self {
        let first = listed.first().map(ToString::to_string).unwrap_or_default();
        let more = match unchecked {
            0 => String::new(),
            n => format!("; {n} more line(s) after the last listed were not checked"),
        };
        ApiError {
            status: StatusCode::BAD_REQUEST,
            body: json!({
                "error": format!("{} invalid message(s), nothing of this request was written{more}; first: {first}", listed.len()),
                "invalid": listed,
            }),
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
        ApiError::new(status, crate::error_chain::chain(&e))
    }
}

impl From<Refused> for ApiError {
    fn from(r: Refused) -> Self {
        ApiError::invalid(&r.listed, r.unchecked)
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

/// Bearer token and shutdown gate in front of every ingest route: a request is refused here before
/// any of its body is read or any memory is reserved for it.
async fn guard(State(state): State<Arc<HttpState>>, req: Request, next: Next) -> Response {
    if let Some(token) = &state.config.token
        && !authorized(req.headers(), token)
    {
        state.intake.metrics.incr(Counter::RequestsRefused);
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token (Authorization: Bearer <WICKRIO_INGEST_TOKEN>)",
        )
        .into_response();
    }
    let Some(_in_flight) = state.drain.enter() else {
        state.intake.metrics.incr(Counter::RequestsRefused);
        return ApiError::from(SpoolError::ShuttingDown).into_response();
    };
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
        Some("multipart/form-data") => attachment::post_attachment(&state, req).await,
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
            state.intake.metrics.incr(Counter::RequestsRefused);
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
        return Err(body::too_large(max));
    }
    let mut share = Share::default();
    let limits = Limits {
        max,
        idle: state.config.idle,
    };
    let body = body::read(req.into_body().into_data_stream(), limits, &state.budget, &mut share).await?;
    let body_len = body.len();
    // Checked, and made the batch, in place: the body's memory is all the request takes.
    // The share goes with the body: into the check, then into the spool's queue with the lines.
    let parse = move || {
        let parsed = if ndjson {
            message::parse_ndjson(body)
        } else {
            message::parse_one(body).map(|(lines, _)| lines)
        };
        parsed.map(|mut lines| {
            lines.accounted = Some(Box::new(share));
            lines
        })
    };
    let parsed = check_off_the_workers(body_len, "the body", parse).await?;
    let lines = match parsed {
        Ok(lines) => lines,
        Err(refused) => {
            state.intake.metrics.add(Counter::MessagesRx, refused.seen as u64);
            state.intake.metrics.add(Counter::MessagesRxFailed, refused.seen as u64);
            return Err(refused.into());
        }
    };
    let count = lines.count;
    state.intake.metrics.add(Counter::MessagesRx, count as u64);
    if count > 0 {
        state.intake.spool.append(lines).await?;
    }
    Ok(json!({ "accepted": count }))
}
