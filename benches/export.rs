//! `retention-bot export` of an encrypted archive of 1,000,000 messages (100 files over 100 days) on a
//! local `s3s-fs` server, against the two-step path a user has without it: `retention-bot decrypt` of
//! the bucket, then `jq` with the same filter, in the same run. Two selections:
//! - a narrow period, one day (1% of the messages): target at least 10x faster;
//! - a full scan, one sender's messages (a quarter), which no time span prunes: target no slower.
//!
//! Then the formats, on the whole archive (every line out): `--format jsonl` alone against
//! `jsonl,rsmf`, `jsonl,html` and all four, in the same run (target: RSMF and the transcript each
//! at most 2x the JSONL export's time; peak RSS under 256 MiB); and `--participant` of someone in no
//! conversation, whose memory must not grow with the archive (it read every room's lines before).
//!
//! Each figure is the better of two runs; time, files read and peak RSS are reported. The answer of
//! both paths is compared (same number of lines). `EXPORT_BENCH_MESSAGES` changes the archive's size.
//!
//! Needs `s3s-fs`, `jq`, and moto and awscli in `.venv` (see benches/s3.rs).

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::{BUCKET, Guard, Stores, bot_command, row, settle, timed, timed_output, wait_until_shipped};

const FOLDER: &str = "export";
const FILES: usize = 100;
const DAYS: u64 = 100;
/// 2026-01-01T00:00:00Z.
const START: u64 = 1_767_225_600;
const PEOPLE: [&str; 4] = ["alice@example", "bob@example", "carol@example", "dan@example"];

/// Writes the archive's message files where a starting bot finds them, closed and ready to ship.
fn generate(dir: &Path, messages: usize) {
    std::fs::create_dir_all(dir).expect("create the message dir");
    let per_file = messages.div_ceil(FILES);
    let step_micros = DAYS * 86_400 * 1_000_000 / messages as u64;
    for f in 0..FILES {
        let first = f * per_file;
        let micros = START * 1_000_000 + first as u64 * step_micros;
        let opened = chrono::DateTime::from_timestamp_micros(micros as i64).expect("a time");
        let name = format!(
            "receivedMessages_{}_0123456789ab_{:06}.txt",
            opened.format("%Y%m%dT%H%M%S%3fZ"),
            f + 1
        );
        let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join(name)).expect("create a message file"));
        for k in first..(first + per_file).min(messages) {
            let ts = START * 1_000_000 + k as u64 * step_micros;
            let sender = PEOPLE[k % 4];
            let receiver = PEOPLE[(k + 1) % 4];
            writeln!(
                out,
                r#"{{"message":"message number {k} about the quarterly figures","message_id":"{k:032x}","msg_ts":"{}.{:06}","msgtype":1000,"receiver":"{receiver}","sender":"{sender}","sender_type":"normal","time":"1/1/26 0:00 AM","time_iso":"2026-01-01 00:00:00.000","vgroupid":"S{:063x}"}}"#,
                ts / 1_000_000,
                ts % 1_000_000,
                k % 50
            )
            .expect("write a message");
        }
        out.into_inner().expect("flush").sync_all().expect("sync");
    }
}

/// Runs a bot until every message file is in the bucket, then stops it (its manifest closes and
/// goes up too).
fn upload(root: &Path, stores: &Stores) {
    let mut cmd = bot_command(root, FOLDER, stores.s3_port, Some((&stores.arn, stores.kms_port)));
    // A hundred files found at start-up, each worth a warning: only errors matter here.
    cmd.env("RUST_LOG", "error");
    let banner = std::fs::File::create(root.join("banner.txt")).expect("create the banner file");
    let mut bot = Guard(cmd.stdin(Stdio::null()).stdout(banner).spawn().expect("start the bot"));
    wait_until_shipped(&root.join("m"), "receivedMessages_", Duration::from_secs(1200));
    let _ = Command::new("kill").args(["-TERM", &bot.0.id().to_string()]).status();
    let _ = bot.0.wait();
}

fn tool(stores: &Stores, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_retention-bot"));
    cmd.env_clear()
        .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{}", stores.s3_port))
        .env("AWS_ENDPOINT_URL_KMS", format!("http://127.0.0.1:{}", stores.kms_port))
        .args(args);
    support::aws_env(&mut cmd);
    cmd
}

fn lines(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|c| **c == b'\n').count())
        .unwrap_or(0)
}

