//! The guard's process-wide state: bans (`ban`, by client key: `keys`) and the register of
//! open connections by client, which enforces the global and per-address
//! connection limits at accept and closes a client's open connections when it
//! is banned. Checked right after accept (after a PROXY header where one is
//! expected), before any TLS work, so a refused connection costs almost nothing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::GuardConfig;
pub mod ban;
mod ban_file;
mod events;
pub mod keys;
pub mod nftables;

use ban::{BanList, BansFileError, Outcome};
pub use events::Events;
use keys::ClientKey;

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The client is banned.
    #[error("banned")]
    Banned,
    /// `max_connections` are open.
    #[error("too many connections")]
    Full,
    /// `max_connections_per_ip` are open from this client.
    #[error("too many connections from this address")]
    FullForClient,
}

/// Bans and open connections.
#[derive(Debug)]
pub struct Guard {
    /// The bans.
    pub bans: BanList,
    open: Mutex<HashMap<ClientKey, Vec<(u64, CancellationToken)>>>,
    /// Connections that proved to be an agent's tunnel (by its pinned key):
    /// a ban of their address does not close them (see `admit_agent`).
    agents: Mutex<std::collections::HashSet<u64>>,
    /// How many there are: a connection's end looks in `agents` only then.
    agent_count: AtomicUsize,
    total: AtomicUsize,
    next: AtomicU64,
    max_total: usize,
    max_per_client: usize,
    /// Whether the machine's own addresses may be banned.
    ban_own_addresses: bool,
    /// Whether the log said once that they are not.
    own_said: std::sync::atomic::AtomicBool,
    /// Parent of every connection's kill switch (fired after the shutdown grace).
    kill: CancellationToken,
    /// What the guard did, counted for the metrics.
    pub events: Events,
}

/// An admitted connection; dropping it frees its place.
///
/// Its `id` names it to `Guard::failed_login`.
#[derive(Debug)]
pub struct Admission {
    guard: Arc<Guard>,
    key: Option<ClientKey>,
    /// The connection's number.
    pub id: u64,
    /// Fired when the connection must close at once (ban, end of shutdown grace).
    pub kill: CancellationToken,
}

impl Guard {
    /// The guard for `config`, with bans from `state_dir`.
    pub fn new(
        config: &GuardConfig,
        state_dir: &Path,
        kill: CancellationToken,
    ) -> Result<Arc<Guard>, BansFileError> {
        Ok(Arc::new(Guard {
            bans: BanList::open(config, state_dir)?,
            open: Mutex::new(HashMap::new()),
            agents: Mutex::default(),
            agent_count: AtomicUsize::new(0),
            total: AtomicUsize::new(0),
            next: AtomicU64::new(0),
            max_total: config.max_connections as usize,
            max_per_client: config.max_connections_per_ip as usize,
            ban_own_addresses: config.ban_own_addresses,
            own_said: Default::default(),
            kill,
            events: Events::default(),
        }))
    }

    /// Admits a connection from `peer`. A trusted proxy carries many clients:
    /// it is neither banned nor limited per address here (its clients are, per
    /// request).
    pub fn admit(
        self: &Arc<Self>,
        peer: IpAddr,
        trusted_proxy: bool,
        now: Instant,
    ) -> Result<Admission, Refused> {
        let key = ClientKey::of(peer);
        if !trusted_proxy && self.bans.is_banned(key, now) {
            self.events.refused_banned.fetch_add(1, Ordering::Relaxed);
            return Err(Refused::Banned);
        }
        self.admit_unbanned(key, trusted_proxy)
    }

    /// Admits a connection from a banned `peer` that is a home address (an
    /// agent attached from it before), under the caps: the home agent
    /// shares its household's address, and one member's mistyped passwords
    /// must not cut every remote viewer's tunnel for a day. The caller lets
    /// it no further than an agent's knock (`refused_banned` counts the
    /// others).
    pub fn admit_agent(self: &Arc<Self>, peer: IpAddr) -> Result<Admission, Refused> {
        self.admit_unbanned(ClientKey::of(peer), false)
    }

    /// Counts a banned client's connection closed after its ClientHello.
    pub fn refused_banned(&self) {
        self.events.refused_banned.fetch_add(1, Ordering::Relaxed);
    }

