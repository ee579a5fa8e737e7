//! The signed manifest through the real binary: `verify` passes on an untouched archive (across a
//! restart and a kill -9) and catches each kind of tampering.

use crate::common;

use std::path::{Path, PathBuf};

use common::{Bot, attachment_form, file_message, file_names, text_message};

/// Builds an archive over three runs of the bot (the middle one killed with -9), so the chain spans
/// restarts and a crash-recovered manifest. Returns the bot's root directory.
async fn build_archive(root: &Path) {
    let extra = [("WICKRIO_COMP_FILESIZE", "1")];
    let mut n = 0;
    for run in 0..3 {
        let mut bot = Bot::prepare(root, &extra);
        bot.spawn().await;
        for _ in 0..6 {
            n += 1;
            assert_eq!(bot.post("application/json", text_message(n)).await.status(), 202);
        }
        let part = reqwest::multipart::Part::bytes(format!("attachment of run {run}").into_bytes()).file_name("a.txt");
        assert_eq!(
            bot.post_form(attachment_form(&file_message("notes.txt"), part))
                .await
                .status(),
            202
        );
        if run == 1 {
            bot.kill9().await;
        } else {
            assert!(bot.stop().await.success());
        }
    }
}

/// A copy of the archive part of `root` (messages and attachments), as an auditor would get it.
fn copy_archive(root: &Path, to: &Path) -> PathBuf {
    for sub in ["messages", "attachments"] {
        std::fs::create_dir_all(to.join(sub)).unwrap();
        for name in file_names(&root.join(sub)) {
            std::fs::copy(root.join(sub).join(&name), to.join(sub).join(&name)).unwrap();
        }
    }
    to.to_owned()
}

fn verify(dir: &Path, key: &Path) -> (Option<i32>, String) {
    // No password, no bot settings: only the public key.
    let mut cmd = std::process::Command::new(common::BIN);
    cmd.env_clear().arg("verify").arg(dir).arg("--public-key").arg(key);
    common::run_to_end(&mut cmd)
}

fn verify_with_head(dir: &Path, key: &Path, head: &Path) -> (Option<i32>, String) {
    let mut cmd = std::process::Command::new(common::BIN);
    cmd.env_clear()
        .arg("verify")
        .arg(dir)
        .arg("--public-key")
        .arg(key)
        .arg("--head")
        .arg(head);
    common::run_to_end(&mut cmd)
}

/// Deletes the newest manifest and every file it lists, as an attacker on the host would to hide
/// them; returns the manifest's chain head record (left in place).
fn cut_off_newest(archive: &Path) -> PathBuf {
    let mut all = manifests(archive);
    all.sort();
    let newest = all.pop().unwrap();
    for line in std::fs::read_to_string(&newest).unwrap().lines() {
        let entry: serde_json::Value = serde_json::from_str(line).unwrap();
        let name = entry["name"].as_str().unwrap();
        for sub in ["messages", "attachments"] {
            let _ = std::fs::remove_file(archive.join(sub).join(name));
        }
    }
    std::fs::remove_file(&newest).unwrap();
    let stem = newest.file_stem().unwrap().to_string_lossy().into_owned();
    let head = archive.join("messages").join(format!("chainhead_{stem}.json"));
    assert!(head.exists(), "the newest manifest has its head record beside it");
    head
}

fn manifests(archive: &Path) -> Vec<PathBuf> {
    let dir = archive.join("messages");
    file_names(&dir)
        .into_iter()
        .filter(|n| n.starts_with("manifest_"))
        .map(|n| dir.join(n))
        .collect()
}

fn first_with(archive: &Path, sub: &str, prefix: &str) -> PathBuf {
    let dir = archive.join(sub);
    dir.join(file_names(&dir).into_iter().find(|n| n.starts_with(prefix)).unwrap())
}

