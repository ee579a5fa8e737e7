//! The stop signal every long-running task is handed (as in tokio's mini-redis): the daemon keeps the
//! [`Trigger`], each task a [`Shutdown`] that resolves once it fires. Tasks select on it beside their
//! work and finish what they hold before they return.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::{Notify, watch};

/// Fires the signal; dropping it fires it too, so a task never waits on a trigger that is gone.
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

/// A task's view of the signal. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// A new signal, not yet fired.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    pub(crate) fn fire(&self) {
        let _ = self.0.send(true);
    }

    /// Another task's view of this signal.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }
}

impl Shutdown {
    /// Resolves once the signal has fired (or its trigger is gone); at once if it already has.
    pub async fn recv(&mut self) {
        // The guard `wait_for` returns is dropped here, not held across the caller's select.
        let _ = self.0.wait_for(|fired| *fired).await.map(|_| ());
    }

    pub(crate) fn is_fired(&self) -> bool {
        *self.0.borrow()
    }
}

/// Shutdown bookkeeping for requests: once draining, new requests are refused; `idle` fires when the
/// last one in flight has finished.
#[derive(Default)]
pub struct Drain {
    draining: AtomicBool,
    in_flight: AtomicUsize,
    idle: Notify,
}

/// One request in flight, for as long as it lives (even if its client goes away).
pub struct InFlight(Arc<Drain>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Drain {
    pub fn start(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Counts a request in flight, or `None` once draining.
    pub fn enter(self: &Arc<Self>) -> Option<InFlight> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = InFlight(self.clone());
        (!self.is_draining()).then_some(guard)
    }

    /// Resolves once no request is in flight.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fires_for_every_view_and_when_the_trigger_goes() {
        let (trigger, mut a) = channel();
        let mut b = trigger.subscribe();
        assert!(!a.is_fired());
        trigger.fire();
        a.recv().await;
        b.recv().await;
        assert!(b.is_fired());
        let (trigger, mut c) = channel();
        drop(trigger);
        c.recv().await;
    }
}
