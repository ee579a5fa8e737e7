//! `export --format jsonl,csv,rsmf,html` on the generated archive, from a directory and from an
//! encrypted bucket: every RSMF file taken apart and checked ([`super::rsmf_check`]) and its events
//! counted against the model; the transcript loaded in headless Chromium ([`super::browser`]); every
//! file listed in the signed custody report and checked by `verify-export`. Then hostile content:
//! message text, file names, senders and rooms made of markup must render as text.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::process::Command;

use chrono::{DateTime, NaiveDate};
use serde_json::Value;

use super::archive::*;
use super::browser;
use super::rsmf_check::{self, Rsmf};
use crate::common;
use common::Bot;
use common::aws::Moto;

/// The whole archive in every format, into `tmp/all`: the directory and what the export said.
fn export_all(exporter: &Exporter, tmp: &Path) -> (std::path::PathBuf, String) {
    let out = tmp.join("all");
    let (code, text) = exporter.run(&["--format", "jsonl,csv,rsmf,html", "--out", out.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{text}");
    (out, text)
}

/// What the model says one conversation's RSMF events are, by day: (time in µs, id, kind).
type Expected = BTreeMap<String, BTreeMap<NaiveDate, Vec<(i64, String, &'static str)>>>;

fn micros(m: &Msg) -> i64 {
    m.ts as i64 * 1_000_000 + (m.ts % 997) as i64
}

fn day_of(micros: i64) -> NaiveDate {
    DateTime::from_timestamp_micros(micros).unwrap().date_naive()
}

/// The message each edit, reaction and delete finally refers to (an edit's edit: the message).
fn roots(msgs: &[Msg]) -> HashMap<&str, &str> {
    let by_id: HashMap<&str, &Msg> = msgs.iter().map(|m| (m.id.as_str(), m)).collect();
    let mut roots = HashMap::new();
    for m in msgs {
        let mut at = m;
        while let Some(target) = at.refers_to.as_deref() {
            at = by_id[target];
        }
        roots.insert(m.id.as_str(), at.id.as_str());
    }
    roots
}

/// The events of the whole archive, as RSMF files hold them.
fn expected_events(msgs: &[Msg]) -> Expected {
    let mut out: Expected = BTreeMap::new();
    for m in msgs {
        let mut push = |id: String, kind| {
            out.entry(m.room.clone())
                .or_default()
                .entry(day_of(micros(m)))
                .or_default()
                .push((micros(m), id, kind))
        };
        match m.msgtype {
            1000 | 6000 | 7000 | 8000 => push(m.id.clone(), "message"),
            4001 | 4002 => {
                for (i, member) in m.members.iter().enumerate() {
                    let id = match i {
                        0 => m.id.clone(),
                        _ => format!("{}#join-{member}", m.id),
                    };
                    push(id, "join");
                }
            }
            _ => {}
        }
    }
    for days in out.values_mut() {
        for events in days.values_mut() {
            events.sort();
        }
    }
    out
}

/// Checks the RSMF files of a whole-archive export against the model.
fn check_rsmf_against_model(files: &[Rsmf], msgs: &[Msg]) {
    let expected = expected_events(msgs);
    let roots = roots(msgs);
    let mut got: Expected = BTreeMap::new();
    let mut seen_events = HashMap::new();
    for f in files {
        let conversation = f.conversation()["id"].as_str().unwrap().to_owned();
        let days = got.entry(conversation.clone()).or_default();
        assert!(
            !days.contains_key(&f.day()),
            "{}: one file per conversation-day",
            f.name
        );
        let kind = f.conversation()["type"].as_str().unwrap();
        assert_eq!(kind == "direct", conversation.starts_with('D'), "{}: {kind}", f.name);
        let events: Vec<(i64, String, &'static str)> = f
            .events()
            .iter()
            .map(|e| {
                let at = DateTime::parse_from_rfc3339(e["timestamp"].as_str().unwrap()).unwrap();
                let kind = match e["type"].as_str().unwrap() {
                    "message" => "message",
                    "join" => "join",
                    other => panic!("{}: a {other} event", f.name),
                };
                seen_events.insert(e["id"].as_str().unwrap().to_owned(), e.clone());
                (at.timestamp_micros(), e["id"].as_str().unwrap().to_owned(), kind)
            })
            .collect();
        let mut sorted = events.clone();
        sorted.sort();
        assert_eq!(events, sorted, "{}: events in time order", f.name);
        days.insert(f.day(), events);
        // A room lists its members at the file's first event: everyone who joined on an earlier day.
        if kind == "channel" {
            let members: BTreeSet<&str> = f.conversation()["participants"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap())
                .collect();
            for m in msgs
                .iter()
                .filter(|m| m.room == conversation && day_of(micros(m)) < f.day())
            {
                for member in &m.members {
                    assert!(members.contains(member), "{}: {member} is a member", f.name);
                }
            }
        }
    }
    assert_eq!(got, expected, "every event, in its conversation-day's file");

    // What folded into each message: its edits in order, its reactions, its deletion.
    let mut edits: HashMap<&str, Vec<&Msg>> = HashMap::new();
    for m in msgs.iter().filter(|m| m.msgtype == 9000) {
        edits.entry(roots[m.id.as_str()]).or_default().push(m);
    }
    for m in msgs.iter().filter(|m| [1000, 6000, 7000, 8000].contains(&m.msgtype)) {
        let e = &seen_events[&m.id];
        assert_eq!(e["participant"], m.sender, "{}", m.id);
        let mut history = edits.get(m.id.as_str()).cloned().unwrap_or_default();
        history.sort_by_key(|x| x.ts);
        let got: Vec<(String, String, String)> = e["edits"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| {
                (
                    x["participant"].as_str().unwrap().to_owned(),
                    x["previous"].as_str().unwrap().to_owned(),
                    x["new"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let mut previous = m.text.clone();
        let want: Vec<(String, String, String)> = history
            .iter()
            .map(|x| {
                let step = (x.sender.to_owned(), previous.clone(), x.text.clone());
                previous = x.text.clone();
                step
            })
            .collect();
        assert_eq!(got, want, "{}'s edit history", m.id);
        let reactions: Vec<&Msg> = msgs
            .iter()
            .filter(|r| r.msgtype == 9100 && roots[r.id.as_str()] == m.id)
            .collect();
        let counted: u64 = e["reactions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| r["count"].as_u64().unwrap())
            .sum();
        assert_eq!(counted, reactions.len() as u64, "{}'s reactions", m.id);
        for r in &reactions {
            assert!(
                e["reactions"][0]["participants"]
                    .as_array()
                    .unwrap()
                    .contains(&Value::from(r.sender))
            );
        }
        let deleted = msgs.iter().any(|d| d.msgtype == 4011 && roots[d.id.as_str()] == m.id);
        assert_eq!(e["deleted"].as_bool().unwrap_or(false), deleted, "{} deleted", m.id);
        if let Some(bytes) = &m.attachment {
            let a = &e["attachments"][0];
            assert_eq!(a["display"], format!("doc-{}.bin", m.id));
            let f = files
                .iter()
                .find(|f| f.files.contains_key(a["id"].as_str().unwrap()))
                .unwrap();
            assert_eq!(&f.files[a["id"].as_str().unwrap()], bytes, "{}'s attachment", m.id);
        }
    }
}

/// Checks the transcript of a whole-archive export in Chromium against the model.
fn check_transcript_against_model(out: &Path, msgs: &[Msg]) {
    let dir = out.join("transcript");
    let index = browser::dom(&dir.join("index.html"));
    let pages: Vec<String> = browser::elements(&index)
        .iter()
        .filter(|e| e.tag == "a")
        .map(|e| {
            let href = e.get("href").unwrap();
            percent_encoding::percent_decode_str(href)
                .decode_utf8()
                .unwrap()
                .into_owned()
        })
        .collect();
    let expected = expected_events(msgs);
    assert_eq!(pages.len(), expected.len(), "a link per conversation: {pages:?}");
    let roots = roots(msgs);
    for page in &pages {
        let path = dir.join(page);
        let dom = browser::dom(&path);
        let text = browser::body_text(&dom);
        let (conversation, days) = expected
            .iter()
            .find(|(id, _)| text.contains(&format!(" {id} \u{b7} participants")))
            .unwrap_or_else(|| panic!("{page}: which conversation? {text}"));
        let events: Vec<(String, String)> = browser::elements(&dom)
            .into_iter()
            .filter(|e| e.tag == "div" && e.get("class").is_some_and(|c| c.split(' ').any(|c| c == "event")))
            .map(|e| (e.get("id").unwrap().to_owned(), e.get("class").unwrap().to_owned()))
            .collect();
        let want: Vec<&(i64, String, &str)> = days.values().flatten().collect();
        assert_eq!(events.len(), want.len(), "{conversation}: one block per event");
        for ((id, class), (_, want_id, kind)) in events.iter().zip(&want) {
            if *kind != "message" {
                assert!(class.contains("system"), "{conversation}: {id}");
                continue;
            }
            assert_eq!(id, &format!("m-{want_id}"), "{conversation}: in time order");
            let deleted = msgs
                .iter()
                .any(|d| d.msgtype == 4011 && roots[d.id.as_str()] == want_id);
            assert_eq!(class.contains("deleted"), deleted, "{conversation}: {id} {class}");
        }
        let edits = msgs
            .iter()
            .filter(|m| m.msgtype == 9000 && &m.room == conversation)
            .count();
        let items = browser::elements(&dom).iter().filter(|e| e.tag == "li").count();
        assert_eq!(items, edits, "{conversation}: each edit in a message's history");
        for m in msgs.iter().filter(|m| &m.room == conversation && m.msgtype == 1000) {
            assert!(text.contains(&m.text), "{conversation}: {}", m.text);
        }
    }
}

/// The custody report lists every file written with its SHA-256, and `verify-export` checks each.
fn check_custody_lists_everything(out: &Path, public_key: &Path) {
    let custody: Value = serde_json::from_slice(&std::fs::read(out.join("custody.json")).unwrap()).unwrap();
    let listed: BTreeSet<String> = custody["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let path = f["path"].as_str().unwrap();
            let bytes = std::fs::read(out.join(path)).unwrap();
            assert_eq!(f["sha256"].as_str().unwrap(), sha256_hex(&bytes), "{path}");
            path.to_owned()
        })
        .collect();
    let mut on_disk = BTreeSet::new();
    for sub in ["", "rsmf", "transcript", "attachments"] {
        let Ok(dir) = std::fs::read_dir(out.join(sub)) else {
            continue;
        };
        for e in dir {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            if e.file_type().unwrap().is_file() && !name.starts_with("custody.") {
                on_disk.insert(if sub.is_empty() { name } else { format!("{sub}/{name}") });
            }
        }
    }
    assert_eq!(listed, on_disk, "every file written is in the custody report");
    let verify = || {
        common::run_to_end(
            Command::new(common::BIN)
                .arg("verify-export")
                .arg(out)
                .arg("--public-key")
                .arg(public_key),
        )
    };
    let (code, text) = verify();
    assert_eq!(code, Some(0), "{text}");
    for altered in ["rsmf", "transcript"] {
        let Some(name) = on_disk.iter().find(|p| p.starts_with(altered)) else {
            continue;
        };
        let path = out.join(name);
        let good = std::fs::read(&path).unwrap();
        let mut bad = good.clone();
        bad[good.len() / 2] ^= 1;
        std::fs::write(&path, bad).unwrap();
        let (code, text) = verify();
        assert_eq!(
            (code, text.contains(&format!("ALTERED {name}"))),
            (Some(1), true),
            "{text}"
        );
        std::fs::write(&path, good).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_format_from_a_directory_agrees_with_the_model_and_reads_in_a_browser() {
    let msgs = generate();
    let mut bot = Bot::start(&rotating()).await;
    write_archive(&mut bot, &msgs).await;
    let exporter = Exporter::of_dir(&bot);
    let tmp = tempfile::tempdir().unwrap();
    let (out, text) = export_all(&exporter, tmp.path());
    assert_eq!(ids_in(&out.join("messages.jsonl")), model(&msgs, &Sel::default()));

    let files = rsmf_check::read_all(&out.join("rsmf"));
    check_rsmf_against_model(&files, &msgs);
    check_transcript_against_model(&out, &msgs);
    check_custody_lists_everything(&out, &exporter.public_key);
    let custody: Value = serde_json::from_slice(&std::fs::read(out.join("custody.json")).unwrap()).unwrap();
    assert_eq!(custody["counts"]["rsmf_files"].as_u64(), Some(files.len() as u64));
    assert!(text.contains(&format!("{} RSMF file(s)", files.len())), "{text}");

    // The printed transcript has page numbers.
    let biggest = std::fs::read_dir(out.join("transcript"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let printed = browser::printed_text(&biggest);
    let pages = printed.matches('\u{c}').count().max(1);
    assert!(pages > 1, "a long conversation prints on several pages");
    assert!(printed.contains(&format!("page 1 of {pages}")), "{printed}");
    assert!(printed.contains(&format!("page {pages} of {pages}")), "{printed}");
    browser::screenshot(&biggest, "transcript-conversation.png");

    // Only the formats asked for; a selection's RSMF holds only its messages.
    let bob = tmp.path().join("bob");
    let (code, text) = exporter.run(&[
        "--format",
        "rsmf",
        "--sender",
        "bob@example",
        "--out",
        bob.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        !bob.join("messages.jsonl").exists() && !bob.join("messages.csv").exists() && !bob.join("transcript").exists()
    );
    let ids: BTreeSet<String> = rsmf_check::read_all(&bob.join("rsmf"))
        .iter()
        .flat_map(|f| {
            f.events()
                .iter()
                .map(|e| e["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    // bob's messages, the joins of the rooms he made or added to, and his reactions to others'
    // messages (on their own: what they react to is not in this export).
    let bobs = |m: &&Msg| m.sender == "bob@example";
    let roots = roots(&msgs);
    let by_id: HashMap<&str, &Msg> = msgs.iter().map(|m| (m.id.as_str(), m)).collect();
    let mut want: BTreeSet<String> = expected_events(&msgs.iter().filter(bobs).cloned().collect::<Vec<_>>())
        .into_values()
        .flat_map(|days| days.into_values().flatten().map(|(_, id, _)| id))
        .collect();
    want.extend(
        msgs.iter()
            .filter(bobs)
            .filter(|m| m.msgtype == 9100 && by_id[roots[m.id.as_str()]].sender != "bob@example")
            .map(|m| m.id.clone()),
    );
    assert_eq!(ids, want);
    check_custody_lists_everything(&bob, &exporter.public_key);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_format_from_an_encrypted_bucket_agrees_with_the_model() {
    let msgs = generate();
    let moto = Moto::start().await;
    let key_arn = moto.create_key().await;
    let bucket = "formats-enc";
    moto.s3().await.create_bucket().bucket(bucket).send().await.unwrap();
    let env = Moto::env_via(&moto.endpoint());
    let mut extra: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    extra.extend(rotating());
    extra.extend([
        ("WICKRIO_S3_BUCKET_NAME", bucket),
        ("WICKRIO_S3_FOLDER_NAME", FOLDER),
        ("WICKRIO_KMS_MSTRKEY_ARN", &key_arn),
    ]);
    let mut bot = Bot::start(&extra).await;
    write_archive(&mut bot, &msgs).await;
    let exporter = Exporter::of_bucket(&bot, bucket, &moto.endpoint());
    let tmp = tempfile::tempdir().unwrap();
    let (out, _) = export_all(&exporter, tmp.path());
    let files = rsmf_check::read_all(&out.join("rsmf"));
    check_rsmf_against_model(&files, &msgs);
    check_transcript_against_model(&out, &msgs);
    check_custody_lists_everything(&out, &exporter.public_key);
}
