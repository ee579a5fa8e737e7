//! Ingest benchmark: a fresh `retention-bot` per scenario, loaded over loopback HTTP for
//! `BENCH_SECS` seconds (default 10), next to a `dd` baseline of the same directory's disk.
//!
//! `cargo bench --bench ingest`; `BENCH_DIR` picks where the temp directory goes (default /tmp),
//! `BENCH_SCENARIOS` which scenarios run (default `abc`); glibc's `MALLOC_*` variables are passed
//! on to the bot, to measure allocator settings.
//! Missed targets are printed, not fatal; a bot that does not start or stop cleanly, or message
//! files whose line count differs from what was acknowledged, are.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

mod support;
use support::{Guard as Bot, free_port, row, vm_mib};
#[path = "../tests/common/attacks.rs"]
mod attacks;
#[path = "peers/fluent_bit.rs"]
mod fluent_bit;

/// Every message line is exactly this long, newline included.
const LINE_BYTES: usize = 500;
const ID_KEY: &str = r#""message_id":""#;

struct Scenario {
    name: &'static str,
    content_type: &'static str,
    batch: usize,
    conns: usize,
    /// Sixteen of every attack of tests/abuse.rs, over and over, beside the load.
    under_attack: bool,
}

const NDJSON: Scenario = Scenario {
    name: "(a) ndjson x1000, 4 conns",
    content_type: "application/x-ndjson",
    batch: 1000,
    conns: 4,
    under_attack: false,
};
const JSON: Scenario = Scenario {
    name: "(b) json x1, 64 conns",
    content_type: "application/json",
    batch: 1,
    conns: 64,
    under_attack: false,
};
const UNDER_ATTACK: Scenario = Scenario {
    name: "(c) json x1, 64 conns, under attack",
    under_attack: true,
    ..JSON
};
/// The body budget of the bot under attack (and of no other): the bound is this plus 64 MiB.
const ATTACK_BUDGET_MIB: usize = 64;
/// Its largest body, which the attacks send.
const ATTACK_MAX_BODY: usize = 16 << 20;

/// One WickrIO text message, padded to `LINE_BYTES - 1` bytes (no newline).
fn message(id: u64) -> String {
    let tail = format!(
        r#"","message_id":"{id:032x}","msg_ts":"1691176258.901277","msgtype":1000,"receiver":"dr001@example","sender":"dr002@example","sender_type":"normal","time":"8/4/23 7:10 PM","time_iso":"2023-08-04 19:10:58.901","ttl":"9/3/23 7:10 PM","vgroupid":"{:064x}"}}"#,
        id.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    );
    let head = r#"{"message":""#;
    let text = "The quick brown fox jumps over the lazy dog. ".repeat(LINE_BYTES / 16);
    format!("{head}{}{tail}", &text[..LINE_BYTES - 1 - head.len() - tail.len()])
}

/// Who takes the load: the bot, or the peer users would otherwise pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    Bot,
    FluentBit,
}

/// A whole HTTP request built before timing; each send copies it and stamps fresh message ids in.
struct Template {
    request: Vec<u8>,
    id_offsets: Vec<usize>,
    peer: Peer,
}

impl Template {
    /// The bot takes a batch as NDJSON; Fluent Bit's `in_http` takes it as a JSON array.
    fn new(s: &Scenario, addr: &str, peer: Peer) -> Self {
        let (mut body, mut id_offsets) = (Vec::new(), Vec::new());
        let array = peer == Peer::FluentBit && s.batch > 1;
        for i in 0..s.batch {
            if array {
                body.push(if i == 0 { b'[' } else { b',' });
            }
            let line = message(i as u64);
            id_offsets.push(body.len() + line.find(ID_KEY).expect("message has an id") + ID_KEY.len());
            body.extend_from_slice(line.as_bytes());
            if s.batch > 1 && !array {
                body.push(b'\n');
            }
        }
        if array {
            body.push(b']');
        }
        let (path, ct) = match peer {
            Peer::Bot => ("/v1/messages", s.content_type),
            Peer::FluentBit => (fluent_bit::PATH, "application/json"),
        };
        let len = body.len();
        let head =
            format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {ct}\r\nContent-Length: {len}\r\n\r\n");
        id_offsets.iter_mut().for_each(|at| *at += head.len());
        let request = [head.as_bytes(), &body].concat();
        Self {
            request,
            id_offsets,
            peer,
        }
    }