/// `verify` passes the untouched copy `clean` with no problem, and its manifests list each archived
/// file once, over one manifest per run at least.
fn clean_copy_verifies(clean: &Path, key: &Path) {
    let (code, out) = verify(clean, key);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(" 0 problem(s)"), "{out}");
    let entries: usize = manifests(clean)
        .iter()
        .map(|m| std::fs::read_to_string(m).unwrap().lines().count())
        .sum();
    let archived = file_names(&clean.join("messages"))
        .iter()
        .filter(|n| !n.starts_with("manifest_") && !n.starts_with("chainhead_"))
        .count()
        + file_names(&clean.join("attachments")).len();
    assert_eq!(entries, archived, "one entry per archived file");
    assert!(manifests(clean).len() >= 3, "one manifest per run at least");
}

/// What each tampering case needs: the bot's root to copy the archive from, where the copies go, and
/// the bot's public key.
struct Cases<'a> {
    root: &'a Path,
    scratch: &'a Path,
    key: &'a Path,
}

impl Cases<'_> {
    /// A copy of the archive named `name`, changed by `tamper`: `verify` fails, saying `expect`.
    fn case(&self, name: &str, tamper: &dyn Fn(&Path), expect: &str) {
        let archive = copy_archive(self.root, &self.scratch.join(name));
        tamper(&archive);
        let (code, out) = verify(&archive, self.key);
        assert_eq!(code, Some(1), "{name}: {out}");
        assert!(out.contains(expect), "{name}: expected {expect:?} in:\n{out}");
    }
}

/// A file deleted or flipped, and a manifest line dropped or two swapped, are each caught.
fn deleted_altered_and_reordered_are_caught(c: &Cases<'_>) {
    c.case(
        "deleted",
        &|a| std::fs::remove_file(first_with(a, "messages", "receivedMessages_")).unwrap(),
        "MISSING",
    );
    c.case(
        "flipped",
        &|a| {
            let p = first_with(a, "attachments", "attachment_");
            let mut bytes = std::fs::read(&p).unwrap();
            bytes[3] ^= 0x01;
            std::fs::write(&p, bytes).unwrap();
        },
        "ALTERED",
    );
    c.case(
        "dropped-line",
        &|a| {
            let m = &manifests(a)[0];
            let lines: Vec<String> = std::fs::read_to_string(m).unwrap().lines().map(str::to_owned).collect();
            let kept: Vec<&String> = lines
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != 1)
                .map(|(_, l)| l)
                .collect();
            std::fs::write(m, kept.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
        },
        "CHAIN BROKEN",
    );
    c.case(
        "swapped",
        &|a| {
            let m = &manifests(a)[0];
            let mut lines: Vec<String> = std::fs::read_to_string(m).unwrap().lines().map(str::to_owned).collect();
            lines.swap(0, 1);
            std::fs::write(m, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
        },
        "CHAIN BROKEN",
    );
}

/// A file added, an entry edited, a forged copy of a listed file, an undecodable manifest line, and
/// the newest manifest cut off with its files, are each caught.
fn added_edited_forged_unreadable_and_truncated_are_caught(c: &Cases<'_>) {
    c.case(
        "added",
        &|a| std::fs::write(a.join("messages/receivedMessages_forged.txt"), "{}\n").unwrap(),
        "UNLISTED",
    );
    c.case(
        "edited-entry",
        &|a| {
            let m = &manifests(a)[0];
            let text = std::fs::read_to_string(m)
                .unwrap()
                .replacen("\"size\":", "\"size\":1", 1);
            std::fs::write(m, text).unwrap();
        },
        "BAD SIGNATURE",
    );
    c.case(
        "forged-copy-elsewhere",
        &|a| {
            // A forged copy of a listed file, in a subdirectory read after the genuine one.
            let genuine = first_with(a, "attachments", "attachment_");
            std::fs::create_dir_all(a.join("zz")).unwrap();
            std::fs::write(a.join("zz").join(genuine.file_name().unwrap()), "forged").unwrap();
        },
        "DUPLICATE",
    );
    c.case(
        "undecodable-line",
        &|a| {
            let m = &manifests(a)[0];
            let mut bytes = std::fs::read(m).unwrap();
            bytes.extend_from_slice(b"\xff\xfe not an entry\n");
            std::fs::write(m, bytes).unwrap();
        },
        "UNREADABLE",
    );
    // The newest manifest deleted with every file it lists: its chain head record (shipped beside it,
    // under Object Lock in S3) shows the archive was cut off; so does a copy kept elsewhere when the
    // record went too.
    c.case(
        "truncated",
        &|a| {
            cut_off_newest(a);
        },
        "TRUNCATED: the archive ends at entry",
    );
}

/// The newest manifest cut off with its head record too: the shorter chain verifies alone, but a
/// copy of the head kept elsewhere shows the cut, and the whole archive `clean` reaches it.
fn a_head_kept_elsewhere_catches_the_cut(c: &Cases<'_>, clean: &Path) {
    let cut = copy_archive(c.root, &c.scratch.join("truncated-and-its-head"));
    let head = cut_off_newest(&cut);
    let kept_elsewhere = c.scratch.join("head-copy.json");
    std::fs::rename(&head, &kept_elsewhere).unwrap();
    let (code, out) = verify(&cut, c.key);
    assert_eq!(
        code,
        Some(0),
        "without the head the shorter chain still verifies: {out}"
    );
    let (code, out) = verify_with_head(&cut, c.key, &kept_elsewhere);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("TRUNCATED"), "{out}");
    let (code, out) = verify_with_head(clean, c.key, &kept_elsewhere);
    assert_eq!(code, Some(0), "the whole archive reaches the head: {out}");
}

