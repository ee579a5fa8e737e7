//! The container image, built from the project's Dockerfile and run with podman (see
//! docs/testing.md: no Docker engine or registry here, so the Debian base image is made with
//! debootstrap and the Rust builder stage is replaced by the binary the tests built on the host).
//! The run is the original's: `-ti` with a root-owned volume at /tmp/<bot>, the first-run prompt
//! answered through a pseudo-terminal, messages over HTTP landing encrypted in S3 (moto), then
//! `podman stop`. Needs root, podman, runc and debootstrap (`.ci/run` installs them).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::aws::Moto;
use common::{INITIAL_PASSWORD, Terminal, free_port, generated_password, text_message};

const BASE: &str = "docker.io/library/debian:bookworm-slim";
const IMAGE: &str = "localhost/retention-bot:smoke-test";
const BOT: &str = "ctbot";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `target/`, from where cargo put this test's binary.
fn target_dir() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_retention-bot"));
    bin.parent().unwrap().parent().unwrap().to_owned()
}

/// podman with the settings that work on these machines (vfs storage, runc, cgroupfs, no ulimits).
struct Podman {
    conf: PathBuf,
}

impl Podman {
    fn new() -> Podman {
        let dir = target_dir().join("container");
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("containers.conf");
        std::fs::write(&conf, "[containers]\ndefault_ulimits = []\n").unwrap();
        Podman { conf }
    }

    fn cmd(&self) -> Command {
        let mut cmd = Command::new("podman");
        cmd.env("CONTAINERS_CONF", &self.conf).args([
            "--storage-driver",
            "vfs",
            "--runtime",
            "runc",
            "--cgroup-manager",
            "cgroupfs",
        ]);
        cmd
    }

