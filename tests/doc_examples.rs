//! The documented examples, run as a newcomer runs them: every `sh` and `python` block of the README
//! and `docs/` is marked, on the line before it, `<!-- example: ... -->`:
//!
//! - `start`: started in the background (the daemon); the banner's generated password is learned;
//! - `run`: run to its end, exit status 0, and each output the block shows (`# ...` lines after a
//!   command) found in what it printed, timestamps and ids aside;
//! - `run once a bot is up`: run while a bot runs (started again with the generated password, as the
//!   Quickstart says, if none does);
//! - `run with the bot stopped`: run after the running bot is stopped (SIGTERM);
//! - `skip: why`: needs what the tests do not have (real AWS, a Docker engine, a homeserver), or is
//!   the test suite itself; the reason names the test that runs the same thing.
//!
//! The examples write where the docs say, `/tmp/compliancebot`, and talk to `localhost:8080`; AWS is
//! a moto server (`AWS_ENDPOINT_URL`). What the test changes, and why: the line `cargo build
//! --release` is dropped and `./target/release/retention-bot` is the binary `cargo test` built (the
//! suite does not build a release); `<the generated password>` and the like are the password the
//! banner showed, `<the bot password>` the password of the bot whose archive the S3 pages read; a
//! user's own paths, `/opt/compliancebot` and `/cases/4711`, are under the working directory, and
//! the host `retention.example` is `localhost` (the Quickstart's bot, which takes any token); and
//! what a user brings is there: the original bot's files (`old/receivedMessages_1.txt`), a batch
//! (`messages.jsonl`), a document
//! (`report.pdf`), and the archive the S3 pages read (bucket `my-archive`, folder `bot1`, encrypted
//! under a KMS key, Object Lock GOVERNANCE for 2557 days, written by a bot in November 2026, whose state is the
//! `/opt/compliancebot/state` of the pages and whose public key is `public_key.txt`; and two
//! replicas' folder `shared` of it, their keys `bot-a/` and `bot-b/public_key.txt`).

use crate::common;

use common::Bot;
use common::aws::Moto;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq)]
enum Marker {
    Start,
    Run,
    WhenBotUp,
    BotStopped,
    Skip(String),
}

#[derive(Debug, Clone)]
struct Example {
    at: String,
    python: bool,
    marker: Marker,
    code: String,
}

/// Every `sh`/`python` block of README.md and docs/*.md, in reading order; panics naming any block
/// without a marker.
fn examples() -> Vec<Example> {
    let mut out = Vec::new();
    let mut unmarked = Vec::new();
    for (name, text) in crate::docs::docs() {
        let lines: Vec<&str> = text.lines().collect();
        let mut i = 0;
        while i < lines.len() {
            let fence = lines[i].trim_start();
            let python = fence == "```python";
            if !(python || fence == "```sh" || fence == "```bash") {
                i += 1;
                continue;
            }
            let indent = lines[i].len() - fence.len();
            let end = (i + 1..lines.len())
                .find(|&j| lines[j].trim_start() == "```")
                .unwrap_or(lines.len());
            let code: Vec<&str> = lines[i + 1..end]
                .iter()
                .map(|l| l.get(indent..).unwrap_or(l.trim_start()))
                .collect();
            let at = format!("{name}:{}", i + 1);
            let marker = i
                .checked_sub(1)
                .and_then(|j| lines[j].trim().strip_prefix("<!-- example: "))
                .and_then(|m| m.strip_suffix(" -->"))
                .and_then(|m| match m {
                    "start" => Some(Marker::Start),
                    "run" => Some(Marker::Run),
                    "run once a bot is up" => Some(Marker::WhenBotUp),
                    "run with the bot stopped" => Some(Marker::BotStopped),
                    _ => m
                        .strip_prefix("skip: ")
                        .filter(|why| why.len() > 10)
                        .map(|why| Marker::Skip(why.to_owned())),
                });
            match marker {
                Some(marker) => out.push(Example {
                    at,
                    python,
                    marker,
                    code: code.join("\n") + "\n",
                }),
                None => unmarked.push(at),
            }
            i = end + 1;
        }
    }
    assert!(
        unmarked.is_empty(),
        "blocks without an <!-- example: ... --> marker on the line before: {unmarked:#?}"
    );
    out
}

/// Lines of shown output: comment lines right after a command line (`# {"accepted":1}`).
fn shown_output(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut after_command = false;
    for line in code.lines() {
        match line.strip_prefix("# ") {
            Some(shown) if after_command => out.push(shown.trim().to_owned()),
            Some(_) => {}
            None => after_command = !line.trim().is_empty() && !line.trim_end().ends_with('\\'),
        }
    }
    out
}

