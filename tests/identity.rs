//! The first-run password ritual through the real binary: banner, sealed identity, refusals,
//! the terminal prompt, rotation, and that no password leaks outside the banner.

use crate::common;

use std::process::{Output, Stdio};

use common::{Bot, INITIAL_PASSWORD, Terminal, generated_password};

const EXIT_LOGIN: i32 = 3;

fn state_file(bot: &Bot, name: &str) -> Vec<u8> {
    std::fs::read(bot.root.join("state").join(name)).unwrap()
}

/// Runs `retention-bot import` (it logs in like `run`, then exits) with no input file content.
fn login_only(bot: &Bot) -> Output {
    let empty = bot.root.join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    bot.command()
        .arg("import")
        .arg(&empty)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn first_run_seals_a_new_identity_and_only_the_generated_password_opens_it_later() {
    let tmp = tempfile::tempdir().unwrap();
    let mut bot = Bot::prepare(tmp.path(), &[]);
    let mut everything = String::new();

    let first = login_only(&bot);
    everything.push_str(&text(&first));
    assert!(first.status.success(), "{}", text(&first));
    let stdout = String::from_utf8_lossy(&first.stdout).into_owned();
    for line in [
        "**** GENERATED PASSWORD ****",
        "DO NOT LOSE THIS PASSWORD, YOU WILL NEED TO ENTER IT EVERY TIME",
        "TO START THE BOT",
    ] {
        assert!(stdout.contains(line), "{stdout}");
    }
    let generated = generated_password(&stdout).unwrap();
    assert_eq!(generated.len(), 24);
    assert!(generated.chars().all(|c| c.is_ascii_alphanumeric()));
    // The public key: written to a file, and printed as groups of four hex digits.
    let public_key = String::from_utf8(state_file(&bot, "public_key.txt"))
        .unwrap()
        .trim()
        .to_owned();
    assert_eq!(public_key.len(), 64);
    let groups: Vec<&str> = public_key
        .as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    assert!(stdout.contains(&groups[..8].join(" ")), "{stdout}");
    let sealed = state_file(&bot, "identity.json");
    let identity: serde_json::Value = serde_json::from_slice(&sealed).unwrap();
    assert_eq!(identity["kdf"]["algorithm"], "argon2id");
    assert_eq!(identity["cipher"], "aes-256-gcm");

    // The initial password is refused with the specific message, and nothing changes.
    let again = login_only(&bot);
    everything.push_str(&text(&again));
    assert_eq!(again.status.code(), Some(EXIT_LOGIN));
    assert!(text(&again).contains("initial password"), "{}", text(&again));
    assert_eq!(state_file(&bot, "identity.json"), sealed);

    // Any other wrong password is refused plainly.
    bot.set_env("WICKRIO_BOT_PASSWORD", "not-the-password-at-all");
    let wrong = login_only(&bot);
    everything.push_str(&text(&wrong));
    assert_eq!(wrong.status.code(), Some(EXIT_LOGIN));
    assert!(text(&wrong).contains("wrong password") && !text(&wrong).contains("initial password"));
    assert_eq!(state_file(&bot, "identity.json"), sealed);

    // The generated password opens it.
    bot.set_env("WICKRIO_BOT_PASSWORD", &generated);
    let ok = login_only(&bot);
    everything.push_str(&text(&ok));
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(!String::from_utf8_lossy(&ok.stdout).contains("GENERATED PASSWORD"));

    // Rotation: the new password must be long enough...
    bot.set_env("WICKRIO_ROTATE_PASSWORD", "short");
    let short = login_only(&bot);
    assert_eq!(short.status.code(), Some(2));
    assert!(text(&short).contains("WICKRIO_ROTATE_PASSWORD"));
    // ...then the old one stops working and the new one works.
    let rotated = "rotated-password-0123";
    bot.set_env("WICKRIO_ROTATE_PASSWORD", rotated);
    let rotate = login_only(&bot);
    everything.push_str(&text(&rotate));
    assert!(rotate.status.success(), "{}", text(&rotate));
    assert_ne!(state_file(&bot, "identity.json"), sealed);
    bot.env.retain(|(k, _)| k != "WICKRIO_ROTATE_PASSWORD");
    let old = login_only(&bot);
    everything.push_str(&text(&old));
    assert_eq!(old.status.code(), Some(EXIT_LOGIN));
    bot.set_env("WICKRIO_BOT_PASSWORD", rotated);
    let new = login_only(&bot);
    everything.push_str(&text(&new));
    assert!(new.status.success(), "{}", text(&new));

    // No password appears anywhere in the output but the generated one, once, inside its banner.
    assert!(!everything.contains(INITIAL_PASSWORD), "initial password leaked");
    assert!(!everything.contains(rotated), "rotated password leaked");
    assert!(!everything.contains("not-the-password-at-all"), "wrong password leaked");
    assert_eq!(
        everything.matches(&generated).count(),
        1,
        "generated password outside the banner"
    );
    assert!(everything.contains(&format!("TO START THE BOT\n\"{generated}\"\n")));
}

#[test]
fn no_terminal_and_no_password_says_how_to_give_one() {
    let tmp = tempfile::tempdir().unwrap();
    let mut bot = Bot::prepare(tmp.path(), &[]);
    bot.env.retain(|(k, _)| k != "WICKRIO_BOT_PASSWORD");
    let out = login_only(&bot);
    assert_eq!(out.status.code(), Some(EXIT_LOGIN));
    let said = text(&out);
    for way in ["WICKRIO_BOT_PASSWORD", "AWS_SECRET_NAME", "-ti"] {
        assert!(said.contains(way), "{way} not in {said}");
    }
    assert!(!tmp.path().join("state/identity.json").exists());
}

/// The `docker run -ti` first run: prompts on a real pseudo-terminal, a mismatched re-entry asks
/// again, nothing typed is echoed, and the banner follows.
#[test]
fn terminal_prompt_asks_twice_and_again_on_mismatch() {
    let tmp = tempfile::tempdir().unwrap();
    let mut bot = Bot::prepare(tmp.path(), &[]);
    bot.env.retain(|(k, _)| k != "WICKRIO_BOT_PASSWORD");
    let mut term = Terminal::spawn(bot.command());
    term.wait_for("Enter the password:", 1);
    term.type_line("first-typed-pw");
    term.wait_for("Re-enter the password:", 1);
    term.type_line("different-pw");
    term.wait_for("do not match", 1);
    term.wait_for("Enter the password:", 2);
    term.type_line("typed-initial-pw");
    term.wait_for("Re-enter the password:", 2);
    term.type_line("typed-initial-pw");
    term.wait_for("TO START THE BOT", 1);
    term.wait_for("retention-bot ready", 1);
    term.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(term.wait().success());

    let shown = term.screen();
    for typed in ["first-typed-pw", "different-pw", "typed-initial-pw"] {
        assert!(!shown.contains(typed), "{typed} was echoed:\n{shown}");
    }
    assert!(generated_password(&shown.replace('\r', "")).is_some(), "{shown}");
    assert!(tmp.path().join("state/identity.json").exists());
}

/// A first run whose banner cannot be shown: it must seal nothing (else nobody ever learns the
/// password) and say why, with exit status 3, and never panic.
fn first_run_without_a_reader(close_stdout: bool) -> (Option<i32>, String, tempfile::TempDir) {
    use std::os::unix::process::CommandExt;
    let tmp = tempfile::tempdir().unwrap();
    let bot = Bot::prepare(tmp.path(), &[]);
    let mut cmd = bot.command();
    cmd.stdin(Stdio::null()).stderr(Stdio::piped());
    if close_stdout {
        // SAFETY: only close(2) between fork and exec.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(|| {
                nix::libc::close(1);
                Ok(())
            });
        }
    } else {
        cmd.stdout(Stdio::piped());
    }
    let mut child = cmd.spawn().unwrap();
    // As `| head -0`: whoever reads the output is gone before the banner comes.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        tmp,
    )
}

#[test]
fn a_banner_nobody_can_read_seals_nothing_and_says_so() {
    for close_stdout in [true, false] {
        let (code, stderr, tmp) = first_run_without_a_reader(close_stdout);
        assert_eq!(code, Some(3), "closed stdout {close_stdout}: {stderr}");
        assert!(
            stderr.contains("cannot show the generated password") && stderr.contains("nothing was sealed"),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(!tmp.path().join("state/identity.json").exists());
        // And the next start, with a reader, is a first run again with the same initial password.
        let out = login_only(&Bot::prepare(tmp.path(), &[]));
        assert!(generated_password(&text(&out)).is_some(), "{}", text(&out));
    }
}
