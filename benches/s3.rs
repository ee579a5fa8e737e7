//! The S3 sink's figures, each next to a baseline measured in the same run:
//! - AES-256-GCM throughput of the bot's streaming encryptor (one core) against
//!   `openssl speed -evp aes-256-gcm` (target: at least 70% of it);
//! - upload throughput of the real bot to a local `s3s-fs` server against `aws s3 cp` of the same
//!   files to the same server (target: at least as fast), plain and encrypted;
//! - the bot's peak RSS (VmHWM) while it encrypts and uploads a 4 GiB file (target: under 64 MiB);
//! - `verify s3://` of an encrypted archive of 1 GiB in place, against `decrypt` to a directory then
//!   `verify DIR` of the same archive (target: faster, and a peak RSS under 64 MiB).
//!
//! - 1,000 small attachments uploaded encrypted with a data key each, and with one data key reused
//!   for all of them (`WICKRIO_KMS_DATAKEY_MAX_OBJECTS`): KMS calls and files/s.
//!
//! - the bot's per-object encryption in the committing V3 format against V2 (target: at least 95%).
//!
//! `S3_BENCH=verify` runs only the verify comparison, `S3_BENCH=datakeys` only the data-key one,
//! `S3_BENCH=formats` only the encryption figures, `S3_BENCH=upload` only the upload figures.
//!
//! Needs `s3s-fs` (`cargo install s3s-fs@0.14.1 --features binary`) and, in `.venv`, moto (KMS for
//! the encrypted runs) and awscli (`.venv/bin/pip install awscli`).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use retention_bot::config::Format;
use retention_bot::envelope::Envelope;
use retention_bot::envelope::gcm::Encryptor;

mod support;
use support::{
    BUCKET, Guard, Stores, aws_env, bot_command, children_cpu, row, settle, timed, venv, vm_mib, wait_until_shipped,
};

/// OpenSSL's single-core AES-256-GCM figure on 16 KiB blocks, MB/s.
fn openssl_speed() -> f64 {
    let out = Command::new("openssl")
        .args([
            "speed",
            "-elapsed",
            "-seconds",
            "3",
            "-bytes",
            "16384",
            "-evp",
            "aes-256-gcm",
        ])
        .stderr(Stdio::null())
        .output()
        .expect("run openssl speed");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("AES-256-GCM"))
        .expect("openssl speed prints an AES-256-GCM line");
    let kb: f64 = line
        .split_whitespace()
        .last()
        .and_then(|f| f.strip_suffix('k'))
        .and_then(|f| f.parse().ok())
        .expect("a figure in 1000s of bytes per second");
    kb * 1000.0 / 1e6
}

/// The bot's encryptor over 8 MiB chunks (its upload part size) for about 3 s, MB/s.
fn our_speed() -> f64 {
    let mut chunk = vec![0x5au8; 8 << 20];
    let mut enc = Encryptor::new(&[7; 32], &[9; 12]).expect("encryptor");
    let (start, mut bytes) = (Instant::now(), 0u64);
    while start.elapsed() < Duration::from_secs(3) {
        enc.encrypt(&mut chunk).expect("encrypt");
        bytes += chunk.len() as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    std::hint::black_box(enc.finish().expect("tag"));
    bytes as f64 / secs / 1e6
}

/// The bot's per-object encryption path in `format` (an envelope, its encryptor, the body in 1 MiB
/// objects, the tag, the metadata: for V3 the key derivation and commitment too) for about 3 s, MB/s.
fn format_speed(format: Format) -> f64 {
    let mut object = vec![0x5au8; 1 << 20];
    let (start, mut bytes) = (Instant::now(), 0u64);
    while start.elapsed() < Duration::from_secs(3) {
        let envelope = Envelope::new(format, zeroize::Zeroizing::new([7; 32]), vec![1; 184]).expect("envelope");
        let mut enc = envelope.encryptor().expect("encryptor");
        enc.encrypt(&mut object).expect("encrypt");
        std::hint::black_box((enc.finish().expect("tag"), envelope.metadata(object.len() as u64)));
        bytes += object.len() as u64;
    }
    bytes as f64 / start.elapsed().as_secs_f64() / 1e6
}

/// V2 against V3, alternating, best of three each: (V2 MB/s, V3 MB/s).
fn format_comparison() -> (f64, f64) {
    let (mut v2, mut v3) = (0f64, 0f64);
    for _ in 0..3 {
        v2 = v2.max(format_speed(Format::V2));
        v3 = v3.max(format_speed(Format::V3));
    }
    (v2, v3)
}

/// Writes `count` files of `size` bytes of pseudo-random data under `dir`.
fn make_files(dir: &Path, count: usize, size: usize) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).expect("create the source dir");
    let mut block = vec![0u8; 8 << 20];
    let mut x = 0x9e3779b97f4a7c15u64;
    for b in block.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    (0..count)
        .map(|i| {
            let path = dir.join(format!("file{i:02}.bin"));
            let mut f = std::fs::File::create(&path).expect("create a source file");
            for n in 0..size / block.len() {
                block[..8].copy_from_slice(&((i * 1_000_000 + n) as u64).to_le_bytes());
                f.write_all(&block).expect("write a source file");
            }
            f.sync_all().expect("sync a source file");
            path
        })
        .collect()
}

