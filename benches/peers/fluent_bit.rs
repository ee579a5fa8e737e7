//! Fluent Bit, the peer a user would otherwise pick, under the ingest benchmark's load: `in_http`
//! with filesystem buffering and `storage.sync full`, into `out_file`. It answers 201 before any
//! sync whatever `storage.sync` says, so it is not an equal-durability baseline: the bot answers only
//! after its fsync.
//!
//! `FLUENT_BIT` names its binary, else `fluent-bit` is looked for on `PATH`; without either its rows
//! say "not run". docs/benchmarks.md gives the one command that builds 5.1.1 from its source release.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::{Guard, free_port};

/// The tag its `in_http` gives records: the request path.
pub const PATH: &str = "/bench";
/// Its `in_http` answer to a body it took (the plugin's default).
pub const ACCEPTED: usize = 201;

/// Where the binary is, if anywhere.
pub fn binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("FLUENT_BIT") {
        return Some(path.into());
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join("fluent-bit"))
        .find(|p| p.is_file())
}

/// Its version line (`Fluent Bit v5.1.1`), for the report.
pub fn version(bin: &Path) -> String {
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .expect("run fluent-bit --version");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("unknown")
        .trim()
        .to_owned()
}

/// A running Fluent Bit writing under `root`; returns it and its address once it listens.
pub fn start(bin: &Path, root: &Path) -> (Guard, String) {
    let port = free_port();
    let (buffer, out) = (root.join("buffer"), root.join("out"));
    for dir in [&buffer, &out] {
        std::fs::create_dir_all(dir).expect("create Fluent Bit's directories");
    }
    let config = format!(
        "[SERVICE]\n    flush 1\n    log_level error\n    storage.path {}\n    storage.sync full\n\n\
         [INPUT]\n    name http\n    listen 127.0.0.1\n    port {port}\n    storage.type filesystem\n\n\
         [OUTPUT]\n    name file\n    match *\n    path {}\n",
        buffer.display(),
        out.display()
    );
    let conf = root.join("fluent-bit.conf");
    std::fs::write(&conf, config).expect("write Fluent Bit's configuration");
    let log = std::fs::File::create(root.join("fluent-bit.log")).expect("create Fluent Bit's log");
    let child = Command::new(bin)
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .spawn()
        .expect("start fluent-bit");
    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "Fluent Bit did not listen on {addr} within 20 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (Guard(child), addr)
}

/// SIGTERM, a wait for it to flush and exit (bounded), then the records its `out_file` wrote.
pub fn stop(Guard(child): &mut Guard, root: &Path) -> u64 {
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).expect("SIGTERM Fluent Bit");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("poll Fluent Bit").is_none() {
        assert!(
            Instant::now() < deadline,
            "Fluent Bit did not exit within 60 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut lines = 0;
    for entry in std::fs::read_dir(root.join("out")).expect("read Fluent Bit's output") {
        let data = std::fs::read(entry.expect("directory entry").path()).expect("read an output file");
        lines += data.iter().filter(|b| **b == b'\n').count() as u64;
    }
    lines
}
