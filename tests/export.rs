//! `retention-bot export` against archives the real bot wrote: a local directory, and moto buckets
//! (plain and KMS-encrypted). The archive is generated here with a known answer: four people, two
//! rooms and direct messages, texts, files with attachments, calls, locations, edits, reactions and
//! deletes, spread over five months, written over several rotations and restarts, and with a late
//! producer posting March messages in July (a file whose lines are out of time order). Every
//! selection must return exactly the ids the model below computes, in order; attachments must be
//! byte-identical; the CSV must parse with Python's csv module and agree with the JSONL; the custody
//! report must be signed and hash every output. Then the attacks: a tampered file, `--strict`, and
//! bad flags.

use crate::common;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::aws::{Moto, RecordingProxy};
use common::{Bot, attachment_form};
use serde_json::{Value, json};

const FOLDER: &str = "retention/bot1";
/// 2026-03-01T00:00:00Z.
const MARCH_1: u64 = 1_772_323_200;
const DAY: u64 = 86_400;
const PEOPLE: [&str; 4] = ["alice@example", "bob@example", "carol@example", "dan@example"];
const ROOM_1: &str = "S11111111";
const ROOM_2: &str = "S22222222";

/// One generated message.
#[derive(Debug, Clone)]
struct Msg {
    id: String,
    ts: u64,
    sender: &'static str,
    receiver: Option<&'static str>,
    room: String,
    msgtype: i64,
    text: String,
    refers_to: Option<String>,
    members: Vec<&'static str>,
    attachment: Option<Vec<u8>>,
}

impl Msg {
    fn json(&self) -> String {
        let mut v = json!({
            "message": self.text,
            "message_id": self.id,
            "msg_ts": format!("{}.{:06}", self.ts, self.ts % 997),
            "msgtype": self.msgtype,
            "sender": self.sender,
            "vgroupid": self.room,
        });
        if let Some(r) = self.receiver {
            v["receiver"] = json!(r);
        }
        match self.msgtype {
            6000 => v["file"] = json!({"filename": format!("doc-{}.bin", self.id), "guid": self.id}),
            7000 => v["call"] = json!({"status": "ended", "duration": 61}),
            8000 => v["location"] = json!({"latitude": 51.5, "longitude": -0.12}),
            9000 => v["edit"] = json!({"type": "text", "message_id": self.refers_to, "message": self.text}),
            9100 => v["edit"] = json!({"type": "reaction", "message_id": self.refers_to, "reaction": "+1"}),
            4011 => v["control"] = json!({"msgtype": 4011, "message_id": self.refers_to}),
            4001 | 4002 => v["control"] = json!({"msgtype": self.msgtype, "members": self.members}),
            _ => {}
        }
        v.to_string()
    }
}

