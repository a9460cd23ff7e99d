//! Where cached responses live: a memory tier and a disk tier, each bounded in
//! bytes and evicting the least recently used first. A disk entry is one file,
//! `state_dir/cache/<sha256 of the key>`, written atomically, holding its own
//! length and checksum: a file damaged by a crash is found and deleted at start
//! (or when read), never served. A failed write costs that entry only; when
//! failures last (disk full, read-only, unwritable, or three in a row) the disk
//! tier rests for `DISK_REST`, says so once, and tries again after; serving
//! goes on throughout.

use std::path::Path;
use std::sync::{Arc, Mutex};

use super::disk::{file_name, read_entry, read_key, Disk, DiskHealth};
use super::entry::Cached;
use super::lru::Lru;

/// Both tiers.
#[derive(Debug)]
pub struct Store {
    memory: Mutex<Lru<Arc<Cached>>>,
    disk: Option<Disk>,
    /// Writes to disk hold it shared, a purge alone: a write still under
    /// way when a purge begins is finished first and then purged, and one
    /// that starts after finds its entry gone and writes nothing (else a
    /// poster stored just before a purge came back from disk).
    purging: std::sync::RwLock<()>,
}

impl Store {
    /// A store of `memory` bytes, and `disk` bytes under `dir` (0: none). Disk
    /// entries left by an earlier run are checked and indexed; damaged ones are
    /// deleted.
    pub fn open(memory: u64, disk: u64, dir: &Path) -> Store {
        let disk = (disk > 0).then(|| {
            let disk = Disk {
                dir: dir.to_path_buf(),
                index: Mutex::new(Lru::new(disk)),
                health: Mutex::new(DiskHealth::default()),
            };
            disk.scan();
            disk
        });
        Store {
            memory: Mutex::new(Lru::new(memory)),
            disk,
            purging: std::sync::RwLock::new(()),
        }
    }

    /// The entry for `key`, from memory, else from disk (then kept in memory).
    pub fn get(&self, key: &str) -> Option<Arc<Cached>> {
        if let Some(entry) = self.memory.lock().expect("cache lock").get(key) {
            return Some(entry.clone());
        }
        let disk = self.disk.as_ref()?;
        let name = file_name(key);
        disk.index.lock().expect("cache lock").get(&name)?;
        match read_entry(&disk.dir.join(&name)) {
            Some(entry) if entry.key == key => {
                let entry = Arc::new(entry);
                let weight = entry.weight();
                self.memory.lock().expect("cache lock").insert(
                    key.to_string(),
                    entry.clone(),
                    weight,
                );
                Some(entry)
            }
            _ => {
                disk.index.lock().expect("cache lock").remove(&name);
                let _ = std::fs::remove_file(disk.dir.join(&name));
                None
            }
        }
    }

    /// Stores `entry` in memory.
    pub fn put(&self, entry: Cached) -> Arc<Cached> {
        let entry = Arc::new(entry);
        let weight = entry.weight();
        self.memory
            .lock()
            .expect("cache lock")
            .insert(entry.key.clone(), entry.clone(), weight);
        entry
    }

    /// Writes `entry` to the disk tier (blocking; call off the async
    /// threads), unless it is no longer the one in memory (purged, or
    /// replaced by a newer answer, since it was stored).
    pub fn persist(&self, entry: &Arc<Cached>) {
        let Some(disk) = &self.disk else {
            return;
        };
        let _turn = self.purging.read().unwrap_or_else(|e| e.into_inner());
        let current = self
            .memory
            .lock()
            .expect("cache lock")
            .peek(&entry.key)
            .is_some_and(|held| Arc::ptr_eq(held, entry));
        if current {
            disk.write(entry);
        }
    }

    /// Forgets every key starting with `prefix` (`host/path`), or, for a
    /// prefix that starts with `/`, every key whose path starts with it on
    /// any site (letter case aside, as Jellyfin routes); returns how many responses
    /// (a key in memory and on disk is one), or why some stay on disk and
    /// would come back at the next start.
    pub fn purge(&self, prefix: &str) -> Result<usize, std::io::Error> {
        let _alone = self.purging.write().unwrap_or_else(|e| e.into_inner());
        let mut memory = self.memory.lock().expect("cache lock");
        let mut purged: std::collections::HashSet<String> = std::collections::HashSet::new();
        for key in memory.keys().into_iter().filter(|k| purged_by(k, prefix)) {
            memory.remove(&key);
            purged.insert(key);
        }
        drop(memory);
        if let Some(disk) = &self.disk {
            let names: Vec<String> = disk.index.lock().expect("cache lock").keys();
            for name in names {
                let path = disk.dir.join(&name);
                let Some(key) = read_key(&path).filter(|k| purged_by(k, prefix)) else {
                    continue;
                };
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
                disk.index.lock().expect("cache lock").remove(&name);
                purged.insert(key);
            }
        }
        Ok(purged.len())
    }

