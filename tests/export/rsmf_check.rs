//! An RSMF 2.0 file taken apart and checked the way a review platform reads it: the RFC 5322
//! wrapper and its `X-RSMF-*` headers, the base64 parts (lines of at most 76 characters), the
//! `rsmf.zip` attachment, and the 2.0.0 manifest's required fields and cross-references (every
//! participant an event names is defined and in its conversation, attachments are in the zip and
//! every file in the zip is referenced, parents exist and come first, the headers agree with the
//! manifest). Written from Relativity's published RSMF documentation; Relativity's own validator is
//! run on these files by hand while building (docs/export.md), not by the tests.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Read as _;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;

/// One `.rsmf` file, read.
pub(crate) struct Rsmf {
    pub(super) name: String,
    pub(super) headers: BTreeMap<String, String>,
    pub(super) preview: String,
    pub(super) manifest: Value,
    /// The zip's files other than the manifest, by name.
    pub(super) files: BTreeMap<String, Vec<u8>>,
}

impl Rsmf {
    pub(crate) fn events(&self) -> &[Value] {
        self.manifest["events"].as_array().unwrap()
    }

    pub(super) fn conversation(&self) -> &Value {
        &self.manifest["conversations"][0]
    }

    /// The day the file name gives (`<conversation>-<hash>_<YYYY-MM-DD>[_partN].rsmf`).
    pub(super) fn day(&self) -> NaiveDate {
        let stem = self.name.trim_end_matches(".rsmf");
        let day = stem
            .split('_')
            .rev()
            .find(|p| p.len() == 10 && p.as_bytes()[4] == b'-')
            .unwrap();
        NaiveDate::parse_from_str(day, "%Y-%m-%d").unwrap()
    }
}

/// Reads and checks every `.rsmf` file in `dir`, in name order.
pub(crate) fn read_all(dir: &Path) -> Vec<Rsmf> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert!(
        names.iter().all(|n| n.ends_with(".rsmf")),
        "only RSMF files in rsmf/: {names:?}"
    );
    let files: Vec<Rsmf> = names.iter().map(|n| read(&dir.join(n))).collect();
    // A listing sorts by conversation, then day; a conversation's days share one collection id.
    let mut runs: Vec<&str> = Vec::new();
    let mut collection: BTreeMap<&str, &str> = BTreeMap::new();
    for f in &files {
        let conversation = f.conversation()["id"].as_str().unwrap();
        if runs.last() != Some(&conversation) {
            assert!(!runs.contains(&conversation), "{} breaks {conversation}'s run", f.name);
            runs.push(conversation);
        }
        let id = f.headers["x-rsmf-eventcollectionid"].as_str();
        assert_eq!(*collection.entry(conversation).or_insert(id), id, "{}", f.name);
    }
    let ids: HashSet<&&str> = collection.values().collect();
    assert_eq!(ids.len(), collection.len(), "one collection id per conversation");
    for pair in files.windows(2) {
        if pair[0].conversation()["id"] == pair[1].conversation()["id"] {
            assert!(pair[0].day() <= pair[1].day(), "{} then {}", pair[0].name, pair[1].name);
        }
    }
    files
}