    /// Messages an answer acknowledges: the bot says how many in a 202; Fluent Bit's 201 takes all.
    fn accepted(&self, status: usize, body: &[u8]) -> Option<u64> {
        match self.peer {
            Peer::Bot if status == 202 => serde_json::from_slice::<serde_json::Value>(body).ok()?["accepted"].as_u64(),
            Peer::FluentBit if status == fluent_bit::ACCEPTED => Some(self.id_offsets.len() as u64),
            _ => None,
        }
    }

    fn stamp(&self, first_id: u64, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.request);
        for (i, &at) in self.id_offsets.iter().enumerate() {
            write!(&mut out[at..at + 32], "{:032x}", first_id + i as u64).expect("32 hex digits fit");
        }
    }
}

/// A bare HTTP/1.1 keep-alive connection, one request at a time. Written by hand because on two
/// cores the load generator competes with the bot: with reqwest, scenario (b) spent 78% of a core in
/// the client and measured the client (23k msg/s); this takes 43% and measures the bot.
struct Conn(tokio::net::TcpStream, Vec<u8>);

impl Conn {
    async fn open(addr: &str) -> std::io::Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self(stream, Vec::with_capacity(4096)))
    }

    /// Sends a complete request; returns the answer's status and body (which must have a length).
    async fn send(&mut self, request: &[u8]) -> std::io::Result<(usize, Vec<u8>)> {
        let timed_out = |_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer within 30 s");
        let answer = tokio::time::timeout(Duration::from_secs(30), self.exchange(request)).await;
        answer.map_err(timed_out)?
    }

    async fn exchange(&mut self, request: &[u8]) -> std::io::Result<(usize, Vec<u8>)> {
        let Self(stream, buf) = self;
        stream.write_all(request).await?;
        let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let number = |s: Option<&str>| s.and_then(|s| s.trim().parse().ok()).ok_or_else(|| bad(&head));
                let status = number(head.get(9..12))?;
                let len: usize = number(head.split("\r\ncontent-length:").nth(1).and_then(|v| v.lines().next()))?;
                if buf.len() >= end + 4 + len {
                    let body = buf[end + 4..end + 4 + len].to_vec();
                    buf.drain(..end + 4 + len);
                    return Ok((status, body));
                }
            }
            if stream.read_buf(buf).await? == 0 {
                return Err(bad("connection closed"));
            }
        }
    }
}

/// What the load generator saw of one scenario.
#[derive(Default)]
struct Stats {
    acked: u64,
    requests: u64,
    failed: u64,
    latencies_us: Vec<u32>,
    secs: f64,
    rss_mib: f64,
    rss_now_mib: f64,
    /// CPU of the process under load and of the load generator, in % of one core.
    cpu: (f64, f64),
    attacks: u64,
}

impl Stats {
    fn fail(&mut self, what: String) {
        self.failed += 1;
        if self.failed <= 5 {
            eprintln!("request failed: {what}");
        }
    }

    fn msgs_per_s(&self) -> f64 {
        self.acked as f64 / self.secs
    }

    fn mb_per_s(&self) -> f64 {
        (self.acked * LINE_BYTES as u64) as f64 / self.secs / 1e6
    }

    /// The `p` quantile of acknowledgement latency in ms (latencies must be sorted).
    fn ms(&self, p: f64) -> f64 {
        let at = ((self.latencies_us.len().max(1) - 1) as f64 * p).round() as usize;
        self.latencies_us.get(at).map_or(f64::NAN, |&us| f64::from(us) / 1000.0)
    }
}

async fn worker(addr: String, t: Arc<Template>, ids: Arc<AtomicU64>, until: Instant) -> Stats {
    let mut st = Stats::default();
    let mut conn = Conn::open(&addr).await.expect("connect to the bot");
    let (mut request, batch) = (Vec::with_capacity(t.request.len()), t.id_offsets.len() as u64);
    while Instant::now() < until {
        t.stamp(ids.fetch_add(batch, Ordering::Relaxed), &mut request);
        let start = Instant::now();
        let answer = conn.send(&request).await;
        let micros = start.elapsed().as_micros().try_into().unwrap_or(u32::MAX);
        st.requests += 1;
        match answer {
            Ok((status, body)) if let Some(n) = t.accepted(status, &body) => {
                st.acked += n;
                st.latencies_us.push(micros);
            }
            Ok((status, body)) => st.fail(format!("{status} {}", String::from_utf8_lossy(&body))),
            Err(e) => {
                st.fail(e.to_string());
                conn = Conn::open(&addr).await.expect("reconnect to the bot");
            }
        }
    }
    st
}

