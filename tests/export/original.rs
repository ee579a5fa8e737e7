//! Archives the original AWS Wickr bot wrote: message files in its format with no manifest, on local
//! disk and in a bucket through the official S3 Encryption Client (V2). Without `--unsigned-source`
//! their lines stay in `unverified/`; with it they are the export, and the custody report says up
//! front and for each file that nothing signed them, with each file's SHA-256 as read.

use std::path::Path;

use serde_json::{Value, json};

use super::archive::{Exporter, ids_in, sha256_hex};
use super::rsmf_check;
use crate::common;
use common::aws::Moto;

const ATTACHMENT: &str = "attachment_20230804191058901_report.pdf";

/// Four lines as the original writes them (its documented fields and formats).
fn original_lines() -> Vec<String> {
    let line = |id: &str, ts: &str, msgtype: u32, extra: Value| {
        let mut v = json!({
            "message": "", "message_id": id, "msg_ts": ts, "msgtype": msgtype,
            "sender": "dr002@example", "sender_type": "normal", "time": "8/4/23 7:10 PM",
            "time_iso": "2023-08-04 19:10:58.901", "ttl": "9/3/23 7:10 PM",
            "vgroupid": "S7ad65d0c1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b",
        });
        v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        v.to_string()
    };
    vec![
        line(
            "a526085032fa11ee9a74053bb1017859",
            "1691176258.901277",
            1000,
            json!({"message": "test message"}),
        ),
        line(
            "b526085032fa11ee9a74053bb1017859",
            "1691176259.000001",
            6000,
            json!({"file": {"filename": "report.pdf", "guid": "g1",
                "localfilename": format!("/tmp/origbot/compliance/attachments/{ATTACHMENT}"),
                "uploadedbyuser": "dr002@example", "uploadedtimestamp": 1691176259}}),
        ),
        line(
            "c526085032fa11ee9a74053bb1017859",
            "1691176260.000001",
            9000,
            json!({"edit": {"type": "text", "message_id": "a526085032fa11ee9a74053bb1017859", "message": "test message, edited"}}),
        ),
        line(
            "d526085032fa11ee9a74053bb1017859",
            "1691176261.5",
            1000,
            json!({"message": "direct", "receiver": "dr001@example", "vgroupid": "7ad65d"}),
        ),
    ]
}

const IDS: [&str; 4] = [
    "a526085032fa11ee9a74053bb1017859",
    "c526085032fa11ee9a74053bb1017859",
    "b526085032fa11ee9a74053bb1017859",
    "d526085032fa11ee9a74053bb1017859",
];

/// The original's files on disk: two rotated message files and an attachment.
fn write_files(dir: &Path) -> Vec<(String, std::path::PathBuf)> {
    let lines = original_lines();
    std::fs::create_dir_all(dir.join("messages")).unwrap();
    std::fs::create_dir_all(dir.join("attachments")).unwrap();
    let files = [
        ("receivedMessages.txt", format!("{}\n{}\n", lines[0], lines[1])),
        ("receivedMessages_1.txt", format!("{}\n{}\n", lines[2], lines[3])),
    ];
    let mut out = Vec::new();
    for (name, text) in files {
        let path = dir.join("messages").join(name);
        std::fs::write(&path, text).unwrap();
        out.push((name.to_owned(), path));
    }
    let path = dir.join("attachments").join(ATTACHMENT);
    std::fs::write(&path, b"%PDF-1.4 the original's attachment").unwrap();
    out.push((ATTACHMENT.to_owned(), path));
    out
}

