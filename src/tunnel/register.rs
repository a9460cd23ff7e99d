//! The edge's register of agents and enrollment tokens, under
//! `state_dir/tunnel/` (mode 0600, written whole and atomically):
//! `agents.json` (name, key pin, when enrolled) and `tokens.json` (the
//! one-time secrets not yet spent). `drawbridge tunnel add/remove` and the
//! running edge both write them, one change at a time (a lock on the folder);
//! the running edge keeps the agents' pins in memory for its handshakes and
//! reads the files again after a change.
//!
//! A token is what `tunnel add` prints: base64url of JSON carrying the edge's
//! address, the pin of the edge's tunnel key, the token's id, a 32-byte secret
//! and its expiry. Enrolling proves the secret with an HMAC over the TLS
//! channel's exporter (RFC 8446 §7.5), so a proof cannot be replayed on
//! another connection, and the secret itself never crosses the wire.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::atomic_file::write_atomic;
use crate::config::valid_agent_name as valid_name;

/// How many removed agents' pins `removed.json` keeps, so a removed agent
/// can be told so (`protocol::REMOVED`).
const REMOVED_KEPT: usize = 64;

/// One enrolled agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    /// The name sites use (`tunnel:NAME/service`); several agents may share one.
    pub name: String,
    /// Its key's pin.
    pub pin: String,
    /// When it enrolled (Unix seconds).
    pub enrolled: u64,
}

/// An address an agent attached from, and that agent's key's pin: kept out
/// of kernel bans while the agent is enrolled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Home {
    ip: std::net::IpAddr,
    pin: String,
}

/// `homes.json` as written now, or as the first version wrote it (bare
/// addresses, whose agent is not known: they age out as new ones come).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum StoredHome {
    Pinned(Home),
    Bare(std::net::IpAddr),
}

impl From<StoredHome> for Home {
    fn from(stored: StoredHome) -> Home {
        match stored {
            StoredHome::Pinned(home) => home,
            StoredHome::Bare(ip) => Home {
                ip,
                pin: String::new(),
            },
        }
    }
}

/// A token not yet expired: unspent, or spent by the agent whose key's pin
/// `spent_by` holds (which may use it again until it expires, should its
/// first answer have been lost or its config not written).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PendingToken {
    id: String,
    name: String,
    secret: String,
    expires: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    spent_by: Option<String>,
}

/// What a token tells the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// The edge's address, `host:port`.
    pub edge: String,
    /// The name the agent asks the edge's TLS for: one of its sites.
    pub name: String,
    /// The pin of the edge's tunnel key.
    pub pin: String,
    /// Which pending enrollment it is.
    pub id: String,
    /// The one-time secret (hex).
    pub secret: String,
    /// Unix seconds after which the edge refuses it.
    pub expires: u64,
}

impl Token {
    /// The text to paste.
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    /// Reads a pasted token.
    pub fn decode(text: &str) -> Option<Token> {
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text.trim())
            .ok()?;
        serde_json::from_slice(&json).ok()
    }

    /// The proof of the secret for a channel whose exporter gave `exported`.
    pub fn proof(&self, exported: &[u8]) -> String {
        proof(&self.secret, exported)
    }
}

fn proof(secret: &str, exported: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    hex(ring::hmac::sign(&key, exported).as_ref())
}