/// Runs a bot uploading the `files` (linked into its attachment directory, where start-up finds
/// them as closed attachments) to `folder`; returns seconds from start until the last local copy is
/// gone (deleted only once S3 confirmed it), and the bot's peak RSS in MiB.
fn bot_upload(root: &Path, files: &[PathBuf], folder: &str, s3_port: u16, kms: Option<(&str, u16)>) -> (f64, f64) {
    let up = bot_upload_with(root, files, folder, s3_port, kms, &[]);
    (up.secs, up.rss)
}

/// What one bot run's upload took.
struct Upload {
    secs: f64,
    rss: f64,
    /// The bot's `KMS_Requests` once the files were up.
    kms_requests: u64,
}

/// [`bot_upload`] with `extra` settings, and the KMS calls it made.
fn bot_upload_with(
    root: &Path,
    files: &[PathBuf],
    folder: &str,
    s3_port: u16,
    kms: Option<(&str, u16)>,
    extra: &[(&str, &str)],
) -> Upload {
    let attachments = root.join("f");
    std::fs::create_dir_all(&attachments).expect("create the attachment dir");
    for (i, file) in files.iter().enumerate() {
        std::fs::hard_link(
            file,
            attachments.join(format!("attachment_20260101000000{i:03}_bench{i}.bin")),
        )
        .expect("link a source file");
    }
    let mut cmd = bot_command(root, folder, s3_port, kms);
    cmd.env("WICKRIO_COMP_FILEDEST", &attachments)
        .envs(extra.iter().copied());
    let ingest = cmd
        .get_envs()
        .find(|(k, _)| *k == "WICKRIO_INGEST_ADDR")
        .and_then(|(_, v)| v.map(|v| v.to_string_lossy().into_owned()))
        .expect("the bot's address");
    let start = Instant::now();
    // The first-run banner needs a reader: the bot refuses to seal a password nobody sees.
    // (Stopped with SIGTERM at the end, so that its manifest closes and is uploaded too.)
    let banner = std::fs::File::create(root.join("banner.txt")).expect("create the banner file");
    let bot = Guard(cmd.stdin(Stdio::null()).stdout(banner).spawn().expect("start the bot"));
    let pid = bot.0.id();
    wait_until_shipped(&attachments, "attachment_", Duration::from_secs(600));
    let secs = start.elapsed().as_secs_f64();
    let rss = vm_mib(pid, "VmHWM:");
    let kms_requests = metric(&ingest, "KMS_Requests");
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let mut bot = bot;
    let _ = bot.0.wait();
    Upload {
        secs,
        rss,
        kms_requests,
    }
}

/// A counter from the bot's `GET /metrics` at `addr` (one HTTP/1.0 request).
fn metric(addr: &str, name: &str) -> u64 {
    use std::io::Read as _;
    let mut conn = std::net::TcpStream::connect(addr).expect("reach the bot");
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .expect("ask for the metrics");
    let mut text = String::new();
    conn.read_to_string(&mut text).expect("read the metrics");
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in the bot's metrics"))
}

/// 1,000 small attachments uploaded encrypted, a data key each against one key for all of them
/// (`WICKRIO_KMS_DATAKEY_MAX_OBJECTS=1000`): (files/s, KMS calls) each, best of two.
fn datakey_comparison(dir: &Path, s3_port: u16, kms: (&str, u16)) -> ((f64, u64), (f64, u64)) {
    let files = make_small_files(&dir.join("small"), 1000, 4096);
    let mut best = [(0f64, 0u64); 2];
    for round in 0..2 {
        for (i, extra) in [&[][..], &[("WICKRIO_KMS_DATAKEY_MAX_OBJECTS", "1000")][..]]
            .into_iter()
            .enumerate()
        {
            settle();
            let folder = format!("keys{i}-{round}");
            let up = bot_upload_with(&dir.join(&folder), &files, &folder, s3_port, Some(kms), extra);
            let rate = files.len() as f64 / up.secs;
            if rate > best[i].0 {
                best[i] = (rate, up.kms_requests);
            }
        }
    }
    (best[0], best[1])
}

