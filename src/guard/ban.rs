//! Bans after failed logins (fail2ban, built in). Failures are counted per
//! client key in a sliding window; `max_failures` within `window` bans the
//! client for `ban_time`, doubled for each repeat offence up to `max_ban_time`.
//! Bans are kept in `state_dir/bans.json`, written atomically after every
//! change by a writer thread (never on the runtime's threads; a burst of bans
//! is one or two writes) and read back at start with their remaining time. A
//! corrupt file is set aside under a name of its own and reported, never a
//! reason not to start; a file that cannot be read (its owner or mode) is a
//! reason not to start, since starting without it would serve banned
//! clients. Each ban and unban is one log line of a fixed shape (`ban ADDRESS
//! until TIME …`, `unban ADDRESS …`).
//!
//! Pure logic on an explicit `now`; only `open` and the writer touch the disk.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::keys::{ClientKey, KeyTable};
use crate::atomic_file::{remove_stale_temps, set_aside, write_atomic, Coalesced};
use crate::config::GuardConfig;

/// One ban.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    /// When it ends.
    pub until: Instant,
    /// How many times this client has been banned (escalation).
    pub offences: u32,
    /// Why: the site whose logins failed, or `manual` (`bans add`).
    pub site: String,
    /// Failed logins within the window that earned it (0 for `manual`).
    pub failures: u32,
    /// When it began, seconds since the Unix epoch.
    pub since: u64,
}

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
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct BanFile {
    bans: Vec<StoredBan>,
}

/// What recording a failure led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Counted; not (yet) banned.
    Counted(usize),
    /// Banned now.
    Banned(Ban),
    /// Exempt (never_ban, allow list, trusted proxy).
    Exempt,
}

struct State {
    bans: HashMap<ClientKey, Ban>,
    failures: KeyTable<VecDeque<Instant>>,
    offences: KeyTable<u32>,
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

/// All bans of the process.
pub struct BanList {
    config: GuardConfig,
    path: PathBuf,
    file: Coalesced,
    state: Mutex<State>,
    /// Bans held (expired ones included until noticed): lets the per-request
    /// and per-connection check skip the lock when there are none.
    held: AtomicUsize,
    /// The bans in force after each change, for the kernel's copy
    /// (`guard/nftables.rs`), once something watches.
    watchers: std::sync::OnceLock<tokio::sync::watch::Sender<Vec<StoredBan>>>,
}

impl std::fmt::Debug for BanList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BanList").field("path", &self.path).finish()
    }
}

impl BanList {
    /// The bans stored at `state_dir/bans.json` (a corrupt file is moved
    /// aside; an unreadable one is an error).
    pub fn open(config: &GuardConfig, state_dir: &Path) -> Result<BanList, BansFileError> {
        let path = state_dir.join("bans.json");
        let stale = remove_stale_temps(&path);
        if stale > 0 {
            tracing::info!(
                "removed {stale} temporary file(s) of {} left by an interrupted write",
                path.display()
            );
        }
        let list = BanList {
            config: config.clone(),
            path: path.clone(),
            file: Coalesced::new(path.clone(), 0o600, "the bans"),
            state: Mutex::new(State {
                bans: HashMap::new(),
                failures: KeyTable::new(config.table_size as usize),
                offences: KeyTable::new(config.table_size as usize),
            }),
            held: AtomicUsize::new(0),
            watchers: std::sync::OnceLock::new(),
        };
        match read_file(&path) {
            Err(ReadError::Io(source)) => return Err(BansFileError::Unreadable { path, source }),
            Ok(stored) => {
                let now = Instant::now();
                let mut state = list.state.lock().expect("ban lock");
                for ban in stored {
                    let Some(key) = ClientKey::parse(&ban.address) else {
                        continue;
                    };
                    let left = (SystemTime::UNIX_EPOCH + Duration::from_secs(ban.until))
                        .duration_since(SystemTime::now());
                    if let Ok(left) = left {
                        state.bans.insert(
                            key,
                            Ban {
                                until: now + left,
                                offences: ban.offences,
                                site: ban.site,
                                failures: ban.failures,
                                since: ban.since,
                            },
                        );
                        *state.offences.entry(key, || 0) = ban.offences;
                    }
                }
                list.held.store(state.bans.len(), Ordering::Release);
                if !state.bans.is_empty() {
                    tracing::info!(
                        count = state.bans.len(),
                        "bans restored from {}",
                        path.display()
                    );
                }
            }
            Err(ReadError::Damaged(error)) => match set_aside(&path, "corrupt") {
                Ok(aside) => {
                    tracing::error!(%error, "the bans file {} is damaged; set aside as {}, starting with no bans", path.display(), aside.display())
                }
                Err(moving) => {
                    tracing::error!(%error, %moving, "the bans file {} is damaged and cannot be moved aside; starting with no bans", path.display())
                }
            },
        }
        Ok(list)
    }

    /// Waits until every change so far is on disk; the write's error if not.
    pub fn flush(&self) -> Result<(), String> {
        self.file.flush()
    }

