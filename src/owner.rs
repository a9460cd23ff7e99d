//! Who owns what a command makes: run with `sudo`, every command
//! (`check`, `bans add`, `tunnel add`, `agent enroll`, …) hands the files and
//! folders it creates to the service's user, so the service can read and
//! rewrite them afterwards. A file that already exists keeps its owner
//! (`atomic_file::write_atomic`). Not root, or no service user: nothing
//! changes hands.
//!
//! Owns the process-wide owner for new files and the three ways a file is
//! made with it (a folder, a file to append to, a file already open); owns
//! no paths.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::OnceLock;

static OWNER: OnceLock<(u32, u32)> = OnceLock::new();

/// From now on, what this process creates belongs to `uid`:`gid` (set once,
/// by a command started as root, before it writes anything).
pub fn hand_new_files_to(uid: u32, gid: u32) {
    let _ = OWNER.set((uid, gid));
}

/// The owner new files are handed to, if any.
pub fn new_files_owner() -> Option<(u32, u32)> {
    OWNER.get().copied()
}

/// Hands a file this process just created to the new files' owner.
pub fn adopt(file: &File) -> io::Result<()> {
    match new_files_owner() {
        Some((uid, gid)) => std::os::unix::fs::fchown(file, Some(uid), Some(gid)),
        None => Ok(()),
    }
}

/// `fs::create_dir_all`, each folder it makes handed to the new files' owner.
pub fn create_dir_all(path: impl AsRef<Path>) -> io::Result<()> {
    let path = path.as_ref();
    if path.as_os_str().is_empty() || path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        create_dir_all(parent)?;
    }
    match fs::create_dir(path) {
        Ok(()) => match new_files_owner() {
            Some((uid, gid)) => std::os::unix::fs::lchown(path, Some(uid), Some(gid)),
            None => Ok(()),
        },
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(error) => Err(error),
    }
}

/// Opens `path` for appending (a log file), creating it for the new files'
/// owner when it is not there yet (its folder must be: a mistyped log path
/// is an error, as in nginx, not a new folder).
pub fn open_append(path: &Path) -> io::Result<File> {
    match OpenOptions::new().append(true).open(path) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        opened => return opened,
    }
    match OpenOptions::new().append(true).create_new(true).open(path) {
        Ok(file) => {
            adopt(&file)?;
            Ok(file)
        }
        // Made by someone else in the meantime.
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
            OpenOptions::new().append(true).open(path)
        }
        Err(error) => Err(error),
    }
}

/// The owner of `path`, when it exists.
pub fn owner_of(path: &Path) -> Option<(u32, u32)> {
    fs::metadata(path).ok().map(|m| (m.uid(), m.gid()))
}
