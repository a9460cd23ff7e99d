//! The edge's WireGuard register, under `state_dir/wireguard/` (mode 0600,
//! written whole and atomically, the service's user's): `edge.key`, the
//! edge's private key, and `peers.json`, each home peer's name, public key
//! and tunnel address. `drawbridge wireguard add/remove/rotate` write it,
//! one change at a time (a lock on the folder, as the tunnel's register);
//! the running edge reads it again when told (`wireguard reload` over the
//! admin socket, which the commands send).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use gotatun::x25519::StaticSecret;
use ipnet::Ipv4Net;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::keys;
use crate::atomic_file::{write_atomic, write_new};

/// One home peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HomePeer {
    /// The name sites use (`wireguard:NAME/http://…`).
    pub name: String,
    /// Its public key, as `wg` writes it.
    pub public_key: String,
    /// Its address in the tunnel network.
    pub address: Ipv4Addr,
    /// When its key was made (Unix seconds).
    pub added: u64,
}

/// Why a register change failed; the sentence is what the user reads.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PeersError {
    /// The name is not one drawbridge accepts.
    #[error("`{0}` is not a WireGuard peer name: use 1 to 32 of a-z, 0-9, - and _")]
    BadName(String),
    /// A peer of this name exists (`rotate` makes it new keys).
    #[error("a peer called `{0}` exists; `drawbridge wireguard rotate {0}` gives it new keys, `remove` ends it")]
    Exists(String),
    /// No peer of this name.
    #[error("no WireGuard peer called `{0}`")]
    Unknown(String),
    /// Every address of the tunnel network is taken.
    #[error("every address of {0} is taken: widen [wireguard] address")]
    Full(Ipv4Net),
    /// The files could not be read or written.
    #[error("WireGuard register {path}: {why}")]
    Storage {
        /// The file.
        path: String,
        /// What went wrong.
        why: String,
    },
}