/// Reads one file and checks it on its own.
pub(super) fn read(path: &Path) -> Rsmf {
    let name = path.file_name().unwrap().to_str().unwrap().to_owned();
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.is_ascii(), "{name}: an RFC 5322 message is ASCII");
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    let mut last = String::new();
    for line in head.split("\r\n") {
        assert!(line.len() <= 78, "{name}: header line of {} characters", line.len());
        // A folded line continues the header before it (RFC 5322): unfolded here.
        if line.starts_with([' ', '\t']) {
            headers.get_mut(&last).unwrap().push_str(&format!("\r\n{line}"));
            continue;
        }
        let (k, v) = line
            .split_once(':')
            .unwrap_or_else(|| panic!("{name}: header line {line:?}"));
        last = k.to_lowercase();
        assert!(
            headers.insert(last.clone(), v.trim().to_owned()).is_none(),
            "{name}: {k} twice"
        );
    }
    for required in [
        "x-rsmf-version",
        "x-rsmf-generator",
        "x-rsmf-begindate",
        "x-rsmf-enddate",
        "x-rsmf-eventcount",
        "x-rsmf-application",
        "x-rsmf-attachmentcount",
        "x-rsmf-eventcollectionid",
    ] {
        assert!(
            headers.get(required).is_some_and(|v| !v.is_empty()),
            "{name}: {required} missing"
        );
    }
    assert_eq!(headers["x-rsmf-version"], "2.0.0", "{name}");
    let boundary = headers["content-type"]
        .split("boundary=\"")
        .nth(1)
        .and_then(|b| b.split('"').next())
        .unwrap_or_else(|| panic!("{name}: multipart boundary"))
        .to_owned();
    let parts: Vec<&str> = body.split(&format!("--{boundary}")).collect();
    assert_eq!(parts.len(), 4, "{name}: preamble, two parts, and the closing delimiter");
    assert_eq!(parts[3], "--\r\n", "{name}: closing delimiter");
    let part = |p: &str| -> (String, Vec<u8>) {
        let (part_head, data) = p.trim_start_matches("\r\n").split_once("\r\n\r\n").unwrap();
        assert!(
            part_head.contains("Content-Transfer-Encoding: base64"),
            "{name}: {part_head}"
        );
        let lines: Vec<&str> = data.split("\r\n").filter(|l| !l.is_empty()).collect();
        assert!(
            lines.iter().all(|l| l.len() <= 76),
            "{name}: base64 lines of 76 characters at most"
        );
        (part_head.to_owned(), B64.decode(lines.concat()).unwrap())
    };
    let (preview_head, preview) = part(parts[1]);
    assert!(
        preview_head.contains("text/plain"),
        "{name}: the body is a plain-text preview"
    );
    let (zip_head, zip) = part(parts[2]);
    assert!(
        zip_head.contains("Content-Disposition: attachment; filename=\"rsmf.zip\""),
        "{name}: {zip_head}"
    );
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).unwrap();
    let mut manifest = None;
    let mut files = BTreeMap::new();
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).unwrap();
        let entry_name = entry.name().unwrap().into_owned();
        assert!(!entry_name.contains('/'), "{name}: {entry_name} at the zip's root");
        assert!(!entry.encrypted(), "{name}: {entry_name} not password protected");
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        match entry_name.as_str() {
            "rsmf_manifest.json" => manifest = Some(serde_json::from_slice::<Value>(&bytes).unwrap()),
            _ => assert!(files.insert(entry_name, bytes).is_none(), "{name}: one entry per name"),
        }
    }
    let rsmf = Rsmf {
        name,
        headers,
        preview: String::from_utf8(preview).unwrap(),
        manifest: manifest.expect("rsmf_manifest.json in the zip"),
        files,
    };
    check_manifest(&rsmf);
    check_headers(&rsmf);
    rsmf
}