/// Starts a bot writing under `root` on a free loopback port; returns it and its address.
fn spawn_bot(root: &Path, extra: &[(&str, String)]) -> (Bot, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    std::fs::create_dir_all(root).expect("create the bot's directory");
    let bot = Command::new(env!("CARGO_BIN_EXE_retention-bot"))
        .env_clear()
        .envs(extra.iter().map(|(k, v)| (k, v)))
        .envs(std::env::vars().filter(|(k, _)| k.starts_with("MALLOC_")))
        .env("WICKRIO_BOT_NAME", "bench")
        .env("WICKRIO_COMP_MESGDEST", root.join("m"))
        .env("WICKRIO_COMP_FILEDEST", root.join("f"))
        .env("WICKRIO_INGEST_ADDR", &addr)
        .env("WICKRIO_COMP_MIN_FREE_MB", "64")
        .env("RUST_LOG", "warn")
        // For builds with a sealed identity: a fresh one per bot, never a prompt.
        .env("WICKRIO_STATE_DIR", root.join("state"))
        .env("WICKRIO_BOT_PASSWORD", "bench-only-password")
        .stdin(Stdio::null())
        // The first-run banner needs a reader: the bot refuses to seal a password nobody sees.
        .stdout(std::fs::File::create(root.join("banner.txt")).expect("create the banner file"))
        .spawn();
    (Bot(bot.expect("start retention-bot")), addr)
}

