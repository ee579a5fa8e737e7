//! A real Matrix homeserver for tests: one Synapse (installed in `.venv-synapse` by `.ci/run`) per test
//! binary, on a free loopback port, with rate limits lifted; and the Matrix clients the tests send with.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use matrix_sdk::Client;
use matrix_sdk::config::SyncSettings;
use serde_json::Value;

use super::free_port;

pub struct Synapse {
    pub port: u16,
    pub dir: PathBuf,
}

fn venv_bin(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(".venv-synapse/bin")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: run .ci/run (or: python3 -m venv .venv-synapse && .venv-synapse/bin/pip install -r tests/python/synapse-requirements.txt)",
        path.display()
    );
    path
}

/// The test binary's homeserver, started on first use. It is killed when the test process exits.
pub fn synapse() -> &'static Synapse {
    static SERVER: OnceLock<Synapse> = OnceLock::new();
    SERVER.get_or_init(start)
}

fn start() -> Synapse {
    let port = free_port();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("synapse-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.display();
    let limit = "{per_second: 10000, burst_count: 10000}";
    let config = format!(
        r#"server_name: "localhost"
pid_file: {d}/homeserver.pid
listeners:
  - port: {port}
    bind_addresses: ['127.0.0.1']
    type: http
    tls: false
    resources:
      - names: [client]
        compress: false
database:
  name: sqlite3
  args:
    database: {d}/homeserver.db
media_store_path: {d}/media_store
registration_shared_secret: "retention-bot-tests"
report_stats: false
macaroon_secret_key: "retention-bot-tests-macaroon"
form_secret: "retention-bot-tests-form"
signing_key_path: {d}/signing.key
trusted_key_servers: []
suppress_key_server_warning: true
rc_login:
  address: {limit}
  account: {limit}
  failed_attempts: {limit}
rc_message: {limit}
rc_joins:
  local: {limit}
rc_invites:
  per_room: {limit}
  per_user: {limit}
  per_issuer: {limit}
rc_key_requests: {limit}
"#
    );
    let config_path = dir.join("hs.yaml");
    std::fs::write(&config_path, config).unwrap();
    let keys = Command::new(venv_bin("python"))
        .args(["-m", "synapse.app.homeserver", "--generate-keys", "-c"])
        .arg(&config_path)
        .output()
        .unwrap();
    assert!(keys.status.success(), "synapse --generate-keys: {keys:?}");
    let log = std::fs::File::create(dir.join("synapse.out")).unwrap();
    // The server's parent is this thread, which waits on it for good: when the test process exits,
    // the kernel's parent-death signal stops Synapse.
    let (tx, rx) = std::sync::mpsc::channel();
    let path = config_path.clone();
    std::thread::spawn(move || {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(venv_bin("python"));
        cmd.args(["-m", "synapse.app.homeserver", "-c"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        let mut child = cmd.spawn().unwrap();
        tx.send(child.id()).unwrap();
        let _ = child.wait();
    });
    rx.recv().unwrap();
    let server = Synapse { port, dir };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !server.answers() {
        assert!(Instant::now() < deadline, "synapse did not start: {}", server.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    server
}

impl Synapse {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn answers(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.write_all(b"GET /_matrix/client/versions HTTP/1.0\r\n\r\n");
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("synapse.out")).unwrap_or_default()
    }

    /// Creates a user with Synapse's own tool (shared-secret registration).
    pub fn register(&self, user: &str, password: &str) {
        let out = Command::new(venv_bin("register_new_matrix_user"))
            .arg("-c")
            .arg(self.dir.join("hs.yaml"))
            .args(["-u", user, "-p", password, "--no-admin"])
            .arg(self.url())
            .output()
            .unwrap();
        assert!(out.status.success(), "register {user}: {out:?}");
    }

    /// `POST /login` with a password: the status and the answer's JSON.
    async fn raw_login(&self, user: &str, password: &str) -> (u16, Value) {
        let body = serde_json::json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": user },
            "password": password,
        });
        let r = reqwest::Client::new()
            .post(format!("{}/_matrix/client/v3/login", self.url()))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or_default())
    }

    /// `POST /login` with a password: the status and `errcode`.
    pub async fn password_login(&self, user: &str, password: &str) -> (u16, Option<String>) {
        let (status, json) = self.raw_login(user, password).await;
        (status, json["errcode"].as_str().map(str::to_owned))
    }

    /// The IDs of `user`'s devices that published end-to-end keys, as `watcher` (another user, with
    /// `password`) sees them through `POST /keys/query`.
    pub async fn devices_with_keys(&self, user: &str, watcher: &str, password: &str) -> Vec<String> {
        let http = reqwest::Client::new();
        let (_, login) = self.raw_login(watcher, password).await;
        let token = login["access_token"].as_str().expect("watcher login");
        let user_id = format!("@{user}:localhost");
        let keys: Value = http
            .post(format!("{}/_matrix/client/v3/keys/query", self.url()))
            .bearer_auth(token)
            .json(&serde_json::json!({ "device_keys": { &user_id: [] } }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut ids: Vec<String> = keys["device_keys"][&user_id]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        ids.sort();
        ids
    }

    /// A matrix-sdk client logged in as `user` (end-to-end encryption on, keys in memory).
    pub async fn client(&self, user: &str, password: &str) -> Client {
        client_at(&self.url(), user, password).await
    }
}

/// A logged-in client of the homeserver at `url` (Synapse, or a front of it).
pub async fn client_at(url: &str, user: &str, password: &str) -> Client {
    let client = Client::builder().homeserver_url(url).build().await.unwrap();
    client
        .matrix_auth()
        .login_username(user, password)
        .initial_device_display_name("test sender")
        .send()
        .await
        .unwrap();
    client.sync_once(SyncSettings::default()).await.unwrap();
    client
}

/// Syncs `client` until `done` holds (bounded).
pub async fn sync_until(client: &Client, what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        client
            .sync_once(SyncSettings::default().timeout(Duration::from_millis(500)))
            .await
            .unwrap();
        if done().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
    }
}