/// Whether `given` (hex) is `secret`'s proof for the channel that exported
/// `exported`, compared in constant time.
fn proof_matches(secret: &str, given: &str, exported: &[u8]) -> bool {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let given = (0..given.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(given.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()
        .unwrap_or_default();
    ring::hmac::verify(&key, exported, &given).is_ok()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_hex(len: usize) -> String {
    use ring::rand::SecureRandom;
    let mut bytes = vec![0u8; len];
    // The system RNG does not fail on Linux.
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    hex(&bytes)
}

/// Why a register change or an enrollment failed; the sentence is what the
/// user (or the agent) is told.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegisterError {
    /// The name is not one drawbridge accepts.
    #[error("`{0}` is not a tunnel name: use 1 to 32 of a-z, 0-9, - and _")]
    BadName(String),
    /// No pending enrollment has this id (never made, already used, or removed).
    #[error("this token is not known to this edge or was already used; run `drawbridge tunnel add` on the edge for a new one")]
    Unknown,
    /// The token's time ran out.
    #[error("this token expired; run `drawbridge tunnel add` on the edge for a new one")]
    Expired,
    /// The proof does not match the secret.
    #[error("the token's secret does not match")]
    WrongProof,
    /// The register files could not be read or written.
    #[error("tunnel register {path}: {why}")]
    Storage {
        /// The file.
        path: String,
        /// What went wrong.
        why: String,
    },
}

impl RegisterError {
    /// What the agent at home is told: the sentence, but never the edge's
    /// own files (those are in the edge's log).
    pub fn for_the_agent(&self) -> String {
        match self {
            RegisterError::Storage { .. } => "the edge could not store the enrollment (its error log says why); the token is not spent: try again once it is fixed".to_string(),
            other => other.to_string(),
        }
    }
}

/// The register's files under `state_dir`.
#[derive(Debug, Clone)]
pub struct Register {
    dir: PathBuf,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How many agent addresses `homes.json` keeps.
pub const MAX_HOMES: usize = 16;

impl Register {
    /// The register under `state_dir/tunnel`.
    pub fn new(state_dir: &Path) -> Register {
        Register {
            dir: state_dir.join("tunnel"),
        }
    }

    /// Where the edge's tunnel key is kept.
    pub fn edge_key_path(&self) -> PathBuf {
        self.dir.join("edge.pem")
    }

    fn read<T: for<'de> Deserialize<'de>>(&self, file: &str) -> Result<Vec<T>, RegisterError> {
        let path = self.dir.join(file);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| RegisterError::Storage {
                path: path.display().to_string(),
                why: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(RegisterError::Storage {
                path: path.display().to_string(),
                why: e.to_string(),
            }),
        }
    }

    /// Holds a lock on the `tunnel/` folder itself (flock, exclusive) until
    /// dropped: every change reads, changes and writes the register under
    /// it, so `tunnel add` and `tunnel remove` (another process, maybe
    /// root) and the edge's enrollments (several at once) take turns.
    /// Without it a token raced for was spent by each racer, and a write
    /// from a stale read brought spent tokens and removed agents back. The
    /// folder, not a lock file: a file root made would shut the service's
    /// user out.
    fn exclusive(&self) -> Result<Flock<std::fs::File>, RegisterError> {
        let fail = |why: String| RegisterError::Storage {
            path: self.dir.display().to_string(),
            why,
        };
        crate::owner::create_dir_all(&self.dir).map_err(|e| fail(e.to_string()))?;
        let folder = std::fs::File::open(&self.dir).map_err(|e| fail(e.to_string()))?;
        Flock::lock(folder, FlockArg::LockExclusive).map_err(|(_, errno)| fail(errno.to_string()))
    }

    fn write<T: Serialize>(&self, file: &str, items: &[T]) -> Result<(), RegisterError> {
        let path = self.dir.join(file);
        let fail = |e: std::io::Error| RegisterError::Storage {
            path: path.display().to_string(),
            why: e.to_string(),
        };
        crate::owner::create_dir_all(&self.dir).map_err(fail)?;
        let json = serde_json::to_vec_pretty(items).unwrap_or_default();
        write_atomic(&path, &json, 0o600).map_err(fail)
    }

    /// The addresses agents last attached from (`homes.json`, at most
    /// `MAX_HOMES`, newest last): what kernel bans leave out.
    pub fn homes(&self) -> Vec<std::net::IpAddr> {
        self.stored_homes()
            .into_iter()
            .map(|home| home.ip)
            .collect()
    }

    fn stored_homes(&self) -> Vec<Home> {
        let stored: Vec<StoredHome> = self.read("homes.json").unwrap_or_default();
        stored.into_iter().map(Home::from).collect()
    }

    /// Notes that the agent whose key has `pin` attached from `ip`; false
    /// if that was the last one noted.
    pub fn note_home(&self, ip: std::net::IpAddr, pin: &str) -> Result<bool, RegisterError> {
        let _turn = self.exclusive()?;
        let mut homes = self.stored_homes();
        let home = Home {
            ip,
            pin: pin.to_string(),
        };
        if homes.last() == Some(&home) {
            return Ok(false);
        }
        homes.retain(|h| h.ip != ip);
        homes.push(home);
        let excess = homes.len().saturating_sub(MAX_HOMES);
        homes.drain(..excess);
        self.write("homes.json", &homes)?;
        Ok(true)
    }

    /// The enrolled agents.
    pub fn agents(&self) -> Result<Vec<Agent>, RegisterError> {
        self.read("agents.json")
    }

    /// The names that agents are enrolled under or have a token for that
    /// has not expired: what a site's `tunnel:NAME/…` may name.
    pub fn known_names(&self) -> Vec<String> {
        let now = now();
        let mut names: Vec<String> = self
            .agents()
            .unwrap_or_default()
            .into_iter()
            .map(|a| a.name)
            .collect();
        let pending: Vec<PendingToken> = self.read("tokens.json").unwrap_or_default();
        names.extend(
            pending
                .into_iter()
                .filter(|p| p.expires > now)
                .map(|p| p.name),
        );
        names.sort();
        names.dedup();
        names
    }

    /// A new one-time token for an agent called `name`, valid for `ttl`,
    /// telling the agent to reach the edge at `edge` whose key has `pin`.
    pub fn add_token(
        &self,
        name: &str,
        edge: &str,
        site: &str,
        pin: &str,
        ttl: Duration,
    ) -> Result<Token, RegisterError> {
        if !valid_name(name) {
            return Err(RegisterError::BadName(name.to_string()));
        }
        let now = now();
        let _turn = self.exclusive()?;
        let mut pending: Vec<PendingToken> = self.read("tokens.json")?;
        pending.retain(|p| p.expires > now);
        let token = Token {
            edge: edge.to_string(),
            name: site.to_string(),
            pin: pin.to_string(),
            id: random_hex(8),
            secret: random_hex(32),
            expires: now + ttl.as_secs(),
        };
        pending.push(PendingToken {
            id: token.id.clone(),
            name: name.to_string(),
            secret: token.secret.clone(),
            expires: token.expires,
            spent_by: None,
        });
        self.write("tokens.json", &pending)?;
        Ok(token)
    }

    /// Spends the token `id` for the agent whose key has `pin`, if `proof`
    /// is the token's proof for the channel that exported `exported`;
    /// returns the agent's name. A token is spent by its first use, right
    /// or wrong, so a secret cannot be guessed at; the agent that spent it
    /// rightly may use it again until it expires (its first answer lost,
    /// or its config not written at home), and nobody else may.
    pub fn redeem(
        &self,
        id: &str,
        proof_given: &str,
        exported: &[u8],
        pin: &str,
    ) -> Result<String, RegisterError> {
        let _turn = self.exclusive()?;
        let mut pending: Vec<PendingToken> = self.read("tokens.json")?;
        let Some(at) = pending.iter().position(|p| p.id == id) else {
            return Err(RegisterError::Unknown);
        };
        let token = pending[at].clone();
        let right = proof_matches(&token.secret, proof_given, exported);
        let again = right && token.spent_by.as_deref() == Some(pin);
        if token.spent_by.is_some() && !again {
            return Err(RegisterError::Unknown);
        }
        if token.expires <= now() {
            pending.remove(at);
            self.write("tokens.json", &pending)?;
            return Err(RegisterError::Expired);
        }
        if !right {
            pending.remove(at);
            self.write("tokens.json", &pending)?;
            return Err(RegisterError::WrongProof);
        }
        let mut agents = self.agents()?;
        if again && agents.iter().any(|a| a.pin == pin && a.name == token.name) {
            return Ok(token.name);
        }
        agents.retain(|a| a.pin != pin);
        agents.push(Agent {
            name: token.name.clone(),
            pin: pin.to_string(),
            enrolled: now(),
        });
        // The agent first, then the token marked: a failure between the
        // two leaves an agent whose token may be used once more by it.
        self.write("agents.json", &agents)?;
        pending[at].spent_by = Some(pin.to_string());
        self.write("tokens.json", &pending)?;
        Ok(token.name)
    }

    /// Whether a token with this id is known (pending, or spent and not
    /// yet expired): the door answers an enrolment only for these.
    pub fn knows_token(&self, id: &str) -> bool {
        let pending: Vec<PendingToken> = self.read("tokens.json").unwrap_or_default();
        pending.iter().any(|p| p.id == id)
    }

    /// Whether the key with `pin` was enrolled here and removed.
    pub fn was_removed(&self, pin: &str) -> bool {
        let removed: Vec<String> = self.read("removed.json").unwrap_or_default();
        removed.iter().any(|p| p == pin)
    }

    /// Removes every agent called `name` and its pending tokens; whether
    /// there was any. Their pins are kept in `removed.json` (the newest 64)
    /// so a removed agent that knocks again is told it was removed.
    pub fn remove(&self, name: &str) -> Result<bool, RegisterError> {
        let _turn = self.exclusive()?;
        let mut agents = self.agents()?;
        let before = agents.len();
        let gone: Vec<String> = agents
            .iter()
            .filter(|a| a.name == name)
            .map(|a| a.pin.clone())
            .collect();
        if !gone.is_empty() {
            let mut removed: Vec<String> = self.read("removed.json")?;
            removed.retain(|pin| !gone.contains(pin));
            removed.extend(gone);
            let excess = removed.len().saturating_sub(REMOVED_KEPT);
            removed.drain(..excess);
            self.write("removed.json", &removed)?;
        }
        agents.retain(|a| a.name != name);
        let mut pending: Vec<PendingToken> = self.read("tokens.json")?;
        let tokens_before = pending.len();
        pending.retain(|p| p.name != name);
        let removed = agents.len() != before || pending.len() != tokens_before;
        self.write("agents.json", &agents)?;
        self.write("tokens.json", &pending)?;
        // A revoked agent's addresses are no longer kept out of kernel bans
        // (a thief's agent must not leave its address exempt).
        let mut homes = self.stored_homes();
        let count = homes.len();
        homes.retain(|h| h.pin.is_empty() || agents.iter().any(|a| a.pin == h.pin));
        if homes.len() != count {
            self.write("homes.json", &homes)?;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::{Register, RegisterError, Token};
    use std::time::Duration;

    /// A token for an agent called `name`, valid for a minute.
    fn token_for(register: &Register, name: &str) -> Token {
        register
            .add_token(
                name,
                "vps.test:443",
                "vps.test",
                "sha256/edge",
                Duration::from_secs(60),
            )
            .unwrap()
    }

    #[test]
    fn a_token_is_spent_once_and_binds_to_its_channel() {
        let dir = tempfile::tempdir().unwrap();
        let register = Register::new(dir.path());
        let token = token_for(&register, "home");
        let back = Token::decode(&token.encode()).unwrap();
        assert_eq!(back, token);
        let channel = [7u8; 32];
        let other_channel = [8u8; 32];
        // A proof made for another channel does not count, and spends the token.
        assert_eq!(
            register.redeem(
                &token.id,
                &token.proof(&other_channel),
                &channel,
                "sha256/a"
            ),
            Err(RegisterError::WrongProof)
        );
        assert_eq!(
            register.redeem(&token.id, &token.proof(&channel), &channel, "sha256/a"),
            Err(RegisterError::Unknown)
        );
        let token = token_for(&register, "home");
        assert_eq!(
            register.redeem(&token.id, &token.proof(&channel), &channel, "sha256/a"),
            Ok("home".to_string())
        );
        assert_eq!(register.agents().unwrap()[0].pin, "sha256/a");
        assert_eq!(
            register.redeem(&token.id, &token.proof(&channel), &channel, "sha256/b"),
            Err(RegisterError::Unknown),
            "a second use"
        );
        // The agent that spent it, on a new channel (its answer was lost,
        // or its config could not be written at home): enrolled still, once.
        let retry = [9u8; 32];
        assert_eq!(
            register.redeem(&token.id, &token.proof(&retry), &retry, "sha256/a"),
            Ok("home".to_string())
        );
        assert_eq!(register.agents().unwrap().len(), 1);
        assert_eq!(
            register.redeem(&token.id, &token.proof(&other_channel), &retry, "sha256/a"),
            Err(RegisterError::Unknown),
            "a wrong proof from the same key"
        );
        assert!(!register.was_removed("sha256/a"));
        assert!(register.remove("home").unwrap());
        assert!(
            register.was_removed("sha256/a"),
            "told it was removed if it knocks"
        );
        assert!(!register.knows_token(&token.id));
        assert_eq!(
            register.redeem(&token.id, &token.proof(&retry), &retry, "sha256/a"),
            Err(RegisterError::Unknown),
            "removed: its tokens are gone too"
        );
        assert!(register.agents().unwrap().is_empty());
    }

    /// Two enrollments with one token at the same moment (its owner and a
    /// thief): one agent, not two.
    #[test]
    fn a_token_raced_for_is_still_spent_once() {
        let dir = tempfile::tempdir().unwrap();
        let register = Register::new(dir.path());
        let channel = [7u8; 32];
        for round in 0..20 {
            let token = token_for(&register, "home");
            let start = std::sync::Arc::new(std::sync::Barrier::new(8));
            let enrolled: usize = std::thread::scope(|scope| {
                let racers: Vec<_> = (0..8)
                    .map(|i| {
                        let (register, token, start) = (&register, &token, start.clone());
                        scope.spawn(move || {
                            start.wait();
                            let pin = format!("sha256/{round}-{i}");
                            register.redeem(&token.id, &token.proof(&channel), &channel, &pin)
                        })
                    })
                    .collect();
                racers
                    .into_iter()
                    .map(|racer| racer.join().unwrap())
                    .filter(Result::is_ok)
                    .count()
            });
            assert_eq!(enrolled, 1, "round {round}");
        }
        assert_eq!(register.agents().unwrap().len(), 20);
    }

    /// `tunnel add` and `tunnel remove` (another process) while the edge
    /// spends tokens and enrols agents: a spent token never comes back, an
    /// added one is never lost, a removed agent never returns.
    #[test]
    fn the_cli_and_the_edge_writing_at_once_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let register = Register::new(dir.path());
        let channel = [7u8; 32];
        let spendable: Vec<Token> = (0..40).map(|_| token_for(&register, "home")).collect();
        let added: Vec<Token> = std::thread::scope(|scope| {
            let edge = scope.spawn(|| {
                for (i, token) in spendable.iter().enumerate() {
                    let pin = format!("sha256/{i}");
                    let name = register.redeem(&token.id, &token.proof(&channel), &channel, &pin);
                    assert_eq!(name, Ok("home".to_string()));
                }
            });
            let cli = scope.spawn(|| {
                (0..40)
                    .map(|_| {
                        assert!(!register.remove("gone").unwrap());
                        token_for(&register, "other")
                    })
                    .collect()
            });
            edge.join().unwrap();
            cli.join().unwrap()
        });
        let pending: Vec<super::PendingToken> = register.read("tokens.json").unwrap();
        let ids: Vec<&str> = pending.iter().map(|p| p.id.as_str()).collect();
        // Kept until they expire, for their own agent's retry, but spent.
        for token in &spendable {
            let kept = pending.iter().find(|p| p.id == token.id);
            assert!(
                kept.is_some_and(|p| p.spent_by.is_some()),
                "a spent token came back unspent"
            );
        }
        for token in &added {
            assert!(ids.contains(&token.id.as_str()), "an added token was lost");
        }
        assert_eq!(
            register.agents().unwrap().len(),
            40,
            "an enrolled agent was lost"
        );
    }

    #[test]
    fn an_expired_token_and_a_bad_name_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let register = Register::new(dir.path());
        let token = register
            .add_token("home", "e:443", "e", "sha256/e", Duration::ZERO)
            .unwrap();
        let channel = [1u8; 32];
        assert_eq!(
            register.redeem(&token.id, &token.proof(&channel), &channel, "sha256/a"),
            Err(RegisterError::Expired)
        );
        assert!(matches!(
            register.add_token("Home Server", "e:443", "e", "p", Duration::from_secs(1)),
            Err(RegisterError::BadName(_))
        ));
    }

    #[test]
    fn homes_keep_the_newest_addresses_once_each() {
        let dir = tempfile::tempdir().unwrap();
        let register = Register::new(dir.path());
        let ip = |n: u8| std::net::IpAddr::from([192, 0, 2, n]);
        assert!(register.note_home(ip(1), "sha256/a").unwrap());
        assert!(
            !register.note_home(ip(1), "sha256/a").unwrap(),
            "known: nothing written"
        );
        for n in 2..=20 {
            register.note_home(ip(n), "sha256/a").unwrap();
        }
        assert!(
            register.note_home(ip(5), "sha256/a").unwrap(),
            "seen again: moved last"
        );
        let homes = register.homes();
        assert_eq!(homes.len(), super::MAX_HOMES);
        assert_eq!(homes.last(), Some(&ip(5)));
        assert!(!homes.contains(&ip(1)), "the oldest forgotten");
        assert_eq!(homes.iter().filter(|h| **h == ip(5)).count(), 1);
    }

    /// `tunnel remove` takes the agent's addresses out of the homes kernel
    /// bans leave alone; another agent's stay, and so do the bare addresses
    /// the first version of the file kept.
    #[test]
    fn a_removed_agents_addresses_are_no_longer_homes() {
        let dir = tempfile::tempdir().unwrap();
        let register = Register::new(dir.path());
        crate::owner::create_dir_all(dir.path().join("tunnel")).unwrap();
        std::fs::write(dir.path().join("tunnel/homes.json"), r#"["192.0.2.9"]"#).unwrap();
        let channel = [7u8; 32];
        for (name, pin) in [("home", "sha256/a"), ("other", "sha256/b")] {
            let token = token_for(&register, name);
            register
                .redeem(&token.id, &token.proof(&channel), &channel, pin)
                .unwrap();
        }
        let ip = |n: u8| std::net::IpAddr::from([192, 0, 2, n]);
        register.note_home(ip(1), "sha256/a").unwrap();
        register.note_home(ip(2), "sha256/b").unwrap();
        assert_eq!(register.homes(), [ip(9), ip(1), ip(2)]);
        assert!(register.remove("home").unwrap());
        assert_eq!(register.homes(), [ip(9), ip(2)]);
    }
}
