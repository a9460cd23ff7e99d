//! What the gate remembers, bounded in memory: Jellyfin's word on each set
//! of credentials for a while (a minute for a good one, seconds for a bad
//! one), the browser sessions its cookie stands for, and the addresses a
//! checked session is using — and which checks are under way, so that
//! however many requests wait on a token, Jellyfin is asked once.
//!
//! Every table keeps at most `cap` entries in two generations (as
//! `guard/keys.rs` does): when the current one is half full it becomes the
//! previous one, and the old previous is dropped — a flood of tokens costs
//! bounded memory, and what is forgotten first is what was used longest ago.
//! Pure logic on an explicit `now`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::bounded::Bounded;
use super::credentials::Credentials;

/// Jellyfin's word on a set of credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Word {
    /// Accepted: a user's session (its name), or an API key (no user).
    Good(Option<Arc<str>>),
    /// Refused (401/403).
    Bad,
}

#[derive(Debug)]
struct Remembered {
    word: Word,
    until: Instant,
    /// What to ask Jellyfin with again (a cookie's session outlives a word).
    credentials: Arc<Credentials>,
    /// The last grant these credentials gave: to whom, and when it is due
    /// to move on.
    granted: Option<(IpAddr, Instant)>,
}

#[derive(Debug)]
struct Session {
    key: String,
    last: Instant,
}

#[derive(Debug)]
struct Grant {
    key: String,
    until: Instant,
}

/// The gate's memory, shared by the sites of a process (keys carry the
/// site's name) and across reloads.
#[derive(Debug)]
pub struct Memory {
    words: Mutex<Bounded<String, Remembered>>,
    sessions: Mutex<Bounded<String, Session>>,
    grants: Mutex<Bounded<IpAddr, Grant>>,
    asking: Mutex<HashMap<String, Arc<Notify>>>,
    /// How many times words were forgotten: a connection's recall of a word
    /// read before holds no longer (`recall.rs`).
    forgotten: AtomicU64,
}

/// A check to make, or to wait for.
pub enum Turn {
    /// This caller asks Jellyfin, then calls `Memory::answered`.
    Ask,
    /// Another caller is asking: wait, then look again.
    Wait(Arc<Notify>),
}

impl Memory {
    /// An empty memory, each table at most `cap` entries.
    pub fn new(cap: usize) -> Arc<Memory> {
        Arc::new(Memory {
            words: Mutex::new(Bounded::new(cap)),
            sessions: Mutex::new(Bounded::new(cap)),
            grants: Mutex::new(Bounded::new(cap)),
            asking: Mutex::new(HashMap::new()),
            forgotten: AtomicU64::new(0),
        })
    }

    /// Jellyfin's word on `key`, while it is remembered.
    pub fn word(&self, key: &str, now: Instant) -> Option<Word> {
        let mut words = self.words.lock().expect("gate lock");
        let remembered = words.get(key)?;
        (remembered.until > now).then(|| remembered.word.clone())
    }

    /// The credentials remembered for `key` (to ask again).
    pub fn credentials(&self, key: &str) -> Option<Arc<Credentials>> {
        let mut words = self.words.lock().expect("gate lock");
        words.get(key).map(|r| r.credentials.clone())
    }

    /// Whose turn it is to ask about `key`.
    pub fn turn(&self, key: &str) -> Turn {
        let mut asking = self.asking.lock().expect("gate lock");
        match asking.get(key) {
            Some(notify) => Turn::Wait(notify.clone()),
            None => {
                asking.insert(key.to_string(), Arc::new(Notify::new()));
                Turn::Ask
            }
        }
    }

    /// The asker's answer for `key` (None: no word, Jellyfin could not be
    /// asked), kept until `until`; wakes whoever waited.
    pub fn answered(
        &self,
        key: &str,
        credentials: Arc<Credentials>,
        word: Option<(Word, Instant)>,
    ) {
        if let Some((word, until)) = word {
            self.words.lock().expect("gate lock").insert(
                key.to_string(),
                Remembered {
                    word,
                    until,
                    credentials,
                    granted: None,
                },
            );
        }
        if let Some(notify) = self.asking.lock().expect("gate lock").remove(key) {
            notify.notify_waiters();
        }
    }

    /// Forgets `key`'s word and that of every other spelling of its
    /// tokens, their sessions and the addresses they granted (a logout ends
    /// the session however a client writes its token; Jellyfin refusing a
    /// token the gate thought good).
    pub fn forget(&self, key: &str) {
        // First: a recall checked from now on holds no longer.
        self.forgotten.fetch_add(1, Ordering::AcqRel);
        let mut words = self.words.lock().expect("gate lock");
        let tokens: Vec<String> = match words.get(key) {
            Some(remembered) => remembered
                .credentials
                .tokens()
                .into_iter()
                .map(str::to_string)
                .collect(),
            None => Vec::new(),
        };
        let mut gone = vec![key.to_string()];
        words.retain(|k, remembered| {
            let shares = remembered
                .credentials
                .tokens()
                .iter()
                .any(|t| tokens.iter().any(|mine| mine == t));
            if shares || k == key {
                gone.push(k.clone());
            }
            !shares && k != key
        });
        drop(words);
        self.sessions
            .lock()
            .expect("gate lock")
            .retain(|_, session| !gone.contains(&session.key));
        self.grants
            .lock()
            .expect("gate lock")
            .retain(|_, grant| !gone.contains(&grant.key));
    }