/// Neither an empty directory nor a missing one is a clean archive: both say there is nothing to
/// verify.
fn nothing_to_verify_is_no_clean_archive(scratch: &Path, key: &Path) {
    // An empty directory (a volume that is not mounted) is not a clean archive.
    let empty = scratch.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let (code, out) = verify(&empty, key);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("NOTHING TO VERIFY"), "{out}");
    // Nor is a path that does not exist (a typo): the same words, not an I/O error.
    let (code, out) = verify(&scratch.join("no-such-dir"), key);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("NOTHING TO VERIFY") && !out.contains("cannot read"),
        "{out}"
    );
}

/// Another bot's public key (a bot run once under `scratch`) proves nothing of `clean`.
async fn another_bots_key_proves_nothing(scratch: &Path, clean: &Path) {
    let other = scratch.join("other");
    let mut stranger = Bot::prepare(&other, &[]);
    stranger.spawn().await;
    assert!(stranger.stop().await.success());
    let (code, out) = verify(clean, &other.join("state/public_key.txt"));
    assert_eq!(code, Some(1));
    assert!(out.contains("BAD SIGNATURE"), "{out}");
}

#[tokio::test]
async fn verify_passes_untouched_and_catches_each_kind_of_tampering() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("bot");
    build_archive(&root).await;
    let key = root.join("state/public_key.txt");

    let clean = copy_archive(&root, &tmp.path().join("clean"));
    clean_copy_verifies(&clean, &key);

    let cases = Cases {
        root: &root,
        scratch: tmp.path(),
        key: &key,
    };
    deleted_altered_and_reordered_are_caught(&cases);
    added_edited_forged_unreadable_and_truncated_are_caught(&cases);
    a_head_kept_elsewhere_catches_the_cut(&cases, &clean);

    nothing_to_verify_is_no_clean_archive(tmp.path(), &key);

    // Another bot's key proves nothing.
    another_bots_key_proves_nothing(tmp.path(), &clean).await;
}

#[test]
fn verify_without_a_public_key_says_how_to_give_one() {
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::BIN)
        .env_clear()
        .arg("verify")
        .arg(tmp.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--public-key"));

    // Each command says the error in its own name (export used to say `retention-bot verify:`).
    let out = std::process::Command::new(common::BIN)
        .env_clear()
        .args(["export", "--dir"])
        .arg(tmp.path())
        .arg("--out")
        .arg(tmp.path().join("out"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("retention-bot export: no public key"), "{stderr}");
}
