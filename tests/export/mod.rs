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

mod archive;
mod browser;
mod formats;
mod hostile;
mod original;
pub(crate) mod rsmf_check;

use std::path::{Path, PathBuf};
use std::process::Command;

use archive::*;
use common::Bot;
use common::aws::{Moto, RecordingProxy};
use serde_json::Value;

/// `retention-bot verify-export OUT --public-key KEY`: (exit status, stdout + stderr).
fn verify_export(out: &Path, public_key: &Path) -> (Option<i32>, String) {
    common::run_to_end(
        Command::new(common::BIN)
            .arg("verify-export")
            .arg(out)
            .arg("--public-key")
            .arg(public_key),
    )
}

/// Signed with the bot's key: `verify-export` accepts the export at `out`, and notices an altered
/// output.
fn the_custody_report_is_signed(exporter: &Exporter, out: &Path) {
    let (code, text) = verify_export(out, &exporter.public_key);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("custody report signed by"), "{text}");
    let csv = out.join("messages.csv");
    let mut altered = std::fs::read(&csv).unwrap();
    altered.extend_from_slice(b"x,y\n");
    std::fs::write(&csv, altered).unwrap();
    let (code, text) = verify_export(out, &exporter.public_key);
    assert_eq!((code, text.contains("ALTERED messages.csv")), (Some(1), true), "{text}");
}