/// `count` files of `size` pseudo-random bytes under `dir`.
fn make_small_files(dir: &Path, count: usize, size: usize) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).expect("create the source dir");
    (0..count)
        .map(|i| {
            let path = dir.join(format!("small{i:04}.bin"));
            let bytes: Vec<u8> = (0..size).map(|b| (b * 31 + i * 7) as u8).collect();
            std::fs::write(&path, bytes).expect("write a small file");
            path
        })
        .collect()
}

/// `verify s3://` against `decrypt` then `verify DIR`, over one encrypted archive of `files`.
/// Returns ((in place secs, RSS), (two steps secs, RSS)).
fn verify_comparison(dir: &Path, files: &[PathBuf], s3_port: u16, kms: (&str, u16)) -> ((f64, f64), (f64, f64)) {
    let root = dir.join("verifyrun");
    bot_upload(&root, files, "verify", s3_port, Some(kms));
    let key = root.join("state/public_key.txt");
    let tool = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_retention-bot"));
        cmd.env_clear()
            .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{s3_port}"))
            .env("AWS_ENDPOINT_URL_KMS", format!("http://127.0.0.1:{}", kms.1))
            .args(args);
        aws_env(&mut cmd);
        cmd
    };
    let key_arg = key.display().to_string();
    let mut best_in_place = (f64::MAX, 0f64);
    let mut best_two_steps = (f64::MAX, 0f64);
    for round in 0..2 {
        settle();
        let (secs, rss) = timed(&mut tool(&[
            "verify",
            &format!("s3://{BUCKET}/verify"),
            "--public-key",
            &key_arg,
        ]));
        best_in_place = (best_in_place.0.min(secs), best_in_place.1.max(rss));

        settle();
        let dest = dir.join(format!("restored{round}"));
        let dest_arg = dest.display().to_string();
        let (d_secs, d_rss) = timed(&mut tool(&[
            "decrypt", "--bucket", BUCKET, "--prefix", "verify", "--dest", &dest_arg,
        ]));
        let (v_secs, v_rss) = timed(&mut tool(&["verify", &dest_arg, "--public-key", &key_arg]));
        best_two_steps = (
            best_two_steps.0.min(d_secs + v_secs),
            best_two_steps.1.max(d_rss).max(v_rss),
        );
        std::fs::remove_dir_all(&dest).expect("clean up");
    }
    (best_in_place, best_two_steps)
}

/// Sizes of the objects s3s-fs stored under `folder`, which must be the sources' sizes plus `extra`.
fn check_stored(root: &Path, folder: &str, files: &[PathBuf], extra: u64) {
    let dir = root.join(BUCKET).join(folder);
    let stored: Vec<u64> = std::fs::read_dir(&dir)
        .expect("read the stored folder")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("attachment_"))
        .map(|e| e.metadata().expect("stat").len())
        .collect();
    assert_eq!(stored.len(), files.len(), "every file was stored in {}", dir.display());
    let size = std::fs::metadata(&files[0]).expect("stat").len();
    assert!(stored.iter().all(|s| *s == size + extra), "stored sizes {stored:?}");
}

