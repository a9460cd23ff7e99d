//! Whether each home peer is up, and what `wireguard list`, the dashboard
//! and `/metrics` show of it: read from the device once a second.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{keys, lock, Wireguard};

/// How often the peers' counters are read.
pub(super) const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// A home peer as `wireguard list`, the dashboard and `/metrics` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Its name.
    pub name: String,
    /// Its public key.
    pub public_key: String,
    /// Its tunnel address.
    pub address: String,
    /// Where its packets last came from.
    pub endpoint: Option<String>,
    /// Seconds since its last handshake; None before the first.
    pub handshake_age: Option<u64>,
    /// Bytes received from it.
    pub received: u64,
    /// Bytes sent to it.
    pub sent: u64,
    /// Whether it was heard from within the allowed silence.
    pub up: bool,
}

/// What the sampler last saw of a peer.
#[derive(Debug, Default, Clone)]
pub(super) struct Seen {
    received: u64,
    sent: u64,
    handshake_age: Option<Duration>,
    endpoint: Option<SocketAddr>,
    heard: Option<tokio::time::Instant>,
}

impl Wireguard {
    /// Whether the peer called `name` was heard from within the allowed
    /// silence, with a session in force.
    pub fn is_up(&self, name: &str) -> bool {
        let names = self.names.load();
        let Some((key, _)) = names.iter().find(|(_, p)| p.name == name) else {
            return false;
        };
        let seen = lock(&self.seen);
        seen.get(key).is_some_and(|s| self.up(s))
    }

    fn up(&self, seen: &Seen) -> bool {
        let fresh = seen
            .heard
            .is_some_and(|at| at.elapsed() <= self.config.silence_allowed());
        // WireGuard's Reject-After-Time: no session is older than this.
        let session = seen
            .handshake_age
            .is_some_and(|age| age <= Duration::from_secs(180));
        fresh && session
    }

    /// Every registered peer with what the device knows of it.
    pub fn status(&self) -> Vec<PeerStatus> {
        let names = self.names.load();
        let seen = lock(&self.seen);
        let mut peers: Vec<PeerStatus> = self
            .peers
            .list()
            .unwrap_or_default()
            .into_iter()
            .map(|peer| {
                let current = names.contains_key(&peer.public_key);
                let s = seen
                    .get(&peer.public_key)
                    .filter(|_| current)
                    .cloned()
                    .unwrap_or_default();
                PeerStatus {
                    up: self.up(&s),
                    name: peer.name,
                    public_key: peer.public_key,
                    address: peer.address.to_string(),
                    endpoint: s.endpoint.map(|e| e.to_string()),
                    handshake_age: s.handshake_age.map(|a| a.as_secs()),
                    received: s.received,
                    sent: s.sent,
                }
            })
            .collect();
        peers.sort_by(|a, b| a.name.cmp(&b.name));
        peers
    }

    /// Reads the device's counters: a peer whose received bytes grew, or
    /// from whose authenticated endpoint a datagram came (its keepalives
    /// carry no data), was heard from.
    pub(super) async fn sample(&self) {
        let Some(running) = lock(&self.running).clone() else {
            return;
        };
        let stats = running.device.peers().await;
        let now = tokio::time::Instant::now();
        let mut arrivals = lock(&running.arrivals);
        let mut seen = lock(&self.seen);
        let mut moved = false;
        for peer in &stats {
            let key = keys::encode(peer.peer.public_key.as_bytes());
            let entry = seen.entry(key).or_default();
            let received = peer.stats.rx_bytes as u64;
            if received > entry.received {
                entry.heard = Some(now);
            }
            if let Some(at) = peer.peer.endpoint.and_then(|e| arrivals.get(&e)) {
                entry.heard = entry.heard.max(Some(*at));
            }
            entry.received = received;
            entry.sent = peer.stats.tx_bytes as u64;
            entry.handshake_age = peer.stats.last_handshake;
            moved |= entry.endpoint != peer.peer.endpoint && peer.peer.endpoint.is_some();
            entry.endpoint = peer.peer.endpoint;
        }
        // Only the peers' endpoints are ever read: whatever else sent
        // datagrams (scanners, forged sources) is forgotten at once.
        let endpoints: HashSet<SocketAddr> = stats.iter().filter_map(|p| p.peer.endpoint).collect();
        arrivals.retain(|source, _| endpoints.contains(source));
        drop(arrivals);
        if moved {
            let endpoints: HashMap<String, SocketAddr> = seen
                .iter()
                .filter_map(|(key, s)| Some((key.clone(), s.endpoint?)))
                .collect();
            drop(seen);
            if let Err(error) = self.peers.set_endpoints(&endpoints) {
                tracing::warn!("WireGuard: {error}");
            }
        }
    }
}
