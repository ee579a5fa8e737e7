//! `retention-bot legal-hold (on|off)`: places or lifts S3 Object Lock legal holds on the archive's
//! objects, for a litigation or an investigation. A legal hold keeps an object version from being
//! deleted or overwritten, whatever its retention date, until it is lifted; it needs a bucket with
//! Object Lock.
//!
//! Without `--from`/`--to` every object under the folder is selected. With them, the selection
//! follows the signed manifests (read from the bucket, decrypted in memory when encrypted): a message
//! file whose messages' `msg_ts` span meets the period, an attachment closed within it, and every
//! manifest that lists a selected file, with its chain head record (so the proof stays with the
//! files). Setting a hold that is already set (or lifting one already lifted) changes nothing: the
//! command is idempotent.

use std::collections::HashSet;

use aws_sdk_s3::types::{ObjectLockLegalHold, ObjectLockLegalHoldStatus};
use chrono::{DateTime, Utc};

use crate::aws::{AwsFailure, failure};
use crate::decrypt::{Archive, ObjectError, stream};
use crate::manifest::{Entry, head, is_manifest_name};
use crate::message::msg_time;
use crate::objects::keys::{ListedObjects, object_name};
use crate::period::{parse_end, parse_time};

/// `legal-hold`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// `on` places a legal hold on each selected object, `off` lifts it.
    #[arg(value_enum)]
    pub state: Hold,
    #[command(flatten)]
    pub archive: Archive,
    /// Only files with messages from this time on (RFC 3339, e.g. 2026-11-01T00:00:00Z, or a date,
    /// 2026-11-01, meaning its start in UTC).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub from: Option<DateTime<Utc>>,
    /// Only files with messages up to this time (as --from; a date means its end in UTC).
    #[arg(long, value_name = "TIME", value_parser = parse_end)]
    pub to: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Hold {
    On,
    Off,
}

impl Hold {
    fn status(self) -> ObjectLockLegalHoldStatus {
        match self {
            Hold::On => ObjectLockLegalHoldStatus::On,
            Hold::Off => ObjectLockLegalHoldStatus::Off,
        }
    }
}

/// What the command did to each object, and which objects it could not change.
#[derive(Debug, Default)]
pub struct Summary {
    pub changed: Vec<String>,
    pub failed: Vec<(String, AwsFailure)>,
    /// Manifests that could not be read, so the files they list may be missing from the selection.
    pub unreadable_manifests: Vec<(String, ObjectError)>,
}

