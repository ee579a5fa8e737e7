//! Helpers shared by the benchmarks: child process guard, /proc figures, the summary line.
#![allow(dead_code)] // each benchmark uses a different part

use std::process::Child;

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
