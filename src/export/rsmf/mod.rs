//! `export --format rsmf`: the verified messages as RSMF 2.0 (Relativity Short Message Format), what
//! e-discovery review platforms (Relativity, Reveal, Everlaw and others) take chat in.
//!
//! One `.rsmf` file per conversation per UTC day that has events (and at most 10,000 events: a
//! busier day is split into parts), named `rsmf/<conversation>-<hash>_<YYYY-MM-DD>[_partN].rsmf` so
//! that a listing sorts by conversation, then day. Each is an RFC 5322 message with the `X-RSMF-*`
//! headers, a plain-text preview as its body, and one attachment, `rsmf.zip`, holding
//! `rsmf_manifest.json` (schema 2.0.0) and the conversation's attachment files. A conversation's days
//! share one `eventcollectionid`, so a platform groups them.
//!
//! Written to the rules Relativity's own validator checks (its error and warning codes in brackets):
//! base64 in lines of at most 76 characters [100]; the preview and `rsmf.zip` the only two parts
//! [103]; files at the zip's root, every one referenced [104, 1017]; event ids unique in the file
//! [109]; every participant an event names in its conversation [1026, 1027, 1025]; no join or leave
//! in a one-to-one conversation [1023], and no leave before its participant acts again [1026];
//! `X-RSMF-BeginDate`/`EndDate` the earliest and latest event times exactly [1014]; non-ASCII header
//! text only as `=?utf-8?b?...?=` [1031, 1032]; an e-mail address only where it is one [107].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::NaiveDate;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

mod headers;

use super::ExportError;
use super::output::{ATTACHMENTS, conversation_stem, create_new};
use super::timeline::{Conversation, Custom, Stored, Timeline, TimelineEvent};
use headers::{addresses, header_list, header_text, is_rsmf_email, listable};

pub(crate) const RSMF_DIR: &str = "rsmf";
/// Events per file at most: Relativity's advice, and its validator warns beyond.
const MAX_EVENTS: usize = 10_000;
/// A manifest longer than this is deflated in the zip.
const DEFLATE_ABOVE: usize = 1 << 20;
/// Attachments a zip is built in memory with, at most.
const ZIP_IN_MEMORY: u64 = 16 << 20;
/// Bytes of events (as stored) in one file at most: a busier day is cut into parts.
const MAX_PART_BYTES: u64 = 64 << 20;
/// Events the preview body lists; the manifest holds them all.
const PREVIEW_EVENTS: usize = 500;
/// The address headers' value when no participant's name is an address (`.invalid` is reserved
/// for names that are none: RFC 2606).
const NO_ADDRESS: &str = "undisclosed@retention-bot.invalid";
/// Bytes of a zip encoded at once: a whole number of 57-byte groups, each a 76-character line.
const BASE64_CHUNK: usize = 57 * 1024;

fn write_error(path: &Path) -> impl Fn(std::io::Error) -> ExportError + '_ {
    move |error| ExportError::Write {
        path: path.to_owned(),
        error,
    }
}

/// Writes every conversation's RSMF files under `staging/rsmf`; the attachments they carry are
/// taken from `staging/attachments` (only those exported). Returns how many files were written.
pub fn write_all(staging: &Path, timeline: &Timeline) -> Result<usize, ExportError> {
    let dir = staging.join(RSMF_DIR);
    std::fs::create_dir_all(&dir).map_err(write_error(&dir))?;
    let attachments = staging.join(ATTACHMENTS);
    let mut files = 0;
    for (id, conversation) in &timeline.conversations {
        // A room's members as its events go by: each file lists those at its first event.
        let mut members: BTreeSet<String> = BTreeSet::new();
        for (day, part, stored) in days(conversation) {
            let mut events = Vec::with_capacity(stored.len());
            for s in stored {
                events.push(timeline.read(s).map_err(|e| ExportError::Read {
                    path: dir.clone(),
                    error: e,
                })?);
            }
            let file = RsmfFile {
                conversation_id: id,
                conversation,
                day,
                members: members.clone(),
                events,
            };
            for event in &file.events {
                match event.kind.as_str() {
                    "leave" => members.remove(&event.participant),
                    _ => members.insert(event.participant.clone()),
                };
            }
            let path = dir.join(file_name(id, day, part));
            file.write(&path, &attachments)?;
            files += 1;
        }
    }
    Ok(files)
}