/// Whether a manifest entry's file falls in the period. A time that cannot be read keeps the file in
/// the selection: a hold too many is safe, one too few is not.
fn in_period(entry: &Entry, from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> bool {
    let body = &entry.body;
    let span = match entry.msg_span() {
        Some(span) => span,
        // Entries written before `earliest_msg_ts` existed: their first and last lines.
        None => match (body.first_msg_ts.as_deref(), body.last_msg_ts.as_deref()) {
            (None, None) => match DateTime::parse_from_rfc3339(&body.closed_at) {
                // Attachments: when they were closed.
                Ok(t) => (t.with_timezone(&Utc), t.with_timezone(&Utc)),
                Err(_) => return true,
            },
            (first, last) => match (first.and_then(msg_time), last.and_then(msg_time)) {
                (Some(first), Some(last)) => (first.min(last), first.max(last)),
                _ => return true,
            },
        },
    };
    from.is_none_or(|from| span.1 >= from) && to.is_none_or(|to| span.0 <= to)
}

/// The entries of one manifest that the period selects: those in it, and every attachment listed
/// beside a selected message file (an attachment is closed, and so dated, when it is listed, which a
/// backlog or a restart can put after its message).
fn selected(entries: &[Entry], from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> Vec<&Entry> {
    let message_selected = entries
        .iter()
        .any(|e| e.body.first_msg_ts.is_some() && in_period(e, from, to));
    entries
        .iter()
        .filter(|e| in_period(e, from, to) || (message_selected && e.body.first_msg_ts.is_none()))
        .collect()
}

/// Lists the folder, selects the objects and sets each one's legal hold.
pub async fn run(options: &Options) -> Result<Summary, AwsFailure> {
    let archive = &options.archive;
    let (s3, kms) = archive.clients().await;
    let keys: Vec<String> = archive.list(&s3).await?.into_iter().map(|(k, _)| k).collect();
    let mut summary = Summary::default();
    let selected: Vec<String> = if options.from.is_none() && options.to.is_none() {
        keys
    } else {
        let objects = ListedObjects::new(&keys);
        let mut chosen = HashSet::new();
        for manifest in keys.iter().filter(|k| is_manifest_name(object_name(k))) {
            let text = match stream(&s3, &kms, &archive.bucket, manifest, true).await {
                Ok(read) => read.text.unwrap_or_default(),
                Err(e) => {
                    summary.unreadable_manifests.push((manifest.clone(), e));
                    continue;
                }
            };
            let entries: Vec<Entry> = String::from_utf8_lossy(&text)
                .lines()
                .filter_map(|line| serde_json::from_str::<Entry>(line).ok())
                .collect();
            let picked = selected(&entries, options.from, options.to);
            for entry in &picked {
                chosen.extend(
                    objects
                        .find_all(&entry.body.name, &entry.body.sha256)
                        .into_iter()
                        .cloned(),
                );
            }
            if !picked.is_empty() {
                // The manifest, and its chain head record if there is one.
                chosen.insert(manifest.clone());
                let head = head::file_name(object_name(manifest));
                chosen.extend(keys.iter().filter(|k| object_name(k) == head).cloned());
            }
        }
        keys.into_iter().filter(|k| chosen.contains(k)).collect()
    };
    let hold = ObjectLockLegalHold::builder().status(options.state.status()).build();
    for key in selected {
        let result = s3
            .put_object_legal_hold()
            .bucket(&archive.bucket)
            .key(&key)
            .legal_hold(hold.clone())
            .send()
            .await;
        match result {
            Ok(_) => summary.changed.push(key),
            Err(e) => {
                let e = failure(&format!("set the legal hold of s3://{}/{key}", archive.bucket), e);
                summary.failed.push((key, e));
            }
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::EntryBody;

    fn entry(name: &str, first: Option<&str>, last: Option<&str>, closed_at: &str) -> Entry {
        Entry {
            body: EntryBody {
                seq: 1,
                name: name.into(),
                kind: "message".into(),
                size: 1,
                sha256: "0123456789abcdef0123".into(),
                first_msg_ts: first.map(Into::into),
                last_msg_ts: last.map(Into::into),
                earliest_msg_ts: None,
                latest_msg_ts: None,
                kms_key: None,
                closed_at: closed_at.into(),
                prev: String::new(),
            },
            sig: String::new(),
        }
    }

    #[test]
    fn a_file_is_in_the_period_when_its_messages_meet_it() {
        let day = |d: &str| parse_time(d).ok();
        let end = |d: &str| parse_end(d).ok();
        // 1700000000 = 2023-11-14T22:13:20Z, 1700100000 = 2023-11-16T02:00:00Z.
        let e = entry(
            "m.txt",
            Some("1700000000.5"),
            Some("1700100000"),
            "2023-11-16T03:00:00Z",
        );
        assert!(
            in_period(&e, day("2023-11-15"), end("2023-11-15")),
            "the span covers the day"
        );
        assert!(in_period(&e, day("2023-11-16"), None));
        assert!(!in_period(&e, day("2023-11-17"), None));
        assert!(!in_period(&e, None, end("2023-11-13")));
        let attachment = entry("attachment_x", None, None, "2023-11-20T10:00:00Z");
        assert!(in_period(&attachment, day("2023-11-20"), end("2023-11-20")));
        assert!(!in_period(&attachment, day("2023-11-21"), None));
        let unknown = entry("odd", Some("soon"), Some("later"), "2023-11-16T03:00:00Z");
        assert!(
            in_period(&unknown, day("2000-01-01"), end("2000-01-01")),
            "unreadable msg_ts: held"
        );
        let undated = entry("attachment_y", None, None, "yesterday");
        assert!(
            in_period(&undated, day("2000-01-01"), end("2000-01-01")),
            "unreadable closed_at: held"
        );
    }

    #[test]
    fn an_attachment_listed_beside_a_selected_message_file_is_selected_too() {
        let day = |d: &str| parse_time(d).ok();
        let end = |d: &str| parse_end(d).ok();
        let entries = [
            entry("m.txt", Some("1700000000"), Some("1700000001"), "2023-11-14T22:14:00Z"),
            // Listed two days later, after a backlog.
            entry("attachment_late", None, None, "2023-11-16T10:00:00Z"),
        ];
        let picked = selected(&entries, day("2023-11-14"), end("2023-11-14"));
        assert_eq!(picked.len(), 2, "{picked:?}");
        assert!(selected(&entries, day("2023-11-20"), None).is_empty());
    }
}
