//! Started as root without the unit (which starts drawbridge as its own user
//! with `CAP_NET_BIND_SERVICE` alone): once the listeners are bound and the
//! keys loaded, the process becomes an unprivileged user — `[server] user`,
//! or `drawbridge` when that user exists — as nginx's workers do. What the
//! process writes later (state folder, log files) is handed to that user
//! first, so renewals, bans and log rotation keep working.
//!
//! Every thread changes at once: glibc's `setuid` applies to the whole
//! process, so the runtime's worker threads do not stay root.

use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid, User};

/// The user drawbridge becomes when started as root and `[server] user` is
/// not set, if it exists (the package makes it).
pub const DEFAULT_USER: &str = "drawbridge";

/// Who the process will be once serving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Not root: nothing to drop.
    NotRoot,
    /// Root, kept: `user = "root"` asked for it, or no `user` is set and
    /// no `drawbridge` user exists (a warning says how to fix it).
    StayRoot {
        /// Whether the config asked for root explicitly.
        asked: bool,
    },
    /// Root now, this user once bound.
    Become {
        /// The user's name.
        name: String,
        /// Its uid.
        uid: u32,
        /// Its primary group.
        gid: u32,
    },
}

/// What stands in the way of becoming the configured user.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// `[server] user` names nobody on this machine.
    #[error("[server] user `{0}` does not exist on this machine; create it (`useradd --system {0}`) or name another")]
    NoSuchUser(String),
    /// The user database could not be read.
    #[error("cannot look up the user `{name}`: {source}")]
    Lookup {
        /// The user looked up.
        name: String,
        /// Why.
        source: nix::Error,
    },
    /// Handing a file to the user failed.
    #[error("cannot hand {} to the user `{name}`: {source}", path.display())]
    Chown {
        /// The file.
        path: PathBuf,
        /// The user.
        name: String,
        /// Why.
        source: std::io::Error,
    },
    /// A set*id call failed.
    #[error("cannot become the user `{name}`: {source}")]
    Switch {
        /// The user.
        name: String,
        /// Why.
        source: nix::Error,
    },
    /// Root could be taken back after the switch: refuse to serve so.
    #[error("became `{0}`, yet root could be taken back; refusing to serve")]
    NotDropped(String),
}

/// Who this process will be, given `[server] user`.
pub fn plan(configured: Option<&str>) -> Result<Plan, PrivilegeError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(Plan::NotRoot);
    }
    let name = match configured {
        Some("root") => return Ok(Plan::StayRoot { asked: true }),
        Some(name) => name,
        None => DEFAULT_USER,
    };
    let user = User::from_name(name).map_err(|source| PrivilegeError::Lookup {
        name: name.to_string(),
        source,
    })?;
    match (user, configured) {
        (Some(user), _) => Ok(Plan::Become {
            name: name.to_string(),
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        }),
        (None, Some(_)) => Err(PrivilegeError::NoSuchUser(name.to_string())),
        (None, None) => Ok(Plan::StayRoot { asked: false }),
    }
}

/// Started as root with a service user to become (`user`, or `drawbridge`
/// when it exists): every file and folder this process makes from now on
/// is that user's, so the service can read and rewrite what a command run
/// with `sudo` wrote (`owner.rs`). Not root: nothing changes.
pub fn hand_new_files_to_the_service(user: Option<&str>) {
    if let Ok(Plan::Become { uid, gid, .. }) = plan(user) {
        crate::owner::hand_new_files_to(uid, gid);
    }
}

/// Hands `paths` (folders with everything under them, or files) to the
/// user, then becomes it: supplementary groups dropped, group, then user.
/// Checks that root cannot be taken back.
pub fn become_user(name: &str, uid: u32, gid: u32, paths: &[&Path]) -> Result<(), PrivilegeError> {
    for path in paths {
        hand_over(path, uid, gid).map_err(|source| PrivilegeError::Chown {
            path: path.to_path_buf(),
            name: name.to_string(),
            source,
        })?;
    }
    let switch = |source| PrivilegeError::Switch {
        name: name.to_string(),
        source,
    };
    let (uid, gid) = (Uid::from_raw(uid), Gid::from_raw(gid));
    nix::unistd::setgroups(&[gid]).map_err(switch)?;
    nix::unistd::setgid(gid).map_err(switch)?;
    nix::unistd::setuid(uid).map_err(switch)?;
    if nix::unistd::setuid(Uid::from_raw(0)).is_ok() || nix::unistd::geteuid().is_root() {
        return Err(PrivilegeError::NotDropped(name.to_string()));
    }
    Ok(())
}

/// `chown -R` without following symbolic links; a path that does not exist
/// is left alone (a log file not made yet).
fn hand_over(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    };
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            hand_over(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}
