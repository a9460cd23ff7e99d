//! The edge cache's disk tier: one file per entry,
//! `state_dir/cache/<sha256 of the key>`, written atomically, holding its
//! own length and checksum, so a file a crash damaged is found and deleted
//! (at start, or when read), never served; and how the disk has been doing
//! (failures that last make the tier rest for `DISK_REST`).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::entry::Cached;
use super::lru::Lru;
use crate::atomic_file::write_atomic;

/// How long the disk tier rests after failures that last.
pub const DISK_REST: Duration = Duration::from_secs(60);

/// Failed writes in a row that make the disk tier rest.
pub(super) const FAILURES_BEFORE_REST: u32 = 3;

#[derive(Debug)]
pub(super) struct Disk {
    pub(super) dir: PathBuf,
    pub(super) index: Mutex<Lru<()>>,
    pub(super) health: Mutex<DiskHealth>,
}

/// How the disk has been doing.
#[derive(Debug, Default)]
pub(super) struct DiskHealth {
    /// Failed writes in a row.
    pub(super) failures: u32,
    /// Not storing until then.
    pub(super) resting_until: Option<Instant>,
}

pub(super) const MAGIC: &[u8; 8] = b"DBCACHE1";

impl Disk {
    pub(super) fn scan(&self) {
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

    pub(super) fn write(&self, entry: &Cached) {
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
pub(super) fn lasting(error: &std::io::Error) -> bool {
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

pub(super) fn file_name(key: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// `MAGIC`, meta length (u32), meta JSON, body, SHA-256 of all before it.
pub(super) fn encode(entry: &Cached) -> Vec<u8> {
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

pub(super) fn read_entry(path: &Path) -> Option<Cached> {
    let bytes = std::fs::read(path).ok()?;
    decode(&bytes)
}

pub(super) fn decode(bytes: &[u8]) -> Option<Cached> {
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

pub(super) fn read_key(path: &Path) -> Option<String> {
    read_entry(path).map(|e| e.key)
}

#[cfg(test)]
mod tests {
    use super::{decode, encode};
    use crate::cache::store::tests::entry;

    #[test]
    fn encoding_round_trips_and_detects_flipped_bits() {
        let original = entry("/x", 64);
        let mut bytes = encode(&original);
        assert_eq!(decode(&bytes).unwrap().body, original.body);
        let last = bytes.len() - 40;
        bytes[last] ^= 1;
        assert!(decode(&bytes).is_none());
    }

    mod roundtrip {
        use super::super::{decode, encode};
        use crate::cache::entry::Cached;
        use http::{HeaderMap, Request, Response, StatusCode};
        use http_cache_semantics::{BeforeRequest, CachePolicy};

        #[test]
        fn a_policy_read_back_from_disk_still_matches() {
            let req = Request::get("http://jelly.test/Items/abc/Images/Primary?tag=keep")
                .body(())
                .unwrap();
            let res = Response::builder()
                .header("cache-control", "public, max-age=600")
                .body(())
                .unwrap();
            let entry = Cached {
                key: "k".into(),
                policy: CachePolicy::new(&req, &res),
                status: StatusCode::OK,
                headers: HeaderMap::new(),
                body: bytes::Bytes::from_static(b"x"),
            };
            let back = decode(&encode(&entry)).unwrap();
            match back
                .policy
                .before_request(&req, std::time::SystemTime::now())
            {
                BeforeRequest::Fresh(_) => {}
                BeforeRequest::Stale { matches, .. } => {
                    panic!("stale after a round trip, matches={matches}")
                }
            }
        }
    }
}