/// The files an export read, from its summary line (`... read N file(s) ...`).
fn files_read(summary: &str) -> usize {
    summary
        .split("read ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("the export's summary line")
}

struct Figures {
    secs: f64,
    rss: f64,
    files: usize,
    lines: usize,
}

/// `export` with `selection`, best of two: time, peak RSS, files read, lines written. Outputs are
/// removed after each run unless `keep` (an export of thousands of files, removed right before the
/// next, would make the next one's file creation pay for the file system's recently freed inodes).
fn export(dir: &Path, stores: &Stores, key: &str, selection: &[&str], label: &str, keep: bool) -> Figures {
    let mut best = Figures {
        secs: f64::MAX,
        rss: 0.0,
        files: 0,
        lines: 0,
    };
    for round in 0..2 {
        let out = dir.join(format!("export-{label}-{round}"));
        let out_arg = out.display().to_string();
        let mut args = vec![
            "export",
            "--bucket",
            BUCKET,
            "--prefix",
            FOLDER,
            "--public-key",
            key,
            "--out",
            &out_arg,
        ];
        args.extend(selection);
        settle();
        let (secs, rss, summary) = timed_output(&mut tool(stores, &args));
        best = Figures {
            secs: best.secs.min(secs),
            rss: best.rss.max(rss),
            files: files_read(&summary),
            lines: lines(&out.join("messages.jsonl")),
        };
        if !keep {
            std::fs::remove_dir_all(&out).expect("clean up");
        }
    }
    best
}

/// `jq -c FILTER` over the restored message files into `out`: seconds and peak RSS.
fn jq(restored: &Path, filter: &str, out: &Path) -> (f64, f64) {
    let script = format!(
        "jq -c '{filter}' {}/receivedMessages_*.txt > {}",
        restored.display(),
        out.display()
    );
    timed(Command::new("sh").args(["-c", &script]))
}

fn main() {
    let messages: usize = std::env::var("EXPORT_BENCH_MESSAGES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let parent = std::env::var("BENCH_DIR").unwrap_or_else(|_| "/tmp".into());
    let tmp = tempfile::tempdir_in(parent).expect("create the temp dir");
    let dir = tmp.path();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("export benchmark in {}; load average {}", dir.display(), load.trim());
    let stores = Stores::start(dir);

    let root = dir.join("bot");
    let started = Instant::now();
    generate(&root.join("m"), messages);
    upload(&root, &stores);
    let objects = std::fs::read_dir(stores.root.join(BUCKET).join(FOLDER))
        .expect("the stored folder")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("receivedMessages_"))
        })
        .count();
    assert_eq!(objects, FILES, "every message file was uploaded");
    println!(
        "archive: {messages} messages in {FILES} encrypted objects over {DAYS} days, written in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let key = root.join("state/public_key.txt").display().to_string();

    // One day of the hundred: 1% of the messages.
    let (day_from, day_to) = (START + 50 * 86_400, START + 51 * 86_400);
    let iso = |t: u64| {
        chrono::DateTime::from_timestamp(t as i64, 0)
            .expect("a time")
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let narrow_to = iso(day_to - 1).replace('Z', ".999999Z");
    let narrow = export(
        dir,
        &stores,
        &key,
        &["--from", &iso(day_from), "--to", &narrow_to],
        "narrow",
        false,
    );
    let scan = export(dir, &stores, &key, &["--sender", "alice@example"], "scan", false);

    // Today's path: decrypt everything, then jq.
    let mut decrypt_secs = f64::MAX;
    let mut decrypt_rss = 0f64;
    let restored = dir.join("restored");
    for round in 0..2 {
        let _ = std::fs::remove_dir_all(&restored);
        settle();
        let dest = restored.display().to_string();
        let (secs, rss) = timed(&mut tool(
            &stores,
            &["decrypt", "--bucket", BUCKET, "--prefix", FOLDER, "--dest", &dest],
        ));
        if round == 0 || secs < decrypt_secs {
            decrypt_secs = secs;
        }
        decrypt_rss = decrypt_rss.max(rss);
    }
    let narrow_filter = format!("select((.msg_ts|tonumber) >= {day_from} and (.msg_ts|tonumber) < {day_to})");
    let scan_filter = r#"select(.sender == "alice@example")"#;
    let mut jq_narrow = (f64::MAX, 0f64);
    let mut jq_scan = (f64::MAX, 0f64);
    let (narrow_out, scan_out) = (dir.join("jq-narrow.jsonl"), dir.join("jq-scan.jsonl"));
    for _ in 0..2 {
        settle();
        let (s, r) = jq(&restored, &narrow_filter, &narrow_out);
        jq_narrow = (jq_narrow.0.min(s), jq_narrow.1.max(r));
        settle();
        let (s, r) = jq(&restored, scan_filter, &scan_out);
        jq_scan = (jq_scan.0.min(s), jq_scan.1.max(r));
    }
    assert_eq!(lines(&narrow_out), narrow.lines, "both paths give the same day");
    assert_eq!(lines(&scan_out), scan.lines, "both paths give the same sender");
    let two_narrow = decrypt_secs + jq_narrow.0;
    let two_scan = decrypt_secs + jq_scan.0;
    println!(
        "narrow (one day, {} lines): export {:.2} s, {} of {objects} objects read, peak RSS {:.1} MiB; decrypt {decrypt_secs:.2} s (peak RSS {decrypt_rss:.1} MiB, {objects} objects) + jq {:.2} s (peak RSS {:.1} MiB) = {two_narrow:.2} s",
        narrow.lines, narrow.secs, narrow.files, narrow.rss, jq_narrow.0, jq_narrow.1
    );
    println!(
        "full scan (one sender, {} lines): export {:.2} s, {} of {objects} objects read, peak RSS {:.1} MiB; decrypt {decrypt_secs:.2} s + jq {:.2} s (peak RSS {:.1} MiB) = {two_scan:.2} s",
        scan.lines, scan.secs, scan.files, scan.rss, jq_scan.0, jq_scan.1
    );
    println!();
    row("summary", "figure".into(), "target / baseline", None);
    row(
        "export s, one day (1%)",
        format!("{:.2}", narrow.secs),
        &format!(
            ">= 10x faster than decrypt + jq {two_narrow:.2} ({:.0}x)",
            two_narrow / narrow.secs
        ),
        Some(two_narrow >= 10.0 * narrow.secs),
    );
    row(
        "export s, full scan",
        format!("{:.2}", scan.secs),
        &format!("<= decrypt + jq {two_scan:.2} ({:.1}x)", two_scan / scan.secs),
        Some(scan.secs <= two_scan),
    );
    row(
        "objects read, one day",
        format!("{}", narrow.files),
        &format!("of {objects} (decrypt reads all)"),
        None,
    );
    row(
        "export peak RSS MiB",
        format!("{:.1}", narrow.rss.max(scan.rss)),
        &format!("decrypt {decrypt_rss:.1}, jq {:.1}", jq_narrow.1.max(jq_scan.1)),
        None,
    );
    formats(dir, &stores, &key, messages, narrow.rss);
}

/// The formats on the whole archive, against JSONL alone; and a `--participant` in nothing.
fn formats(dir: &Path, stores: &Stores, key: &str, messages: usize, one_day_rss: f64) {
    let jsonl = export(dir, stores, key, &["--format", "jsonl"], "jsonl", true);
    let rsmf = export(dir, stores, key, &["--format", "jsonl,rsmf"], "rsmf", true);
    let html = export(dir, stores, key, &["--format", "jsonl,html"], "html", true);
    let all = export(dir, stores, key, &["--format", "jsonl,csv,rsmf,html"], "all", true);
    let nobody = export(dir, stores, key, &["--participant", "nobody@example"], "nobody", true);
    for f in [&jsonl, &rsmf, &html, &all] {
        assert_eq!(f.lines, messages, "every line exported");
    }
    assert_eq!(nobody.lines, 0, "nobody's messages: none");
    println!();
    for (label, f) in [
        ("jsonl", &jsonl),
        ("jsonl,rsmf", &rsmf),
        ("jsonl,html", &html),
        ("jsonl,csv,rsmf,html", &all),
        ("--participant (none)", &nobody),
    ] {
        println!(
            "whole archive, {label}: {:.2} s, {} lines, peak RSS {:.1} MiB",
            f.secs, f.lines, f.rss
        );
    }
    println!();
    row("formats (whole archive)", "figure".into(), "target / baseline", None);
    for (label, f) in [("RSMF", &rsmf), ("transcript", &html)] {
        let extra = f.secs / jsonl.secs;
        row(
            &format!("export s, jsonl + {label}"),
            format!("{:.2}", f.secs),
            &format!("<= 2x jsonl alone {:.2} ({extra:.2}x)", jsonl.secs),
            Some(extra <= 2.0),
        );
    }
    row(
        "export s, all four formats",
        format!("{:.2}", all.secs),
        &format!("jsonl alone {:.2} ({:.2}x)", jsonl.secs, all.secs / jsonl.secs),
        None,
    );
    let peak = [&jsonl, &rsmf, &html, &all].iter().map(|f| f.rss).fold(0.0, f64::max);
    row(
        "peak RSS MiB, any format",
        format!("{peak:.1}"),
        "< 256",
        Some(peak < 256.0),
    );
    row(
        "peak RSS MiB, --participant (0 lines)",
        format!("{:.1}", nobody.rss),
        &format!("one day's export {one_day_rss:.1}; whole archive {:.1}", jsonl.rss),
        None,
    );
}
