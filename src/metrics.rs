//! The bot's counters, kept in one place so that Prometheus (`GET /metrics`) and CloudWatch publish
//! the same numbers under the original bot's metric names.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! metrics {
    ($(#[$doc:meta])* $kind:ident { $($variant:ident => $name:literal, $help:literal;)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $kind { $($variant),* }

        impl $kind {
            pub(crate) const ALL: &'static [$kind] = &[$($kind::$variant),*];

            pub fn name(self) -> &'static str {
                match self { $($kind::$variant => $name),* }
            }

            pub fn help(self) -> &'static str {
                match self { $($kind::$variant => $help),* }
            }
        }
    };
}

metrics! {
/// One of the bot's counters. The names are the original's CloudWatch metric names.
Counter {
    MessagesRx => "Messages_Rx", "Messages received (every non-blank line of every request or imported file).";
    MessagesRxFailed => "Messages_Rx_Failed", "Messages refused at validation (with every other message of their request), and Matrix events the bot could not decrypt.";
    MessagesSaved => "Messages_Saved", "Messages written and fsync'd to a message file.";
    MessagesSavedFailed => "Messages_Saved_Failed", "Valid messages that could not be written (disk low or full, I/O error, shutting down).";
    FilesSaved => "Files_Saved", "Attachments written and fsync'd.";
    FilesSavedBytes => "Files_Saved_Bytes", "Bytes of attachments written and fsync'd.";
    FilesSavedFailed => "Files_Saved_Failed", "Attachments that could not be saved.";
    Logins => "Logins", "Successful logins (start-ups with the right password).";
    LoginFailures => "Login_Failures", "Refused logins.";
    S3PostErrors => "S3_Post_Errors", "Failed uploads to S3.";
    S3KeyConflicts => "S3_Key_Conflicts", "Uploads refused because their key already holds other content (never overwritten: the file waits on disk).";
    WatchdogFailures => "Watchdog_Failures", "Times the watchdog found the pipeline stalled.";
    WatchdogWarnings => "Watchdog_Warnings", "Times the watchdog found the pipeline slow.";
    MessageFilesClosed => "Message_Files_Closed", "Message files closed (rotated, recovered or closed at shutdown).";
    SpoolWriteErrors => "Spool_Write_Errors", "Failed writes, fsyncs, renames or directory fsyncs of message files and attachments; each refused the requests it carried.";
    RequestsRefused => "Requests_Refused", "HTTP requests refused (bad input, bad token, disk low, shutting down).";
    S3Uploads => "S3_Uploads", "Files uploaded to S3 (and then deleted locally).";
    S3UploadedBytes => "S3_Uploaded_Bytes", "Bytes of files uploaded to S3 (before encryption).";
    S3PartsUploaded => "S3_Parts_Uploaded", "Parts and single-request objects S3 accepted: the watchdog's measure of upload progress.";
    KmsRequests => "KMS_Requests", "Data keys KMS issued (GenerateDataKey calls answered): one per encrypted object, or one per batch with WICKRIO_KMS_DATAKEY_MAX_OBJECTS/_MAX_AGE_SECS.";
    ArchiveChecks => "Archive_Checks", "Scheduled checks of the bucket (WICKRIO_VERIFY_EVERY_HOURS) that ran to the end.";
    SnsPublishErrors => "SNS_Publish_Errors", "Events that could not be published to SNS (after retries).";
    SqsReceived => "SQS_Received", "Queue messages received (WICKRIO_NETWORK=sqs), a message returning counted each time.";
    SqsDeleted => "SQS_Deleted", "Queue messages deleted, each after everything it carried was fsync'd.";
    SqsRefused => "SQS_Refused", "Queue messages that failed the checks (each once): not deleted, left to the queue's redrive policy.";
    SqsPayloadsFetched => "SQS_Payloads_Fetched", "Bodies (SQS Extended Client) and attachments read from S3 for queue messages.";
    SqsReceiveErrors => "SQS_Receive_Errors", "Failed receive calls to the queue.";
    CloudWatchErrors => "CloudWatch_Errors", "Failed publications to CloudWatch (their counts go out with the next one).";
}
}