/// A conversation's events by UTC day, in time order, each day cut into parts of at most
/// [`MAX_EVENTS`] events and [`MAX_PART_BYTES`] of them (one part is held in memory while it is
/// written): (day, part number from 1, events).
fn days(conversation: &Conversation) -> Vec<(NaiveDate, usize, Vec<&Stored>)> {
    let mut by_day: BTreeMap<NaiveDate, Vec<&Stored>> = BTreeMap::new();
    for s in &conversation.events {
        by_day.entry(s.day).or_default().push(s);
    }
    let mut out = Vec::new();
    for (day, mut events) in by_day {
        events.sort_by_key(|s| s.time);
        let mut part: Vec<&Stored> = Vec::new();
        let (mut bytes, mut number) = (0u64, 1);
        for s in events {
            if !part.is_empty() && (part.len() == MAX_EVENTS || bytes + s.len > MAX_PART_BYTES) {
                out.push((day, number, std::mem::take(&mut part)));
                (bytes, number) = (0, number + 1);
            }
            bytes += s.len;
            part.push(s);
        }
        out.push((day, number, part));
    }
    out
}

/// An attachment's name in the zip: its archived name with anything but letters, digits and
/// `.-_` made `_`, never `.`/`..`, and unique in the zip (unless it is the same file).
fn zip_entry_name(name: &str, path: &Path, files: &BTreeMap<String, PathBuf>) -> String {
    let mut safe: String = name
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if safe.trim_start_matches('.').is_empty() || safe == "rsmf_manifest.json" {
        safe = format!("attachment_{safe}");
    }
    let mut candidate = safe.clone();
    let mut n = 1;
    while files.get(&candidate).is_some_and(|p| p != path) {
        n += 1;
        candidate = format!("{n}_{safe}");
    }
    candidate
}

/// `<conversation>-<hash>_<day>[_partN].rsmf`: sorted by conversation, then day.
pub fn file_name(conversation: &str, day: NaiveDate, part: usize) -> String {
    let part = if part > 1 {
        format!("_part{part}")
    } else {
        String::new()
    };
    format!("{}_{day}{part}.rsmf", conversation_stem(conversation))
}

/// One conversation-day's file.
struct RsmfFile<'a> {
    conversation_id: &'a str,
    conversation: &'a Conversation,
    day: NaiveDate,
    /// The room's members at the file's first event (as the export's events show them).
    members: BTreeSet<String>,
    events: Vec<TimelineEvent>,
}

