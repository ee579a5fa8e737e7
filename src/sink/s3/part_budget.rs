//! The memory every upload shares: at most `PARTS_IN_MEMORY` parts of `PART_SIZE` bytes, read,
//! encrypted or being sent, across all files, whatever their sizes (32 MiB).

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Parts in memory at once, across all uploads.
pub(super) const PARTS_IN_MEMORY: usize = 4;

/// The permits for part buffers, shared by every upload of one sink, and the buffers themselves,
/// handed from a sent part to the next one read while any upload is under way: a fresh 8 MiB
/// buffer per part costs the kernel 2,048 page faults and a zeroing. A buffer is pooled before its
/// permit is released and taken only under a permit, so buffers alive never outnumber the permits;
/// the pool is emptied when the last upload ends, so an idle bot holds none.
#[derive(Clone)]
pub(crate) struct PartBudget {
    pub(super) permits: Arc<Semaphore>,
    pool: Arc<Mutex<Pool>>,
}

#[derive(Default)]
struct Pool {
    /// Readers under way: buffers are kept only while one is.
    readers: usize,
    spare: Vec<Vec<u8>>,
}

impl Default for PartBudget {
    fn default() -> Self {
        Self {
            permits: Arc::new(Semaphore::new(PARTS_IN_MEMORY)),
            pool: Arc::default(),
        }
    }
}

impl PartBudget {
    fn pool(&self) -> std::sync::MutexGuard<'_, Pool> {
        // A panic while the lock was held left at worst a buffer more or less in the pool.
        self.pool.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A buffer of at least `capacity` bytes, empty: a pooled one if there is one.
    pub(super) fn buffer(&self, capacity: usize) -> Vec<u8> {
        let mut buffer = self.pool().spare.pop().unwrap_or_default();
        buffer.clear();
        buffer.reserve_exact(capacity);
        buffer
    }

    /// Counts a reader under way until the returned share is dropped.
    pub(super) fn reader(&self) -> ReaderShare {
        self.pool().readers += 1;
        ReaderShare(self.clone())
    }
}

/// A reader's claim on the pool: the last one to go empties it.
pub(super) struct ReaderShare(PartBudget);

impl Drop for ReaderShare {
    fn drop(&mut self) {
        let mut pool = self.0.pool();
        pool.readers -= 1;
        if pool.readers == 0 {
            pool.spare = Vec::new();
        }
    }
}

/// A part's bytes and its share of the budget, released when the part is dropped (sent); its
/// buffer goes back to the pool first, if nothing else still holds it.
pub(super) struct Part {
    pub(super) body: Bytes,
    /// The body's SHA-256 (hex), which its request is signed with.
    pub(super) sha256: String,
    pub(super) budget: PartBudget,
    pub(super) _permit: OwnedSemaphorePermit,
}

impl Drop for Part {
    fn drop(&mut self) {
        if let Ok(buffer) = std::mem::take(&mut self.body).try_into_mut() {
            let mut pool = self.budget.pool();
            if pool.readers > 0 {
                pool.spare.push(buffer.into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::s3::upload::PART_SIZE;

    fn part(budget: &PartBudget, len: usize) -> Part {
        let permit = budget.permits.clone().try_acquire_owned().unwrap();
        let mut buffer = budget.buffer(len);
        buffer.resize(len, 7);
        Part {
            body: Bytes::from(buffer),
            sha256: String::new(),
            budget: budget.clone(),
            _permit: permit,
        }
    }

    #[test]
    fn a_sent_parts_buffer_is_reused_while_a_reader_runs_and_freed_after_the_last() {
        let budget = PartBudget::default();
        let reader = budget.reader();
        let first = part(&budget, PART_SIZE);
        let address = first.body.as_ptr();
        drop(first);
        assert_eq!(
            budget.pool().spare.len(),
            1,
            "the sent part's buffer is kept for the next"
        );
        let second = budget.buffer(PART_SIZE);
        assert_eq!(second.as_ptr(), address, "the next part is read into the same buffer");
        assert!(second.is_empty() && second.capacity() >= PART_SIZE);
        drop(second);

        // A body still held elsewhere (a request not yet dropped) is not pooled: it is not free.
        let held = part(&budget, 16);
        let clone = held.body.clone();
        drop(held);
        assert!(
            budget.pool().spare.is_empty(),
            "a buffer still in use is never handed out"
        );
        drop(clone);

        let last = part(&budget, 16);
        drop(reader);
        assert!(budget.pool().spare.is_empty(), "the last reader's end empties the pool");
        drop(last);
        assert!(
            budget.pool().spare.is_empty(),
            "a part sent after the last reader ended is freed, not kept"
        );
        assert_eq!(
            budget.permits.available_permits(),
            PARTS_IN_MEMORY,
            "every permit came back"
        );
    }
}