/// Without the bot's state, the report goes unsigned and says so; `verify-export` still checks its
/// hashes, says it is unsigned, and names every problem.
fn without_state_the_report_goes_unsigned(exporter: Exporter, tmp: &Path) {
    let unsigned = Exporter {
        env: Vec::new(),
        ..exporter
    };
    let out = tmp.join("unsigned");
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
    // verify-export still checks its hashes, says it is unsigned, and has an exit status of its own.
    let (code, text) = verify_export(&out, &unsigned.public_key);
    assert_eq!(code, Some(4), "{text}");
    assert!(
        text.contains("UNSIGNED custody report (") && text.contains(", 0 problem(s)"),
        "{text}"
    );
    // Every problem is named, not the first only.
    std::fs::write(out.join("messages.csv"), "altered\n").unwrap();
    std::fs::remove_file(out.join("messages.jsonl")).unwrap();
    std::fs::write(out.join("planted.txt"), "planted\n").unwrap();
    let (code, text) = verify_export(&out, &unsigned.public_key);
    assert_eq!(code, Some(1), "{text}");
    for problem in ["ALTERED messages.csv", "MISSING messages.jsonl", "UNLISTED planted.txt"] {
        assert!(text.contains(problem), "{problem}: {text}");
    }
    assert!(text.contains(", 3 problem(s)"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn export_from_a_directory_answers_every_selection_exactly_with_a_signed_custody_report() {
    let msgs = generate();
    let mut bot = Bot::start(&rotating()).await;
    write_archive(&mut bot, &msgs).await;
    let exporter = Exporter::of_dir(&bot);
    let tmp = tempfile::tempdir().unwrap();
    let mut outs = Vec::new();
    for (args, sel) in selections() {
        outs.push(check_selection(&exporter, &msgs, &sel, &args, tmp.path()));
    }
    // The late March messages sit in a July file: a March export still finds them.
    let march = std::fs::read_to_string(outs[2].join("messages.jsonl")).unwrap();
    assert!(march.contains("\"late0\"") && march.contains("\"late1\""), "{march}");

    the_custody_report_is_signed(&exporter, &outs[1]);

    // The time spans of the signed entries prune: a fortnight reads far fewer files than everything.
    let all = files_to_read(&exporter, &[]);
    let fortnight = files_to_read(&exporter, &["--from", "2026-04-01", "--to", "2026-04-14"]);
    assert!(all >= 10 && fortnight * 3 < all, "{fortnight} of {all} files");

    without_state_the_report_goes_unsigned(exporter, tmp.path());
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
        let exporter = Exporter::of_bucket(&bot, bucket, &proxy.endpoint());
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

        // The bucket and folder taken from the environment, as decrypt, legal-hold and shred do.
        let mut env = exporter.env.clone();
        env.push(("WICKRIO_S3_BUCKET_NAME".into(), bucket.into()));
        env.push(("WICKRIO_S3_FOLDER_NAME".into(), FOLDER.into()));
        let by_env = Exporter {
            source: Vec::new(),
            env,
            public_key: exporter.public_key.clone(),
        };
        let out_env = tmp.path().join("fortnight-by-env");
        let (code, text) = by_env.run(&[
            "--from",
            "2026-04-01",
            "--to",
            "2026-04-14",
            "--out",
            out_env.to_str().unwrap(),
        ]);
        assert_eq!(code, Some(0), "{text}");
        assert_eq!(
            std::fs::read(out_env.join("messages.jsonl")).unwrap(),
            std::fs::read(out.join("messages.jsonl")).unwrap()
        );
        // The folder came from the variable too (the bucket holds nothing else to tell).
        let custody: Value = serde_json::from_slice(&std::fs::read(out_env.join("custody.json")).unwrap()).unwrap();
        assert_eq!(custody["archive"], format!("s3://{bucket}/{FOLDER}/"), "{custody}");
    }
}

/// The archived file whose message 40 was altered: its name and path, its original text, and the
/// ids of its lines.
struct Tampered {
    name: String,
    file: PathBuf,
    text: String,
    ids: Vec<String>,
}

/// Alters a word of one message in its archived file: the JSON stays valid.
fn tamper(bot: &Bot) -> Tampered {
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
    let tampered_ids = ids_of(&text);
    std::fs::write(&file, text.replace("\"message 40 from", "\"message 41 from")).unwrap();
    Tampered {
        name,
        file,
        text,
        ids: tampered_ids,
    }
}

/// The tampered file is reported, and its lines kept apart from every other line (JSONL and CSV).
fn the_tampered_lines_are_kept_apart(exporter: &Exporter, msgs: &[Msg], tampered: &Tampered, tmp: &Path) {
    let Tampered {
        name,
        ids: tampered_ids,
        ..
    } = tampered;
    let out = tmp.join("all");
    let (code, report) = exporter.run(&["--out", out.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{report}");
    assert!(report.contains("ALTERED") && report.contains("UNVERIFIED:"), "{report}");
    let verified = ids_in(&out.join("messages.jsonl"));
    let unverified = ids_in(&out.join("unverified/messages.jsonl"));
    assert!(!unverified.is_empty());
    for id in tampered_ids {
        assert!(!verified.contains(id), "{id} is not mixed in with the verified lines");
    }
    assert!(unverified.iter().all(|id| tampered_ids.contains(id)), "{unverified:?}");
    let expected: Vec<String> = model(msgs, &Sel::default())
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
}

/// --strict: the same problem is fatal, and nothing is left behind.
fn strict_writes_nothing(exporter: &Exporter, tmp: &Path) {
    let strict = tmp.join("strict");
    let (code, report) = exporter.run(&["--strict", "--out", strict.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{report}");
    assert!(report.contains("--strict: ALTERED"), "{report}");
    assert!(!strict.exists(), "nothing written, not even the directory");
}

/// The tampered file restored, a planted file claiming eve's membership of room 1 brings nothing
/// verified into eve's export. Returns the planted membership message.
fn a_planted_membership_counts_for_nothing(exporter: &Exporter, bot: &Bot, tampered: &Tampered, tmp: &Path) -> Msg {
    // A planted file no manifest lists, claiming eve is a member of room 1 and replying to m001:
    // it cannot bring room 1's verified messages into eve's export, nor pass for verified.
    std::fs::write(&tampered.file, &tampered.text).unwrap();
    let mut join = generate()[0].clone();
    (join.id, join.msgtype, join.members) = ("x1".into(), 4002, vec!["eve@example"]);
    let mut reply = generate()[0].clone();
    (reply.id, reply.msgtype, reply.sender) = ("x2".into(), 9000, "eve@example");
    reply.refers_to = Some("m001".into());
    let planted = bot
        .messages_dir()
        .join("receivedMessages_20260701T000000000Z_0a0b0c0d0e0f_000001.txt");
    std::fs::write(&planted, format!("{}\n{}\n", join.json(), reply.json())).unwrap();
    let eve = tmp.join("eve");
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
    join
}

/// A planted line taking a verified message's id, sent "earlier", and a file under a name no bot
/// writes: each named, and the verified output keeps its order and content.
fn a_planted_id_reorders_nothing(exporter: &Exporter, bot: &Bot, msgs: &[Msg], join: &Msg, tmp: &Path) {
    // A planted line taking a verified message's id, sent "earlier": the verified output keeps its
    // order (m013's edit still right after m013) and its content.
    let mut forged = generate().into_iter().find(|m| m.id == "m013").unwrap();
    let original = forged.json();
    (forged.ts, forged.text) = (MARCH_1, "forged".into());
    let planted = bot
        .messages_dir()
        .join("receivedMessages_20260301T000000000Z_0a0b0c0d0e0f_000001.txt");
    std::fs::write(&planted, format!("{}\n", forged.json())).unwrap();
    // And one under a name no bot writes: read and named too, not passed over.
    let odd = bot.messages_dir().join("receivedMessages_planted.txt");
    std::fs::write(&odd, format!("{}\n", join.json())).unwrap();
    let again = tmp.join("again");
    let (code, report) = exporter.run(&["--out", again.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{report}");
    let custody: Value = serde_json::from_slice(&std::fs::read(again.join("custody.json")).unwrap()).unwrap();
    let problems: Vec<&str> = custody["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    for file in [
        "receivedMessages_20260301T000000000Z_0a0b0c0d0e0f_000001.txt",
        "receivedMessages_planted.txt",
    ] {
        let named = problems
            .iter()
            .filter(|p| p.starts_with("UNLISTED") && p.contains(file))
            .count();
        assert_eq!(named, 1, "{file} is one UNLISTED problem: {problems:#?}");
    }
    assert_eq!(ids_in(&again.join("messages.jsonl")), model(msgs, &Sel::default()));
    let verified = std::fs::read_to_string(again.join("messages.jsonl")).unwrap();
    let m013: Value = serde_json::from_str(verified.lines().find(|l| l.contains("\"m013\"")).unwrap()).unwrap();
    assert_eq!(m013, serde_json::from_str::<Value>(&original).unwrap());
    let apart = ids_in(&again.join("unverified/messages.jsonl"));
    assert!(apart.contains(&"m013".to_owned()), "{apart:?}");
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
    let tampered = tamper(&bot);

    let tmp = tempfile::tempdir().unwrap();
    the_tampered_lines_are_kept_apart(&exporter, &msgs, &tampered, tmp.path());
    strict_writes_nothing(&exporter, tmp.path());
    let join = a_planted_membership_counts_for_nothing(&exporter, &bot, &tampered, tmp.path());
    a_planted_id_reorders_nothing(&exporter, &bot, &msgs, &join, tmp.path());
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
        (vec!["--bucket", "b"], "--bucket and --dir cannot be used together"),
        (vec!["--prefix", "bot1"], "--prefix goes with --bucket, not --dir"),
        (vec!["--format", "jsonl,pdf"], "pdf"),
        (vec!["--format", ""], "--format"),
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
    // An empty WICKRIO_S3_BUCKET_NAME is unset, as everywhere in the bot: no archive given.
    let (code, text) = common::run_to_end(
        Command::new(common::BIN)
            .args(["export", "--out", &out_s, "--public-key"])
            .arg(&key)
            .env_clear()
            .env("WICKRIO_S3_BUCKET_NAME", ""),
    );
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("no archive: give --bucket"), "{text}");
    assert!(!out.exists());
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
