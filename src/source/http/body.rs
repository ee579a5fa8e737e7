//! Request bodies in memory, bounded. Every byte held is covered by the shared budget
//! (`WICKRIO_INGEST_MAX_BUFFER`) before it is kept, reserved as it arrives rather than from what
//! `Content-Length` promises: a client that announces 16 MiB and sends nothing holds nothing. A body
//! that stops arriving for `WICKRIO_INGEST_IDLE_SECS`, or is not whole within four times that, is
//! answered 408 and its share released. A share is owned, so it goes wherever the body goes (into the
//! check on the blocking pool, into the spool's queue) and is given back only when the body's memory is.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use futures_util::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::ApiError;

/// How long a request waits for budget before it is refused with 503. Requests grow their share
/// piecemeal, so waiting for ever could leave several stuck, each holding part of what it needs;
/// one that gives up frees its share for the others.
const BUDGET_WAIT: Duration = Duration::from_secs(10);

/// Small bodies (a producer's usual batch) have a lane of their own beside the budget, so that
/// they are never queued behind large ones waiting for megabytes: up to this size...
const SMALL_BODY: usize = 64 << 10;
/// ...out of this much, in all (beyond it they take the budget like any other).
const SMALL_LANE: usize = 8 << 20;

/// The bytes of request bodies that may be in memory at once, in KiB: `WICKRIO_INGEST_MAX_BUFFER`,
/// plus the small lane.
pub(super) struct Budget {
    large: Arc<Semaphore>,
    small: Arc<Semaphore>,
    large_kib: u32,
}

/// A request's share of the budget, released when dropped.
#[derive(Default)]
pub(crate) struct Share {
    permit: Option<OwnedSemaphorePermit>,
    kib: u32,
    in_small_lane: bool,
}

impl Budget {
    pub(super) fn new(bytes: usize) -> Self {
        let large_kib = kib(bytes);
        Budget {
            large: Arc::new(Semaphore::new(large_kib as usize)),
            small: Arc::new(Semaphore::new(SMALL_LANE / 1024)),
            large_kib,
        }
    }

    /// Grows `share` to cover `bytes`, never past the whole budget (one request may have it all).
    pub(super) async fn cover(&self, share: &mut Share, bytes: usize) -> Result<(), ApiError> {
        let want = kib(bytes).min(self.large_kib);
        if want <= share.kib {
            return Ok(());
        }
        if bytes <= SMALL_BODY
            && (share.permit.is_none() || share.in_small_lane)
            && let Ok(more) = self.small.clone().try_acquire_many_owned(want - share.kib)
        {
            share.in_small_lane = true;
            share.add(more, want);
            return Ok(());
        }
        if share.in_small_lane {
            // Grown out of the lane: the whole share moves to the budget.
            let all = self.take(want).await?;
            *share = Share::default();
            share.add(all, want);
            return Ok(());
        }
        let more = self.take(want - share.kib).await?;
        share.add(more, want);
        Ok(())
    }

    /// Gives back what `share` holds beyond `bytes`.
    pub(super) fn shrink(&self, share: &mut Share, bytes: usize) {
        let want = kib(bytes);
        if let Some(permit) = &mut share.permit
            && share.kib > want
        {
            drop(permit.split((share.kib - want) as usize));
            share.kib = want;
        }
    }

    /// `kib` of the budget. Whatever is free is taken at once, ahead of the queue (the semaphore's
    /// queue is first come, first served); else it waits, at most BUDGET_WAIT.
    async fn take(&self, kib: u32) -> Result<OwnedSemaphorePermit, ApiError> {
        if let Ok(permit) = self.large.clone().try_acquire_many_owned(kib) {
            return Ok(permit);
        }
        tokio::time::timeout(BUDGET_WAIT, self.large.clone().acquire_many_owned(kib))
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many request bodies in memory at once (WICKRIO_INGEST_MAX_BUFFER); retry shortly",
                )
            })?
            .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the bot is shutting down"))
    }
}

impl Share {
    fn add(&mut self, more: OwnedSemaphorePermit, total_kib: u32) {
        self.kib = total_kib;
        match &mut self.permit {
            Some(permit) => permit.merge(more),
            None => self.permit = Some(more),
        }
    }
}

fn kib(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

/// What a body may be.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub max: usize,
    pub idle: Duration,
}

/// Reads a body (or one multipart part) into memory within `limits`, covering every byte of the
/// buffer with `share`: 413 beyond `max`, 408 when no data comes for `idle`.
pub(super) async fn read<S, E>(
    mut stream: S,
    limits: Limits,
    budget: &Budget,
    share: &mut Share,
) -> Result<Vec<u8>, ApiError>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::error::Error,
{
    let mut buf: Vec<u8> = Vec::new();
    // A body dribbled in just under the idle limit would hold its share for ever: it must be whole
    // within four times that limit.
    let deadline = tokio::time::Instant::now() + limits.idle * 4;
    loop {
        let wait = limits
            .idle
            .min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        let chunk = match tokio::time::timeout(wait, stream.next()).await {
            Err(_) => return Err(idle(limits.idle)),
            Ok(None) => return Ok(buf),
            Ok(Some(chunk)) => chunk.map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the request body: {e}", e = crate::error_chain::Chain(&e)),
                )
            })?,
        };
        let len = buf.len() + chunk.len();
        if len > limits.max {
            return Err(too_large(limits.max));
        }
        if len > buf.capacity() {
            // Growth is covered before it happens, by what the buffer will really take: double
            // what arrived (never what `Content-Length` promises: that costs a client nothing to
            // say), never past the limit (and one byte more, for the newline a line may need).
            // (A buffer over 1 MiB is mapped memory, which glibc's realloc moves with mremap
            // rather than copies, so growing it does not hold the old and the new one at once.)
            let cap = (buf.capacity() * 2).max(len).max(4096).min(limits.max + 1);
            budget.cover(share, cap).await?;
            buf.reserve_exact(cap - buf.len());
        }
        buf.extend_from_slice(&chunk);
    }
}

pub(super) fn too_large(max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("body larger than WICKRIO_INGEST_MAX_BODY ({max} bytes)"),
    )
}

/// The slowest an attachment may arrive, on average over each span of four times
/// `WICKRIO_INGEST_IDLE_SECS` (the whole-request limit of a body): a file dribbled in just under the
/// idle limit must not hold its connection and its share of the budget for hours.
pub(super) const MIN_FILE_RATE: u64 = 8 << 10;

pub(super) fn too_slow(rate: u64, after: Duration) -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        format!(
            "the attachment arrived at {rate} bytes/s in its last span of four times WICKRIO_INGEST_IDLE_SECS ({} s into the request), below the {} KiB/s an upload must keep up: the request was abandoned and nothing of it kept",
            after.as_secs(),
            MIN_FILE_RATE >> 10
        ),
    )
}

pub(super) fn idle(after: Duration) -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        format!(
            "no data for {} s (WICKRIO_INGEST_IDLE_SECS), or not whole within {} s: the request was abandoned and nothing of it kept",
            after.as_secs(),
            after.as_secs() * 4
        ),
    )
}