    /// Starts a browser session for `key` under the cookie value `id`.
    pub fn open_session(&self, id: String, key: &str, now: Instant) {
        self.sessions.lock().expect("gate lock").insert(
            id,
            Session {
                key: key.to_string(),
                last: now,
            },
        );
    }

    /// The credentials' key of the session with cookie value `id`, if it was
    /// used within `idle`.
    pub fn session(&self, id: &str, now: Instant, idle: std::time::Duration) -> Option<String> {
        let mut sessions = self.sessions.lock().expect("gate lock");
        let session = sessions.get(id)?;
        if now.saturating_duration_since(session.last) > idle {
            return None;
        }
        session.last = now;
        Some(session.key.clone())
    }

    /// How many times words were forgotten so far (read it before the
    /// word a recall is made of).
    pub fn forgotten(&self) -> u64 {
        self.forgotten.load(Ordering::Acquire)
    }

    /// Jellyfin's word on `key` while remembered, as `word` — and, when it
    /// is good, `ip` let through the side doors until `until` on it, in the
    /// same look-up (every request of a session comes here) — with how long
    /// a connection may recall it: until the word's end, or the grant's
    /// next move. The table of grants is touched only when the grant moves
    /// on by an eighth of its length or more.
    pub fn word_granting(
        &self,
        key: &str,
        now: Instant,
        grant: Option<(IpAddr, Instant)>,
    ) -> Option<(Word, Instant)> {
        let mut words = self.words.lock().expect("gate lock");
        let remembered = words.get(key)?;
        if remembered.until <= now {
            return None;
        }
        let word = remembered.word.clone();
        let mut recall = remembered.until;
        let mut moved = None;
        if let (Word::Good(_), Some((ip, until))) = (&word, grant) {
            let due = match remembered.granted {
                Some((to, due)) if to == ip && now < due => due,
                _ => {
                    let due = now + until.saturating_duration_since(now) / 8;
                    remembered.granted = Some((ip, due));
                    moved = Some((ip, until));
                    due
                }
            };
            recall = recall.min(due);
        }
        drop(words);
        if let Some((ip, until)) = moved {
            self.grant(ip, key, until);
        }
        Some((word, recall))
    }

    /// Lets `ip` through the side doors until `until`, on `key`'s word.
    pub fn grant(&self, ip: IpAddr, key: &str, until: Instant) {
        let mut grants = self.grants.lock().expect("gate lock");
        if let Some(grant) = grants.get(&ip).filter(|grant| grant.key == key) {
            grant.until = until;
            return;
        }
        grants.insert(
            ip,
            Grant {
                key: key.to_string(),
                until,
            },
        );
    }

    /// The credentials' key whose session granted `ip` the side doors, while
    /// the grant holds.
    pub fn granted(&self, ip: IpAddr, now: Instant) -> Option<String> {
        let mut grants = self.grants.lock().expect("gate lock");
        let grant = grants.get(&ip)?;
        (grant.until > now).then(|| grant.key.clone())
    }

    /// Entries held: words, sessions, grants (for tests and the metrics).
    pub fn sizes(&self) -> (usize, usize, usize) {
        (
            self.words.lock().expect("gate lock").len(),
            self.sessions.lock().expect("gate lock").len(),
            self.grants.lock().expect("gate lock").len(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::{Memory, Turn, Word};
    use crate::gate::credentials::Credentials;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::time::Instant;

    fn credentials() -> Arc<Credentials> {
        Arc::new(Credentials {
            headers: Vec::new(),
            params: vec!["ApiKey=t".into()],
        })
    }

    #[test]
    fn a_word_is_kept_for_its_time_and_asked_for_once() {
        let memory = Memory::new(100);
        let now = Instant::now();
        assert!(matches!(memory.turn("k"), Turn::Ask));
        assert!(
            matches!(memory.turn("k"), Turn::Wait(_)),
            "one asker at a time"
        );
        memory.answered(
            "k",
            credentials(),
            Some((Word::Good(None), now + Duration::from_secs(60))),
        );
        assert_eq!(memory.word("k", now), Some(Word::Good(None)));
        assert_eq!(memory.word("k", now + Duration::from_secs(61)), None);
        assert!(
            matches!(memory.turn("k"), Turn::Ask),
            "the turn is free again"
        );
    }

    #[test]
    fn a_logout_ends_the_word_its_sessions_and_its_grants() {
        let memory = Memory::new(100);
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        memory.answered("k", credentials(), Some((Word::Good(None), later)));
        memory.open_session("cookie".into(), "k", now);
        let ip = "192.0.2.1".parse().unwrap();
        memory.grant(ip, "k", later);
        assert_eq!(
            memory
                .session("cookie", now, Duration::from_secs(10))
                .as_deref(),
            Some("k")
        );
        assert_eq!(memory.granted(ip, now).as_deref(), Some("k"));
        memory.forget("k");
        assert_eq!(memory.word("k", now), None);
        assert_eq!(memory.session("cookie", now, Duration::from_secs(10)), None);
        assert_eq!(memory.granted(ip, now), None);
    }

    #[test]
    fn a_flood_of_tokens_stays_within_the_bound() {
        let memory = Memory::new(1000);
        let now = Instant::now();
        for i in 0..100_000 {
            let key = format!("token-{i}");
            assert!(matches!(memory.turn(&key), Turn::Ask));
            memory.answered(
                &key,
                credentials(),
                Some((Word::Bad, now + Duration::from_secs(5))),
            );
        }
        assert!(memory.sizes().0 <= 1000, "{:?}", memory.sizes());
        assert_eq!(
            memory.word("token-99999", now),
            Some(Word::Bad),
            "the newest kept"
        );
    }
}
