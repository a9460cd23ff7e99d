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

use tokio::time::Instant;

pub use super::ban_file::{add_stored, read, remove_stored, BansFileError, StoredBan, MANUAL};
use super::ban_file::{unix, BanFile};
use super::keys::{ClientKey, KeyTable};
use crate::atomic_file::Coalesced;
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
    /// What the failure that earned it was, and where (`failed login at
    /// /Users/AuthenticateByName`, `token Jellyfin refused at video_stream`,
    /// `by hand`).
    pub reason: String,
    /// When it began, seconds since the Unix epoch.
    pub since: u64,
}

/// `ban` of `key` as stored, its end as wall-clock time.
fn stored(key: ClientKey, ban: &Ban, now: Instant) -> StoredBan {
    let until = SystemTime::now() + ban.until.saturating_duration_since(now);
    StoredBan {
        address: key.to_string(),
        until: unix(until),
        offences: ban.offences,
        site: ban.site.clone(),
        failures: ban.failures,
        since: ban.since,
        reason: ban.reason.clone(),
    }
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
        let stored = super::ban_file::restore(&path)?;
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
                        reason: ban.reason,
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
        drop(state);
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
        reason: &str,
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
            reason: reason.to_string(),
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
            reason: "by hand".to_string(),
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

fn rfc3339(now: Instant, until: Instant) -> String {
    crate::timestamp::rfc3339(SystemTime::now() + until.saturating_duration_since(now))
}

#[cfg(test)]
mod tests {
    use super::{BanList, Outcome};
    use crate::config::GuardConfig as Guard;
    use crate::guard::keys::ClientKey;
    use std::time::Duration;
    use tokio::time::Instant;

    fn key(s: &str) -> ClientKey {
        ClientKey::of(s.parse().unwrap())
    }

    fn hours(n: u64) -> Duration {
        Duration::from_secs(n * 3600)
    }

    #[test]
    fn three_failures_in_the_window_ban_for_a_day_then_longer() {
        let dir = tempfile::tempdir().unwrap();
        let config = Guard {
            never_ban: vec!["10.0.0.0/8".parse().unwrap()],
            ..Guard::default()
        };
        let bans = BanList::open(&config, dir.path()).unwrap();
        let now = Instant::now();
        let c = key("203.0.113.9");
        assert_eq!(
            bans.failed_login(c, "s", "test", false, now),
            Outcome::Counted(1)
        );
        // The first failure leaves the 12 h window before the third comes.
        assert_eq!(
            bans.failed_login(
                c,
                "s",
                "test",
                false,
                now + hours(12) + Duration::from_secs(1)
            ),
            Outcome::Counted(1)
        );
        assert_eq!(
            bans.failed_login(c, "s", "test", false, now + hours(13)),
            Outcome::Counted(2)
        );
        let Outcome::Banned(ban) = bans.failed_login(c, "s", "test", false, now + hours(14)) else {
            panic!("banned")
        };
        assert_eq!(ban.until, now + hours(14) + hours(24));
        assert!(bans.is_banned(c, now + hours(37)));
        assert!(
            !bans.is_banned(c, now + hours(38) + Duration::from_secs(1)),
            "lifted when it ends"
        );
        for n in 0..2 {
            bans.failed_login(c, "s", "test", false, now + hours(40 + n));
        }
        let Outcome::Banned(again) = bans.failed_login(c, "s", "test", false, now + hours(42))
        else {
            panic!()
        };
        assert_eq!(
            again.until,
            now + hours(42) + hours(48),
            "a repeat offender waits twice as long"
        );
        assert_eq!(
            bans.failed_login(key("10.1.2.3"), "s", "test", false, now),
            Outcome::Exempt
        );
        assert_eq!(
            bans.failed_login(key("198.51.100.1"), "s", "test", true, now),
            Outcome::Exempt
        );
    }
}
