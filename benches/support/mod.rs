//! Helpers shared by the benchmarks: child process guard, /proc figures, the summary line.
#![allow(dead_code)] // each benchmark uses a different part

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The bucket the benchmarks write to.
pub const BUCKET: &str = "bench";

/// A child process, killed on drop if still running (when a bench panics before stopping it).
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A memory figure of a process from /proc/<pid>/status (`VmHWM:` is the peak RSS), MiB.
pub fn vm_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/<pid>/status");
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.trim().strip_suffix(" kB")?.parse().ok());
    kib.map(|kib: f64| kib / 1024.0)
        .expect("the field in /proc/<pid>/status")
}

/// CPU seconds (user + system) of this process's waited-for children so far: the difference across
/// a contender's run is what it (and anything it started) spent, whatever else the machine did.
pub fn children_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
    // Fields after the command name (which may hold spaces), counted from 3: cutime 16, cstime 17.
    let after = &stat[stat.rfind(')').expect("the command name's end") + 2..];
    let field = |n: usize| -> f64 {
        after
            .split(' ')
            .nth(n - 3)
            .and_then(|v| v.parse().ok())
            .expect("a /proc/self/stat field")
    };
    // Clock ticks: USER_HZ, 100 on every Linux these benches run on.
    (field(16) + field(17)) / 100.0
}

/// One line of the summary: a figure next to its target or baseline.
pub fn row(what: &str, figure: String, target: &str, met: Option<bool>) {
    let verdict = met.map_or("", |met| if met { "ok" } else { "MISSED" });
    let line = format!("{what:<28} {figure:>16}   {target:<46} {verdict}");
    println!("{}", line.trim_end());
}

/// A free port on 127.0.0.1.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("find a free port");
    listener.local_addr().expect("free port").port()
}

pub fn venv(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin").join(name);
    assert!(
        path.exists(),
        "{} missing: .venv/bin/pip install 'moto[server]' awscli",
        path.display()
    );
    path
}

pub fn s3s_fs() -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let path = Path::new(&home).join(".cargo/bin/s3s-fs");
    assert!(
        path.exists(),
        "s3s-fs missing: cargo install s3s-fs@0.14.1 --features binary"
    );
    path
}

pub fn wait_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn aws_env(cmd: &mut Command) -> &mut Command {
    cmd.env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
}

/// Runs `cmd` under `/usr/bin/time`: (seconds, peak RSS in MiB). Panics, with its output, if it fails.
pub fn timed(cmd: &mut Command) -> (f64, f64) {
    let (secs, rss, _) = timed_output(cmd);
    (secs, rss)
}

/// [`timed`], with what the command printed on stdout.
pub fn timed_output(cmd: &mut Command) -> (f64, f64, String) {
    let figures = tempfile::NamedTempFile::new().expect("a file for the figures");
    let mut timed = Command::new("/usr/bin/time");
    timed
        .arg("-o")
        .arg(figures.path())
        .args(["-f", "%e %M"])
        .arg(cmd.get_program());
    timed.args(cmd.get_args());
    // The command's own environment, nothing else (the tools' settings come from it).
    timed.env_clear();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            timed.env(k, v);
        }
    }
    let out = timed.output().expect("/usr/bin/time");
    assert!(
        out.status.success(),
        "{:?} failed:\n{}{}",
        cmd.get_program(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(figures.path()).expect("read the figures");
    let mut it = text.split_whitespace();
    let secs: f64 = it.next().and_then(|t| t.parse().ok()).expect("elapsed seconds");
    let kib: f64 = it.next().and_then(|t| t.parse().ok()).expect("peak RSS");
    (secs, kib / 1024.0, String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Flushes dirty pages to disk, so the next timed run starts from a quiet disk.
pub fn settle() {
    let _ = Command::new("sync").status();
}

/// A local `s3s-fs` S3 server over a directory, and moto for KMS with one key.
pub struct Stores {
    pub root: PathBuf,
    pub s3_port: u16,
    pub kms_port: u16,
    pub arn: String,
    _servers: (Guard, Guard),
}

impl Stores {
    pub fn start(dir: &Path) -> Stores {
        let store = dir.join("s3s");
        std::fs::create_dir_all(store.join(BUCKET)).expect("create the bucket dir");
        let s3_port = free_port();
        let _s3s = Guard(
            Command::new(s3s_fs())
                .args(["--host", "127.0.0.1", "--port", &s3_port.to_string()])
                .args(["--access-key", "test", "--secret-key", "test"])
                .arg(&store)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start s3s-fs"),
        );
        let kms_port = free_port();
        let _moto = Guard(
            Command::new(venv("moto_server"))
                .args(["-H", "127.0.0.1", "-p", &kms_port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start moto"),
        );
        wait_port(s3_port, "s3s-fs");
        wait_port(kms_port, "moto");
        let out = aws_env(&mut Command::new(venv("aws")))
            .args([
                "kms",
                "create-key",
                "--endpoint-url",
                &format!("http://127.0.0.1:{kms_port}"),
            ])
            .output()
            .expect("aws kms create-key");
        let key: serde_json::Value = serde_json::from_slice(&out.stdout).expect("create-key output");
        let arn = key["KeyMetadata"]["Arn"].as_str().expect("key ARN").to_owned();

        Stores {
            root: store,
            s3_port,
            kms_port,
            arn,
            _servers: (_s3s, _moto),
        }
    }
}

/// The bot's command for a run under `root`, uploading to `folder` of the benchmarks' bucket
/// (encrypted under the KMS key `kms` when given: its ARN and moto's port).
pub fn bot_command(root: &Path, folder: &str, s3_port: u16, kms: Option<(&str, u16)>) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_retention-bot"));
    cmd.env_clear()
        .env("WICKRIO_BOT_NAME", "bench")
        .env("WICKRIO_COMP_MESGDEST", root.join("m"))
        .env("WICKRIO_COMP_FILEDEST", root.join("f"))
        .env("WICKRIO_INGEST_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("WICKRIO_COMP_MIN_FREE_MB", "64")
        .env("WICKRIO_STATE_DIR", root.join("state"))
        .env("WICKRIO_BOT_PASSWORD", "bench-only-password")
        .env("WICKRIO_S3_BUCKET_NAME", BUCKET)
        .env("WICKRIO_S3_FOLDER_NAME", folder)
        .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{s3_port}"))
        .env("RUST_LOG", "error");
    aws_env(&mut cmd);
    if let Some((arn, kms_port)) = kms {
        cmd.env("WICKRIO_KMS_MSTRKEY_ARN", arn)
            .env("AWS_ENDPOINT_URL_KMS", format!("http://127.0.0.1:{kms_port}"));
    }
    cmd
}

/// Waits until no file of `dir` starts with `prefix` (the bot deletes each once S3 has it).
pub fn wait_until_shipped(dir: &Path, prefix: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let left = std::fs::read_dir(dir)
            .expect("read the bot's directory")
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().starts_with(prefix))
            })
            .count();
        if left == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "upload did not finish in {within:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}