fn time(v: &Value) -> DateTime<Utc> {
    let s = v.as_str().unwrap();
    assert!(s.ends_with('Z'), "{s}: ISO 8601 in UTC");
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn check_manifest(f: &Rsmf) {
    let (name, m) = (&f.name, &f.manifest);
    assert_eq!(m["version"], "2.0.0", "{name}");
    let participants = m["participants"].as_array().unwrap();
    let defined: BTreeSet<&str> = participants.iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(defined.len(), participants.len(), "{name}: participant ids unique");
    for p in participants {
        assert!(p["display"].is_string(), "{name}: {p}");
    }
    let conversations = m["conversations"].as_array().unwrap();
    assert_eq!(conversations.len(), 1, "{name}: one conversation per file");
    let c = &conversations[0];
    let kind = c["type"].as_str().unwrap();
    assert!(kind == "direct" || kind == "channel", "{name}: {kind}");
    let members: BTreeSet<&str> = c["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(
        members.is_subset(&defined),
        "{name}: conversation participants are defined"
    );
    assert_eq!(
        members, defined,
        "{name}: everyone defined takes part in the conversation"
    );
    let events = f.events();
    assert!(
        !events.is_empty() && events.len() <= 10_000,
        "{name}: {} events",
        events.len()
    );
    let mut ids = HashSet::new();
    let mut times = BTreeMap::new();
    for e in events {
        let id = e["id"].as_str().unwrap();
        assert!(ids.insert(id), "{name}: event id {id} unique");
        times.insert(id, time(&e["timestamp"]));
    }
    let mut referenced = BTreeSet::new();
    for e in events {
        let id = e["id"].as_str().unwrap();
        let kind = e["type"].as_str().unwrap();
        assert!(
            ["message", "join", "leave", "history", "unknown", "disclaimer"].contains(&kind),
            "{name}: {id} is a {kind}"
        );
        assert_eq!(e["conversation"], c["id"], "{name}: {id}");
        let at = times[id];
        assert_eq!(at.date_naive(), f.day(), "{name}: {id} on the file's day");
        let person = e["participant"].as_str().unwrap();
        assert!(
            members.contains(person),
            "{name}: {id}'s {person} is in the conversation"
        );
        if c["type"] == "direct" {
            assert!(
                kind != "join" && kind != "leave",
                "{name}: no join or leave in a direct conversation"
            );
        }
        for a in e["attachments"].as_array().into_iter().flatten() {
            let file = a["id"].as_str().unwrap();
            assert!(!a["display"].as_str().unwrap().is_empty(), "{name}: {a}");
            let bytes = f.files.get(file).unwrap_or_else(|| panic!("{name}: {file} in the zip"));
            assert_eq!(a["size"].as_u64(), Some(bytes.len() as u64), "{name}: {file}'s size");
            referenced.insert(file.to_owned());
        }
        for edit in e["edits"].as_array().into_iter().flatten() {
            assert!(
                members.contains(edit["participant"].as_str().unwrap()),
                "{name}: {edit}"
            );
            assert!(time(&edit["timestamp"]) >= at, "{name}: {id}'s edit after it");
            assert!(
                edit["previous"].is_string() && edit["new"].is_string(),
                "{name}: {edit}"
            );
        }
        for r in e["reactions"].as_array().into_iter().flatten() {
            let who = r["participants"].as_array().unwrap();
            assert!(who.iter().all(|p| members.contains(p.as_str().unwrap())), "{name}: {r}");
            assert!(r["count"].as_u64().unwrap() >= who.len() as u64, "{name}: {r}");
            assert!(!r["value"].as_str().unwrap().is_empty(), "{name}: {r}");
        }
        if let Some(parent) = e["parent"].as_str() {
            assert!(
                parent != id && times.get(parent).is_some_and(|t| *t <= at),
                "{name}: {id}'s parent {parent}"
            );
        }
        for custom in e["custom"].as_array().into_iter().flatten() {
            assert!(!custom["name"].as_str().unwrap().is_empty(), "{name}: {custom}");
            assert!(!custom["value"].as_str().unwrap().is_empty(), "{name}: {custom}");
        }
    }
    let in_zip: BTreeSet<String> = f.files.keys().cloned().collect();
    assert_eq!(
        in_zip, referenced,
        "{name}: every file in the zip is an event's attachment"
    );
}

fn check_headers(f: &Rsmf) {
    let (name, h) = (&f.name, &f.headers);
    let events = f.events();
    assert_eq!(h["x-rsmf-eventcount"], events.len().to_string(), "{name}");
    assert_eq!(h["x-rsmf-attachmentcount"], f.files.len().to_string(), "{name}");
    let stamps: Vec<&str> = events.iter().map(|e| e["timestamp"].as_str().unwrap()).collect();
    let earliest = stamps.iter().min_by_key(|s| time(&Value::from(**s))).unwrap();
    let latest = stamps.iter().max_by_key(|s| time(&Value::from(**s))).unwrap();
    assert_eq!(&h["x-rsmf-begindate"], earliest, "{name}");
    assert_eq!(&h["x-rsmf-enddate"], latest, "{name}");
    if let Some(listed) = h.get("x-rsmf-participants") {
        let mut listed: Vec<String> = listed.split(',').map(|p| decode_word(p.trim())).collect();
        let mut displays: Vec<String> = f.manifest["participants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["display"].as_str().unwrap().to_owned())
            .collect();
        listed.sort();
        displays.sort();
        assert_eq!(listed, displays, "{name}: X-RSMF-Participants");
    }
    assert!(
        f.preview.contains(&format!("{} event(s)", events.len())),
        "{name}: {}",
        f.preview
    );
}

/// A header item: text as it is, or RFC 2047 `=?utf-8?b?...?=` words (folded apart), decoded.
pub(super) fn decode_word(s: &str) -> String {
    if !s.starts_with("=?") {
        return s.to_owned();
    }
    let mut bytes = Vec::new();
    for word in s.split_whitespace() {
        let b64 = word
            .strip_prefix("=?utf-8?b?")
            .and_then(|r| r.strip_suffix("?="))
            .unwrap();
        bytes.extend(B64.decode(b64).unwrap());
    }
    String::from_utf8(bytes).unwrap()
}
