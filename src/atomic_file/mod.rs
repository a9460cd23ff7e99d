//! Crash-safe file writes for state that must never be half-written: keys,
//! certificates, bans, cache entries.
//!
//! Owns the temp-file, fsync, rename, fsync-folder sequence (each write with
//! a temporary name of its own, so writes at once never share one), clearing
//! temporary files a crash left, setting a damaged file aside under a name
//! of its own, and `Coalesced`: a file rewritten off the runtime threads,
//! bursts of saves folded into one write. Owns no formats.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

mod coalesced;

pub use coalesced::Coalesced;

/// Makes every temporary or set-aside name of this process unique.
static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// `.NAME.tmp` (the prefix of every temporary file of `NAME`).
fn temp_prefix(file_name: &str) -> String {
    format!(".{file_name}.tmp")
}

/// Writes `bytes` to `path` so that a crash leaves either the old file or the new
/// one, never a mix: a temp file beside it, fsync, rename over, fsync the folder.
/// `mode` is the new file's permission bits (0o600 for private keys). The new
/// file keeps the old one's owner where the writer may set it (root running
/// `drawbridge bans remove` must not take the file from the service's user).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let owner = crate::owner::owner_of(path);
    let (folder, temp) = temp_written(path, bytes, mode, owner)?;
    let result = fs::rename(&temp, path).and_then(|()| File::open(folder)?.sync_all());
    if result.is_err() {
        // Best effort: a leftover temp file is harmless but untidy.
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Writes `bytes` to `path` as `write_atomic` does, unless `path` exists:
/// then nothing changes and the answer is false. Two processes making the
/// same file at once (a key made on first use) get one file, whole, and
/// each can read back the one that won.
pub fn write_new(path: &Path, bytes: &[u8], mode: u32) -> io::Result<bool> {
    let (folder, temp) = temp_written(path, bytes, mode, None)?;
    // A hard link never replaces what is there, unlike a rename.
    let linked = fs::hard_link(&temp, path);
    let _ = fs::remove_file(&temp);
    match linked {
        Ok(()) => File::open(folder)?.sync_all().map(|()| true),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(error) => Err(error),
    }
}

/// The folder `path` is in: `.` for a bare file name (whose parent is the
/// empty path, which cannot be opened to sync).
fn folder_of(path: &Path) -> &Path {
    path.parent()
        .filter(|folder| !folder.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// A temp file beside `path` holding `bytes`, synced, with `mode` and, where
/// the writer may set it, `owner` — for a new file, the owner new files are
/// handed to (`owner.rs`): its folder and its path.
fn temp_written<'a>(
    path: &'a Path,
    bytes: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> io::Result<(&'a Path, PathBuf)> {
    let folder = folder_of(path);
    crate::owner::create_dir_all(folder)?;
    let owner = owner.or_else(crate::owner::new_files_owner);
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let temp = folder.join(format!(
        "{}{}-{}",
        temp_prefix(&file_name.to_string_lossy()),
        std::process::id(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&temp)?;
        file.write_all(bytes)?;
        if let Some((uid, gid)) = owner {
            // Not permitted unless root or already the owner: then it is ours.
            let _ = std::os::unix::fs::fchown(&file, Some(uid), Some(gid));
        }
        file.sync_all()
    })();
    match result {
        Ok(()) => Ok((folder, temp)),
        Err(error) => {
            let _ = fs::remove_file(&temp);
            Err(error)
        }
    }
}

/// Removes the temporary files of `path` that a crash mid-write left behind
/// (call it at start, before anything writes `path`); returns how many.
pub fn remove_stale_temps(path: &Path) -> usize {
    let (Some(folder), Some(name)) = (path.parent(), path.file_name()) else {
        return 0;
    };
    let prefix = temp_prefix(&name.to_string_lossy());
    let Ok(entries) = fs::read_dir(folder) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .filter(|e| fs::remove_file(e.path()).is_ok())
        .count()
}

/// Moves a damaged `path` aside as `NAME.TAG-SECONDS-N`, a name no other
/// call uses, and returns the new path.
pub fn set_aside(path: &Path, tag: &str) -> io::Result<PathBuf> {
    let seconds = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let aside = path.with_file_name(format!(
        "{}.{tag}-{seconds}-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    ));
    fs::rename(path, &aside)?;
    Ok(aside)
}

/// Writes `bytes` to `path` (created with `mode`, truncated) and fsyncs it;
/// the first half of a two-file replacement (see `rename_synced`).
pub fn write_synced(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    file.write_all(bytes)?;
    crate::owner::adopt(&file)?;
    file.sync_all()
}

/// Renames `from` over `to` and fsyncs the folder, so the rename survives a crash.
pub fn rename_synced(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to)?;
    File::open(folder_of(to))?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::{remove_stale_temps, set_aside, write_atomic, write_new};
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_new_file_is_written_once_and_never_over_another() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/edge.pem");
        assert!(write_new(&path, b"first", 0o600).unwrap());
        assert!(!write_new(&path, b"second", 0o600).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left");
    }

    #[test]
    fn writes_at_once_each_use_their_own_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bans.json");
        std::thread::scope(|scope| {
            for i in 0..16 {
                let path = &path;
                scope.spawn(move || {
                    for _ in 0..20 {
                        let body = format!("{{\"writer\":{i}}}").repeat(200);
                        write_atomic(path, body.as_bytes(), 0o600).unwrap();
                    }
                });
            }
        });
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.len() > 1000 && text.starts_with("{\"writer\":"),
            "whole"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn stale_temporary_files_are_removed_and_set_aside_names_never_collide() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bans.json");
        std::fs::write(dir.path().join(".bans.json.tmp123-4"), b"half").unwrap();
        std::fs::write(dir.path().join(".other.tmp1-1"), b"not ours").unwrap();
        assert_eq!(remove_stale_temps(&path), 1);
        assert!(dir.path().join(".other.tmp1-1").exists());
        let mut asides = Vec::new();
        for _ in 0..3 {
            std::fs::write(&path, b"damaged").unwrap();
            asides.push(set_aside(&path, "corrupt").unwrap());
        }
        asides.dedup();
        assert_eq!(asides.len(), 3, "each damaged copy kept: {asides:?}");
    }

    #[test]
    fn replaces_whole_file_with_given_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/key.pem");
        write_atomic(&path, b"first", 0o600).unwrap();
        write_atomic(&path, b"second", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            leftovers.len(),
            1,
            "no temp file left behind: {leftovers:?}"
        );
    }
}
