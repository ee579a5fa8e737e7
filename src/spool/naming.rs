//! File names. Message files are `<basename>_<UTC time>_<instance>_<seq>.txt`: sortable by time, and
//! never reused, because every process start draws a new random instance id. A file still being written
//! ends in `.txt.open`, so open and closed files are told apart at a glance (`ls *.txt` lists only
//! closed ones).

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};

pub(crate) const CLOSED_SUFFIX: &str = ".txt";
pub(crate) const OPEN_SUFFIX: &str = ".txt.open";
/// Attachments being received; never acknowledged, so removed by recovery.
pub(crate) const PARTIAL_PREFIX: &str = ".partial_";

/// This process's share of the name space.
#[derive(Debug)]
pub(crate) struct Names {
    instance: String,
    seq: AtomicU64,
}

impl Names {
    pub fn new() -> Self {
        let mut id = [0u8; 6];
        // The OS CSPRNG failing is a broken host, not an input error.
        getrandom::fill(&mut id).expect("the operating system's random number generator failed");
        Self {
            instance: id.iter().map(|b| format!("{b:02x}")).collect(),
            seq: AtomicU64::new(0),
        }
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    fn next(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The closed name of the next message file; open it under [`open_name`].
    pub fn message_file(&self, basename: &str, now: DateTime<Utc>) -> String {
        format!(
            "{basename}_{}_{}_{:06}{CLOSED_SUFFIX}",
            now.format("%Y%m%dT%H%M%S%3fZ"),
            self.instance,
            self.next()
        )
    }

    pub(crate) fn partial_attachment(&self) -> String {
        format!("{PARTIAL_PREFIX}{}_{:06}", self.instance, self.next())
    }
}

impl Default for Names {
    fn default() -> Self {
        Self::new()
    }
}

pub(crate) fn open_name(closed: &str) -> String {
    format!("{closed}.open")
}

/// The note beside an open file given up after a failed write: how many of its bytes were
/// acknowledged. Hidden (a leading `.`), so nothing takes it for an archive file.
pub(crate) fn acked_note(open: &std::path::Path) -> std::path::PathBuf {
    let name = open
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    open.with_file_name(format!(".{name}.acked"))
}

/// Marks a suspect file, one given up after a failed write or sync, which holds only acknowledged
/// lines: `<stem>.txt` becomes `<stem>.suspect.txt`. It is still a closed message file (it ends in
/// `.txt`), so it is listed, shipped and verified like any other.
pub(crate) const SUSPECT_MARK: &str = ".suspect";

pub(crate) fn suspect_name(closed: &std::path::Path) -> std::path::PathBuf {
    let name = closed
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(CLOSED_SUFFIX).unwrap_or(&name);
    closed.with_file_name(format!("{stem}{SUSPECT_MARK}{CLOSED_SUFFIX}"))
}

/// The closed name of an open message file of ours, or `None` for anything else.
pub(crate) fn closed_name_of_open(file_name: &str, basename: &str) -> Option<String> {
    let stem = file_name.strip_suffix(OPEN_SUFFIX)?;
    stem.strip_prefix(basename)?.strip_prefix('_')?;
    Some(format!("{stem}{CLOSED_SUFFIX}"))
}

/// `attachment_<yyyyMMddHHmmssSSS>_<name>`, the original's naming; `n > 0` adds a collision suffix
/// before the extension.
pub(crate) fn attachment_name(safe_name: &str, at: DateTime<Utc>, n: u32) -> String {
    let ts = at.format("%Y%m%d%H%M%S%3f");
    if n == 0 {
        return format!("attachment_{ts}_{safe_name}");
    }
    match safe_name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => format!("attachment_{ts}_{stem}_{n}.{ext}"),
        _ => format!("attachment_{ts}_{safe_name}_{n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_time_and_differ_between_instances() {
        let t = DateTime::parse_from_rfc3339("2026-11-22T07:26:15.123Z")
            .unwrap()
            .with_timezone(&Utc);
        let (a, b) = (Names::new(), Names::new());
        let first = a.message_file("receivedMessages", t);
        assert!(first.starts_with("receivedMessages_20261122T072615123Z_"), "{first}");
        assert!(first.ends_with("_000001.txt"));
        assert_ne!(first, b.message_file("receivedMessages", t));
        assert!(a.message_file("receivedMessages", t + chrono::Duration::milliseconds(1)) > first);
    }

    #[test]
    fn suspect_files_stay_closed_message_files() {
        let p = suspect_name(std::path::Path::new("/d/rm_20261122T072615123Z_ab_000001.txt"));
        assert_eq!(
            p,
            std::path::Path::new("/d/rm_20261122T072615123Z_ab_000001.suspect.txt")
        );
    }

    #[test]
    fn recognises_only_our_open_files() {
        assert_eq!(
            closed_name_of_open("rm_x_1.txt.open", "rm").as_deref(),
            Some("rm_x_1.txt")
        );
        assert_eq!(closed_name_of_open("rm_x_1.txt", "rm"), None);
        assert_eq!(closed_name_of_open("other_x.txt.open", "rm"), None);
        assert_eq!(closed_name_of_open("rmx.txt.open", "rm"), None);
    }

    #[test]
    fn attachment_names_follow_the_original() {
        let t = DateTime::parse_from_rfc3339("2023-08-04T19:10:58.901Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(attachment_name("a.pdf", t, 0), "attachment_20230804191058901_a.pdf");
        assert_eq!(attachment_name("a.pdf", t, 2), "attachment_20230804191058901_a_2.pdf");
        assert_eq!(attachment_name(".pdf", t, 1), "attachment_20230804191058901_.pdf_1");
    }
}
