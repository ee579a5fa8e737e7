//! Events: what any stage tells the bot's operators (a failing disk, a refused upload, a stop). A
//! stage sends them on an [`Events`] handle, as it counts on [`Metrics`](crate::metrics::Metrics);
//! `report` publishes them (to SNS, in the original's message shape: `report::origin`).

use tokio::sync::mpsc;

/// How urgent an event is. `critical`: the bot stopped, will not start, or is no longer capturing
/// or shipping data; an operator must act. Everything else is `normal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Normal,
    Critical,
}

/// What happened. Repeats of one kind collapse (see `report::collapse`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    Started,
    Stopping,
    Stopped,
    /// An exit caused by an error: bad configuration, a refused login, a fatal runtime error.
    Fatal,
    LoginFailed,
    PasswordGenerated,
    PasswordRotated,
    SecretUpdateFailed,
    S3Failing,
    S3Recovered,
    KmsFailing,
    KmsRecovered,
    /// A period's KMS key (from the alias template) does not exist or cannot be used: that period's
    /// files wait on local disk, never uploaded in the clear.
    PeriodKeyMissing,
    /// The bot can no longer capture a Matrix room: it was kicked or banned, or the room was upgraded
    /// to one it cannot join.
    MatrixRoomLost,
    /// A queue message failed the checks: not deleted, left to the queue's redrive policy.
    SqsMessageRefused,
    /// The bot created a coming period's KMS key and alias (`WICKRIO_KMS_CREATE_PERIOD_KEYS`).
    PeriodKeyCreated,
    /// A file of a period shredded while it waited on the bot's disk was removed unsent, as the
    /// period's signed shredding record says (and recorded as such in the manifest chain).
    ShreddedFileDiscarded,
    /// A file's key in S3 already holds other content: the file is never uploaded over it and waits.
    S3KeyConflict,
    /// A manifest closed: its chain head, for a copy off the host.
    ChainHead,
    /// The scheduled check of the bucket found nothing wrong.
    ArchiveCheckPassed,
    /// The scheduled check of the bucket found problems.
    ArchiveCheckFailed,
    /// The scheduled check could not run to the end (S3 or KMS unreachable).
    ArchiveCheckIncomplete,
    /// A write or fsync of a message file or attachment failed: requests are refused (not acknowledged).
    SpoolFailing,
    SpoolRecovered,
    DiskLow,
    DiskFull,
    DiskRecovered,
    WatchdogWarning,
    WatchdogFailure,
    WatchdogRecovered,
}

impl EventKind {
    pub fn severity(self) -> Severity {
        use EventKind::*;
        match self {
            Fatal | LoginFailed | SecretUpdateFailed | SpoolFailing | DiskFull | WatchdogFailure | S3KeyConflict
            | ArchiveCheckFailed | PeriodKeyMissing | MatrixRoomLost => Severity::Critical,
            _ => Severity::Normal,
        }
    }
}

/// One event for the operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub message: String,
}

impl Event {
    pub fn new(kind: EventKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// Events waiting for the publisher at most; beyond it new events are dropped (and logged).
pub(crate) const QUEUE: usize = 256;

/// Where any part of the bot sends events. Cheap to clone; sending never waits.
#[derive(Debug, Clone, Default)]
pub struct Events {
    tx: Option<mpsc::Sender<Event>>,
}

impl Events {
    /// Events that go nowhere: no topic is configured (they are logged where they arise).
    pub fn none() -> Self {
        Self::default()
    }

    pub(crate) fn channel() -> (Self, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (Self { tx: Some(tx) }, rx)
    }

    /// Queues the event for publishing; never blocks. A full queue drops it with a warning.
    pub fn send(&self, kind: EventKind, message: impl Into<String>) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(Event::new(kind, message)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(e)) => {
                tracing::warn!(kind = ?e.kind, message = %e.message, "event queue full: event not published")
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

/// Logs a message at a level and sends it as an event: the one line an operator reads in the log is
/// the one the topic gets. A macro, so the log line keeps the module it arose in as its target.
///
/// `announce!(events, tracing::Level::WARN, EventKind::DiskLow, message)`
macro_rules! announce {
    ($events:expr, $level:expr, $kind:expr, $message:expr) => {{
        let message: String = ($message).into();
        tracing::event!($level, "{message}");
        $events.send($kind, message);
    }};
}
pub(crate) use announce;