fn main() {
    let parent = std::env::var("BENCH_DIR").unwrap_or_else(|_| "/tmp".into());
    let tmp = tempfile::tempdir_in(parent).expect("create the temp dir");
    let dir = tmp.path();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("S3 benchmark in {}; load average {}", dir.display(), load.trim());

    let openssl = openssl_speed();
    let ours = our_speed();
    let (v2_speed, v3_speed) = format_comparison();
    println!(
        "per-object encryption in 1 MiB objects (best of 3): V2 {v2_speed:.0} MB/s; V3 (committing) {v3_speed:.0} MB/s ({:.1}%)",
        v3_speed / v2_speed * 100.0
    );
    if std::env::var("S3_BENCH").is_ok_and(|v| v == "formats") {
        println!();
        row("summary", "figure".into(), "target / baseline", None);
        format_rows(v2_speed, v3_speed);
        return;
    }
    println!("AES-256-GCM: openssl speed {openssl:.0} MB/s; retention-bot encryptor {ours:.0} MB/s");

    let stores = Stores::start(dir);
    let (store, s3_port, kms_port, arn) = (stores.root.clone(), stores.s3_port, stores.kms_port, stores.arn.clone());

    let (count, size) = (8, 128 << 20);
    let files = make_files(&dir.join("src"), count, size);
    if std::env::var("S3_BENCH").is_ok_and(|v| v == "upload") {
        let uploads = upload_comparison(dir, &files, &store, s3_port, (arn.as_str(), kms_port));
        println!();
        row("summary", "figure".into(), "target / baseline", None);
        upload_rows(&uploads);
        return;
    }
    let datakeys = datakey_comparison(dir, s3_port, (arn.as_str(), kms_port));
    let ((own_rate, own_calls), (reuse_rate, reuse_calls)) = datakeys;
    println!(
        "1,000 x 4 KiB encrypted (best of 2): a data key each {own_rate:.0} files/s, {own_calls} KMS calls; one key for 1,000 objects {reuse_rate:.0} files/s, {reuse_calls} KMS calls"
    );
    if std::env::var("S3_BENCH").is_ok_and(|v| v == "datakeys") {
        println!();
        row("summary", "figure".into(), "target / baseline", None);
        datakey_rows(datakeys.0, datakeys.1);
        return;
    }

    let ((in_place, in_place_rss), (two_steps, two_steps_rss)) =
        verify_comparison(dir, &files, s3_port, (arn.as_str(), kms_port));
    println!(
        "verify of {count} x {} MiB encrypted (best of 2): s3:// in place {in_place:.2} s (peak RSS {in_place_rss:.1} MiB); decrypt + verify DIR {two_steps:.2} s (peak RSS {two_steps_rss:.1} MiB)",
        size >> 20
    );
    if std::env::var("S3_BENCH").is_ok_and(|v| v == "verify") {
        println!();
        row("summary", "figure".into(), "target / baseline", None);
        verify_rows(in_place, in_place_rss, two_steps);
        return;
    }

    let uploads = upload_comparison(dir, &files, &store, s3_port, (arn.as_str(), kms_port));

    println!();
    row("summary", "figure".into(), "target / baseline", None);
    row(
        "AES-256-GCM MB/s (1 core)",
        format!("{ours:.0}"),
        &format!(">= 70% of openssl {openssl:.0} ({:.0}%)", ours / openssl * 100.0),
        Some(ours >= 0.7 * openssl),
    );
    upload_rows(&uploads);
    verify_rows(in_place, in_place_rss, two_steps);
    datakey_rows(datakeys.0, datakeys.1);
    format_rows(v2_speed, v3_speed);
}

/// The upload figures: MB/s of `aws s3 cp` and of the bot, plain and encrypted, and the bot's peak
/// RSS on a 4 GiB encrypted file.
struct UploadFigures {
    awscli: f64,
    plain: f64,
    enc: f64,
    big_rss: f64,
}