    fn admit_unbanned(
        self: &Arc<Self>,
        key: ClientKey,
        trusted_proxy: bool,
    ) -> Result<Admission, Refused> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            self.events.refused_full.fetch_add(1, Ordering::Relaxed);
            return Err(Refused::Full);
        }
        let kill = self.kill.child_token();
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        if trusted_proxy {
            return Ok(Admission {
                guard: self.clone(),
                key: None,
                id,
                kill,
            });
        }
        let mut open = self.open.lock().expect("guard lock");
        let mine = open.entry(key).or_default();
        if mine.len() >= self.max_per_client {
            drop(open);
            self.total.fetch_sub(1, Ordering::AcqRel);
            self.events
                .refused_full_for_client
                .fetch_add(1, Ordering::Relaxed);
            return Err(Refused::FullForClient);
        }
        mine.push((id, kill.clone()));
        Ok(Admission {
            guard: self.clone(),
            key: Some(key),
            id,
            kill,
        })
    }

    /// Counts a failed login; a new ban also closes the client's other open
    /// connections at once. Connection `current` still delivers the answer
    /// that earned the ban, and is refused at its next request.
    pub fn failed_login(
        &self,
        client: IpAddr,
        site: &str,
        reason: &str,
        exempt: bool,
        now: Instant,
        current: u64,
    ) -> Outcome {
        let key = ClientKey::of(client);
        let own = !self.ban_own_addresses && own_address(client);
        if own && !self.own_said.swap(true, Ordering::Relaxed) {
            tracing::warn!(%client, site, "a failed login from this machine's own address: never banned (fail2ban's ignoreself); if a proxy on this machine sends clients to drawbridge, list it in [server] trusted_proxies, or every client looks like the machine itself");
        }
        let outcome = self
            .bans
            .failed_login(key, site, reason, exempt || own, now);
        self.events.failed_logins.fetch_add(1, Ordering::Relaxed);
        if matches!(outcome, Outcome::Banned(_)) {
            self.events.banned_now.fetch_add(1, Ordering::Relaxed);
            self.close_connections_but(key, Some(current));
        }
        outcome
    }

    /// Closes every open connection of `key` at once (a ban made by hand).
    pub fn close_connections(&self, key: ClientKey) {
        self.events.banned_now.fetch_add(1, Ordering::Relaxed);
        self.close_connections_but(key, None);
    }

    fn close_connections_but(&self, key: ClientKey, spared: Option<u64>) {
        // Lock order: agents, then open (nothing takes them the other way).
        let agents = self.agents.lock().expect("guard lock");
        if let Some(connections) = self.open.lock().expect("guard lock").get(&key) {
            for (_, kill) in connections
                .iter()
                .filter(|(id, _)| Some(*id) != spared && !agents.contains(id))
            {
                kill.cancel();
            }
        }
    }

    /// Open connections in all.
    pub fn open_connections(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    /// Connection `id` carries an agent's tunnel, proven by its pinned key:
    /// bans of its address leave it open (`tunnel remove` closes it).
    pub fn mark_agent(&self, id: u64) {
        if self.agents.lock().expect("guard lock").insert(id) {
            self.agent_count.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// Whether `ip` is this machine's own: loopback, or an address one of its
/// interfaces carries now (exact addresses, not their networks).
pub fn own_address(ip: IpAddr) -> bool {
    let ip = crate::client_ip::normalise(ip);
    if ip.is_loopback() {
        return true;
    }
    let Ok(interfaces) = nix::ifaddrs::getifaddrs() else {
        return false;
    };
    interfaces
        .filter_map(|interface| interface.address)
        .any(|address| {
            address.as_sockaddr_in().map(|a| IpAddr::V4(a.ip())) == Some(ip)
                || address.as_sockaddr_in6().map(|a| IpAddr::V6(a.ip())) == Some(ip)
        })
}

impl Drop for Admission {
    fn drop(&mut self) {
        if self.guard.agent_count.load(Ordering::Acquire) > 0
            && self
                .guard
                .agents
                .lock()
                .expect("guard lock")
                .remove(&self.id)
        {
            self.guard.agent_count.fetch_sub(1, Ordering::AcqRel);
        }
        self.guard.total.fetch_sub(1, Ordering::AcqRel);
        if let Some(key) = self.key {
            let mut open = self.guard.open.lock().expect("guard lock");
            if let Some(mine) = open.get_mut(&key) {
                mine.retain(|(id, _)| *id != self.id);
                if mine.is_empty() {
                    open.remove(&key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{own_address, Guard, Refused};

    #[test]
    fn the_machines_own_addresses_are_its_interfaces_and_loopback_exactly() {
        assert!(own_address("127.0.0.1".parse().unwrap()));
        assert!(own_address("::1".parse().unwrap()));
        assert!(own_address("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!own_address("192.0.2.77".parse().unwrap()));
        // Every address an interface carries, and not its neighbour.
        for interface in nix::ifaddrs::getifaddrs().unwrap() {
            if let Some(v4) = interface.address.as_ref().and_then(|a| a.as_sockaddr_in()) {
                assert!(own_address(std::net::IpAddr::V4(v4.ip())));
                let next = u32::from(v4.ip()).wrapping_add(1).into();
                if !std::net::Ipv4Addr::is_loopback(&next) {
                    let carried = nix::ifaddrs::getifaddrs()
                        .unwrap()
                        .filter_map(|i| i.address?.as_sockaddr_in().map(|a| a.ip()))
                        .any(|ip| ip == next);
                    assert_eq!(own_address(std::net::IpAddr::V4(next)), carried);
                }
            }
        }
    }

    #[test]
    fn a_failed_login_from_the_machine_itself_never_bans_it_unless_asked() {
        let dir = tempfile::tempdir().unwrap();
        let now = Instant::now();
        let loopback = "127.0.0.1".parse().unwrap();
        let config = GuardConfig {
            max_failures: 1,
            ..GuardConfig::default()
        };
        let guard = Guard::new(&config, dir.path(), Default::default()).unwrap();
        guard.failed_login(loopback, "s", "test", false, now, 0);
        assert!(guard.admit(loopback, false, now).is_ok());
        let config = GuardConfig {
            ban_own_addresses: true,
            ..config
        };
        let dir = tempfile::tempdir().unwrap();
        let guard = Guard::new(&config, dir.path(), Default::default()).unwrap();
        guard.failed_login(loopback, "s", "test", false, now, 0);
        assert_eq!(
            guard.admit(loopback, false, now).unwrap_err(),
            Refused::Banned
        );
    }
    use crate::config::GuardConfig;
    use tokio::time::Instant;

    #[test]
    fn connection_caps_and_a_ban_closing_open_connections() {
        let dir = tempfile::tempdir().unwrap();
        let config = GuardConfig {
            max_connections: 4,
            max_connections_per_ip: 2,
            max_failures: 1,
            ..GuardConfig::default()
        };
        let guard = Guard::new(&config, dir.path(), Default::default()).unwrap();
        let now = Instant::now();
        let ip = |s: &str| s.parse().unwrap();
        let a1 = guard.admit(ip("192.0.2.1"), false, now).unwrap();
        let _a2 = guard.admit(ip("192.0.2.1"), false, now).unwrap();
        assert_eq!(
            guard.admit(ip("192.0.2.1"), false, now).unwrap_err(),
            Refused::FullForClient
        );
        let _b = guard.admit(ip("192.0.2.2"), false, now).unwrap();
        let c = guard.admit(ip("192.0.2.3"), false, now).unwrap();
        assert_eq!(
            guard.admit(ip("192.0.2.4"), false, now).unwrap_err(),
            Refused::Full
        );
        drop((a1, c));
        assert_eq!(guard.open_connections(), 2);
        let a3 = guard.admit(ip("192.0.2.1"), false, now).unwrap();
        drop(_a2);
        let a4 = guard.admit(ip("192.0.2.1"), false, now).unwrap();
        guard.failed_login(ip("192.0.2.1"), "s", "test", false, now, a4.id);
        assert!(
            a3.kill.is_cancelled(),
            "a new ban closes the client's other connections"
        );
        assert!(
            !a4.kill.is_cancelled(),
            "the one answering the last failure finishes its answer"
        );
        drop((a3, a4));
        assert_eq!(
            guard.admit(ip("192.0.2.1"), false, now).unwrap_err(),
            Refused::Banned
        );
        assert!(
            guard.admit(ip("192.0.2.1"), true, now).is_ok(),
            "a trusted proxy is not refused for its clients"
        );
    }
}