    /// Whether `client` is banned at `now` (an expired ban is lifted here).
    pub fn is_banned(&self, client: ClientKey, now: Instant) -> bool {
        if self.held.load(Ordering::Acquire) == 0 {
            return false;
        }
        let mut state = self.state.lock().expect("ban lock");
        match state.bans.get(&client) {
            Some(ban) if ban.until > now => true,
            Some(_) => {
                state.bans.remove(&client);
                self.held.store(state.bans.len(), Ordering::Release);
                tracing::warn!("unban {client} reason=expired");
                self.save(&state, now);
                false
            }
            None => false,
        }
    }

    /// Counts a failed login by `client` on `site`; bans on the last straw.
    pub fn failed_login(
        &self,
        client: ClientKey,
        site: &str,
        exempt: bool,
        now: Instant,
    ) -> Outcome {
        if exempt || client.in_any(&self.config.never_ban) {
            return Outcome::Exempt;
        }
        let mut state = self.state.lock().expect("ban lock");
        let window = self.config.window;
        let failures = state.failures.entry(client, VecDeque::new);
        failures.push_back(now);
        while failures
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            failures.pop_front();
        }
        let count = failures.len();
        if count < self.config.max_failures as usize {
            return Outcome::Counted(count);
        }
        failures.clear();
        let offences = {
            let n = state.offences.entry(client, || 0);
            *n += 1;
            *n
        };
        let length = (self.config.ban_time * 2u32.saturating_pow(offences - 1))
            .min(self.config.max_ban_time);
        let ban = Ban {
            until: now + length,
            offences,
            site: site.to_string(),
            failures: count as u32,
            since: unix(SystemTime::now()),
        };
        state.bans.insert(client, ban.clone());
        self.held.store(state.bans.len(), Ordering::Release);
        tracing::warn!(
            "ban {client} until {} failures={count} offences={offences} site={site}",
            rfc3339(now, ban.until)
        );
        self.save(&state, now);
        Outcome::Banned(ban)
    }

    /// Bans `client` for `length` by hand (`bans add`): a ban of its own,
    /// site `manual`, replacing any ban it had.
    pub fn add(&self, client: ClientKey, length: Duration, now: Instant) -> StoredBan {
        let mut state = self.state.lock().expect("ban lock");
        let offences = {
            let n = state.offences.entry(client, || 0);
            *n += 1;
            *n
        };
        let ban = Ban {
            until: now + length,
            offences,
            site: MANUAL.to_string(),
            failures: 0,
            since: unix(SystemTime::now()),
        };
        state.bans.insert(client, ban.clone());
        self.held.store(state.bans.len(), Ordering::Release);
        tracing::warn!(
            "ban {client} until {} site={MANUAL}",
            rfc3339(now, ban.until)
        );
        self.save(&state, now);
        stored(client, &ban, now)
    }

    /// Lifts the ban on `client`; false if there was none.
    pub fn remove(&self, client: ClientKey, now: Instant) -> bool {
        let mut state = self.state.lock().expect("ban lock");
        let removed = state.bans.remove(&client).is_some();
        self.held.store(state.bans.len(), Ordering::Release);
        if removed {
            tracing::warn!("unban {client} reason=removed");
            self.save(&state, now);
        }
        removed
    }

    /// The bans in force at `now`.
    pub fn list(&self, now: Instant) -> Vec<StoredBan> {
        listed(&self.state.lock().expect("ban lock"), now)
    }

    /// Hands the bans in `state` to the writer. Called under the lock, so
    /// the newest state is always the last handed over.
    /// The bans in force now and after every change.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<Vec<StoredBan>> {
        let state = self.state.lock().expect("ban lock");
        let now = Instant::now();
        self.watchers
            .get_or_init(|| tokio::sync::watch::Sender::new(listed(&state, now)))
            .subscribe()
    }

    fn save(&self, state: &State, now: Instant) {
        let file = BanFile {
            bans: listed(state, now),
        };
        if let Some(watchers) = self.watchers.get() {
            watchers.send_replace(file.bans.clone());
        }
        let json = serde_json::to_vec_pretty(&file).expect("bans serialise");
        self.file.store(json);
    }
}

/// The bans of `state` in force at `now`, by address.
fn listed(state: &State, now: Instant) -> Vec<StoredBan> {
    {
        let mut list: Vec<StoredBan> = state
            .bans
            .iter()
            .filter(|(_, b)| b.until > now)
            .map(|(k, b)| stored(*k, b, now))
            .collect();
        list.sort_by(|a, b| a.address.cmp(&b.address));
        list
    }
}

fn stored(key: ClientKey, ban: &Ban, now: Instant) -> StoredBan {
    let until = SystemTime::now() + ban.until.saturating_duration_since(now);
    StoredBan {
        address: key.to_string(),
        until: unix(until),
        offences: ban.offences,
        site: ban.site.clone(),
        failures: ban.failures,
        since: ban.since,
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

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn rfc3339(now: Instant, until: Instant) -> String {
    crate::timestamp::rfc3339(SystemTime::now() + until.saturating_duration_since(now))
}

#[cfg(test)]
#[path = "ban_tests.rs"]
mod tests;
