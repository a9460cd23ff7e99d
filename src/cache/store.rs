//! Where cached responses live: a memory tier and a disk tier, each bounded in
//! bytes and evicting the least recently used first. A disk entry is one file,
//! `state_dir/cache/<sha256 of the key>`, written atomically, holding its own
//! length and checksum: a file damaged by a crash is found and deleted at start
//! (or when read), never served. A failed write costs that entry only; when
//! failures last (disk full, read-only, unwritable, or three in a row) the disk
//! tier rests for `DISK_REST`, says so once, and tries again after; serving
//! goes on throughout.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_cache_semantics::CachePolicy;
use serde::{Deserialize, Serialize};

use crate::atomic_file::write_atomic;

/// One cached response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cached {
    /// The cache key it was stored under.
    pub key: String,
    /// RFC 9111 state: freshness, validators, Vary.
    pub policy: CachePolicy,
    /// Status of the stored response.
    #[serde(with = "http_serde::status_code")]
    pub status: StatusCode,
    /// Headers of the stored response.
    #[serde(with = "http_serde::header_map")]
    pub headers: HeaderMap,
    /// The whole body.
    #[serde(skip)]
    pub body: Bytes,
}

impl Cached {
    /// Bytes it takes, roughly.
    pub fn weight(&self) -> u64 {
        self.body.len() as u64
            + 512
            + self
                .headers
                .iter()
                .map(|(n, v)| n.as_str().len() + v.len())
                .sum::<usize>() as u64
    }
}

/// A byte-bounded map that forgets the least recently used first.
#[derive(Debug)]
pub struct Lru<V> {
    map: HashMap<String, (V, u64, u64)>,
    order: BTreeMap<u64, String>,
    bytes: u64,
    cap: u64,
    tick: u64,
}

impl<V> Lru<V> {
    /// A map of at most `cap` bytes.
    pub fn new(cap: u64) -> Lru<V> {
        Lru {
            map: HashMap::new(),
            order: BTreeMap::new(),
            bytes: 0,
            cap,
            tick: 0,
        }
    }

    /// The value of `key`, not marked as used.
    pub fn peek(&self, key: &str) -> Option<&V> {
        self.map.get(key).map(|(v, _, _)| v)
    }

    /// The value of `key`, marked as used.
    pub fn get(&mut self, key: &str) -> Option<&V> {
        self.tick += 1;
        let (_, used, _) = self.map.get_mut(key)?;
        self.order.remove(used);
        *used = self.tick;
        self.order.insert(self.tick, key.to_string());
        self.map.get(key).map(|(v, _, _)| v)
    }

    /// Stores `value` of `weight` bytes; returns what was evicted to make room.
    pub fn insert(&mut self, key: String, value: V, weight: u64) -> Vec<(String, V)> {
        let mut evicted = Vec::new();
        if let Some(old) = self.remove(&key) {
            drop(old);
        }
        if weight > self.cap {
            return evicted;
        }
        while self.bytes + weight > self.cap {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some((v, _, w)) = self.map.remove(&oldest) {
                self.bytes -= w;
                evicted.push((oldest, v));
            }
        }
        self.tick += 1;
        self.order.insert(self.tick, key.clone());
        self.map.insert(key, (value, self.tick, weight));
        self.bytes += weight;
        evicted
    }

    /// Forgets `key`.
    pub fn remove(&mut self, key: &str) -> Option<V> {
        let (v, used, w) = self.map.remove(key)?;
        self.order.remove(&used);
        self.bytes -= w;
        Some(v)
    }

