//! The stop signal every long-running task is handed (as in tokio's mini-redis): the daemon keeps the
//! [`Trigger`], each task a [`Shutdown`] that resolves once it fires. Tasks select on it beside their
//! work and finish what they hold before they return.

use tokio::sync::watch;

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
    pub fn fire(&self) {
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

    pub fn is_fired(&self) -> bool {
        *self.0.borrow()
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
