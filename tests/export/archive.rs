//! The generated archive of the export tests, its known answers (the model), and how an export is
//! run and its output checked against them.

use crate::common;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Bot, attachment_form};
use serde_json::{Value, json};

pub(super) const FOLDER: &str = "retention/bot1";
/// 2026-03-01T00:00:00Z.
pub(super) const MARCH_1: u64 = 1_772_323_200;
pub(super) const DAY: u64 = 86_400;
pub(super) const PEOPLE: [&str; 4] = ["alice@example", "bob@example", "carol@example", "dan@example"];
pub(super) const ROOM_1: &str = "S11111111";
pub(super) const ROOM_2: &str = "S22222222";

/// One generated message.
#[derive(Debug, Clone)]
pub(super) struct Msg {
    pub(super) id: String,
    pub(super) ts: u64,
    pub(super) sender: &'static str,
    pub(super) receiver: Option<&'static str>,
    pub(super) room: String,
    pub(super) msgtype: i64,
    pub(super) text: String,
    pub(super) refers_to: Option<String>,
    pub(super) members: Vec<&'static str>,
    pub(super) attachment: Option<Vec<u8>>,
}

impl Msg {
    pub(super) fn json(&self) -> String {
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
pub(super) fn generate() -> Vec<Msg> {
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
            msgs.push(edit.clone());
            if i % 8 == 1 {
                // An edit of the edit: the message's history has two steps.
                let mut again = edit.clone();
                (again.id, again.ts, again.text) = (format!("f{i:03}"), ts + 5400, format!("edited again {i}"));
                again.refers_to = Some(edit.id.clone());
                msgs.push(again);
            }
        }
        if i % 6 == 2 {
            // In a direct conversation the other person reacts, to the sender.
            let reactor = m.receiver.unwrap_or(PEOPLE[(i as usize + 1) % 4]);
            let mut reaction = base(format!("r{i:03}"), ts + 7200, reactor, &room, 9100, "+1".into());
            reaction.receiver = m.receiver.map(|_| m.sender);
            reaction.refers_to = Some(m.id.clone());
            msgs.push(reaction);
        }
        if i % 9 == 7 {
            let mut delete = base(format!("d{i:03}"), ts + 10_800, sender, &room, 4011, String::new());
            delete.receiver = m.receiver;
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
pub(super) struct Sel {
    pub(super) from: Option<u64>,
    pub(super) to: Option<u64>,
    pub(super) sender: Vec<&'static str>,
    pub(super) participant: Vec<&'static str>,
    pub(super) room: Vec<String>,
    pub(super) msgtype: Vec<i64>,
    pub(super) id: Vec<String>,
    pub(super) text: Vec<String>,
}

/// What the export must return for `sel`: selected messages in time order, each followed by the
/// edits, reactions and deletes in the period that refer to it.
pub(super) fn model(msgs: &[Msg], sel: &Sel) -> Vec<String> {
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
    // The selected messages, and what refers to them in the period, and to those (an edit's edit).
    let mut chosen: HashSet<&str> = sorted.iter().filter(|m| selected(m)).map(|m| m.id.as_str()).collect();
    loop {
        let before = chosen.len();
        for m in &sorted {
            if in_period(m) && m.refers_to.as_deref().is_some_and(|r| chosen.contains(r)) {
                chosen.insert(m.id.as_str());
            }
        }
        if chosen.len() == before {
            break;
        }
    }
    let is_reply = |m: &Msg| m.refers_to.as_deref().is_some_and(|r| chosen.contains(r)) && in_period(m);
    // Each message, then what refers to it in time order, each of those followed by its own.
    fn tree<'a>(m: &'a Msg, sorted: &[&'a Msg], is_reply: &dyn Fn(&Msg) -> bool, out: &mut Vec<String>) {
        out.push(m.id.clone());
        for r in sorted
            .iter()
            .filter(|r| is_reply(r) && r.refers_to.as_deref() == Some(&m.id))
        {
            tree(r, sorted, is_reply, out);
        }
    }
    let mut out = Vec::new();
    for m in sorted.iter().filter(|m| selected(m) && !is_reply(m)) {
        tree(m, &sorted, &is_reply, &mut out);
    }
    out
}

/// Posts the archive to a bot (which rotates every KiB), over three runs: it ends stopped.
pub(super) async fn write_archive(bot: &mut Bot, msgs: &[Msg]) {
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

pub(super) fn rotating() -> Vec<(&'static str, &'static str)> {
    vec![("WICKRIO_COMP_FILESIZE", "1")]
}

/// Where to export from, and with what.
pub(super) struct Exporter {
    pub(super) source: Vec<String>,
    pub(super) env: Vec<(String, String)>,
    pub(super) public_key: PathBuf,
}

impl Exporter {
    /// An export of `bot`'s directories, signed with its key (its state and password).
    pub(super) fn of_dir(bot: &Bot) -> Exporter {
        Exporter {
            source: vec!["--dir".into(), bot.root.display().to_string()],
            env: signing_env(bot),
            public_key: bot.root.join("state/public_key.txt"),
        }
    }

    /// An export of `bot`'s folder in `bucket`, through `endpoint`, signed with its key.
    pub(super) fn of_bucket(bot: &Bot, bucket: &str, endpoint: &str) -> Exporter {
        let mut env = common::aws::Moto::env_via(endpoint);
        env.extend(signing_env(bot));
        Exporter {
            source: vec!["--bucket".into(), bucket.into(), "--prefix".into(), FOLDER.into()],
            env,
            public_key: bot.root.join("state/public_key.txt"),
        }
    }

    pub(super) fn command(&self, args: &[&str]) -> Command {
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

    pub(super) fn run(&self, args: &[&str]) -> (Option<i32>, String) {
        common::run_to_end(&mut self.command(args))
    }
}

/// What signs an export with the bot's key: its state directory and password.
fn signing_env(bot: &Bot) -> Vec<(String, String)> {
    bot.env
        .iter()
        .filter(|(k, _)| k == "WICKRIO_STATE_DIR" || k == "WICKRIO_BOT_PASSWORD")
        .cloned()
        .collect()
}

pub(super) fn ids_in(path: &Path) -> Vec<String> {
    ids_of(&std::fs::read_to_string(path).unwrap_or_default())
}

/// The `message_id` of each line of a JSONL text.
pub(super) fn ids_of(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["message_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

pub(super) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Exports `sel` (given as `args`) into a new directory and checks everything in it against the
/// model: ids and order, attachments, CSV, custody. Returns the output directory.
pub(super) fn check_selection(exporter: &Exporter, msgs: &[Msg], sel: &Sel, args: &[&str], tmp: &Path) -> PathBuf {
    let out = tmp.join(format!("out-{}", args.join("_").replace(['/', ':', '@'], "-")));
    let out_arg = out.display().to_string();
    let mut all = args.to_vec();
    all.extend(["--out", &out_arg]);
    let (code, text) = exporter.run(&all);
    assert_eq!(code, Some(0), "{args:?}: {text}");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the archive's plaintext is for its owner only");
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
pub(super) fn selections() -> Vec<(Vec<&'static str>, Sel)> {
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
pub(super) fn files_to_read(exporter: &Exporter, args: &[&str]) -> usize {
    let mut all = args.to_vec();
    all.push("--dry-run");
    let (code, text) = exporter.run(&all);
    assert_eq!(code, Some(0), "{text}");
    let summary = text.lines().find(|l| l.starts_with("would read ")).unwrap();
    summary.split_whitespace().nth(2).unwrap().parse().unwrap()
}
