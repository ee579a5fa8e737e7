//! Shared state between tasks: a std mutex's guard, whatever a panic elsewhere left.

/// A std mutex's guard; a panic elsewhere while it was held leaves plain data behind, still usable
/// (the maps these guard hold answers and caches, never a half-made change).
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