    /// Runs podman with `args`; returns stdout, failing the test with stderr if it fails.
    fn ok(&self, args: &[&str]) -> String {
        let out = self
            .cmd()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("podman is missing: .ci/run installs it (apt-get install podman runc debootstrap)");
        assert!(
            out.status.success(),
            "podman {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// debian:bookworm-slim, made locally once: there is no registry to pull it from.
    fn ensure_base_image(&self) {
        let exists = self.cmd().args(["image", "exists", BASE]).status().unwrap().success();
        if exists {
            return;
        }
        let root = target_dir().join("container/bookworm");
        let _ = std::fs::remove_dir_all(&root);
        let status = Command::new("debootstrap")
            .args(["--variant=minbase", "bookworm"])
            .arg(&root)
            .arg(debian_mirror())
            .stdout(Stdio::null())
            .status()
            .expect("debootstrap is missing: .ci/run installs it");
        assert!(status.success(), "debootstrap failed");
        let mut tar = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let imported = self
            .cmd()
            .args(["import", "-", BASE])
            .stdin(tar.stdout.take().unwrap())
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(tar.wait().unwrap().success(), "tar of the base image failed");
        assert!(imported.success(), "podman import failed");
        let _ = std::fs::remove_dir_all(&root);
    }
}

/// The Debian mirror this machine's apt uses.
fn debian_mirror() -> String {
    let sources = std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources").unwrap_or_default();
    sources
        .lines()
        .find_map(|l| l.strip_prefix("URIs:"))
        .and_then(|uris| uris.split_whitespace().next())
        .unwrap_or("http://deb.debian.org/debian")
        .to_owned()
}

/// What the Dockerfile's builder stage leaves in `/out/retention-bot`: here the binary the other
/// tests ran, stripped. The image test checks the packaging (user, volume, prompt, signals, S3), which
/// does not depend on the optimisation level, so CI spends no extra build on it; under
/// `cargo test --release` the binary is the optimised build, which stripped is the Dockerfile's `dist`
/// build.
fn builder_stage() -> PathBuf {
    let stage = target_dir().join("container/builder");
    std::fs::create_dir_all(stage.join("out")).unwrap();
    let out = stage.join("out/retention-bot");
    let _ = std::fs::remove_file(&out);
    let status = Command::new("strip")
        .arg("-o")
        .arg(&out)
        .arg(env!("CARGO_BIN_EXE_retention-bot"))
        .status()
        .unwrap_or_else(|e| panic!("strip (binutils) did not run: {e}"));
    assert!(status.success(), "strip of the tests' binary failed");
    stage
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_runs_the_original_docker_run_line_as_non_root_and_stops_gracefully() {
    let podman = Podman::new();
    podman.ensure_base_image();
    let stage = builder_stage();
    let context = format!("builder={}", stage.display());
    let dockerfile = repo().join("Dockerfile");
    let repo_dir = repo().display().to_string();
    podman.ok(&[
        "build",
        "--format",
        "docker",
        "--network",
        "host",
        "--build-context",
        &context,
        "-f",
        &dockerfile.display().to_string(),
        "-t",
        IMAGE,
        &repo_dir,
    ]);
    let size: u64 = podman
        .ok(&["image", "inspect", IMAGE, "--format", "{{.Size}}"])
        .trim()
        .parse()
        .unwrap();
    let base: u64 = podman
        .ok(&["image", "inspect", BASE, "--format", "{{.Size}}"])
        .trim()
        .parse()
        .unwrap();
    let binary = std::fs::metadata(stage.join("out/retention-bot")).unwrap().len();
    println!(
        "image {IMAGE}: {:.1} MiB = base {:.1} MiB (debootstrap minbase) + {:.1} MiB ours (binary {:.1} MiB, CA certificates, user)",
        mib(size),
        mib(base),
        mib(size - base),
        mib(binary)
    );

    let moto = Moto::start().await;
    moto.create_bucket("bkt-1").await;
    let key_arn = moto.create_key().await;
    // What Docker makes of `-v /opt/<bot>:/tmp/<bot>` when /opt/<bot> does not exist: a root-owned dir.
    let tmp = tempfile::tempdir().unwrap();
    let volume = tmp.path().join("opt-ctbot");
    std::fs::create_dir(&volume).unwrap();
    let port = free_port();
    let name = format!("retention-bot-smoke-{}", std::process::id());
    let _ = podman.cmd().args(["rm", "-f", &name]).output();
    let env = [
        format!("WICKRIO_BOT_NAME={BOT}"),
        format!("WICKRIO_INGEST_ADDR=127.0.0.1:{port}"),
        "WICKRIO_COMP_MIN_FREE_MB=1".to_owned(),
        "WICKRIO_S3_BUCKET_NAME=bkt-1".to_owned(),
        format!("WICKRIO_KMS_MSTRKEY_ARN={key_arn}"),
        format!("AWS_ENDPOINT_URL={}", moto.endpoint()),
        "AWS_ACCESS_KEY_ID=test".to_owned(),
        "AWS_SECRET_ACCESS_KEY=test".to_owned(),
        "AWS_EC2_METADATA_DISABLED=true".to_owned(),
    ];
    let mut run = podman.cmd();
    run.args(["run", "-ti", "--name", &name, "--network", "host", "-v"])
        .arg(format!("{}:/tmp/{BOT}", volume.display()));
    for e in &env {
        run.args(["-e", e]);
    }
    run.arg(IMAGE);

    // First run, interactive: the original's prompt, then the banner.
    let mut term = Terminal::spawn(run);
    term.wait_for("Enter the password:", 1);
    term.type_line(INITIAL_PASSWORD);
    term.wait_for("Re-enter the password:", 1);
    term.type_line(INITIAL_PASSWORD);
    term.wait_for("TO START THE BOT", 1);
    term.wait_for("retention-bot ready", 1);
    assert!(generated_password(&term.screen()).is_some(), "{}", term.screen());

    let client = reqwest::Client::new();
    let lines: Vec<String> = (0..3).map(text_message).collect();
    let r = client
        .post(format!("http://127.0.0.1:{port}/v1/messages"))
        .header("content-type", "application/x-ndjson")
        .body(lines.join("\n"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);

    // Non-root: PID 1 of the container is the bot, running as 10001.
    let status = podman.ok(&["exec", &name, "cat", "/proc/1/status"]);
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    let ids: Vec<&str> = uid_line.split_whitespace().skip(1).collect();
    assert_eq!(
        ids, ["10001"; 4],
        "real, effective, saved and file-system uid: {uid_line}"
    );
    let cmdline = podman.ok(&["exec", &name, "cat", "/proc/1/cmdline"]);
    assert!(cmdline.starts_with("/usr/local/bin/retention-bot"), "{cmdline:?}");
    // The image's HEALTHCHECK (the binary itself) passes.
    podman.ok(&["healthcheck", "run", &name]);

    // docker stop: SIGTERM to PID 1; the open file closes and uploads before the exit.
    podman.ok(&["stop", "-t", "30", &name]);
    assert!(term.wait().success(), "{}", term.screen());
    let screen = term.screen();
    assert!(screen.contains("stopped"), "{screen}");

    let keys = moto.keys("bkt-1").await;
    let messages: Vec<&String> = keys.iter().filter(|k| k.starts_with("receivedMessages_")).collect();
    assert_eq!(messages.len(), 1, "{keys:?}\n{screen}");
    assert!(keys.iter().any(|k| k.starts_with("manifest_")), "{keys:?}");
    let (body, metadata) = moto.object("bkt-1", messages[0]).await;
    assert_eq!(
        metadata.get("x-amz-cek-alg").map(String::as_str),
        Some("AES/GCM/NoPadding")
    );
    assert!(
        !String::from_utf8_lossy(&body).contains("test message"),
        "uploaded in the clear"
    );
    assert_eq!(body.len(), lines.join("\n").len() + 1 + 16, "ciphertext plus tag");

    // Nothing left behind: every closed file went to S3; the identity stays on the volume, owned by
    // the bot's user.
    let leftovers = |dir: &Path| std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
    assert_eq!(leftovers(&volume.join("compliance/messages")), 0);
    assert_eq!(leftovers(&volume.join("compliance/attachments")), 0);
    let identity = std::fs::metadata(volume.join("state/identity.json")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&identity), 10001);
    podman.ok(&["rm", &name]);
}