/// The register's files under `state_dir`.
#[derive(Debug, Clone)]
pub struct Peers {
    dir: PathBuf,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Peers {
    /// The register under `state_dir/wireguard`.
    pub fn new(state_dir: &Path) -> Peers {
        Peers {
            dir: state_dir.join("wireguard"),
        }
    }

    fn storage(&self, path: &Path, why: impl std::fmt::Display) -> PeersError {
        PeersError::Storage {
            path: path.display().to_string(),
            why: why.to_string(),
        }
    }

    /// The edge's private key, made on first use (never over another's:
    /// `run` and `wireguard add` may both make it).
    pub fn edge_key(&self) -> Result<StaticSecret, PeersError> {
        let path = self.dir.join("edge.key");
        let read = |path: &Path| -> Result<StaticSecret, PeersError> {
            let text = std::fs::read_to_string(path).map_err(|e| self.storage(path, e))?;
            keys::decode(&text)
                .map(StaticSecret::from)
                .ok_or_else(|| self.storage(path, "not a WireGuard key; remove it to make a new one (every home router then needs its config again)"))
        };
        if path.exists() {
            return read(&path);
        }
        crate::owner::create_dir_all(&self.dir).map_err(|e| self.storage(&self.dir, e))?;
        let key = keys::generate();
        let text = format!("{}\n", keys::encode(&key.to_bytes()));
        if write_new(&path, text.as_bytes(), 0o600).map_err(|e| self.storage(&path, e))? {
            Ok(key)
        } else {
            read(&path)
        }
    }

    /// A new private key for the edge, in place of the old one: every
    /// router must then be given the edge's new public key.
    pub fn rotate_edge(&self) -> Result<StaticSecret, PeersError> {
        let _turn = self.exclusive()?;
        let path = self.dir.join("edge.key");
        let key = keys::generate();
        let text = format!("{}\n", keys::encode(&key.to_bytes()));
        write_atomic(&path, text.as_bytes(), 0o600).map_err(|e| self.storage(&path, e))?;
        Ok(key)
    }

    /// The home peers.
    pub fn list(&self) -> Result<Vec<HomePeer>, PeersError> {
        let path = self.dir.join("peers.json");
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| self.storage(&path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(self.storage(&path, e)),
        }
    }

    fn write(&self, peers: &[HomePeer]) -> Result<(), PeersError> {
        let path = self.dir.join("peers.json");
        let json = serde_json::to_vec_pretty(peers).unwrap_or_default();
        write_atomic(&path, &json, 0o600).map_err(|e| self.storage(&path, e))
    }

    /// Where each peer (by public key) was last heard from: kept so that
    /// after a restart the edge can start the handshake itself, instead of
    /// waiting up to two minutes for the home's next one.
    pub fn endpoints(&self) -> std::collections::HashMap<String, std::net::SocketAddr> {
        std::fs::read(self.dir.join("endpoints.json"))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    /// Stores where the peers were last heard from.
    pub fn set_endpoints(
        &self,
        endpoints: &std::collections::HashMap<String, std::net::SocketAddr>,
    ) -> Result<(), PeersError> {
        let path = self.dir.join("endpoints.json");
        let json = serde_json::to_vec_pretty(endpoints).unwrap_or_default();
        write_atomic(&path, &json, 0o600).map_err(|e| self.storage(&path, e))
    }

    /// A turn at changing the register (see the tunnel's register).
    fn exclusive(&self) -> Result<Flock<std::fs::File>, PeersError> {
        crate::owner::create_dir_all(&self.dir).map_err(|e| self.storage(&self.dir, e))?;
        let folder = std::fs::File::open(&self.dir).map_err(|e| self.storage(&self.dir, e))?;
        Flock::lock(folder, FlockArg::LockExclusive).map_err(|(_, e)| self.storage(&self.dir, e))
    }

    /// Adds a peer called `name` with new keys and the next free address
    /// of `network` (the edge has the network's address it was given);
    /// returns it and its private key, which is not kept here.
    pub fn add(
        &self,
        name: &str,
        network: Ipv4Net,
    ) -> Result<(HomePeer, StaticSecret), PeersError> {
        if !crate::config::valid_agent_name(name) {
            return Err(PeersError::BadName(name.to_string()));
        }
        let _turn = self.exclusive()?;
        let mut peers = self.list()?;
        if peers.iter().any(|p| p.name == name) {
            return Err(PeersError::Exists(name.to_string()));
        }
        let address = network
            .hosts()
            .find(|a| *a != network.addr() && peers.iter().all(|p| p.address != *a))
            .ok_or(PeersError::Full(network))?;
        let key = keys::generate();
        let peer = HomePeer {
            name: name.to_string(),
            public_key: keys::public_of(&key),
            address,
            added: now(),
        };
        peers.push(peer.clone());
        self.write(&peers)?;
        Ok((peer, key))
    }

    /// New keys for the peer called `name`, at the same address: the old
    /// key stops working when the edge is told.
    pub fn rotate(&self, name: &str) -> Result<(HomePeer, StaticSecret), PeersError> {
        let _turn = self.exclusive()?;
        let mut peers = self.list()?;
        let peer = peers
            .iter_mut()
            .find(|p| p.name == name)
            .ok_or_else(|| PeersError::Unknown(name.to_string()))?;
        let key = keys::generate();
        peer.public_key = keys::public_of(&key);
        peer.added = now();
        let peer = peer.clone();
        self.write(&peers)?;
        Ok((peer, key))
    }

    /// Removes the peer called `name`; whether there was one.
    pub fn remove(&self, name: &str) -> Result<bool, PeersError> {
        let _turn = self.exclusive()?;
        let mut peers = self.list()?;
        let before = peers.len();
        peers.retain(|p| p.name != name);
        if peers.len() == before {
            return Ok(false);
        }
        self.write(&peers)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_get_the_next_free_address_and_new_keys_on_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let peers = Peers::new(dir.path());
        let net: Ipv4Net = "10.99.0.1/29".parse().unwrap();
        let (home, _) = peers.add("home", net).unwrap();
        assert_eq!(home.address, Ipv4Addr::new(10, 99, 0, 2));
        let (cabin, _) = peers.add("cabin", net).unwrap();
        assert_eq!(cabin.address, Ipv4Addr::new(10, 99, 0, 3));
        assert!(matches!(peers.add("home", net), Err(PeersError::Exists(_))));
        assert!(matches!(
            peers.add("Bad Name", net),
            Err(PeersError::BadName(_))
        ));
        let (rotated, _) = peers.rotate("home").unwrap();
        assert_eq!(rotated.address, home.address);
        assert_ne!(rotated.public_key, home.public_key);
        assert!(peers.remove("home").unwrap());
        assert!(!peers.remove("home").unwrap());
        // The freed address is handed out again.
        let (again, _) = peers.add("again", net).unwrap();
        assert_eq!(again.address, Ipv4Addr::new(10, 99, 0, 2));
        for name in ["d", "e", "f"] {
            peers.add(name, net).unwrap();
        }
        assert_eq!(peers.add("g", net).map(|_| ()), Err(PeersError::Full(net)));
        let key = peers.edge_key().unwrap();
        assert_eq!(peers.edge_key().unwrap().to_bytes(), key.to_bytes());
        let rotated = peers.rotate_edge().unwrap();
        assert_ne!(rotated.to_bytes(), key.to_bytes());
        assert_eq!(peers.edge_key().unwrap().to_bytes(), rotated.to_bytes());
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("wireguard/edge.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