impl RsmfFile<'_> {
    fn write(mut self, path: &Path, attachments: &Path) -> Result<(), ExportError> {
        self.settle();
        let files = self.attach(attachments);
        let manifest = self.manifest();
        // The zip is built in memory unless its attachments are large: a work file per RSMF file,
        // made and removed, costs more than the rest of writing it.
        let attached: u64 = files
            .values()
            .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
            .sum();
        if attached <= ZIP_IN_MEMORY {
            let zip = write_zip(std::io::Cursor::new(Vec::new()), path, &manifest, &files)?;
            return self.write_eml(path, &mut zip.get_ref().as_slice(), files.len());
        }
        let zip_path = path.with_extension("zip.partial");
        write_zip(BufWriter::new(create_new(&zip_path)?), &zip_path, &manifest, &files)?;
        let eml = File::open(&zip_path)
            .map_err(|error| ExportError::Read {
                path: zip_path.clone(),
                error,
            })
            .and_then(|mut zip| self.write_eml(path, &mut zip, files.len()));
        let _ = std::fs::remove_file(&zip_path);
        eml
    }

    /// Makes the events keep RSMF's rules: unique ids, a parent only within the file, no join or
    /// leave in a one-to-one conversation, no leave before its participant acts again.
    fn settle(&mut self) {
        // An id met again gets the first free `#n` (one that is no other event's id either).
        let mut taken: HashSet<String> = HashSet::new();
        for event in &mut self.events {
            let original = event.id.clone();
            let mut n = 1;
            while !taken.insert(event.id.clone()) {
                n += 1;
                event.id = format!("{original}#{n}");
            }
        }
        let times: HashMap<String, String> = self
            .events
            .iter()
            .map(|e| (e.id.clone(), e.timestamp.clone()))
            .collect();
        // The last time each participant acts in the file.
        let mut last: HashMap<&str, &str> = HashMap::new();
        for event in &self.events {
            for person in event.people() {
                let at = last.entry(person.as_str()).or_insert(event.timestamp.as_str());
                *at = (*at).max(event.timestamp.as_str());
            }
        }
        let last: HashMap<String, String> = last.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        let direct = self.conversation.is_direct();
        for event in &mut self.events {
            if let Some(parent) = event.parent.take() {
                match times.get(&parent) {
                    Some(t) if *t <= event.timestamp && parent != event.id => event.parent = Some(parent),
                    _ => event.custom.push(Custom {
                        name: "reply_to".into(),
                        value: parent,
                    }),
                }
            }
            let acts_later = last.get(&event.participant).is_some_and(|t| *t > event.timestamp);
            if (direct && matches!(event.kind.as_str(), "join" | "leave")) || (event.kind == "leave" && acts_later) {
                event.kind = "history".into();
            }
        }
    }

    /// The attachments exported: each event's kept (with its size) if its file is in the export,
    /// else left out and said in a custom property. Returns the files, by name.
    fn attach(&mut self, dir: &Path) -> BTreeMap<String, PathBuf> {
        let mut files = BTreeMap::new();
        for event in &mut self.events {
            let mut kept = Vec::new();
            for mut a in std::mem::take(&mut event.attachments) {
                let path = dir.join(&a.id);
                match std::fs::metadata(&path) {
                    Ok(m) if m.is_file() => {
                        a.size = Some(m.len());
                        // The zip's entry: a plain name at its root, whatever the archived name
                        // holds (a `\` is a separator to some unzip tools).
                        a.id = zip_entry_name(&a.id, &path, &files);
                        files.insert(a.id.clone(), path);
                        kept.push(a);
                    }
                    _ => event.custom.push(Custom {
                        name: "attachment_not_exported".into(),
                        value: a.display,
                    }),
                }
            }
            event.attachments = kept;
        }
        files
    }

    /// The conversation's participants: everyone the file's events name, and the room's members
    /// at its first event (or both people of a one-to-one conversation), in order.
    fn people(&self) -> BTreeSet<&str> {
        let mut people: BTreeSet<&str> = self
            .events
            .iter()
            .flat_map(|e| e.people())
            .map(String::as_str)
            .collect();
        match self.conversation.is_direct() {
            true => people.extend(self.conversation.people.iter().map(String::as_str)),
            false => people.extend(self.members.iter().map(String::as_str)),
        }
        people
    }

    /// Stable per conversation, and short enough for its header line.
    fn collection_id(&self) -> String {
        format!(
            "retention-bot-{}",
            &hex::encode(Sha256::digest(self.conversation_id.as_bytes()))[..32]
        )
    }

    fn manifest(&self) -> Manifest<'_> {
        let people = self.people();
        let participants: Vec<Value> = people
            .iter()
            .map(|p| {
                let mut v = json!({ "id": p, "display": p });
                if is_rsmf_email(p) {
                    v["email"] = json!(p);
                }
                v
            })
            .collect();
        let conversation = json!({
            "id": self.conversation_id,
            "display": self.conversation.title.as_deref().unwrap_or(self.conversation_id),
            "platform": self.conversation.platform,
            "type": if self.conversation.is_direct() { "direct" } else { "channel" },
            "participants": people,
        });
        Manifest {
            version: "2.0.0",
            eventcollectionid: self.collection_id(),
            participants,
            conversations: [conversation],
            events: &self.events,
        }
    }

    /// The file's RFC 5322 and `X-RSMF-*` headers, up to its `Content-Type` (multipart with
    /// `boundary`): built apart from the writing so that `write_eml` stays short.
    fn headers(&self, boundary: &str, attachment_count: usize) -> Vec<(&'static str, String)> {
        let people = self.people();
        let (begin, end) = (
            self.events
                .iter()
                .map(|e| e.timestamp.as_str())
                .min()
                .unwrap_or_default(),
            self.events
                .iter()
                .map(|e| e.timestamp.as_str())
                .max()
                .unwrap_or_default(),
        );
        let display = self.conversation.title.as_deref().unwrap_or(self.conversation_id);
        let date = chrono::DateTime::parse_from_rfc3339(begin)
            .map(|t| t.to_rfc2822())
            .unwrap_or_default();
        let application = if self.conversation.platform == "matrix" {
            "Matrix"
        } else {
            "Wickr"
        };
        let mut headers = vec![
            ("MIME-Version", "1.0".to_owned()),
            // Only names that are addresses: any other name is no address, whatever it looks like.
            (
                "From",
                addresses(
                    6,
                    self.events.iter().map(|e| e.participant.as_str()).take(1),
                    NO_ADDRESS,
                ),
            ),
            ("To", addresses(4, people.iter().copied(), NO_ADDRESS)),
            (
                "Subject",
                header_text(&format!("{application} {display} {}", self.day), 9),
            ),
            ("Date", date),
            ("X-RSMF-Version", "2.0.0".to_owned()),
            (
                "X-RSMF-Generator",
                format!("retention-bot {}", env!("CARGO_PKG_VERSION")),
            ),
            ("X-RSMF-Application", application.to_owned()),
            ("X-RSMF-BeginDate", begin.to_owned()),
            ("X-RSMF-EndDate", end.to_owned()),
            ("X-RSMF-EventCount", self.events.len().to_string()),
            ("X-RSMF-AttachmentCount", attachment_count.to_string()),
        ];
        // Optional, and compared name for name with the manifest: only when every name can be.
        if people.iter().all(|p| listable(p)) {
            headers.push(("X-RSMF-Participants", header_list(21, people.iter().copied())));
        }
        headers.push(("X-RSMF-EventCollectionID", self.collection_id()));
        headers.push(("Content-Type", format!("multipart/mixed; boundary=\"{boundary}\"")));
        headers
    }

    fn write_eml(&self, path: &Path, zip: &mut impl Read, attachment_count: usize) -> Result<(), ExportError> {
        let boundary = format!(
            "retention-bot-rsmf-{}",
            &hex::encode(Sha256::digest(path.to_string_lossy().as_bytes()))[..16]
        );
        let headers = self.headers(&boundary, attachment_count);
        let file = create_new(path)?;
        let mut out = BufWriter::new(file);
        let mut head = String::new();
        for (name, value) in &headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!("\r\n--{boundary}\r\nContent-Type: text/plain; charset=\"utf-8\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"));
        for line in B64.encode(self.preview().as_bytes()).as_bytes().chunks(76) {
            head.push_str(std::str::from_utf8(line).unwrap_or_default());
            head.push_str("\r\n");
        }
        head.push_str(&format!("--{boundary}\r\nContent-Type: application/zip; name=\"rsmf.zip\"\r\nContent-Disposition: attachment; filename=\"rsmf.zip\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"));
        out.write_all(head.as_bytes()).map_err(write_error(path))?;
        base64_lines(zip, &mut out).map_err(write_error(path))?;
        out.write_all(format!("--{boundary}--\r\n").as_bytes())
            .map_err(write_error(path))?;
        // Made durable with the rest of the export, at once (`write_all`'s caller).
        out.into_inner().map_err(|e| write_error(path)(e.into_error()))?;
        Ok(())
    }

    /// The body a reader sees first: the conversation in plain text, the first events of it.
    fn preview(&self) -> String {
        let display = self.conversation.title.as_deref().unwrap_or(self.conversation_id);
        let mut text = format!("{display}, {} (UTC): {} event(s)\n\n", self.day, self.events.len());
        for event in self.events.iter().take(PREVIEW_EVENTS) {
            let time = event.timestamp.get(11..19).unwrap_or_default();
            let body = event.body.as_deref().unwrap_or(&event.kind).replace(['\r', '\n'], " ");
            let deleted = if event.deleted { " [deleted]" } else { "" };
            text.push_str(&format!("{time} {}: {body}{deleted}\n", event.participant));
        }
        if self.events.len() > PREVIEW_EVENTS {
            text.push_str(&format!(
                "... and {} more event(s) in the manifest\n",
                self.events.len() - PREVIEW_EVENTS
            ));
        }
        text
    }
}

