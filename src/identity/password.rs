//! Where the bot's password comes from, and the passwords it generates.

use std::io::IsTerminal;

use crate::config::Secret;

/// Where a password was found: logged (never the value) so an operator knows which one was used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PasswordSource {
    Env,
    Secret,
    Prompt,
    /// `WICKRIO_ROTATE_PASSWORD`, found to be the password already (a rotation done before).
    Rotate,
}

impl std::fmt::Display for PasswordSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PasswordSource::Env => "WICKRIO_BOT_PASSWORD",
            PasswordSource::Secret => "the Secrets Manager secret's `password` key",
            PasswordSource::Prompt => "the terminal prompt",
            PasswordSource::Rotate => "WICKRIO_ROTATE_PASSWORD",
        })
    }
}

/// Asks a person for a password, without echo. A trait so that tests can answer it.
pub trait Prompter {
    fn is_interactive(&self) -> bool;
    fn ask(&mut self, prompt: &str) -> std::io::Result<Secret>;
    fn say(&mut self, text: &str);
}

/// The controlling terminal, when stdin is one (`docker run -ti`).
pub struct Terminal;

impl Prompter for Terminal {
    fn is_interactive(&self) -> bool {
        std::io::stdin().is_terminal()
    }

    fn ask(&mut self, prompt: &str) -> std::io::Result<Secret> {
        // rpassword shows the prompt first and turns echo off after: what a quick typist (or a
        // paste) sends in between is echoed. Echo goes off here before the prompt is shown.
        let _quiet = EchoOff::on_terminal()?;
        rpassword::prompt_password(prompt).map(Secret::new)
    }

    fn say(&mut self, text: &str) {
        eprintln!("{text}");
    }
}

/// The controlling terminal with echo off until dropped, when its settings are put back.
struct EchoOff {
    tty: std::fs::File,
    saved: nix::sys::termios::Termios,
}

impl EchoOff {
    fn on_terminal() -> std::io::Result<EchoOff> {
        use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
        let tty = std::fs::OpenOptions::new().read(true).write(true).open("/dev/tty")?;
        let saved = tcgetattr(&tty)?;
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        quiet.local_flags.insert(LocalFlags::ECHONL);
        // TCSANOW, not TCSAFLUSH: what was typed ahead is part of the password, never dropped.
        tcsetattr(&tty, SetArg::TCSANOW, &quiet)?;
        Ok(EchoOff { tty, saved })
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(&self.tty, nix::sys::termios::SetArg::TCSANOW, &self.saved);
    }
}

/// How many times a mismatched re-entry is asked again before giving up.
const PROMPT_TRIES: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error(
        "no password given. Give the bot's password in one of three ways: the WICKRIO_BOT_PASSWORD environment variable; the `password` key of the Secrets Manager secret named by AWS_SECRET_NAME; or interactively, by running with a terminal (docker run -ti) and answering the prompt"
    )]
    None,
    #[error("the passwords entered did not match {PROMPT_TRIES} times")]
    Mismatch,
    #[error("cannot read the password from the terminal")]
    Prompt(#[source] std::io::Error),
}

/// The password, from the environment, else the secret, else the terminal. On first run the terminal
/// asks twice and repeats until both entries match.
pub(crate) fn obtain(
    env: Option<Secret>,
    secret: Option<Secret>,
    first_run: bool,
    prompter: &mut dyn Prompter,
) -> Result<(Secret, PasswordSource), PasswordError> {
    if let Some(p) = env {
        return Ok((p, PasswordSource::Env));
    }
    if let Some(p) = secret {
        return Ok((p, PasswordSource::Secret));
    }
    if !prompter.is_interactive() {
        return Err(PasswordError::None);
    }
    for _ in 0..PROMPT_TRIES {
        let first = prompter.ask("Enter the password:").map_err(PasswordError::Prompt)?;
        if first.expose().is_empty() {
            prompter.say("The password cannot be empty.");
            continue;
        }
        if !first_run {
            return Ok((first, PasswordSource::Prompt));
        }
        let again = prompter.ask("Re-enter the password:").map_err(PasswordError::Prompt)?;
        if again == first {
            return Ok((first, PasswordSource::Prompt));
        }
        prompter.say("The passwords do not match; try again.");
    }
    Err(PasswordError::Mismatch)
}

/// A new password: 24 letters and digits from the OS CSPRNG (about 143 bits).
pub fn generate() -> Secret {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(24);
    let mut buf = zeroize::Zeroizing::new([0u8; 64]);
    while out.len() < 24 {
        getrandom::fill(buf.as_mut()).expect("the operating system's random number generator failed");
        // Rejection sampling: 248 = 4 * 62, so every character is equally likely.
        for &b in buf.iter().filter(|b| **b < 248) {
            if out.len() == 24 {
                break;
            }
            out.push(ALPHABET[(b % 62) as usize] as char);
        }
    }
    Secret::new(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Scripted {
        answers: Vec<&'static str>,
        said: Vec<String>,
        interactive: bool,
    }

    impl Prompter for Scripted {
        fn is_interactive(&self) -> bool {
            self.interactive
        }
        fn ask(&mut self, _: &str) -> std::io::Result<Secret> {
            Ok(Secret::new(self.answers.remove(0).into()))
        }
        fn say(&mut self, text: &str) {
            self.said.push(text.into());
        }
    }

    #[test]
    fn env_wins_then_secret_then_prompt() {
        let mut p = Scripted {
            answers: vec!["typed"],
            said: vec![],
            interactive: true,
        };
        let (pw, src) = obtain(
            Some(Secret::new("e".into())),
            Some(Secret::new("s".into())),
            false,
            &mut p,
        )
        .unwrap();
        assert_eq!((pw.expose(), src), ("e", PasswordSource::Env));
        let (pw, src) = obtain(None, Some(Secret::new("s".into())), false, &mut p).unwrap();
        assert_eq!((pw.expose(), src), ("s", PasswordSource::Secret));
        let (pw, src) = obtain(None, None, false, &mut p).unwrap();
        assert_eq!((pw.expose(), src), ("typed", PasswordSource::Prompt));
    }

    #[test]
    fn first_run_asks_again_until_entries_match() {
        let mut p = Scripted {
            answers: vec!["one", "two", "three", "three"],
            said: vec![],
            interactive: true,
        };
        let (pw, _) = obtain(None, None, true, &mut p).unwrap();
        assert_eq!(pw.expose(), "three");
        assert_eq!(p.said, vec!["The passwords do not match; try again."]);
    }

    #[test]
    fn no_terminal_and_no_password_names_the_three_ways() {
        let mut p = Scripted {
            answers: vec![],
            said: vec![],
            interactive: false,
        };
        let msg = obtain(None, None, true, &mut p).unwrap_err().to_string();
        assert!(msg.contains("WICKRIO_BOT_PASSWORD") && msg.contains("Secrets Manager") && msg.contains("-ti"));
    }

    #[test]
    fn generated_passwords_are_24_letters_and_digits() {
        let a = generate();
        assert_eq!(a.expose().len(), 24);
        assert!(a.expose().chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, generate());
    }
}