/// A line with its timestamps and ids made alike: `receivedMessages_2026...` as shown matches the
/// one a run wrote, while `1 entry` does not match `2 entries`.
fn normalized(line: &str) -> String {
    let mut out = String::new();
    let mut run = String::new();
    for c in line.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_hexdigit() {
            run.push(c);
            continue;
        }
        if !run.is_empty() {
            // Six or more hex digits, one a digit at least: a time or an id; a count stays itself.
            let id = run.len() >= 6 && run.chars().any(|c| c.is_ascii_digit());
            out.push_str(if id { "#" } else { &run });
            run.clear();
        }
        out.push(c);
    }
    out.trim_end().to_owned()
}

struct Workspace {
    dir: tempfile::TempDir,
    path: String,
    password: Option<String>,
    bot: Option<(Child, PathBuf)>,
    /// The AWS the examples reach (a moto server) and the archive bot's password.
    aws: Vec<(String, String)>,
    archive_password: String,
}

impl Workspace {
    fn new(aws: Vec<(String, String)>) -> Workspace {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::os::unix::fs::symlink(common::BIN, bin.join("retention-bot")).unwrap();
        let release = dir.path().join("target/release");
        std::fs::create_dir_all(&release).unwrap();
        std::os::unix::fs::symlink(common::BIN, release.join("retention-bot")).unwrap();
        // What a user brings: the original bot's files, a document to attach.
        std::fs::create_dir_all(dir.path().join("old")).unwrap();
        let line = |id: &str| {
            format!(
                r#"{{"msgtype":1000,"message_id":"{id}","msg_ts":"1691176260.5","sender":"bob@example","message":"from before"}}"#
            )
        };
        std::fs::write(
            dir.path().join("old/receivedMessages_1.txt"),
            format!("{}\n{}\n", line("old1"), line("old2")),
        )
        .unwrap();
        std::fs::write(dir.path().join("report.pdf"), b"%PDF-1.4\n% a report\n").unwrap();
        std::fs::write(
            dir.path().join("messages.jsonl"),
            format!("{}\n{}\n", line("batch1"), line("batch2")),
        )
        .unwrap();
        // curl -s exits 0 on a refusal; the examples must not pass on one (the answer is printed).
        std::fs::write(dir.path().join(".curlrc"), "fail-with-body\n").unwrap();
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
        Workspace {
            dir,
            path,
            password: None,
            bot: None,
            aws,
            archive_password: String::new(),
        }
    }

    /// The archive the S3 pages' examples read (see the module's doc).
    async fn write_users_archive(&mut self, moto: &Moto) {
        moto.create_locked_bucket("my-archive").await;
        let key = moto.create_key().await;
        let root = self.dir.path().join("opt/compliancebot");
        let mut extra: Vec<(String, String)> = moto.env();
        extra.push(("WICKRIO_KMS_MSTRKEY_ARN".into(), key));
        for (k, v) in [
            ("WICKRIO_S3_BUCKET_NAME", "my-archive"),
            ("WICKRIO_S3_FOLDER_NAME", "bot1"),
            ("WICKRIO_S3_OBJECT_LOCK_MODE", "GOVERNANCE"),
            ("WICKRIO_S3_RETENTION_DAYS", "2557"),
            ("RETENTION_BOT_TEST_CLOCK", "2026-11-15T12:00:00Z"),
        ] {
            extra.push((k.into(), v.into()));
        }
        let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut bot = Bot::prepare(&root, &extra);
        bot.spawn().await;
        // April (what the export example selects) and November (what the legal hold example holds).
        for (id, ts) in [("apr1", "1775030400.5"), ("nov1", "1794268800.5")] {
            let message = format!(
                r#"{{"msgtype":1000,"message_id":"{id}","msg_ts":"{ts}","sender":"alice@example","vgroupid":"S7ad65d...","message":"about the case"}}"#
            );
            assert_eq!(bot.post("application/json", message).await.status(), 202);
        }
        assert!(bot.stop().await.success(), "{}", bot.log_text());
        std::fs::copy(
            root.join("state/public_key.txt"),
            self.dir.path().join("public_key.txt"),
        )
        .unwrap();
        // Two replicas sharing the folder `shared`, their keys as bot-a/ and bot-b/public_key.txt.
        for name in ["bot-a", "bot-b"] {
            let mut replica_env: Vec<(String, String)> = moto.env();
            replica_env.push(("WICKRIO_S3_BUCKET_NAME".into(), "my-archive".into()));
            replica_env.push(("WICKRIO_S3_FOLDER_NAME".into(), "shared".into()));
            let replica_env: Vec<(&str, &str)> = replica_env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let mut replica = Bot::prepare(&self.dir.path().join("replicas").join(name), &replica_env);
            replica.spawn().await;
            let message = format!(
                r#"{{"msgtype":1000,"message_id":"{name}-1","msg_ts":"1775030400.5","sender":"bob@example","message":"hi"}}"#
            );
            assert_eq!(replica.post("application/json", message).await.status(), 202);
            assert!(replica.stop().await.success(), "{}", replica.log_text());
            let keys = self.dir.path().join(name);
            std::fs::create_dir_all(&keys).unwrap();
            std::fs::copy(replica.root.join("state/public_key.txt"), keys.join("public_key.txt")).unwrap();
        }
        self.archive_password = bot
            .env
            .iter()
            .find(|(k, _)| k == "WICKRIO_BOT_PASSWORD")
            .map(|(_, v)| v.clone())
            .unwrap();
    }

