//! `Coalesced`: a file rewritten off the runtime threads, bursts of saves
//! folded into one write, failed writes tried again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use super::write_atomic;

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

#[cfg(test)]
mod tests {
    use super::Coalesced;

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
}