/// Checks an `--unsigned-source` export: the lines in order, the attachment, and the custody report.
fn check_unsigned_export(out: &Path, files: &[(String, std::path::PathBuf)]) {
    assert_eq!(
        ids_in(&out.join("messages.jsonl")),
        IDS,
        "the original's lines, in order"
    );
    assert!(!out.join("unverified").exists());
    assert_eq!(
        std::fs::read(out.join("attachments").join(ATTACHMENT)).unwrap(),
        std::fs::read(&files[2].1).unwrap()
    );
    let text = std::fs::read_to_string(out.join("custody.txt")).unwrap();
    let head: String = text.lines().take(12).collect::<Vec<_>>().join("\n");
    assert!(
        head.contains("UNSIGNED SOURCE: --unsigned-source took files"),
        "said up front: {head}"
    );
    let custody: Value = serde_json::from_slice(&std::fs::read(out.join("custody.json")).unwrap()).unwrap();
    assert_eq!(custody["unsigned_source"], true);
    let sources = custody["sources"].as_array().unwrap();
    for (name, path) in files {
        let record = sources
            .iter()
            .find(|s| s["at"].as_str().unwrap().ends_with(name.as_str()))
            .unwrap_or_else(|| panic!("{name} in {sources:?}"));
        assert!(
            record["result"].as_str().unwrap().starts_with("UNSIGNED SOURCE"),
            "{record}"
        );
        let sha = sha256_hex(&std::fs::read(path).unwrap());
        assert_eq!(record["sha256"], sha, "{name}: its SHA-256 as read");
        assert!(text.contains(&sha), "{name}'s SHA-256 in custody.txt");
    }
    let rsmf = rsmf_check::read_all(&out.join("rsmf"));
    assert_eq!(rsmf.len(), 2, "the room and the direct conversation");
}

