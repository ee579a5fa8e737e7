//! The real `retention-bot` binary on a free loopback port with its own directories: starting,
//! stopping and killing it, posting messages to it, and reading its metrics.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::generated_password;

pub const BIN: &str = env!("CARGO_BIN_EXE_retention-bot");
/// Every test bot's first-run password.
pub const INITIAL_PASSWORD: &str = "initial-pw-for-tests";

/// A text message in the original's shape; `id` makes it unique.
pub fn text_message(id: usize) -> String {
    format!(
        r#"{{"message":"test message {id}","message_id":"{id:032x}","msg_ts":"1691176258.{id:06}","msgtype":1000,"receiver":"dr001@example","sender":"dr002@example","sender_type":"normal","time":"8/4/23 7:10 PM","time_iso":"2023-08-04 19:10:58.901","vgroupid":"7ad65d"}}"#
    )
}

/// A file message (`msgtype` 6000) whose `file.filename` is `name`.
pub fn file_message(name: &str) -> String {
    format!(
        r#"{{"msgtype":6000,"message_id":"f1","msg_ts":"1691176258.5","sender":"a","file":{{"filename":{},"guid":"g"}}}}"#,
        serde_json::json!(name)
    )
}

/// The multipart body of an attachment upload: part `message`, then part `file`.
pub fn attachment_form(message: &str, file: reqwest::multipart::Part) -> reqwest::multipart::Form {
    reqwest::multipart::Form::new()
        .text("message", message.to_owned())
        .part("file", file)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Environment for a bot whose directories live under `root`.
pub fn base_env(root: &Path, port: u16) -> Vec<(String, String)> {
    [
        ("WICKRIO_BOT_NAME", "testbot".to_owned()),
        ("WICKRIO_COMP_MESGDEST", root.join("messages").display().to_string()),
        ("WICKRIO_COMP_FILEDEST", root.join("attachments").display().to_string()),
        ("WICKRIO_INGEST_ADDR", format!("127.0.0.1:{port}")),
        ("WICKRIO_COMP_MIN_FREE_MB", "1".to_owned()),
        ("WICKRIO_STATE_DIR", root.join("state").display().to_string()),
        ("WICKRIO_BOT_PASSWORD", INITIAL_PASSWORD.to_owned()),
        ("RUST_LOG", "info".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

pub struct Bot {
    pub root: PathBuf,
    pub port: u16,
    pub env: Vec<(String, String)>,
    child: Option<Child>,
    log: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Bot {
    /// Starts a bot in a new temporary directory with `extra` settings, and waits until it is ready.
    pub async fn start(extra: &[(&str, &str)]) -> Bot {
        let tmp = tempfile::tempdir().unwrap();
        let mut bot = Bot::prepare(tmp.path(), extra);
        bot._tmp = Some(tmp);
        bot.spawn().await;
        bot
    }

    /// A bot over an existing directory (for restarts), not yet started.
    pub fn prepare(root: &Path, extra: &[(&str, &str)]) -> Bot {
        std::fs::create_dir_all(root).unwrap();
        let port = free_port();
        let mut env = base_env(root, port);
        for (k, v) in extra {
            env.retain(|(key, _)| key != k);
            env.push((k.to_string(), v.to_string()));
        }
        let mut bot = Bot {
            root: root.to_owned(),
            port,
            env,
            child: None,
            log: root.join("bot.log"),
            _tmp: None,
        };
        // A restart over a directory whose first run already happened needs the generated password.
        if !extra.iter().any(|(k, _)| *k == "WICKRIO_BOT_PASSWORD") {
            bot.learn_password(&bot.stdout_text());
        }
        bot
    }

    /// Uses the generated password from now on, if `output` holds a first-run banner.
    pub fn learn_password(&mut self, output: &str) {
        if let Some(pw) = generated_password(output) {
            self.set_env("WICKRIO_BOT_PASSWORD", &pw);
        }
    }

    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.env_clear().envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Starts the process and waits for /healthz.
    pub async fn spawn(&mut self) {
        let append = |p: &Path| std::fs::OpenOptions::new().create(true).append(true).open(p).unwrap();
        let (out, log) = (append(&self.stdout_path()), append(&self.log));
        let child = self
            .command()
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = reqwest::Client::new();
        while Instant::now() < deadline {
            if let Ok(r) = client.get(self.url("/healthz")).send().await
                && r.status() == 200
            {
                self.learn_password(&self.stdout_text());
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("bot exited during start-up with {status}:\n{}", self.log_text());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("bot did not become healthy:\n{}", self.log_text());
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().unwrap().id() as i32)
    }

    fn stdout_path(&self) -> PathBuf {
        self.root.join("bot.stdout")
    }

    /// What the bot printed on stdout (the first-run banner), over all its runs.
    pub fn stdout_text(&self) -> String {
        std::fs::read_to_string(self.stdout_path()).unwrap_or_default()
    }

    /// What the bot logged (stderr), over all its runs.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits (bounded) for the exit status.
    pub async fn stop(&mut self) -> ExitStatus {
        kill(self.pid(), Signal::SIGTERM).unwrap();
        self.wait().await
    }

    pub async fn wait(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("bot not running");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("bot did not exit:\n{}", self.log_text());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// kill -9: no chance to clean up.
    pub async fn kill9(&mut self) {
        kill(self.pid(), Signal::SIGKILL).unwrap();
        let _ = self.wait().await;
    }

    pub fn messages_dir(&self) -> PathBuf {
        self.root.join("messages")
    }

    pub fn attachments_dir(&self) -> PathBuf {
        self.root.join("attachments")
    }

    pub async fn post(&self, content_type: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        reqwest::Client::new()
            .post(self.url("/v1/messages"))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap()
    }
}

impl Bot {
    pub async fn post_form(&self, form: reqwest::multipart::Form) -> reqwest::Response {
        reqwest::Client::new()
            .post(self.url("/v1/messages"))
            .multipart(form)
            .send()
            .await
            .unwrap()
    }
}

impl Drop for Bot {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A value from the bot's `GET /metrics`.
pub async fn metric(bot: &Bot, name: &str) -> u64 {
    let text = reqwest::get(bot.url("/metrics")).await.unwrap().text().await.unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{name}{{")))
        .unwrap_or_else(|| panic!("no metric {name}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Runs one of the binary's one-shot commands (`verify`, `decrypt`, `legal-hold`) to its end: its exit
/// status, and what it printed (stdout, then stderr).
pub fn run_to_end(cmd: &mut Command) -> (Option<i32>, String) {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// Waits until `check` passes; on time-out, fails with the bot's log.
pub async fn wait_for(bot: &Bot, what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; bot log:\n{}",
            bot.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