/// The archive's messages, in the order they are posted (time order, but for the late batch).
fn generate() -> Vec<Msg> {
    let mut msgs = Vec::new();
    let base = |id: String, ts: u64, sender: &'static str, room: &str, msgtype: i64, text: String| Msg {
        id,
        ts,
        sender,
        receiver: None,
        room: room.to_owned(),
        msgtype,
        text,
        refers_to: None,
        members: Vec::new(),
        attachment: None,
    };
    let mut create = base("c1".into(), MARCH_1 + 60, PEOPLE[0], ROOM_1, 4001, String::new());
    create.members = vec![PEOPLE[0], PEOPLE[1], PEOPLE[3]];
    msgs.push(create);
    let mut create = base("c2".into(), MARCH_1 + 120, PEOPLE[1], ROOM_2, 4001, String::new());
    create.members = vec![PEOPLE[1], PEOPLE[2]];
    msgs.push(create);
    for i in 0..90u64 {
        let ts = MARCH_1 + DAY + i * 36 * 3600 + i * 7;
        let sender = match i % 5 {
            0 | 3 => PEOPLE[0],
            1 => PEOPLE[1],
            2 => PEOPLE[2],
            _ => PEOPLE[3],
        };
        let (room, receiver) = match i % 3 {
            0 if sender != PEOPLE[2] => (ROOM_1.to_owned(), None),
            1 if sender != PEOPLE[0] && sender != PEOPLE[3] => (ROOM_2.to_owned(), None),
            // A direct conversation.
            _ => {
                let to = if sender == PEOPLE[1] { PEOPLE[2] } else { PEOPLE[1] };
                (format!("D{}{}", &sender[..1], &to[..1]), Some(to))
            }
        };
        let msgtype = match i {
            _ if i % 7 == 4 => 6000,
            _ if i % 11 == 5 => 7000,
            _ if i % 13 == 6 => 8000,
            _ => 1000,
        };
        let text = if i % 10 == 3 {
            format!("The QUARTERLY numbers, part {i}")
        } else {
            format!("message {i} from {sender}")
        };
        let mut m = base(format!("m{i:03}"), ts, sender, &room, msgtype, text);
        m.receiver = receiver;
        if msgtype == 6000 {
            m.attachment = Some((0..2000 + i as usize * 13).map(|b| (b as u64 * 31 + i) as u8).collect());
        }
        msgs.push(m.clone());
        if msgtype == 1000 && i % 4 == 1 {
            let mut edit = base(
                format!("e{i:03}"),
                ts + 3600,
                sender,
                &room,
                9000,
                format!("edited {i}"),
            );
            edit.receiver = m.receiver;
            edit.refers_to = Some(m.id.clone());
            msgs.push(edit);
        }
        if i % 6 == 2 {
            let reactor = PEOPLE[(i as usize + 1) % 4];
            let mut reaction = base(format!("r{i:03}"), ts + 7200, reactor, &room, 9100, "+1".into());
            reaction.refers_to = Some(m.id.clone());
            msgs.push(reaction);
        }
        if i % 9 == 7 {
            let mut delete = base(format!("d{i:03}"), ts + 10_800, sender, &room, 4011, String::new());
            delete.refers_to = Some(m.id.clone());
            msgs.push(delete);
        }
        if i == 60 {
            let mut join = base("c3".into(), ts + 60, PEOPLE[1], ROOM_2, 4002, String::new());
            join.members = vec![PEOPLE[3]];
            msgs.push(join);
        }
    }
    msgs.sort_by_key(|m| m.ts);
    // A late producer: three March messages posted last, after July's.
    for (n, day) in [2u64, 9, 20].into_iter().enumerate() {
        let mut late = base(
            format!("late{n}"),
            MARCH_1 + day * DAY + 500,
            PEOPLE[2],
            ROOM_2,
            1000,
            format!("late quarterly report {n}"),
        );
        late.receiver = None;
        msgs.push(late);
    }
    msgs
}

/// The selection, as the model reads it.
#[derive(Default, Clone)]
struct Sel {
    from: Option<u64>,
    to: Option<u64>,
    sender: Vec<&'static str>,
    participant: Vec<&'static str>,
    room: Vec<String>,
    msgtype: Vec<i64>,
    id: Vec<String>,
    text: Vec<String>,
}

/// What the export must return for `sel`: selected messages in time order, each followed by the
/// edits, reactions and deletes in the period that refer to it.
fn model(msgs: &[Msg], sel: &Sel) -> Vec<String> {
    let in_period = |m: &Msg| sel.from.is_none_or(|f| m.ts >= f) && sel.to.is_none_or(|t| m.ts <= t);
    let member_rooms: HashSet<&str> = msgs
        .iter()
        .filter(|m| sel.participant.iter().any(|p| m.sender == *p || m.members.contains(p)))
        .map(|m| m.room.as_str())
        .collect();
    let selected = |m: &Msg| {
        in_period(m)
            && (sel.sender.is_empty() || sel.sender.contains(&m.sender))
            && (sel.room.is_empty() || sel.room.contains(&m.room))
            && (sel.msgtype.is_empty() || sel.msgtype.contains(&m.msgtype))
            && (sel.id.is_empty() || sel.id.contains(&m.id))
            && (sel.text.is_empty() || sel.text.iter().any(|t| m.text.to_lowercase().contains(t)))
            && (sel.participant.is_empty()
                || sel.participant.iter().any(|p| m.sender == *p || m.receiver == Some(*p))
                || member_rooms.contains(m.room.as_str()))
    };
    let mut sorted: Vec<&Msg> = msgs.iter().collect();
    sorted.sort_by_key(|m| m.ts);
    let chosen: HashSet<&str> = sorted.iter().filter(|m| selected(m)).map(|m| m.id.as_str()).collect();
    let is_reply = |m: &Msg| m.refers_to.as_deref().is_some_and(|r| chosen.contains(r)) && in_period(m);
    let mut out = Vec::new();
    for m in sorted.iter().filter(|m| selected(m) && !is_reply(m)) {
        out.push(m.id.clone());
        for r in sorted
            .iter()
            .filter(|r| is_reply(r) && r.refers_to.as_deref() == Some(&m.id))
        {
            out.push(r.id.clone());
        }
    }
    out
}