/// Exports the original's archive without `--unsigned-source` (its lines kept apart, each file
/// UNLISTED), then with it, and checks both.
fn export_both_ways(exporter: &Exporter, tmp: &Path, files: &[(String, std::path::PathBuf)]) {
    let plain = tmp.join("plain");
    let (code, text) = exporter.run(&["--out", plain.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("UNLISTED"), "{text}");
    assert_eq!(ids_in(&plain.join("messages.jsonl")), Vec::<String>::new());
    assert_eq!(ids_in(&plain.join("unverified/messages.jsonl")), IDS);

    let out = tmp.join("taken");
    let (code, text) = exporter.run(&[
        "--unsigned-source",
        "--format",
        "jsonl,rsmf",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{text}");
    check_unsigned_export(&out, files);
}

#[test]
fn the_original_bots_files_on_disk_stay_unverified_unless_unsigned_source_takes_them() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("origbot");
    let files = write_files(&archive);
    let key = tmp.path().join("public_key.txt");
    std::fs::write(&key, "11".repeat(32)).unwrap();
    let exporter = Exporter {
        source: vec!["--dir".into(), archive.display().to_string()],
        env: Vec::new(),
        public_key: key,
    };
    export_both_ways(&exporter, tmp.path(), &files);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_original_bots_encrypted_objects_are_exported_with_unsigned_source() {
    let moto = Moto::start().await;
    let key_arn = moto.create_key().await;
    moto.s3().await.create_bucket().bucket("orig").send().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let files = write_files(&tmp.path().join("local"));
    let keys: Vec<(String, &Path)> = files
        .iter()
        .map(|(name, path)| (format!("wickr/origbot/{name}"), path.as_path()))
        .collect();
    let keys: Vec<(&str, &Path)> = keys.iter().map(|(k, p)| (k.as_str(), *p)).collect();
    moto.write_original("orig", &key_arn, &keys);
    let (body, _) = moto.object("orig", keys[0].0).await;
    assert!(
        !body.windows(12).any(|w| w == b"test message"),
        "the object is encrypted"
    );

    let key = tmp.path().join("public_key.txt");
    std::fs::write(&key, "11".repeat(32)).unwrap();
    let exporter = Exporter {
        source: vec![
            "--bucket".into(),
            "orig".into(),
            "--prefix".into(),
            "wickr/origbot".into(),
        ],
        env: Moto::env_via(&moto.endpoint()),
        public_key: key,
    };
    export_both_ways(&exporter, tmp.path(), &files);
}

#[tokio::test(flavor = "multi_thread")]
async fn unsigned_files_in_a_signed_archive_are_marked_in_every_format_and_move_no_signed_line() {
    let mut bot = common::Bot::start(&[]).await;
    let line = |id: &str, ts: u32, sender: &str, msgtype: u32, extra: Value| {
        let mut v = json!({"message_id": id, "msg_ts": format!("17723233{ts:02}.5"), "msgtype": msgtype,
            "sender": sender, "vgroupid": "S1", "message": format!("{id} text")});
        v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        v.to_string()
    };
    for body in [
        line("m1", 10, "alice@example", 1000, json!({})),
        line(
            "e1",
            20,
            "alice@example",
            9000,
            json!({"edit": {"type": "text", "message_id": "m1", "message": "edited"}}),
        ),
    ] {
        let r = bot.post("application/json", body).await;
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    }
    assert!(bot.stop().await.success(), "{}", bot.log_text());
    // A file no manifest lists: m1 again, "earlier", a reaction to m1, and a message of its own.
    let planted = [
        line("m1", 0, "eve@example", 1000, json!({"message": "forged"})),
        line(
            "r9",
            15,
            "eve@example",
            9100,
            json!({"edit": {"type": "reaction", "message_id": "m1", "reaction": "+1"}}),
        ),
        line("x1", 30, "eve@example", 1000, json!({})),
    ];
    std::fs::write(
        bot.messages_dir().join("receivedMessages_legacy.txt"),
        planted.join("\n") + "\n",
    )
    .unwrap();

    let exporter = Exporter {
        source: vec!["--dir".into(), bot.root.display().to_string()],
        env: Vec::new(),
        public_key: bot.root.join("state/public_key.txt"),
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let (code, text) = exporter.run(&[
        "--unsigned-source",
        "--format",
        "jsonl,csv,rsmf,html",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{text}");
    // The signed lines keep their order, e1 right after the signed m1.
    let lines = std::fs::read_to_string(out.join("messages.jsonl")).unwrap();
    let texts: Vec<String> = lines
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            format!(
                "{}:{}",
                v["message_id"].as_str().unwrap(),
                v["sender"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        texts,
        [
            "m1:eve@example",
            "r9:eve@example",
            "m1:alice@example",
            "e1:alice@example",
            "x1:eve@example"
        ]
    );
    // The CSV says which lines no signature vouches for.
    let csv = std::fs::read_to_string(out.join("messages.csv")).unwrap();
    let marks: Vec<&str> = csv.lines().skip(1).map(|l| l.rsplit(',').next().unwrap()).collect();
    assert_eq!(marks, ["unsigned", "unsigned", "yes", "yes", "unsigned"]);
    // RSMF: the unsigned events say so; the signed m1 keeps its history and no mark.
    let files = rsmf_check::read_all(&out.join("rsmf"));
    let events = files[0].events();
    let mark = |e: &Value| {
        e["custom"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["name"] == "unsigned_source")
    };
    let marked: Vec<&str> = events
        .iter()
        .filter(|e| mark(e))
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(marked, ["m1", "x1"], "{events:?}");
    let signed = events.iter().find(|e| e["participant"] == "alice@example").unwrap();
    assert_eq!(
        (signed["edits"][0]["new"].as_str(), mark(signed)),
        (Some("edited"), false)
    );
    assert!(
        signed["reactions"].is_null(),
        "eve's unsigned reaction is not the signed m1's"
    );
    // The transcript shows the mark on each unsigned event.
    let page = std::fs::read_dir(out.join("transcript"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| !p.ends_with("index.html"))
        .unwrap();
    let shown = super::browser::body_text(&super::browser::dom(&page));
    assert_eq!(shown.matches("UNSIGNED SOURCE").count(), 2, "{shown}");
}