/// `rsmf.zip`: the manifest, then each attachment file, all at the zip's root.
/// `rsmf_manifest.json`: the events serialised as they are (no copy of them is made).
#[derive(serde::Serialize)]
struct Manifest<'a> {
    version: &'static str,
    eventcollectionid: String,
    participants: Vec<Value>,
    conversations: [Value; 1],
    events: &'a [TimelineEvent],
}

/// Writes the zip into `out` (`path` names it in errors) and hands it back.
fn write_zip<W: Write + std::io::Seek>(
    out: W,
    path: &Path,
    manifest: &Manifest,
    files: &BTreeMap<String, PathBuf>,
) -> Result<W, ExportError> {
    use zip::write::SimpleFileOptions;
    let mut zip = zip::ZipWriter::new(out);
    let zip_error = |e: zip::result::ZipError| write_error(path)(std::io::Error::other(e));
    // Setting up a compressor costs more than a day's small manifest saves: only a large one is
    // deflated (at the fastest level). Attachments are stored as they are: pictures and documents
    // are compressed already.
    let stored = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let text = serde_json::to_vec(manifest).map_err(|e| write_error(path)(e.into()))?;
    let options = match text.len() > DEFLATE_ABOVE {
        true => SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .compression_level(Some(1)),
        false => stored,
    };
    zip.start_file("rsmf_manifest.json", options).map_err(zip_error)?;
    zip.write_all(&text).map_err(write_error(path))?;
    drop(text);
    for (name, source) in files {
        let size = std::fs::metadata(source).map(|m| m.len()).unwrap_or(0);
        let options = stored.large_file(size >= u32::MAX as u64);
        zip.start_file(name.as_str(), options).map_err(zip_error)?;
        let mut from = File::open(source).map_err(|error| ExportError::Read {
            path: source.clone(),
            error,
        })?;
        std::io::copy(&mut from, &mut zip).map_err(write_error(path))?;
    }
    // Memory, or a work file removed once encoded: never synced.
    zip.finish().map_err(zip_error)
}

