//! Leaving root in the container. The original's users start it with
//! `docker run -v /opt/<bot>:/tmp/<bot> ...`, and Docker creates `/opt/<bot>` owned by root, so a
//! bot started as an unprivileged user could not write there. The image therefore starts as root with
//! `WICKRIO_RUN_AS=<uid>:<gid>`: the bot hands its own directories to that user and becomes it before
//! it reads its identity, opens a file or takes a request. Not root, or no `WICKRIO_RUN_AS`: nothing
//! changes.

use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid};

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("WICKRIO_RUN_AS: {0:?} is not <uid>:<gid>; accepted: two numbers, e.g. 10001:10001 (not 0)")]
    BadUser(String),
    #[error("cannot give {path} to user {uid}")]
    Chown {
        path: PathBuf,
        uid: u32,
        #[source]
        error: std::io::Error,
    },
    #[error("cannot become user {uid}:{gid}")]
    Switch {
        uid: u32,
        gid: u32,
        #[source]
        error: nix::Error,
    },
}

/// Parses `WICKRIO_RUN_AS`; `None` when unset or empty.
pub fn parse_run_as(value: Option<&str>) -> Result<Option<(u32, u32)>, PrivilegeError> {
    let Some(text) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let bad = || PrivilegeError::BadUser(text.to_owned());
    let (uid, gid) = text.split_once(':').ok_or_else(bad)?;
    let (uid, gid): (u32, u32) = (uid.parse().map_err(|_| bad())?, gid.parse().map_err(|_| bad())?);
    if uid == 0 || gid == 0 {
        return Err(bad());
    }
    Ok(Some((uid, gid)))
}

/// As root with a target user: gives `dirs` (and everything in them) to the user, then switches to
/// it for good. Returns whether it switched.
pub fn drop_root(run_as: Option<(u32, u32)>, dirs: &[&Path]) -> Result<bool, PrivilegeError> {
    let Some((uid, gid)) = run_as else {
        return Ok(false);
    };
    if !Uid::effective().is_root() {
        return Ok(false);
    }
    for dir in dirs {
        give(dir, uid, gid)?;
    }
    let switch = |error| PrivilegeError::Switch { uid, gid, error };
    nix::unistd::setgroups(&[Gid::from_raw(gid)]).map_err(switch)?;
    nix::unistd::setgid(Gid::from_raw(gid)).map_err(switch)?;
    // glibc applies setuid to every thread of the process, including the runtime's.
    nix::unistd::setuid(Uid::from_raw(uid)).map_err(switch)?;
    tracing::info!(uid, gid, "running as an unprivileged user from here on");
    Ok(true)
}

/// `chown -R` without following symbolic links; entries already owned are left alone.
fn give(path: &Path, uid: u32, gid: u32) -> Result<(), PrivilegeError> {
    use std::os::unix::fs::MetadataExt;
    let fail = |error| PrivilegeError::Chown {
        path: path.to_owned(),
        uid,
        error,
    };
    let meta = std::fs::symlink_metadata(path).map_err(fail)?;
    if meta.uid() != uid || meta.gid() != gid {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(fail)?;
    }
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).map_err(fail)? {
            give(&entry.map_err(fail)?.path(), uid, gid)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_as_takes_two_numbers_and_never_root() {
        assert_eq!(parse_run_as(None).unwrap(), None);
        assert_eq!(parse_run_as(Some(" ")).unwrap(), None);
        assert_eq!(parse_run_as(Some("10001:10002")).unwrap(), Some((10001, 10002)));
        for bad in ["bot", "10001", "0:0", "10001:0", "a:b", "1:2:3"] {
            assert!(parse_run_as(Some(bad)).is_err(), "{bad}");
        }
    }
}
