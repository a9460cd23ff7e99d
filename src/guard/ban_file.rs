//! The bans' file, `state_dir/bans.json`: what a ban looks like stored
//! (wall-clock times), reading it back at start — a damaged file set aside
//! and reported, an unreadable one a reason not to start, temporary files
//! of an interrupted write removed — and the changes `drawbridge bans`
//! makes to it while drawbridge is not running.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::keys::ClientKey;
use crate::atomic_file::{remove_stale_temps, set_aside, write_atomic};

/// A ban as shown and stored: wall-clock end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredBan {
    /// The address, or IPv6 /64.
    pub address: String,
    /// End of the ban, seconds since the Unix epoch.
    pub until: u64,
    /// Offences so far.
    pub offences: u32,
    /// The site whose logins failed, or `manual`; empty in files written
    /// before it was kept.
    #[serde(default)]
    pub site: String,
    /// Failed logins that earned it.
    #[serde(default)]
    pub failures: u32,
    /// When it began, seconds since the Unix epoch (0: not known).
    #[serde(default)]
    pub since: u64,
    /// What earned it, and where (empty in files written before it was
    /// kept).
    #[serde(default)]
    pub reason: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct BanFile {
    pub(super) bans: Vec<StoredBan>,
}

/// Why the stored bans could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BansFileError {
    /// The file exists but cannot be read (owner, mode, a folder in the way).
    #[error("cannot read the bans file {path}: {source}; drawbridge will not start without its bans (fix the file's owner or mode, or move it away to start with none)")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The bans stored at `path`, as drawbridge starts: temporary files of an
/// interrupted write removed, a damaged file set aside (none then), an
/// unreadable one an error.
pub(super) fn restore(path: &Path) -> Result<Vec<StoredBan>, BansFileError> {
    let stale = remove_stale_temps(path);
    if stale > 0 {
        tracing::info!(
            "removed {stale} temporary file(s) of {} left by an interrupted write",
            path.display()
        );
    }
    match read_file(path) {
        Ok(stored) => Ok(stored),
        Err(ReadError::Io(source)) => Err(BansFileError::Unreadable {
            path: path.to_path_buf(),
            source,
        }),
        Err(ReadError::Damaged(error)) => {
            match set_aside(path, "corrupt") {
                Ok(aside) => {
                    tracing::error!(%error, "the bans file {} is damaged; set aside as {}, starting with no bans", path.display(), aside.display())
                }
                Err(moving) => {
                    tracing::error!(%error, %moving, "the bans file {} is damaged and cannot be moved aside; starting with no bans", path.display())
                }
            }
            Ok(Vec::new())
        }
    }
}

/// The site of a ban made by hand.
pub const MANUAL: &str = "manual";

/// Adds a ban on `address` for `length` to the stored file (drawbridge not
/// running: it takes effect at its next start); the ban as stored.
pub fn add_stored(path: &Path, address: &str, length: Duration) -> Result<StoredBan, String> {
    let key = ClientKey::parse_one(address)?;
    let mut bans = read(path)?;
    let now = SystemTime::now();
    let offences = bans
        .iter()
        .find(|b| b.address == key.to_string())
        .map_or(1, |b| b.offences + 1);
    bans.retain(|b| b.address != key.to_string());
    let ban = StoredBan {
        address: key.to_string(),
        until: unix(now + length),
        offences,
        site: MANUAL.to_string(),
        failures: 0,
        since: unix(now),
        reason: "by hand".to_string(),
    };
    bans.push(ban.clone());
    bans.sort_by(|a, b| a.address.cmp(&b.address));
    let json = serde_json::to_vec_pretty(&BanFile { bans }).map_err(|e| e.to_string())?;
    write_atomic(path, &json, 0o600).map_err(|e| e.to_string())?;
    Ok(ban)
}

/// The bans stored in `path` (none if there is no file).
pub fn read(path: &Path) -> Result<Vec<StoredBan>, String> {
    read_file(path).map_err(|e| match e {
        ReadError::Io(e) => e.to_string(),
        ReadError::Damaged(e) => e,
    })
}

/// Why a bans file was not read.
enum ReadError {
    /// It could not be read at all.
    Io(std::io::Error),
    /// It was read, and is not a bans file.
    Damaged(String),
}

fn read_file(path: &Path) -> Result<Vec<StoredBan>, ReadError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice::<BanFile>(&bytes)
            .map(|f| f.bans)
            .map_err(|e| ReadError::Damaged(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(ReadError::Io(e)),
    }
}

/// Removes `address` from the stored bans in `path` (drawbridge not running).
pub fn remove_stored(path: &Path, address: &str) -> Result<bool, String> {
    let mut bans = read(path)?;
    let key = ClientKey::parse_one(address)?;
    let before = bans.len();
    bans.retain(|b| ClientKey::parse(&b.address) != Some(key));
    let json = serde_json::to_vec_pretty(&BanFile { bans: bans.clone() }).expect("bans serialise");
    write_atomic(path, &json, 0o600).map_err(|e| e.to_string())?;
    Ok(bans.len() < before)
}

pub(super) fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use crate::config::GuardConfig as Guard;
    use crate::guard::ban::BanList;
    use crate::guard::keys::ClientKey;
    use tokio::time::Instant;

    fn key(s: &str) -> ClientKey {
        ClientKey::of(s.parse().unwrap())
    }

    #[test]
    fn bans_outlive_a_restart_and_a_corrupt_file_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let config = Guard {
            max_failures: 1,
            ..Guard::default()
        };
        let now = Instant::now();
        BanList::open(&config, dir.path()).unwrap().failed_login(
            key("2001:db8:1:2::7"),
            "s",
            "test",
            false,
            now,
        );
        let again = BanList::open(&config, dir.path()).unwrap();
        assert!(
            again.is_banned(key("2001:db8:1:2::9"), Instant::now()),
            "restored, for the whole /64"
        );
        let list = again.list(Instant::now());
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].address, "2001:db8:1:2::/64");

        std::fs::write(dir.path().join("bans.json"), "{ not json").unwrap();
        let fresh = BanList::open(&config, dir.path()).unwrap();
        assert!(fresh.list(Instant::now()).is_empty());
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains("corrupt"))
            .collect();
        assert_eq!(
            aside.len(),
            1,
            "the damaged file is kept for a person to look at"
        );
    }
}