/// What `file` holds as base64 lines of 76 characters (CRLF), streamed.
fn base64_lines(file: &mut impl Read, out: &mut impl std::io::Write) -> std::io::Result<()> {
    let mut buf = vec![0u8; BASE64_CHUNK];
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            let n = file.read(&mut buf[filled..])?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            return Ok(());
        }
        let encoded = B64.encode(&buf[..filled]);
        for line in encoded.as_bytes().chunks(76) {
            out.write_all(line)?;
            out.write_all(b"\r\n")?;
        }
        if filled < buf.len() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_safe_and_sort_by_conversation_then_day() {
        let day = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        let a = file_name("S1111", day, 1);
        assert!(a.starts_with("S1111-") && a.ends_with("_2026-03-01.rsmf"), "{a}");
        let b = file_name("../x", day, 2);
        assert!(b.starts_with("___x-") && b.ends_with("_part2.rsmf"), "{b}");
        // 16 hex digits keep two ids apart.
        assert_eq!(conversation_stem("S1111").len(), "S1111-".len() + 16);
    }

    #[test]
    fn base64_lines_are_76_characters_at_most() {
        let mut out = Vec::new();
        base64_lines(&mut vec![7u8; BASE64_CHUNK * 2 + 100].as_slice(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.split("\r\n").all(|l| l.len() <= 76));
        let joined: String = text.split("\r\n").collect();
        assert_eq!(B64.decode(joined).unwrap(), vec![7u8; BASE64_CHUNK * 2 + 100]);
    }
}