    /// Keys held.
    pub fn keys(&self) -> Vec<String> {
        self.map.keys().cloned().collect()
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

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

/// How long the disk tier rests after failures that last.
pub const DISK_REST: Duration = Duration::from_secs(60);

/// Failed writes in a row that make the disk tier rest.
const FAILURES_BEFORE_REST: u32 = 3;

#[derive(Debug)]
struct Disk {
    dir: PathBuf,
    index: Mutex<Lru<()>>,
    health: Mutex<DiskHealth>,
}

/// How the disk has been doing.
#[derive(Debug, Default)]
struct DiskHealth {
    /// Failed writes in a row.
    failures: u32,
    /// Not storing until then.
    resting_until: Option<Instant>,
}

const MAGIC: &[u8; 8] = b"DBCACHE1";

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

impl Disk {
    fn scan(&self) {
        let _ = crate::owner::create_dir_all(&self.dir);
        let Ok(files) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut damaged = 0;
        let mut index = self.index.lock().expect("cache lock");
        for file in files.flatten() {
            let path = file.path();
            let name = file.file_name().to_string_lossy().into_owned();
            match read_entry(&path) {
                Some(entry) if file_name(&entry.key) == name => {
                    for (old, ()) in index.insert(name, (), entry.weight()) {
                        let _ = std::fs::remove_file(self.dir.join(old));
                    }
                }
                _ => {
                    damaged += 1;
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        if damaged > 0 {
            tracing::warn!(
                damaged,
                "cache: discarded damaged files in {}",
                self.dir.display()
            );
        }
    }

    fn write(&self, entry: &Cached) {
        {
            let mut health = self.health.lock().expect("cache lock");
            match health.resting_until {
                Some(until) if Instant::now() < until => return,
                Some(_) => {
                    health.resting_until = None;
                    tracing::info!("cache: storing on disk in {} again", self.dir.display());
                }
                None => {}
            }
        }
        let name = file_name(&entry.key);
        let bytes = encode(entry);
        match write_atomic(&self.dir.join(&name), &bytes, 0o600) {
            Ok(()) => {
                self.health.lock().expect("cache lock").failures = 0;
                let evicted =
                    self.index
                        .lock()
                        .expect("cache lock")
                        .insert(name, (), entry.weight());
                for (old, ()) in evicted {
                    let _ = std::fs::remove_file(self.dir.join(old));
                }
            }
            Err(error) => {
                let mut health = self.health.lock().expect("cache lock");
                health.failures += 1;
                if lasting(&error) || health.failures >= FAILURES_BEFORE_REST {
                    health.resting_until = Some(Instant::now() + DISK_REST);
                    health.failures = 0;
                    tracing::error!(%error, "cache: cannot write to {}; not storing on disk for the next {} s (serving goes on)", self.dir.display(), DISK_REST.as_secs());
                } else {
                    tracing::warn!(%error, "cache: one entry not stored in {}", self.dir.display());
                }
            }
        }
    }
}

/// A write error that the next write would meet too.
fn lasting(error: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        error.kind(),
        ErrorKind::StorageFull
            | ErrorKind::ReadOnlyFilesystem
            | ErrorKind::PermissionDenied
            | ErrorKind::NotADirectory
            // A file where the cache folder should be.
            | ErrorKind::AlreadyExists
            | ErrorKind::QuotaExceeded
    )
}

fn file_name(key: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// `MAGIC`, meta length (u32), meta JSON, body, SHA-256 of all before it.
fn encode(entry: &Cached) -> Vec<u8> {
    let meta = serde_json::to_vec(entry).expect("entry serialises");
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + meta.len() + entry.body.len() + 32);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(meta.len() as u32).to_be_bytes());
    out.extend_from_slice(&meta);
    out.extend_from_slice(&entry.body);
    let sum = ring::digest::digest(&ring::digest::SHA256, &out);
    out.extend_from_slice(sum.as_ref());
    out
}

fn read_entry(path: &Path) -> Option<Cached> {
    let bytes = std::fs::read(path).ok()?;
    decode(&bytes)
}

fn decode(bytes: &[u8]) -> Option<Cached> {
    if bytes.len() < MAGIC.len() + 4 + 32 || &bytes[..8] != MAGIC {
        return None;
    }
    let (content, sum) = bytes.split_at(bytes.len() - 32);
    if ring::digest::digest(&ring::digest::SHA256, content).as_ref() != sum {
        return None;
    }
    let meta_len = u32::from_be_bytes(content[8..12].try_into().ok()?) as usize;
    let meta = content.get(12..12 + meta_len)?;
    let mut entry: Cached = serde_json::from_slice(meta).ok()?;
    entry.body = Bytes::copy_from_slice(&content[12 + meta_len..]);
    Some(entry)
}

fn read_key(path: &Path) -> Option<String> {
    read_entry(path).map(|e| e.key)
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
#[path = "store_tests.rs"]
mod tests;