async fn wait_healthy(Bot(bot): &mut Bot, addr: &str) {
    let health = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(mut conn) = Conn::open(addr).await
            && let Ok((200, _)) = conn.send(health.as_bytes()).await
        {
            return;
        }
        if let Some(status) = bot.try_wait().expect("poll the bot") {
            panic!("bot exited during start-up with {status}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("bot did not answer GET /healthz with 200 within 20 s");
}

/// SIGTERM, then waits (bounded) for a clean exit.
async fn stop_bot(Bot(bot): &mut Bot) {
    kill(Pid::from_raw(bot.id() as i32), Signal::SIGTERM).expect("SIGTERM the bot");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(status) = bot.try_wait().expect("poll the bot") {
            assert!(status.success(), "bot exited with {status}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("bot did not exit within 30 s of SIGTERM");
}

/// User + system CPU seconds of a process (utime and stime are in USER_HZ, 100 on Linux).
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/<pid>/stat");
    let mut fields = stat[stat.rfind(')').expect("comm in /proc/<pid>/stat") + 2..].split(' ');
    let mut ticks = |skip| {
        fields
            .nth(skip)
            .and_then(|t| t.parse::<u64>().ok())
            .expect("utime and stime")
    };
    (ticks(11) + ticks(0)) as f64 / 100.0
}

/// Lines and bytes in the closed message files (`receivedMessages_*.txt`, the default basename;
/// other `.txt` files such as manifests are not messages); no file may be left open.
fn count_lines(dir: &Path) -> (u64, u64) {
    let (mut lines, mut bytes) = (0, 0);
    for entry in std::fs::read_dir(dir).expect("read the message directory") {
        let path = entry.expect("directory entry").path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        assert!(!name.ends_with(".open"), "bot left {name} open after SIGTERM");
        if name.starts_with("receivedMessages_") && name.ends_with(".txt") {
            let data = std::fs::read(&path).expect("read a message file");
            lines += data.iter().filter(|b| **b == b'\n').count() as u64;
            bytes += data.len() as u64;
        }
    }
    (lines, bytes)
}

async fn run(s: &Scenario, root: &Path, secs: u64) -> Stats {
    let extra = if s.under_attack {
        vec![
            ("WICKRIO_INGEST_MAX_BUFFER", format!("{ATTACK_BUDGET_MIB}MiB")),
            ("WICKRIO_INGEST_MAX_BODY", ATTACK_MAX_BODY.to_string()),
            ("WICKRIO_INGEST_IDLE_SECS", "3".to_owned()),
        ]
    } else {
        Vec::new()
    };
    let (mut bot, addr) = spawn_bot(root, &extra);
    wait_healthy(&mut bot, &addr).await;
    let template = Template::new(s, &addr, Peer::Bot);
    let st = load(s, template, &addr, bot.0.id(), secs).await;
    stop_bot(&mut bot).await;
    let (lines, disk_bytes) = count_lines(&root.join("m"));
    report(s.name, &st);
    if s.under_attack {
        println!("  attacks       {} answered, none with 202", st.attacks);
    }
    println!(
        "  line check    {lines} lines ({disk_bytes} B) in m/receivedMessages_*.txt; {} messages acknowledged",
        st.acked
    );
    assert_eq!(
        lines, st.acked,
        "lines in the message files differ from the acknowledged messages"
    );
    st
}

/// The same load on Fluent Bit (see `peers/fluent_bit.rs`).
async fn run_fluent_bit(s: &Scenario, root: &Path, secs: u64, bin: &Path) -> Stats {
    let (mut peer, addr) = fluent_bit::start(bin, root);
    let template = Template::new(s, &addr, Peer::FluentBit);
    let st = load(s, template, &addr, peer.0.id(), secs).await;
    let lines = fluent_bit::stop(&mut peer, root);
    report(&format!("{} on Fluent Bit, storage.sync full", s.name), &st);
    println!(
        "  its output    {lines} records written by out_file after SIGTERM; {} acknowledged",
        st.acked
    );
    st
}

/// `s`'s load on the server at `addr` (process `pid`) for `secs` seconds.
async fn load(s: &Scenario, template: Template, addr: &str, pid: u32, secs: u64) -> Stats {
    let me = std::process::id();
    let (template, ids) = (Arc::new(template), Arc::new(AtomicU64::new(0)));
    let (cpu0, own_cpu0, start) = (cpu_secs(pid), cpu_secs(me), Instant::now());
    let until = start + Duration::from_secs(secs);
    let spawn = |_| tokio::spawn(worker(addr.to_owned(), template.clone(), ids.clone(), until));
    let attackers = s
        .under_attack
        .then(|| tokio::spawn(attack_until(addr.to_owned(), until)));
    let mut st = Stats::default();
    for worker in (0..s.conns).map(spawn).collect::<Vec<_>>() {
        let w = worker.await.expect("worker task");
        (st.acked, st.requests, st.failed) = (st.acked + w.acked, st.requests + w.requests, st.failed + w.failed);
        st.latencies_us.extend(w.latencies_us);
    }
    st.secs = start.elapsed().as_secs_f64();
    if let Some(attackers) = attackers {
        st.attacks = attackers.await.expect("attack task");
    }
    st.cpu = (
        (cpu_secs(pid) - cpu0) / st.secs * 100.0,
        (cpu_secs(me) - own_cpu0) / st.secs * 100.0,
    );
    st.rss_now_mib = vm_mib(pid, "VmRSS:");
    st.rss_mib = vm_mib(pid, "VmHWM:");
    st.latencies_us.sort_unstable();
    st
}

fn report(name: &str, st: &Stats) {
    let (requests, failed, rss, rss_now, secs) = (st.requests, st.failed, st.rss_mib, st.rss_now_mib, st.secs);
    let (msgs, mb, p50, p99, max) = (st.msgs_per_s(), st.mb_per_s(), st.ms(0.5), st.ms(0.99), st.ms(1.0));
    let (cpu, own_cpu) = st.cpu;
    println!("\n{name} ({secs:.1} s)");
    println!("  acknowledged  {msgs:.0} msg/s, {mb:.1} MB/s of message bytes");
    println!("  ack latency   p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms");
    let rate = requests as f64 / secs;
    println!("  requests      {requests} ({rate:.0}/s); not acknowledged or failed: {failed}");
    println!("  RSS           peak {rss:.1} MiB (VmHWM), {rss_now:.1} MiB at the end of the load (VmRSS)");
    println!("  CPU           server {cpu:.0}%, load generator {own_cpu:.0}% (100% = one core)");
}

/// Sixteen of every attack at once, round after round, until `until`; returns how many ran. An
/// attack answered 202 (its data kept) stops the benchmark.
async fn attack_until(addr: String, until: Instant) -> u64 {
    let port: u16 = addr
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the bot's port");
    let mut done = 0;
    while Instant::now() < until {
        let mut round = tokio::task::JoinSet::new();
        for kind in attacks::ATTACKS {
            for _ in 0..16 {
                round.spawn(async move { (kind, attacks::attack(kind, port, ATTACK_MAX_BODY).await) });
            }
        }
        while let Some(answered) = round.join_next().await {
            let (kind, answer) = answered.expect("attack task");
            assert!(attacks::acceptable(kind, answer), "{kind:?} was answered {answer:?}");
            done += 1;
        }
    }
    done
}

/// Runs `dd if=/dev/zero of=<dir>/dd.tmp <args>`; returns MB/s and seconds from its summary line.
fn dd(dir: &Path, args: &[&str]) -> (f64, f64) {
    let target = dir.join("dd.tmp");
    let of = format!("of={}", target.display());
    let argv = [&["if=/dev/zero", &of], args].concat();
    let out = Command::new("dd").args(&argv).env("LC_ALL", "C").output();
    let _ = std::fs::remove_file(&target);
    let out = out.expect("run dd");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "dd failed: {text}");
    // "268435456 bytes (268 MB, 256 MiB) copied, 0.52 s, 516 MB/s"
    let line = text.lines().find(|l| l.contains(" copied, "));
    let line = line.expect("dd's summary line");
    let words: Vec<&str> = line.split(' ').collect();
    let number = |i: usize| words[i].parse::<f64>().expect("a number in dd's summary line");
    let secs = number(words.iter().position(|w| *w == "s,").expect("dd's seconds") - 1);
    (number(0) / secs / 1e6, secs)
}

fn main() {
    let secs: u64 = std::env::var("BENCH_SECS").map_or(10, |v| v.parse().expect("BENCH_SECS: whole seconds"));
    let parent = std::env::var("BENCH_DIR").unwrap_or_else(|_| "/tmp".into());
    let tmp = tempfile::tempdir_in(parent).expect("create the temp dir");
    let dir = tmp.path();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let (shown, load) = (dir.display(), load.trim());
    println!("ingest benchmark in {shown}, {secs} s per scenario; load average {load}");

    let (seq_mb, _) = dd(dir, &["bs=1M", "count=256", "conv=fdatasync"]);
    let (sync_mb, sync_secs) = dd(dir, &["bs=4k", "count=2000", "oflag=dsync"]);
    let sync_ms = sync_secs / 2000.0 * 1000.0;
    println!("disk: 1M x256 fdatasync {seq_mb:.1} MB/s; 4k x2000 dsync {sync_mb:.2} MB/s = {sync_ms:.3} ms per sync");

    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let picked = std::env::var("BENCH_SCENARIOS").unwrap_or_else(|_| "abc".into());
    let pick = |s: &Scenario| picked.contains(&s.name[1..2]);
    let mut ran = Vec::new();
    for s in [&NDJSON, &JSON, &UNDER_ATTACK].into_iter().filter(|s| pick(s)) {
        ran.push((s, rt.block_on(run(s, &dir.join(&s.name[1..2]), secs))));
    }
    let stats = |s: &Scenario| ran.iter().find(|(r, _)| r.name == s.name).map(|(_, st)| st);
    // The peer on the scenarios without attacks (its answers to the attack mix are not the bot's).
    let peer = fluent_bit::binary();
    let mut peer_ran = Vec::new();
    match &peer {
        Some(bin) => {
            println!("\npeer: {} ({})", fluent_bit::version(bin), bin.display());
            for s in [&NDJSON, &JSON].into_iter().filter(|s| pick(s)) {
                let root = dir.join(format!("fluent-bit-{}", &s.name[1..2]));
                peer_ran.push((s.name, rt.block_on(run_fluent_bit(s, &root, secs, bin))));
            }
        }
        None => println!("\npeer: Fluent Bit not run (set FLUENT_BIT, or put fluent-bit on PATH)"),
    }
    let peer_stats = |s: &Scenario| peer_ran.iter().find(|(n, _)| *n == s.name).map(|(_, st)| st);
    println!();
    row("summary", "figure".into(), "target / baseline", None);
    if let Some(a) = stats(&NDJSON) {
        summarise_a(a, seq_mb);
        versus_peer("(a)", a, peer_stats(&NDJSON), None);
    }
    if let Some(b) = stats(&JSON) {
        summarise_b(b, sync_mb, sync_ms);
        versus_peer("(b)", b, peer_stats(&JSON), Some(2.0));
    }
    if let (Some(c), Some(b)) = (stats(&UNDER_ATTACK), stats(&JSON)) {
        summarise_c(c, b);
    }
}

/// The bot's rate against Fluent Bit's on the same scenario, against `target` (a ratio) if any.
fn versus_peer(label: &str, bot: &Stats, peer: Option<&Stats>, target: Option<f64>) {
    let name = format!("{label} vs Fluent Bit sync=full");
    let wanted = target.map_or(String::new(), |t| format!(">= {t:.1}x; "));
    match peer {
        Some(p) => {
            let ratio = bot.msgs_per_s() / p.msgs_per_s();
            let rss = format!("RSS {:.1} vs {:.1} MiB", bot.rss_mib, p.rss_mib);
            row(
                &name,
                format!("{ratio:.2}x"),
                &format!("{wanted}{:.0} msg/s; {rss}", p.msgs_per_s()),
                target.map(|t| ratio >= t),
            );
        }
        None => row(&name, "not run".into(), &format!("{wanted}no fluent-bit binary"), None),
    }
}
fn summarise_a(a: &Stats, seq_mb: f64) {
    let (a_msgs, a_mb) = (a.msgs_per_s(), a.mb_per_s());
    let seq = format!("dd 1M fdatasync {seq_mb:.1} MB/s (bot: {:.0}%)", a_mb / seq_mb * 100.0);
    row("(a) msg/s", format!("{a_msgs:.0}"), ">= 100000", Some(a_msgs >= 1e5));
    row("(a) MB/s", format!("{a_mb:.1}"), &seq, None);
    row(
        "(a) vs dd 1M fdatasync",
        format!("{:.1}%", a_mb / seq_mb * 100.0),
        ">= 30%",
        Some(a_mb / seq_mb >= 0.3),
    );
    row(
        "(a) p50 / p99 ms",
        format!("{:.2} / {:.2}", a.ms(0.5), a.ms(0.99)),
        "",
        None,
    );
    row(
        "(a) peak RSS MiB",
        format!("{:.1}", a.rss_mib),
        "< 64",
        Some(a.rss_mib < 64.0),
    );
    row("(a) non-202 or failed", a.failed.to_string(), "0", Some(a.failed == 0));
}

fn summarise_b(b: &Stats, sync_mb: f64, sync_ms: f64) {
    let (b_msgs, b_mb, b_p99) = (b.msgs_per_s(), b.mb_per_s(), b.ms(0.99));
    let dsync = format!("dd 4k dsync {sync_mb:.2} MB/s, {sync_ms:.3} ms/sync");
    row("(b) msg/s", format!("{b_msgs:.0}"), ">= 20000", Some(b_msgs >= 2e4));
    row(
        "(b) p50 / p99 ms",
        format!("{:.2} / {b_p99:.2}", b.ms(0.5)),
        "p99 < 20",
        Some(b_p99 < 20.0),
    );
    row("(b) MB/s", format!("{b_mb:.1}"), &dsync, None);
    row(
        "(b) peak RSS MiB",
        format!("{:.1}", b.rss_mib),
        "< 64",
        Some(b.rss_mib < 64.0),
    );
    row("(b) non-202 or failed", b.failed.to_string(), "0", Some(b.failed == 0));
}

fn summarise_c(c: &Stats, b: &Stats) {
    let (c_msgs, b_msgs) = (c.msgs_per_s(), b.msgs_per_s());
    let bound = (ATTACK_BUDGET_MIB + 64) as f64;
    row(
        "(c) msg/s under attack",
        format!("{c_msgs:.0}"),
        &format!("(b) {b_msgs:.0}: {:.0}%", c_msgs / b_msgs * 100.0),
        None,
    );
    row("(c) non-202 or failed", c.failed.to_string(), "0", Some(c.failed == 0));
    row(
        "(c) peak RSS MiB",
        format!("{:.1}", c.rss_mib),
        &format!("< {bound:.0} (budget {ATTACK_BUDGET_MIB} + 64)"),
        Some(c.rss_mib < bound),
    );
}