    /// Bytes held in memory and on disk.
    pub fn bytes(&self) -> (u64, u64) {
        let memory = self.memory.lock().expect("cache lock").bytes();
        let disk = self
            .disk
            .as_ref()
            .map_or(0, |d| d.index.lock().expect("cache lock").bytes());
        (memory, disk)
    }
}

/// Whether `purge(prefix)` forgets `key` (`host/path?query`).
fn purged_by(key: &str, prefix: &str) -> bool {
    let lower = |s: &str| s.to_ascii_lowercase();
    if prefix.starts_with('/') {
        key.find('/')
            .is_some_and(|at| lower(&key[at..]).starts_with(&lower(prefix)))
    } else {
        lower(key).starts_with(&lower(prefix))
    }
}

#[cfg(test)]
pub(in crate::cache) mod tests {
    use super::super::entry::Cached;
    use super::Store;
    use crate::cache::disk::DISK_REST;
    use bytes::Bytes;
    use http::{HeaderMap, Request, Response, StatusCode};
    use http_cache_semantics::CachePolicy;

    pub(in crate::cache) fn entry(key: &str, size: usize) -> Cached {
        let req = Request::get(format!("http://a.test{key}"))
            .body(())
            .unwrap();
        let res = Response::builder()
            .header("cache-control", "public, max-age=60")
            .body(())
            .unwrap();
        Cached {
            key: key.to_string(),
            policy: CachePolicy::new(&req, &res),
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from(vec![7u8; size]),
        }
    }

    #[test]
    fn disk_tier_survives_a_restart_and_damage_is_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(1 << 20, 1 << 20, dir.path());
        for key in ["/a", "/b"] {
            let stored = store.put(entry(key, 1000));
            store.persist(&stored);
        }
        drop(store);
        // Truncate one file as a crash would.
        let victim = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let bytes = std::fs::read(&victim).unwrap();
        std::fs::write(&victim, &bytes[..bytes.len() / 2]).unwrap();
        let store = Store::open(1 << 20, 1 << 20, dir.path());
        let kept = ["/a", "/b"]
            .iter()
            .filter(|k| store.get(k).is_some())
            .count();
        assert_eq!(kept, 1, "the intact entry is back, the damaged one gone");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn both_bounds_hold_when_filled_past_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(100_000, 200_000, dir.path());
        for n in 0..100 {
            let stored = store.put(entry(&format!("/img/{n}"), 10_000));
            store.persist(&stored);
        }
        let (memory, disk) = store.bytes();
        assert!(memory <= 100_000 && disk <= 200_000, "{memory} {disk}");
        let on_disk: u64 = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|f| f.unwrap().metadata().unwrap().len())
            .sum();
        assert!(
            on_disk <= 200_000 + 100 * 2048,
            "files on disk follow the index: {on_disk}"
        );
        assert!(store.get("/img/99").is_some() && store.get("/img/0").is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_disk_rests_then_is_tried_again() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("cache");
        // A file where the folder should be: every write fails at once.
        std::fs::write(&folder, b"not a folder").unwrap();
        let store = Store::open(1 << 20, 1 << 20, &folder);
        store.persist(&store.put(entry("/a", 10)));
        std::fs::remove_file(&folder).unwrap();
        store.persist(&store.put(entry("/b", 10)));
        assert!(!folder.exists(), "resting: nothing written");
        tokio::time::advance(DISK_REST).await;
        store.persist(&store.put(entry("/c", 10)));
        assert_eq!(
            std::fs::read_dir(&folder).unwrap().count(),
            1,
            "stored on disk again after the rest"
        );
    }

    #[test]
    fn a_path_prefix_purges_that_path_on_every_site_in_any_case() {
        use super::purged_by;
        assert!(purged_by("jelly.test/Items/1/Images/Primary", "/Items/"));
        assert!(purged_by("tv.test/items/2/Images/Primary?tag=a", "/Items/"));
        assert!(!purged_by("jelly.test/web/index.html", "/Items/"));
        assert!(purged_by("jelly.test/web/index.html", "jelly.test/web/"));
        assert!(purged_by("jelly.test/web/index.html", "JELLY.test/Web/"));
        assert!(!purged_by("tv.test/web/index.html", "jelly.test/"));
        assert!(
            purged_by("jelly.test/web/index.html", ""),
            "empty: everything"
        );
    }

    #[test]
    fn a_purge_is_not_undone_by_a_write_to_disk_that_was_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("cache");
        let store = Store::open(1 << 20, 1 << 20, &folder);
        let stored = store.put(entry("/Items/1/Images/Primary", 10));
        // The write to disk was queued; the purge runs first.
        assert_eq!(store.purge("/items/").unwrap(), 1);
        store.persist(&stored);
        assert_eq!(
            std::fs::read_dir(&folder).unwrap().count(),
            0,
            "nothing written"
        );
        let reopened = Store::open(1 << 20, 1 << 20, &folder);
        assert!(
            reopened.get(&stored.key).is_none(),
            "not back after a restart"
        );
    }
}
