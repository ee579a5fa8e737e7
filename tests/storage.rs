//! Attachments, import, and disk-space handling through the real binary.

use crate::common;

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::Duration;

use common::{Bot, attachment_form, closed_lines, file_message, file_names, text_message};

const MIB: usize = 1 << 20;

/// Deterministic content for chunk `i` of a large upload, so the saved file can be checked.
fn chunk(i: usize) -> Vec<u8> {
    (0..MIB)
        .map(|j| (i.wrapping_mul(31) ^ j.wrapping_mul(7)) as u8)
        .collect()
}

#[tokio::test]
async fn attachment_larger_than_the_bots_memory_limit_streams_through() {
    // The bot may map at most 64 MiB of data (heap, stacks); the attachment is 400 MiB.
    const LIMIT: u64 = 64 * MIB as u64;
    const CHUNKS: usize = 400;
    let tmp = tempfile::tempdir().unwrap();
    let bot = Bot::prepare(tmp.path(), &[]);
    let mut cmd = bot.command();
    // SAFETY: only setrlimit(2) between fork and exec.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_DATA, LIMIT, LIMIT)
                .map_err(std::io::Error::from)
        });
    }
    let log = std::fs::File::create(tmp.path().join("bot.log")).unwrap();
    let child = cmd.stdout(log.try_clone().unwrap()).stderr(log).spawn().unwrap();
    let client = reqwest::Client::new();
    wait_healthy(&client, &bot).await;

    let stream = futures_util::stream::iter((0..CHUNKS).map(|i| Ok::<_, std::io::Error>(chunk(i))));
    let message = &file_message("video.mp4");
    let form = attachment_form(
        message,
        reqwest::multipart::Part::stream_with_length(reqwest::Body::wrap_stream(stream), (CHUNKS * MIB) as u64)
            .file_name("video.mp4"),
    );
    let r = bot.post_form(form).await;
    let status = r.status();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(status, 202, "{body}\n{}", bot.log_text());
    assert_eq!(body["bytes"], CHUNKS * MIB);

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::task::spawn_blocking(move || {
        let mut c = child;
        c.wait()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(status.success(), "{}", bot.log_text());

    let local = body["localfilename"].as_str().unwrap();
    let mut saved = std::fs::File::open(local).unwrap();
    assert_eq!(saved.metadata().unwrap().len(), (CHUNKS * MIB) as u64);
    let mut buf = vec![0u8; MIB];
    for i in 0..CHUNKS {
        saved.read_exact(&mut buf).unwrap();
        assert!(buf == chunk(i), "chunk {i} differs");
    }
    let lines = closed_lines(&bot.messages_dir());
    assert_eq!(lines.len(), 1);
    let line: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(line["file"]["localfilename"], local);
    assert_eq!(line["file"]["filename"], "video.mp4");
}

async fn wait_healthy(client: &reqwest::Client, bot: &Bot) {
    for _ in 0..500 {
        if client
            .get(bot.url("/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("bot not healthy:\n{}", bot.log_text());
}

#[tokio::test]
async fn same_name_twice_gets_a_suffix_and_both_are_kept() {
    let mut bot = Bot::start(&[]).await;
    let message = &file_message("dir/report.pdf");
    let mut saved = Vec::new();
    for content in [&b"first"[..], b"second", b"third"] {
        let form = attachment_form(
            message,
            reqwest::multipart::Part::bytes(content.to_vec()).file_name("report.pdf"),
        );
        let r = bot.post_form(form).await;
        assert_eq!(r.status(), 202);
        let body: serde_json::Value = r.json().await.unwrap();
        let path = body["localfilename"].as_str().unwrap().to_owned();
        assert_eq!(std::fs::read(&path).unwrap(), content);
        saved.push(path);
    }
    saved.sort();
    saved.dedup();
    assert_eq!(saved.len(), 3, "no attachment overwrote another");
    for path in &saved {
        let name = Path::new(path).file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with("attachment_") && name.contains("_dir_report"),
            "{name}"
        );
    }
    assert!(bot.stop().await.success());
    assert_eq!(closed_lines(&bot.messages_dir()).len(), 3);
}

#[test]
fn import_keeps_good_lines_and_reports_bad_ones_by_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("receivedMessages_old.txt");
    let good: Vec<String> = (0..5).map(text_message).collect();
    let content = format!(
        "{}\n{}\nnot json\n{}\n\n{{\"msgtype\":1000}}\n{}\n{}\n",
        good[0], good[1], good[2], good[3], good[4]
    );
    std::fs::write(&input, content).unwrap();
    let second = tmp.path().join("more.txt");
    std::fs::write(&second, format!("{}\n", text_message(99))).unwrap();

    let mut bot = Bot::prepare(&tmp.path().join("bot"), &[]);
    let out = bot.command().arg("import").arg(&input).arg(&second).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    bot.learn_password(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        out.status.code(),
        Some(1),
        "rejected lines make the exit status 1: {stderr}"
    );
    let name = input.display().to_string();
    assert!(stderr.contains(&format!("{name}:3: not valid JSON")), "{stderr}");
    assert!(
        stderr.contains(&format!("{name}:6: field `message_id`: missing")),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("imported 6 message(s), rejected 2"));

    let mut expected = good.clone();
    expected.push(text_message(99));
    assert_eq!(closed_lines(&bot.messages_dir()), expected);

    let clean = bot.command().arg("import").arg(&second).output().unwrap();
    assert!(clean.status.success());
    let missing = bot
        .command()
        .arg("import")
        .arg(tmp.path().join("nope.txt"))
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nope.txt"));
}

/// A small tmpfs, so that "disk full" is real and reversible.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size_mib: u64) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount (the disk tests need root and tmpfs)");
        assert!(st.success(), "mounting a tmpfs failed: the disk tests need root");
        Tmpfs(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test]
async fn low_disk_refuses_with_507_and_accepts_again_when_space_returns() {
    let tmp = tempfile::tempdir().unwrap();
    let _fs = Tmpfs::mount(&tmp.path().join("disk"), 64);
    let mut bot = Bot::prepare(&tmp.path().join("disk"), &[("WICKRIO_COMP_MIN_FREE_MB", "32")]);
    bot.spawn().await;
    assert_eq!(bot.post("application/json", text_message(1)).await.status(), 202);

    let ballast = tmp.path().join("disk/ballast");
    std::fs::write(&ballast, vec![0u8; 40 * MIB]).unwrap();
    let r = bot
        .post(
            "application/x-ndjson",
            format!("{}\n{}", text_message(2), text_message(3)),
        )
        .await;
    assert_eq!(r.status(), 507);
    assert!(r.text().await.unwrap().contains("WICKRIO_COMP_MIN_FREE_MB"));
    assert_eq!(reqwest::get(bot.url("/readyz")).await.unwrap().status(), 503);
    let part = reqwest::multipart::Part::bytes(vec![1u8; 1000]).file_name("a.bin");
    let r = bot.post_form(attachment_form(&file_message("a.bin"), part)).await;
    assert_eq!(r.status(), 507);

    std::fs::remove_file(&ballast).unwrap();
    assert_eq!(reqwest::get(bot.url("/readyz")).await.unwrap().status(), 200);
    assert_eq!(bot.post("application/json", text_message(4)).await.status(), 202);
    assert!(bot.stop().await.success());
    assert_eq!(
        closed_lines(&bot.messages_dir()),
        vec![text_message(1), text_message(4)]
    );
    assert_eq!(file_names(&bot.attachments_dir()), Vec::<String>::new());
}

#[tokio::test]
async fn a_full_disk_never_leaves_half_a_line() {
    // No free-space threshold: the writes themselves hit ENOSPC.
    let tmp = tempfile::tempdir().unwrap();
    let _fs = Tmpfs::mount(&tmp.path().join("disk"), 4);
    let mut bot = Bot::prepare(&tmp.path().join("disk"), &[("WICKRIO_COMP_MIN_FREE_MB", "0")]);
    bot.spawn().await;
    let mut acked = Vec::new();
    let mut refused = 0;
    for i in 0..200 {
        let batch: Vec<String> = (0..100).map(|j| text_message(i * 100 + j)).collect();
        let r = bot.post("application/x-ndjson", batch.join("\n")).await;
        match r.status().as_u16() {
            202 => acked.extend(batch),
            507 => refused += 1,
            other => panic!("unexpected {other}: {}", r.text().await.unwrap()),
        }
    }
    assert!(refused > 0, "the 4 MiB disk filled up");
    assert!(!acked.is_empty());
    assert!(bot.stop().await.success(), "{}", bot.log_text());
    assert!(common::open_files(&bot.messages_dir()).is_empty());
    // Every line in the files is whole and valid, and every acknowledged message is there.
    let lines = closed_lines(&bot.messages_dir());
    let all: std::collections::HashSet<&String> = lines.iter().collect();
    assert!(acked.iter().all(|m| all.contains(m)));
}

#[tokio::test]
async fn the_watchdog_reports_disk_low_then_full_then_recovered() {
    let tmp = tempfile::tempdir().unwrap();
    let _fs = Tmpfs::mount(&tmp.path().join("disk"), 64);
    let mut bot = Bot::prepare(
        &tmp.path().join("disk"),
        &[("WICKRIO_COMP_MIN_FREE_MB", "20"), ("WICKRIO_WATCHDOG_SECS", "1")],
    );
    bot.spawn().await;
    let wait_until = async |text: &str| {
        for _ in 0..100 {
            if bot.log_text().contains(text) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("no {text:?} in the log:\n{}", bot.log_text());
    };
    let ballast = tmp.path().join("disk/ballast");
    std::fs::write(&ballast, vec![0u8; 30 * MIB]).unwrap();
    wait_until("disk low: ").await;
    std::fs::write(tmp.path().join("disk/ballast2"), vec![0u8; 16 * MIB]).unwrap();
    wait_until("disk full: ").await;
    assert_eq!(bot.post("application/json", text_message(1)).await.status(), 507);
    std::fs::remove_file(&ballast).unwrap();
    std::fs::remove_file(tmp.path().join("disk/ballast2")).unwrap();
    wait_until("disk space recovered").await;
    assert!(bot.stop().await.success());
    // Each change of state is reported once: both destinations are on the one file system.
    let log = bot.log_text();
    for text in ["disk low: ", "disk full: ", "disk space recovered"] {
        assert_eq!(log.matches(text).count(), 1, "{text}\n{log}");
    }
}