    /// The block as the test runs it (see the module's doc for each change).
    fn code(&self, example: &Example) -> String {
        let mut code: String = example
            .code
            .lines()
            .filter(|l| l.trim() != "cargo build --release")
            .map(|l| format!("{l}\n"))
            .collect();
        if let Some(password) = &self.password {
            for placeholder in ["<the generated password>", "<generated>"] {
                code = code.replace(placeholder, password);
            }
        }
        let home = self.dir.path().display().to_string();
        code.replace("<the bot password>", &self.archive_password)
            .replace("/opt/compliancebot", &format!("{home}/opt/compliancebot"))
            .replace("/cases/4711", &format!("{home}/cases/4711"))
            .replace("retention.example", "localhost")
    }

    fn command(&self, example: &Example) -> Command {
        let mut cmd = if example.python {
            let mut c = Command::new("python3");
            c.arg("-c").arg(self.code(example));
            c
        } else {
            let mut c = Command::new("bash");
            c.args(["-e", "-o", "pipefail", "-c"]).arg(self.code(example));
            c
        };
        cmd.current_dir(self.dir.path())
            .env_clear()
            .env("PATH", &self.path)
            .env("LANG", "C.UTF-8")
            .env("HOME", self.dir.path())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .envs(self.aws.iter().map(|(k, v)| (k, v)));
        // A home of its own (its .curlrc, no AWS profile of the user's); what finds python3 when it
        // is a pyenv shim: its root, which defaults to the real ~/.pyenv.
        let pyenv = std::env::var_os("PYENV_ROOT")
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pyenv").into_os_string()));
        if let Some(root) = pyenv {
            cmd.env("PYENV_ROOT", root);
        }
        cmd
    }