metrics! {
/// A level that goes up and down.
Gauge {
    MessagesPending => "Messages_Pending", "Messages handed to the spool writer and not yet written or refused.";
    S3BacklogFiles => "S3_Backlog_Files", "Closed files waiting on local disk for their upload to S3.";
    S3BacklogBytes => "S3_Backlog_Bytes", "Bytes of closed files waiting on local disk for their upload to S3.";
    ArchiveProblems => "Archive_Problems", "Problems the last scheduled check of the bucket found (0: the archive verified).";
    MatrixRoomsLost => "Matrix_Rooms_Lost", "Matrix rooms the bot can no longer capture since it started (kicked, banned, or upgraded to a room it cannot join), until it is back in them.";
    SqsOldestInHandSecs => "SQS_Oldest_In_Hand_Seconds", "Age in the queue of the oldest message being archived now (0 when none).";
    KmsPeriodKeysMissing => "KMS_Period_Keys_Missing", "With per-period KMS keys: of the current period and the one starting within a day, how many have no usable key (their files would wait on disk).";
}
}

/// Counters since start-up. Cheap to bump from any thread.
#[derive(Debug)]
pub struct Metrics {
    values: Vec<AtomicU64>,
    gauges: Vec<AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            values: Counter::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            gauges: Gauge::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Metrics {
    pub fn add(&self, counter: Counter, n: u64) {
        self.values[counter as usize].fetch_add(n, Ordering::Relaxed);
    }

    pub fn incr(&self, counter: Counter) {
        self.add(counter, 1);
    }

    pub fn get(&self, counter: Counter) -> u64 {
        self.values[counter as usize].load(Ordering::Relaxed)
    }

    pub(crate) fn raise(&self, gauge: Gauge, n: u64) {
        self.gauges[gauge as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Lowers a gauge, never below zero.
    pub fn lower(&self, gauge: Gauge, n: u64) {
        let _ = self.gauges[gauge as usize]
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_sub(n)));
    }

    pub fn set(&self, gauge: Gauge, n: u64) {
        self.gauges[gauge as usize].store(n, Ordering::Relaxed);
    }

    pub fn level(&self, gauge: Gauge) -> u64 {
        self.gauges[gauge as usize].load(Ordering::Relaxed)
    }

    /// Prometheus text exposition format, version 0.0.4.
    pub(crate) fn render_prometheus(&self, bot_name: &str) -> String {
        let bot = bot_name.replace('\\', "\\\\").replace('"', "\\\"");
        let mut out = String::with_capacity(2048);
        for &c in Counter::ALL {
            let _ = writeln!(out, "# HELP {} {}", c.name(), c.help());
            let _ = writeln!(out, "# TYPE {} counter", c.name());
            let _ = writeln!(out, "{}{{bot_name=\"{bot}\"}} {}", c.name(), self.get(c));
        }
        for &g in Gauge::ALL {
            let _ = writeln!(out, "# HELP {} {}", g.name(), g.help());
            let _ = writeln!(out, "# TYPE {} gauge", g.name());
            let _ = writeln!(out, "{}{{bot_name=\"{bot}\"}} {}", g.name(), self.level(g));
        }
        if let Some(bytes) = resident_bytes() {
            let _ = writeln!(
                out,
                "# HELP process_resident_memory_bytes Resident memory of the bot's process (VmRSS)."
            );
            let _ = writeln!(out, "# TYPE process_resident_memory_bytes gauge");
            let _ = writeln!(out, "process_resident_memory_bytes{{bot_name=\"{bot}\"}} {bytes}");
        }
        out
    }
}

/// The process's resident memory, under the name Prometheus' own clients give it, so that the
/// usual dashboards and alerts find it. `/proc` is in memory: reading it does not block.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_counter_with_its_value() {
        let m = Metrics::default();
        m.add(Counter::FilesSavedBytes, 42);
        m.incr(Counter::MessagesRx);
        let text = m.render_prometheus("bot\"1");
        assert!(text.contains("Files_Saved_Bytes{bot_name=\"bot\\\"1\"} 42\n"), "{text}");
        assert!(text.contains("Messages_Rx{bot_name=\"bot\\\"1\"} 1\n"));
        for c in Counter::ALL {
            assert!(text.contains(&format!("# TYPE {} counter", c.name())));
        }
        m.raise(Gauge::S3BacklogBytes, 10);
        m.lower(Gauge::S3BacklogBytes, 4);
        m.lower(Gauge::S3BacklogFiles, 1);
        let text = m.render_prometheus("b");
        assert!(
            text.contains("# TYPE S3_Backlog_Bytes gauge\nS3_Backlog_Bytes{bot_name=\"b\"} 6\n"),
            "{text}"
        );
        assert!(text.contains("S3_Backlog_Files{bot_name=\"b\"} 0\n"), "{text}");
    }
}