/// Uploads `files` (8 x 128 MiB), then a 4 GiB file of its own.
fn upload_comparison(dir: &Path, files: &[PathBuf], store: &Path, s3_port: u16, kms: (&str, u16)) -> UploadFigures {
    let (count, size) = (files.len(), 128 << 20);
    let total_mb = (count * size) as f64 / 1e6;
    // Each contender runs twice, alternating, each time after a `sync` so that no run pays for the
    // write-back of the one before; the better time of the two counts.
    let (mut awscli_secs, mut plain_secs, mut enc_secs) = (f64::MAX, f64::MAX, f64::MAX);
    let (mut plain_rss, mut enc_rss) = (0f64, 0f64);
    // CPU seconds of each contender's better run: the machine's two cores are shared with the
    // server, so what a client spends is what the server cannot.
    let (mut awscli_cpu, mut plain_cpu, mut enc_cpu) = (f64::MAX, f64::MAX, f64::MAX);
    for round in 0..2 {
        settle();
        let cpu = children_cpu();
        let start = Instant::now();
        let status = aws_env(&mut Command::new(venv("aws")))
            .args(["s3", "cp", "--recursive", "--only-show-errors"])
            .arg(dir.join("src"))
            .arg(format!("s3://{BUCKET}/awscli/"))
            .args(["--endpoint-url", &format!("http://127.0.0.1:{s3_port}")])
            .status()
            .expect("aws s3 cp");
        awscli_secs = awscli_secs.min(start.elapsed().as_secs_f64());
        awscli_cpu = awscli_cpu.min(children_cpu() - cpu);
        assert!(status.success(), "aws s3 cp failed");
        std::fs::remove_dir_all(store.join(BUCKET).join("awscli")).expect("clean up");

        settle();
        let cpu = children_cpu();
        let (secs, rss) = bot_upload(&dir.join(format!("plain{round}")), files, "plain", s3_port, None);
        plain_cpu = plain_cpu.min(children_cpu() - cpu);
        check_stored(store, "plain", files, 0);
        (plain_secs, plain_rss) = (plain_secs.min(secs), plain_rss.max(rss));
        std::fs::remove_dir_all(store.join(BUCKET).join("plain")).expect("clean up");

        settle();
        let kms = Some(kms);
        let cpu = children_cpu();
        let (secs, rss) = bot_upload(&dir.join(format!("enc{round}")), files, "enc", s3_port, kms);
        enc_cpu = enc_cpu.min(children_cpu() - cpu);
        check_stored(store, "enc", files, 16);
        (enc_secs, enc_rss) = (enc_secs.min(secs), enc_rss.max(rss));
        std::fs::remove_dir_all(store.join(BUCKET).join("enc")).expect("clean up");
    }
    let (awscli, plain, enc) = (total_mb / awscli_secs, total_mb / plain_secs, total_mb / enc_secs);
    for f in files {
        std::fs::remove_file(f).expect("clean up");
    }
    println!(
        "upload of {count} x {} MiB (best of 2): aws s3 cp {awscli_secs:.2} s; bot plain {plain_secs:.2} s (peak RSS {plain_rss:.1} MiB); bot encrypted {enc_secs:.2} s (peak RSS {enc_rss:.1} MiB)",
        size >> 20
    );
    println!(
        "client CPU (user + system, the lesser of 2): aws s3 cp {awscli_cpu:.2} s; bot plain {plain_cpu:.2} s; bot encrypted {enc_cpu:.2} s"
    );

    let big = make_files(&dir.join("big"), 1, 4 << 30);
    settle();
    let (big_secs, big_rss) = bot_upload(&dir.join("bigrun"), &big, "big", s3_port, Some(kms));
    check_stored(store, "big", &big, 16);
    let big_mb = (4u64 << 30) as f64 / 1e6 / big_secs;
    println!("4 GiB encrypted upload: {big_secs:.2} s ({big_mb:.0} MB/s), bot peak RSS {big_rss:.1} MiB");

    UploadFigures {
        awscli,
        plain,
        enc,
        big_rss,
    }
}

fn upload_rows(f: &UploadFigures) {
    row(
        "upload MB/s, plain",
        format!("{:.0}", f.plain),
        &format!(">= aws s3 cp {:.0}", f.awscli),
        Some(f.plain >= f.awscli),
    );
    row(
        "upload MB/s, encrypted",
        format!("{:.0}", f.enc),
        &format!(">= aws s3 cp {:.0} (plain)", f.awscli),
        Some(f.enc >= f.awscli),
    );
    row(
        "peak RSS MiB, 4 GiB encrypted",
        format!("{:.1}", f.big_rss),
        "< 64",
        Some(f.big_rss < 64.0),
    );
}

fn format_rows(v2: f64, v3: f64) {
    row(
        "V3 encryption MB/s",
        format!("{v3:.0}"),
        &format!(">= 95% of V2 {v2:.0} ({:.1}%)", v3 / v2 * 100.0),
        Some(v3 >= 0.95 * v2),
    );
}

fn datakey_rows(own: (f64, u64), reuse: (f64, u64)) {
    row(
        "KMS calls, 1,000 files",
        format!("{}", reuse.1),
        &format!("reuse, against {} without", own.1),
        None,
    );
    row(
        "files/s, 1,000 x 4 KiB enc.",
        format!("{:.0}", reuse.0),
        &format!("reuse, against {:.0} without", own.0),
        None,
    );
}

fn verify_rows(in_place: f64, in_place_rss: f64, two_steps: f64) {
    row(
        "verify s3:// s, 1 GiB enc.",
        format!("{in_place:.2}"),
        &format!("< decrypt + verify DIR {two_steps:.2}"),
        Some(in_place < two_steps),
    );
    row(
        "verify s3:// peak RSS MiB",
        format!("{in_place_rss:.1}"),
        "< 64",
        Some(in_place_rss < 64.0),
    );
}