    fn start(&mut self, example: &Example) {
        self.stop();
        let log = self
            .dir
            .path()
            .join(format!("bot-{}.log", example.at.replace(['/', ':'], "_")));
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = self.command(example);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec. The bot
        // dies with the test (bash execs it, and the signal is kept across exec).
        #[allow(unsafe_code)]
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        self.bot = Some((child, log.clone()));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("retention-bot ready") {
                if let Some(password) = generated_password(&text) {
                    self.password = Some(password);
                }
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: the bot did not start:\n{text}",
                example.at
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The bot as the Quickstart starts it again: "with the generated password".
    fn start_again(&mut self) {
        let password = self.password.clone().expect("a bot started before (the Quickstart)");
        let again = Example {
            at: "the Quickstart's restart".into(),
            python: false,
            marker: Marker::Start,
            code: format!("WICKRIO_BOT_NAME=compliancebot WICKRIO_BOT_PASSWORD='{password}' retention-bot\n"),
        };
        self.start(&again);
    }

    fn stop(&mut self) {
        if let Some((mut child, log)) = self.bot.take() {
            let group = nix::unistd::Pid::from_raw(-(child.id() as i32));
            let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGTERM);
            let status = child.wait().unwrap();
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(status.success(), "the bot did not stop cleanly ({status}):\n{text}");
        }
    }

    fn run(&mut self, example: &Example) {
        let (code, out) = common::run_to_end(&mut self.command(example));
        assert_eq!(
            code,
            Some(0),
            "{} failed:\n{}\n---\n{out}",
            example.at,
            self.code(example)
        );
        // Compared within the whole output: `curl` ends its answer without a newline.
        let printed = normalized(&out.replace('\n', " "));
        for shown in shown_output(&example.code) {
            assert!(
                printed.contains(&normalized(&shown)),
                "{}: the docs show `{shown}`, the run printed:\n{out}",
                example.at
            );
        }
    }
}

/// A failed example leaves no bot behind holding the port, nor the directory it wrote.
impl Drop for Workspace {
    fn drop(&mut self) {
        if let Some((mut child, _)) = self.bot.take() {
            let group = nix::unistd::Pid::from_raw(-(child.id() as i32));
            let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
        }
        let quickstart = Path::new(QUICKSTART_DIR);
        if quickstart.join(OURS).exists() {
            let _ = std::fs::remove_dir_all(quickstart);
        }
    }
}

fn generated_password(banner: &str) -> Option<String> {
    let at = banner.find("TO START THE BOT")?;
    let line = banner[at..].lines().nth(1)?.trim();
    Some(line.strip_prefix('"')?.strip_suffix('"')?.to_owned())
}

/// Where the docs' examples write. Removed before and after, so it must be this test's own.
const QUICKSTART_DIR: &str = "/tmp/compliancebot";
const OURS: &str = ".written-by-the-doc-examples-test";

#[test]
fn every_example_block_is_marked_and_every_skip_says_why() {
    let all = examples();
    assert!(all.len() >= 30, "{}", all.len());
    let run = all.iter().filter(|e| !matches!(e.marker, Marker::Skip(_))).count();
    assert!(run >= 11, "{run} run");
    assert_eq!(
        shown_output("curl x\n# {\"accepted\":1}\nls\n# a_1.txt\n"),
        ["{\"accepted\":1}", "a_1.txt"]
    );
    assert_eq!(
        normalized("receivedMessages_20261122T073223235Z_f83e8b64ebed_000001.txt.open"),
        normalized("receivedMessages_20261204T180500001Z_0a1b2c3d4e5f_000001.txt.open")
    );
    assert_ne!(
        normalized("1 manifest(s), 0 problem(s)"),
        normalized("1 manifest(s), 3 problem(s)")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_documented_examples_run_as_written() {
    let quickstart = Path::new(QUICKSTART_DIR);
    if quickstart.exists() {
        assert!(
            quickstart.join(OURS).exists(),
            "{QUICKSTART_DIR} exists and is not this test's: the README's examples write there; move it away"
        );
        std::fs::remove_dir_all(quickstart).unwrap();
    }
    assert!(
        std::net::TcpListener::bind("127.0.0.1:8080").is_ok(),
        "127.0.0.1:8080 is taken: the README's examples talk to a bot there (another test suite running?)"
    );
    std::fs::create_dir_all(quickstart).unwrap();
    std::fs::write(quickstart.join(OURS), "").unwrap();

    let moto = Moto::start().await;
    let mut ws = Workspace::new(moto.env());
    ws.write_users_archive(&moto).await;
    let mut waiting: Vec<Example> = Vec::new();
    let mut ran = Vec::new();
    for example in examples() {
        match &example.marker {
            Marker::Skip(_) => continue,
            Marker::Start => {
                ws.start(&example);
                for queued in std::mem::take(&mut waiting) {
                    ws.run(&queued);
                    ran.push(queued.at);
                }
            }
            Marker::Run => ws.run(&example),
            Marker::WhenBotUp if ws.bot.is_none() && ws.password.is_none() => {
                waiting.push(example);
                continue;
            }
            Marker::WhenBotUp => {
                if ws.bot.is_none() {
                    ws.start_again();
                }
                ws.run(&example);
            }
            Marker::BotStopped => {
                ws.stop();
                ws.run(&example);
            }
        }
        ran.push(example.at);
    }
    ws.stop();
    assert!(waiting.is_empty(), "never run, no bot started: {waiting:?}");
    assert!(ran.len() >= 11, "{ran:?}");
    // What they did is there: the Quickstart's and the producers' messages, and the import's.
    let archive = std::fs::read_dir(quickstart.join("compliance/messages"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
        .collect::<String>();
    // b1: the attachment example's message.
    for id in ["a526085032fa11ee9a74053bb1017859", "old1", "old2", "\"b1\"", "batch2"] {
        assert!(archive.contains(id), "{id} is not in the archive");
    }
    // The export example exported the user's April message, signed (verify-export passed on it).
    let exported = std::fs::read_to_string(ws.dir.path().join("cases/4711/messages.jsonl")).unwrap();
    assert!(
        exported.contains("\"apr1\"") && !exported.contains("\"nov1\""),
        "{exported}"
    );
    std::fs::remove_dir_all(quickstart).unwrap();
}
