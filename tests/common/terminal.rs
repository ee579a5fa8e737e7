//! A program on a pseudo-terminal (as under `docker run -ti`), and the first-run password banner.

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The password a first run printed in its banner, if `output` holds one.
pub fn generated_password(output: &str) -> Option<String> {
    let mut lines = output.lines().skip_while(|l| *l != "TO START THE BOT");
    lines.next()?;
    Some(lines.next()?.trim().trim_matches('"').to_owned())
}

/// A program run on a pseudo-terminal of its own (as under `docker run -ti`): what it shows is
/// collected, and lines can be typed at it.
pub struct Terminal {
    child: Child,
    screen: std::sync::Arc<std::sync::Mutex<String>>,
    keyboard: std::fs::File,
}

impl Terminal {
    pub fn spawn(mut cmd: Command) -> Terminal {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let pty = nix::pty::openpty(None, None).unwrap();
        cmd.stdin(Stdio::from(pty.slave.try_clone().unwrap()))
            .stdout(Stdio::from(pty.slave.try_clone().unwrap()))
            .stderr(Stdio::from(pty.slave.try_clone().unwrap()));
        let slave_fd = pty.slave.as_raw_fd();
        // SAFETY: only async-signal-safe calls between fork and exec.
        #[allow(unsafe_code)]
        unsafe {
            // A session of its own with the pty as controlling terminal, so /dev/tty is the pty.
            cmd.pre_exec(move || {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                if nix::libc::ioctl(slave_fd, nix::libc::TIOCSCTTY, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        drop(pty.slave);
        let screen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut display = std::fs::File::from(pty.master);
        let keyboard = display.try_clone().unwrap();
        let shown = screen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = display.read(&mut buf) {
                if n == 0 {
                    break;
                }
                shown.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Terminal {
            child,
            screen,
            keyboard,
        }
    }

    /// Waits (up to 60 s) until `needle` has been shown `occurrence` times.
    pub fn wait_for(&self, needle: &str, occurrence: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.screen.lock().unwrap().matches(needle).count() < occurrence {
            assert!(Instant::now() < deadline, "no {needle:?} on screen:\n{}", self.screen());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn type_line(&mut self, line: &str) {
        use std::io::Write;
        self.keyboard.write_all(format!("{line}\n").as_bytes()).unwrap();
    }

    /// Everything shown so far, with the terminal's carriage returns removed.
    pub fn screen(&self) -> String {
        self.screen.lock().unwrap().replace('\r', "")
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    pub fn wait(&mut self) -> ExitStatus {
        self.child.wait().unwrap()
    }
}
