//! Whose the bot's directories are. Like OpenSSH's StrictModes: a spool or state directory that
//! another user owns, or that others may write to, lets them replace, remove or read what the bot
//! keeps, so the bot refuses to use it and says how to fix it. The same holds for every directory
//! above it, unless it is root's or sticky (as /tmp is: others cannot rename what is not theirs).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::sys::stat::Mode;

use super::ConfigError;
use crate::error_chain::Chain;

/// Checks `dir` (the setting `var` names it) and every directory above it. Call it as the user the
/// bot runs as, after any change of user.
pub fn check_private_dir(var: &'static str, dir: &Path) -> Result<(), ConfigError> {
    check_private_dir_for(var, dir, nix::unistd::geteuid().as_raw())
}

fn check_private_dir_for(var: &'static str, configured: &Path, me: u32) -> Result<(), ConfigError> {
    // Through any links to the directory really used (a link someone could swap needs a parent
    // they can write to, which the walk up below refuses).
    let real = std::fs::canonicalize(configured).map_err(|e| {
        ConfigError::new(
            var,
            format!("cannot inspect {}: {e}", configured.display(), e = Chain(&e)),
            "an existing directory",
        )
    })?;
    check_own_dir(var, &real, me)?;
    check_parents(var, configured, &real, me)
}