/// Posts the archive to a bot (which rotates every KiB), over three runs: it ends stopped.
async fn write_archive(bot: &mut Bot, msgs: &[Msg]) {
    let thirds = msgs.len().div_ceil(3);
    for (run, chunk) in msgs.chunks(thirds).enumerate() {
        if run > 0 {
            bot.spawn().await;
        }
        for m in chunk {
            let r = match &m.attachment {
                Some(bytes) => {
                    let part = reqwest::multipart::Part::bytes(bytes.clone()).file_name("upload.bin");
                    bot.post_form(attachment_form(&m.json(), part)).await
                }
                None => bot.post("application/json", m.json()).await,
            };
            assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
        }
        assert!(bot.stop().await.success(), "{}", bot.log_text());
    }
}

fn rotating() -> Vec<(&'static str, &'static str)> {
    vec![("WICKRIO_COMP_FILESIZE", "1")]
}

/// Where to export from, and with what.
struct Exporter {
    source: Vec<String>,
    env: Vec<(String, String)>,
    public_key: PathBuf,
}

impl Exporter {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(common::BIN);
        cmd.arg("export")
            .args(&self.source)
            .arg("--public-key")
            .arg(&self.public_key)
            .args(args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    fn run(&self, args: &[&str]) -> (Option<i32>, String) {
        common::run_to_end(&mut self.command(args))
    }
}

fn ids_in(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["message_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Exports `sel` (given as `args`) into a new directory and checks everything in it against the
/// model: ids and order, attachments, CSV, custody. Returns the output directory.
fn check_selection(exporter: &Exporter, msgs: &[Msg], sel: &Sel, args: &[&str], tmp: &Path) -> PathBuf {
    let out = tmp.join(format!("out-{}", args.join("_").replace(['/', ':', '@'], "-")));
    let out_arg = out.display().to_string();
    let mut all = args.to_vec();
    all.extend(["--out", &out_arg]);
    let (code, text) = exporter.run(&all);
    assert_eq!(code, Some(0), "{args:?}: {text}");
    let expected = model(msgs, sel);
    assert!(!expected.is_empty(), "{args:?} selects something");
    assert_eq!(ids_in(&out.join("messages.jsonl")), expected, "{args:?}");
    assert!(!out.join("unverified").exists(), "{args:?}: nothing unverified");

    // Each line exactly as generated, and each selected file message's attachment, byte for byte.
    let by_id: HashMap<&str, &Msg> = msgs.iter().map(|m| (m.id.as_str(), m)).collect();
    let lines = std::fs::read_to_string(out.join("messages.jsonl")).unwrap();
    let mut wanted_files = BTreeSet::new();
    for line in lines.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let m = by_id[v["message_id"].as_str().unwrap()];
        let mut sent: Value = serde_json::from_str(&m.json()).unwrap();
        if let Some(bytes) = &m.attachment {
            let local = v["file"]["localfilename"].as_str().unwrap();
            let name = local.rsplit('/').next().unwrap();
            assert_eq!(
                &std::fs::read(out.join("attachments").join(name)).unwrap(),
                bytes,
                "{name}"
            );
            wanted_files.insert(name.to_owned());
            sent["file"]["localfilename"] = json!(local);
        }
        assert_eq!(v, sent, "the line as archived");
    }
    let files: BTreeSet<String> = std::fs::read_dir(out.join("attachments"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        files, wanted_files,
        "{args:?}: the attachments of the selected messages, no more"
    );

    // The CSV, through Python's csv module: one row per line, in order, agreeing with the JSONL.
    let script = r#"
import csv, json, sys
rows = list(csv.DictReader(open(sys.argv[1], newline='', encoding='utf-8')))
print(json.dumps([[r['message_id'], r['sender'], r['msgtype'], r['text'], r['verified']] for r in rows]))
"#;
    let py = Command::new("python3")
        .args(["-c", script])
        .arg(out.join("messages.csv"))
        .output()
        .unwrap();
    assert!(py.status.success(), "{}", String::from_utf8_lossy(&py.stderr));
    let rows: Vec<Vec<String>> = serde_json::from_slice(&py.stdout).unwrap();
    let from_jsonl: Vec<Vec<String>> = lines
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let mut text = if v["message"].as_str().unwrap_or_default().is_empty() {
                v["edit"]["message"].as_str().unwrap_or_default().to_owned()
            } else {
                v["message"].as_str().unwrap().to_owned()
            };
            // What a spreadsheet would run as a formula is defused.
            if text.starts_with(['=', '+', '-', '@']) {
                text.insert(0, '\'');
            }
            vec![
                v["message_id"].as_str().unwrap().to_owned(),
                v["sender"].as_str().unwrap().to_owned(),
                v["msgtype"].to_string(),
                text,
                "yes".to_owned(),
            ]
        })
        .collect();
    assert_eq!(rows, from_jsonl, "{args:?}: the CSV agrees with the JSONL");

    // The custody report: each output's SHA-256, as computed here.
    let custody: Value = serde_json::from_slice(&std::fs::read(out.join("custody.json")).unwrap()).unwrap();
    let outputs = custody["outputs"].as_array().unwrap();
    for f in outputs {
        let bytes = std::fs::read(out.join(f["path"].as_str().unwrap())).unwrap();
        assert_eq!(f["sha256"].as_str().unwrap(), sha256_hex(&bytes), "{}", f["path"]);
    }
    assert_eq!(outputs.len(), 2 + wanted_files.len(), "jsonl, csv and each attachment");
    assert_eq!(
        custody["counts"]["messages"].as_u64().unwrap() + custody["counts"]["related"].as_u64().unwrap(),
        expected.len() as u64
    );
    out
}

/// The selections tried on every archive, with the model's reading of each.
fn selections() -> Vec<(Vec<&'static str>, Sel)> {
    let april = (MARCH_1 + 31 * DAY, MARCH_1 + 61 * DAY - 1);
    vec![
        (vec![], Sel::default()),
        (
            vec!["--from", "2026-04-01", "--to", "2026-04-30"],
            Sel {
                from: Some(april.0),
                to: Some(april.1),
                ..Sel::default()
            },
        ),
        (
            vec!["--from", "2026-03-01", "--to", "2026-03-14"],
            Sel {
                from: Some(MARCH_1),
                to: Some(MARCH_1 + 14 * DAY - 1),
                ..Sel::default()
            },
        ),
        (
            vec!["--sender", "ALICE@example"],
            Sel {
                sender: vec![PEOPLE[0]],
                ..Sel::default()
            },
        ),
        (
            vec!["--participant", "dan@example"],
            Sel {
                participant: vec![PEOPLE[3]],
                ..Sel::default()
            },
        ),
        (
            vec!["--room", ROOM_1, "--msgtype", "file"],
            Sel {
                room: vec![ROOM_1.into()],
                msgtype: vec![6000],
                ..Sel::default()
            },
        ),
        (
            vec!["--msgtype", "edit", "--msgtype", "4011"],
            Sel {
                msgtype: vec![9000, 9100, 4011],
                ..Sel::default()
            },
        ),
        (
            vec!["--message-id", "m013", "--message-id", "m041"],
            Sel {
                id: vec!["m013".into(), "m041".into()],
                ..Sel::default()
            },
        ),
        (
            vec!["--text", "Quarterly", "--to", "2026-05-31"],
            Sel {
                text: vec!["quarterly".into()],
                to: Some(MARCH_1 + 92 * DAY - 1),
                ..Sel::default()
            },
        ),
        (
            // Membership shows in March's control messages, outside the period: still found.
            vec!["--participant", "dan@example", "--from", "2026-05-01"],
            Sel {
                participant: vec![PEOPLE[3]],
                from: Some(MARCH_1 + 61 * DAY),
                ..Sel::default()
            },
        ),
        (
            vec!["--participant", "carol@example", "--sender", "bob@example"],
            Sel {
                participant: vec![PEOPLE[2]],
                sender: vec![PEOPLE[1]],
                ..Sel::default()
            },
        ),
    ]
}

/// How many message files a `--dry-run` says it would read.
fn files_to_read(exporter: &Exporter, args: &[&str]) -> usize {
    let mut all = args.to_vec();
    all.push("--dry-run");
    let (code, text) = exporter.run(&all);
    assert_eq!(code, Some(0), "{text}");
    let summary = text.lines().find(|l| l.starts_with("would read ")).unwrap();
    summary.split_whitespace().nth(2).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn export_from_a_directory_answers_every_selection_exactly_with_a_signed_custody_report() {
    let msgs = generate();
    let mut bot = Bot::start(&rotating()).await;
    write_archive(&mut bot, &msgs).await;
    let mut env = bot.env.clone();
    env.retain(|(k, _)| k == "WICKRIO_STATE_DIR" || k == "WICKRIO_BOT_PASSWORD");
    let exporter = Exporter {
        source: vec!["--dir".into(), bot.root.display().to_string()],
        env,
        public_key: bot.root.join("state/public_key.txt"),
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut outs = Vec::new();
    for (args, sel) in selections() {
        outs.push(check_selection(&exporter, &msgs, &sel, &args, tmp.path()));
    }
    // The late March messages sit in a July file: a March export still finds them.
    let march = std::fs::read_to_string(outs[2].join("messages.jsonl")).unwrap();
    assert!(march.contains("\"late0\"") && march.contains("\"late1\""), "{march}");

    // Signed with the bot's key: `verify-export` accepts it, and notices an altered output.
    let (code, text) = common::run_to_end(
        Command::new(common::BIN)
            .arg("verify-export")
            .arg(&outs[1])
            .arg("--public-key")
            .arg(&exporter.public_key),
    );
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("custody report signed by"), "{text}");
    let csv = outs[1].join("messages.csv");
    let mut altered = std::fs::read(&csv).unwrap();
    altered.extend_from_slice(b"x,y\n");
    std::fs::write(&csv, altered).unwrap();
    let (code, text) = common::run_to_end(
        Command::new(common::BIN)
            .arg("verify-export")
            .arg(&outs[1])
            .arg("--public-key")
            .arg(&exporter.public_key),
    );
    assert_eq!((code, text.contains("ALTERED messages.csv")), (Some(1), true), "{text}");

    // The time spans of the signed entries prune: a fortnight reads far fewer files than everything.
    let all = files_to_read(&exporter, &[]);
    let fortnight = files_to_read(&exporter, &["--from", "2026-04-01", "--to", "2026-04-14"]);
    assert!(all >= 10 && fortnight * 3 < all, "{fortnight} of {all} files");

    // Without the bot's state, the report goes unsigned and says so.
    let unsigned = Exporter {
        env: Vec::new(),
        ..exporter
    };
    let out = tmp.path().join("unsigned");
    let (code, text) = unsigned.run(&["--sender", "bob@example", "--out", out.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("NOT SIGNED: no bot state directory"), "{text}");
    let custody: Value = serde_json::from_slice(&std::fs::read(out.join("custody.json")).unwrap()).unwrap();
    assert!(custody["signature"]["unsigned"].is_string(), "{custody}");
    assert!(
        std::fs::read_to_string(out.join("custody.txt"))
            .unwrap()
            .contains("Signed:    NO:")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn export_reads_plain_and_encrypted_buckets_in_place_and_only_the_objects_a_period_needs() {
    let msgs = generate();
    let moto = Moto::start().await;
    let key_arn = moto.create_key().await;
    for (bucket, encrypted) in [("export-plain", false), ("export-enc", true)] {
        moto.s3().await.create_bucket().bucket(bucket).send().await.unwrap();
        let env = Moto::env_via(&moto.endpoint());
        let mut extra: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        extra.extend(rotating());
        extra.extend([("WICKRIO_S3_BUCKET_NAME", bucket), ("WICKRIO_S3_FOLDER_NAME", FOLDER)]);
        if encrypted {
            extra.push(("WICKRIO_KMS_MSTRKEY_ARN", &key_arn));
        }
        let mut bot = Bot::start(&extra).await;
        write_archive(&mut bot, &msgs).await;

        let proxy = RecordingProxy::start(moto.port).await;
        let mut env = Moto::env_via(&proxy.endpoint());
        env.extend(
            bot.env
                .iter()
                .filter(|(k, _)| k.starts_with("WICKRIO_STATE") || k == "WICKRIO_BOT_PASSWORD")
                .cloned(),
        );
        let exporter = Exporter {
            source: vec!["--bucket".into(), bucket.into(), "--prefix".into(), FOLDER.into()],
            env,
            public_key: bot.root.join("state/public_key.txt"),
        };
        let tmp = tempfile::tempdir().unwrap();
        for (args, sel) in selections() {
            check_selection(&exporter, &msgs, &sel, &args, tmp.path());
        }

        // Counted at the server: a fortnight's export GETs a fraction of the message objects.
        let message_objects = moto
            .keys(bucket)
            .await
            .iter()
            .filter(|k| k.contains("receivedMessages_"))
            .count();
        let before = proxy.requests().len();
        let out = tmp.path().join("fortnight");
        let (code, text) = exporter.run(&[
            "--from",
            "2026-04-01",
            "--to",
            "2026-04-14",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(code, Some(0), "{text}");
        let gets = proxy.requests()[before..]
            .iter()
            .filter(|r| r.method == "GET" && r.path.contains("receivedMessages_"))
            .count();
        assert!(
            gets > 0 && gets * 3 < message_objects,
            "{bucket}: {gets} message objects read of {message_objects}"
        );
        assert!(text.contains("skipped by their signed time spans"), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_file_is_reported_its_lines_kept_apart_and_strict_writes_nothing() {
    let msgs = generate();
    let mut bot = Bot::start(&rotating()).await;
    write_archive(&mut bot, &msgs).await;
    let exporter = Exporter {
        source: vec!["--dir".into(), bot.root.display().to_string()],
        env: Vec::new(),
        public_key: bot.root.join("state/public_key.txt"),
    };
    // Alter a word of one message in its archived file: the JSON stays valid.
    let name = common::closed_message_files(&bot.messages_dir())
        .into_iter()
        .find(|n| {
            std::fs::read_to_string(bot.messages_dir().join(n))
                .unwrap()
                .contains("\"message 40 from")
        })
        .unwrap();
    let file = bot.messages_dir().join(&name);
    let text = std::fs::read_to_string(&file).unwrap();
    let tampered_ids: Vec<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["message_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    std::fs::write(&file, text.replace("\"message 40 from", "\"message 41 from")).unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("all");
    let (code, report) = exporter.run(&["--out", out.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{report}");
    assert!(report.contains("ALTERED") && report.contains("UNVERIFIED:"), "{report}");
    let verified = ids_in(&out.join("messages.jsonl"));
    let unverified = ids_in(&out.join("unverified/messages.jsonl"));
    assert!(!unverified.is_empty());
    for id in &tampered_ids {
        assert!(!verified.contains(id), "{id} is not mixed in with the verified lines");
    }
    assert!(unverified.iter().all(|id| tampered_ids.contains(id)), "{unverified:?}");
    let expected: Vec<String> = model(&msgs, &Sel::default())
        .into_iter()
        .filter(|id| !tampered_ids.contains(id))
        .collect();
    assert_eq!(verified, expected, "every other line, in order");
    let custody = std::fs::read_to_string(out.join("custody.json")).unwrap();
    assert!(custody.contains(&format!("ALTERED {name}")), "{custody}");
    let csv = std::fs::read_to_string(out.join("messages.csv")).unwrap();
    assert!(
        !csv.lines().any(|l| l.trim_end().ends_with(",no")),
        "no unverified row among the verified ones"
    );
    let csv = std::fs::read_to_string(out.join("unverified/messages.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), unverified.len());
    assert!(
        rows.iter().all(|l| l.trim_end().ends_with(",no")),
        "unverified rows are marked: {csv}"
    );

    // --strict: the same problem is fatal, and nothing is left behind.
    let strict = tmp.path().join("strict");
    let (code, report) = exporter.run(&["--strict", "--out", strict.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{report}");
    assert!(report.contains("--strict: ALTERED"), "{report}");
    assert!(!strict.exists(), "nothing written, not even the directory");

    // A planted file no manifest lists, claiming eve is a member of room 1 and replying to m001:
    // it cannot bring room 1's verified messages into eve's export, nor pass for verified.
    std::fs::write(&file, &text).unwrap();
    let mut join = generate()[0].clone();
    (join.id, join.msgtype, join.members) = ("x1".into(), 4002, vec!["eve@example"]);
    let mut reply = generate()[0].clone();
    (reply.id, reply.msgtype, reply.sender) = ("x2".into(), 9000, "eve@example");
    reply.refers_to = Some("m001".into());
    let planted = bot
        .messages_dir()
        .join("receivedMessages_20260701T000000000Z_0a0b0c0d0e0f_000001.txt");
    std::fs::write(&planted, format!("{}\n{}\n", join.json(), reply.json())).unwrap();
    let eve = tmp.path().join("eve");
    let (code, report) = exporter.run(&["--participant", "eve@example", "--out", eve.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{report}");
    assert!(report.contains("UNLISTED"), "{report}");
    assert_eq!(
        ids_in(&eve.join("messages.jsonl")),
        Vec::<String>::new(),
        "nothing verified is eve's"
    );
    // eve's own line, kept apart; the planted membership counts for nothing, even for itself.
    assert_eq!(ids_in(&eve.join("unverified/messages.jsonl")), ["x2"]);
}

#[test]
fn bad_flags_are_refused_with_a_clear_error_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("public_key.txt");
    std::fs::write(&key, "11".repeat(32)).unwrap();
    let out = tmp.path().join("out");
    let full = tmp.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("earlier.txt"), "x").unwrap();
    let dir = tmp.path().display().to_string();
    let out_s = out.display().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--msgtype", "txt"], "is not a message type"),
        (vec!["--from", "March"], "neither an RFC 3339 time"),
        (vec!["--from", "2026-05-01", "--to", "2026-04-01"], "is after --to"),
        (vec!["--sender", ""], "an empty value selects nothing"),
        (vec!["--colour", "red"], "--colour"),
        (vec!["--bucket", "b"], "cannot be used with"),
    ];
    for (args, says) in cases {
        let mut cmd = Command::new(common::BIN);
        cmd.args(["export", "--dir", &dir, "--out", &out_s, "--public-key"])
            .arg(&key)
            .args(&args)
            .env_clear();
        let (code, text) = common::run_to_end(&mut cmd);
        assert_eq!(code, Some(2), "{args:?}: {text}");
        assert!(text.contains(says), "{args:?}: {text}");
        assert!(!out.exists(), "{args:?} wrote nothing");
    }
    let (code, text) = common::run_to_end(
        Command::new(common::BIN)
            .args(["export", "--dir", &dir, "--public-key"])
            .arg(&key)
            .arg("--out")
            .arg(&full)
            .env_clear(),
    );
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("already holds files"), "{text}");
    assert_eq!(std::fs::read_dir(&full).unwrap().count(), 1);
}
