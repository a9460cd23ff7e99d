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
use std::time::{SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::atomic_file::write_atomic;

mod enrol;
mod homes;
mod token;

pub use homes::MAX_HOMES;
use token::PendingToken;
pub use token::Token;

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
    use super::{Register, Token};
    use std::time::Duration;

    /// A token for an agent called `name`, valid for a minute.
    pub(super) fn token_for(register: &Register, name: &str) -> Token {
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
}
