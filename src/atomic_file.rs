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
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::SystemTime;

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

/// A file rewritten in the background: `store` hands over its newest content
/// and returns at once; one thread writes it with `write_atomic`, so saves
/// of the file never overlap, and a burst of saves costs one or two writes.
/// `flush` waits until what was handed over is on disk. A write that fails
/// (disk full, folder read-only) is tried again, after 1 s, 2 s, 4 s … at
/// most a minute apart, until it succeeds or newer content replaces it; a
/// `flush` (a command, shutdown) tries it again at once.
#[derive(Debug)]
pub struct Coalesced {
    shared: Arc<(Mutex<Handed>, Condvar)>,
}

#[derive(Debug, Default)]
struct Handed {
    /// The newest content not yet taken by the writer.
    latest: Option<Vec<u8>>,
    /// How many contents were handed over, and how many of them are settled
    /// (written, or replaced by a newer one before being written).
    handed: u64,
    settled: u64,
    /// The last write's failure, if it failed.
    failed: Option<String>,
    /// The content whose write failed, kept to be tried again.
    retry: Option<Vec<u8>>,
    closed: bool,
}

/// The longest wait between two tries of a failed write.
const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(60);

impl Coalesced {
    /// Starts the writer of `path`, whose files get `mode`; `what` names the
    /// file in error lines ("the bans").
    pub fn new(path: PathBuf, mode: u32, what: &'static str) -> Coalesced {
        let shared = Arc::new((Mutex::new(Handed::default()), Condvar::new()));
        let writer = shared.clone();
        std::thread::Builder::new()
            .name("drawbridge-save".into())
            .spawn(move || write_loop(&writer, &path, mode, what))
            .expect("a thread can be started");
        Coalesced { shared }
    }

    /// Hands over `bytes` as the file's new content.
    pub fn store(&self, bytes: Vec<u8>) {
        let (lock, wake) = &*self.shared;
        let mut pending = lock.lock().unwrap_or_else(PoisonError::into_inner);
        pending.latest = Some(bytes);
        pending.handed += 1;
        wake.notify_all();
    }

    /// Waits until everything handed over so far is settled; the error of
    /// the write that settled it, if that write failed.
    pub fn flush(&self) -> Result<(), String> {
        let (lock, wake) = &*self.shared;
        let mut pending = lock.lock().unwrap_or_else(PoisonError::into_inner);
        // A failed write still waiting for its next try: tried now.
        if pending.latest.is_none() {
            if let Some(retry) = pending.retry.take() {
                pending.latest = Some(retry);
                pending.handed += 1;
                wake.notify_all();
            }
        }
        let target = pending.handed;
        while pending.settled < target {
            pending = wake.wait(pending).unwrap_or_else(PoisonError::into_inner);
        }
        pending.failed.clone().map_or(Ok(()), Err)
    }
}

impl Drop for Coalesced {
    /// Waits for the last content handed over to be written (at shutdown,
    /// or a restart in tests), then lets the writer end.
    fn drop(&mut self) {
        let _ = self.flush();
        let (lock, wake) = &*self.shared;
        lock.lock().unwrap_or_else(PoisonError::into_inner).closed = true;
        wake.notify_all();
    }
}

/// The writer thread: takes the newest content, writes it, until closed and
/// nothing is left; a failed write's content is tried again, backing off,
/// unless newer content comes first.
fn write_loop(shared: &(Mutex<Handed>, Condvar), path: &Path, mode: u32, what: &str) {
    let (lock, wake) = shared;
    let mut pending = lock.lock().unwrap_or_else(PoisonError::into_inner);
    let mut backoff = std::time::Duration::from_secs(1);
    loop {
        let Some(bytes) = pending.latest.take() else {
            if pending.closed {
                return;
            }
            if pending.retry.is_none() {
                pending = wake.wait(pending).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            let (waited, timeout) = wake
                .wait_timeout(pending, backoff)
                .unwrap_or_else(PoisonError::into_inner);
            pending = waited;
            if timeout.timed_out() && pending.latest.is_none() {
                if let Some(retry) = pending.retry.take() {
                    pending.latest = Some(retry);
                    pending.handed += 1;
                    backoff = (backoff * 2).min(RETRY_MAX);
                }
            }
            continue;
        };
        let upto = pending.handed;
        let was_failing = pending.failed.is_some();
        pending.retry = None;
        drop(pending);
        let result = write_atomic(path, &bytes, mode);
        match &result {
            Err(error) if !was_failing => {
                tracing::error!(%error, "cannot store {what} in {}; trying again until it can", path.display());
            }
            Err(error) => tracing::debug!(%error, "still cannot store {what}"),
            Ok(()) if was_failing => {
                tracing::info!("stored {what} in {} again", path.display());
            }
            Ok(()) => {}
        }
        pending = lock.lock().unwrap_or_else(PoisonError::into_inner);
        pending.settled = upto;
        match result {
            Ok(()) => {
                pending.failed = None;
                backoff = std::time::Duration::from_secs(1);
            }
            Err(error) => {
                pending.failed = Some(error.to_string());
                if pending.latest.is_none() {
                    pending.retry = Some(bytes);
                }
            }
        }
        wake.notify_all();
    }
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
    use super::{remove_stale_temps, set_aside, write_atomic, write_new, Coalesced};
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
    fn a_burst_of_saves_ends_with_the_newest_content_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bans.json");
        let file = Coalesced::new(path.clone(), 0o600, "the test file");
        for i in 0..500 {
            file.store(format!("content {i}").into_bytes());
        }
        file.flush().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "content 499");
        let unwritable = Coalesced::new(dir.path().join("no/such\0name"), 0o600, "x");
        unwritable.store(b"x".to_vec());
        assert!(unwritable.flush().is_err(), "a failed write is reported");
    }

    /// A write that fails (here: a folder where the file goes, as a full or
    /// read-only disk fails it) is tried again by itself once the way is
    /// clear, and at once by `flush`.
    #[test]
    fn a_failed_write_is_tried_again_until_stored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bans.json");
        std::fs::create_dir_all(path.join("in-the-way")).unwrap();
        let file = Coalesced::new(path.clone(), 0o600, "the test file");
        file.store(b"first".to_vec());
        assert!(file.flush().is_err());
        std::fs::remove_dir_all(&path).unwrap();
        // Up to 5 s, looking every 20 ms.
        let mut looks = 0;
        while std::fs::read(&path).ok().as_deref() != Some(&b"first"[..]) {
            looks += 1;
            assert!(looks < 250, "never stored");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // Blocked again, backing off: flush tries at once.
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir_all(path.join("in-the-way")).unwrap();
        file.store(b"second".to_vec());
        assert!(file.flush().is_err());
        assert!(file.flush().is_err());
        std::fs::remove_dir_all(&path).unwrap();
        assert!(file.flush().is_ok(), "stored by the flush");
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
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