/// The directory itself (already through any links): it must exist, be a directory, be the bot's
/// user's and be closed to other writers. Kept apart from the walk up, which judges parents by
/// other rules.
fn check_own_dir(var: &'static str, dir: &Path, me: u32) -> Result<(), ConfigError> {
    let meta = std::fs::metadata(dir).map_err(|e| {
        ConfigError::new(
            var,
            format!("cannot inspect {}: {e}", dir.display(), e = Chain(&e)),
            "an existing directory",
        )
    })?;
    if !meta.is_dir() {
        return Err(ConfigError::new(
            var,
            format!("{} is not a directory", dir.display()),
            "a directory",
        ));
    }
    if meta.uid() != me {
        return Err(ConfigError::new(
            var,
            format!(
                "{} belongs to user {}, not to this bot's user {me}",
                dir.display(),
                meta.uid()
            ),
            format!(
                "a directory of the bot's own: chown {me} {} (or WICKRIO_RUN_AS in the container)",
                dir.display()
            ),
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(ConfigError::new(
            var,
            format!(
                "{} may be written by other users (mode {:o})",
                dir.display(),
                meta.mode() & 0o7777
            ),
            format!("a directory only the bot writes: chmod go-w {}", dir.display()),
        ));
    }
    Ok(())
}

/// Walks up from both the directory as configured and the directory `dir` it really is, so that
/// each parent is checked once whichever path leads to it.
fn check_parents(var: &'static str, configured: &Path, dir: &Path, me: u32) -> Result<(), ConfigError> {
    // Above the directory as configured (whoever may write there may re-point a link in it) and
    // above the directory it really is.
    let configured = std::path::absolute(configured).unwrap_or_else(|_| configured.to_owned());
    let mut parents: Vec<&Path> = configured.ancestors().skip(1).chain(dir.ancestors().skip(1)).collect();
    parents.sort();
    parents.dedup();
    for parent in parents.into_iter().filter(|p| !p.as_os_str().is_empty()) {
        check_parent(var, dir, parent, me)?;
    }
    Ok(())
}

/// One directory above `dir`: it must be root's or the bot's user's, and not open to other writers
/// unless sticky.
fn check_parent(var: &'static str, dir: &Path, parent: &Path, me: u32) -> Result<(), ConfigError> {
    let meta = std::fs::metadata(parent).map_err(|e| {
        ConfigError::new(
            var,
            format!("cannot inspect {}: {e}", parent.display(), e = Chain(&e)),
            "existing directories",
        )
    })?;
    let sticky = meta.mode() & 0o1000 != 0;
    let theirs = meta.uid() != 0 && meta.uid() != me;
    let open = meta.mode() & 0o022 != 0 && !sticky;
    if theirs || open {
        return Err(ConfigError::new(
            var,
            format!(
                "{} is under {}, which {} (owner {}, mode {:o}): others could move the bot's files away",
                dir.display(),
                parent.display(),
                if theirs {
                    "belongs to another user"
                } else {
                    "others may write to"
                },
                meta.uid(),
                meta.mode() & 0o7777
            ),
            "directories above it owned by root or the bot's user and not writable by others (or sticky, like /tmp)",
        ));
    }
    Ok(())
}

/// `WICKRIO_UMASK`: octal, default 027 (files 0640, directories 0750). It may not take the owner's
/// own rights away: the bot must read and write what it creates.
pub fn umask(get: &impl Fn(&str) -> Option<String>) -> Result<Mode, ConfigError> {
    let text = get("WICKRIO_UMASK").unwrap_or_else(|| "027".to_owned());
    let bits = u32::from_str_radix(text.trim(), 8)
        .ok()
        .filter(|b| *b <= 0o777 && b & 0o700 == 0)
        .ok_or_else(|| {
            ConfigError::new(
                "WICKRIO_UMASK",
                format!("{text:?} is not an octal mask that leaves the owner read and write"),
                "an octal mask such as 027 (files 0640) or 077 (files 0600)",
            )
        })?;
    Ok(Mode::from_bits_truncate(bits as nix::libc::mode_t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn an_own_private_directory_passes() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("spool");
        std::fs::create_dir(&dir).unwrap();
        chmod(&dir, 0o750);
        check_private_dir("V", &dir).unwrap();
    }

    #[test]
    fn another_users_directory_is_refused_with_the_chown_to_run() {
        let root = tempfile::tempdir().unwrap();
        let me = nix::unistd::geteuid().as_raw();
        // The same directory, seen by a bot running as another user.
        let e = check_private_dir_for("WICKRIO_STATE_DIR", root.path(), me + 1).unwrap_err();
        assert_eq!(e.var, "WICKRIO_STATE_DIR");
        assert!(e.to_string().contains(&format!("chown {}", me + 1)), "{e}");
    }

    #[test]
    fn a_directory_others_may_write_to_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("spool");
        std::fs::create_dir(&dir).unwrap();
        chmod(&dir, 0o777);
        assert!(
            check_private_dir("V", &dir)
                .unwrap_err()
                .to_string()
                .contains("chmod go-w")
        );
        chmod(&dir, 0o770);
        assert!(check_private_dir("V", &dir).is_err(), "group-writable too");
    }

    #[test]
    fn an_open_parent_is_refused_but_a_sticky_one_is_not() {
        let root = tempfile::tempdir().unwrap();
        let parent = root.path().join("shared");
        let dir = parent.join("spool");
        std::fs::create_dir_all(&dir).unwrap();
        chmod(&dir, 0o700);
        chmod(&parent, 0o777);
        assert!(
            check_private_dir("V", &dir)
                .unwrap_err()
                .to_string()
                .contains("others may write")
        );
        chmod(&parent, 0o1777);
        check_private_dir("V", &dir).unwrap();
    }

    #[test]
    fn a_link_is_judged_by_the_directory_it_leads_to_and_by_where_it_lies() {
        let root = tempfile::tempdir().unwrap();
        let real = root.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let shared = root.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        let link = shared.join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        check_private_dir("V", &link).unwrap();
        chmod(&real, 0o777);
        assert!(check_private_dir("V", &link).is_err(), "the directory it leads to");
        chmod(&real, 0o700);
        // Whoever may write where the link lies may point it elsewhere.
        chmod(&shared, 0o777);
        assert!(
            check_private_dir("V", &link)
                .unwrap_err()
                .to_string()
                .contains("others may write")
        );
    }

    #[test]
    fn the_mask_must_leave_the_owner_its_rights() {
        let get = |v: &'static str| move |k: &str| (k == "WICKRIO_UMASK").then(|| v.to_owned());
        assert_eq!(umask(&get("077")).unwrap().bits(), 0o077);
        assert_eq!(umask(&|_: &str| None).unwrap().bits(), 0o027);
        for bad in ["777", "0700", "9", "abc", "1027"] {
            assert_eq!(umask(&get(bad)).unwrap_err().var, "WICKRIO_UMASK", "{bad}");
        }
    }
}
