//! The router's own WireGuard: the edge is a WireGuard responder on a UDP
//! port of its own, for homes whose router or NAS speaks WireGuard already
//! (no agent at home). It knows each home peer's public key and tunnel
//! address, not its public address: it follows where the peer's
//! authenticated packets come from (gotatun does, as every WireGuard does),
//! so homes on dynamic addresses and behind NAT work with the
//! `PersistentKeepalive` the printed config sets.
//!
//! - `keys.rs`: Curve25519 keys as `wg` writes them.
//! - `register.rs`: the edge's key and the home peers, on disk.
//! - `home_config.rs`: the home side's `wg-quick` file and its QR code.
//! - `fence.rs`: what may cross the TUN (only the sites' named services,
//!   and nothing home opens).
//! - `device.rs`: the TUN, the responder, the routes.
//! - `health.rs`: whether each peer is up, and what is shown of it.
//!
//! A site reaches home through it with `wireguard:PEER/http://ADDRESS:PORT`:
//! the upstream dials `ADDRESS:PORT` with the kernel's TCP, its socket bound
//! to the TUN, once the peer has been heard from recently (`is_up`); a
//! silent peer is a 502 at once, not a connect timeout.

mod device;
pub mod fence;
mod health;
pub mod home_config;
pub mod keys;
pub mod register;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use gotatun::device::Peer;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, UpstreamTarget, WireguardConfig};
use fence::Fence;
pub use health::PeerStatus;
use health::{Seen, SAMPLE_EVERY};
use register::Peers;

/// The edge's WireGuard: off until a site names a `wireguard:` upstream.
pub struct Wireguard {
    config: WireguardConfig,
    peers: Peers,
    fence: Arc<ArcSwap<Fence>>,
    running: Mutex<Option<Arc<device::Started>>>,
    /// By public key (base64).
    seen: Mutex<HashMap<String, Seen>>,
    /// Name by public key, of the peers the device has.
    names: ArcSwap<HashMap<String, register::HomePeer>>,
    /// The home addresses routed into the TUN.
    routed: Mutex<HashSet<IpAddr>>,
    /// The addresses and ports each peer's sites name, as last applied.
    wanted: Mutex<HashMap<String, Vec<SocketAddr>>>,
    stop: CancellationToken,
}

impl std::fmt::Debug for Wireguard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wireguard")
            .field("interface", &self.config.interface)
            .finish()
    }
}

/// The addresses and ports each peer's sites name.
fn wanted(config: &Config) -> HashMap<String, Vec<SocketAddr>> {
    let mut wanted: HashMap<String, Vec<SocketAddr>> = HashMap::new();
    for site in &config.sites {
        if let UpstreamTarget::Wireguard { peer, addr } = &site.upstream {
            if let Ok(ip) = addr.host.parse::<IpAddr>() {
                wanted
                    .entry(peer.clone())
                    .or_default()
                    .push(SocketAddr::new(ip, addr.port));
            }
        }
    }
    wanted
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Wireguard {
    /// The edge's WireGuard as `config` sets it, not yet started.
    pub fn new(config: &Config) -> Arc<Wireguard> {
        Arc::new(Wireguard {
            config: config.wireguard.clone(),
            peers: Peers::new(&config.server.state_dir),
            fence: Arc::default(),
            running: Mutex::new(None),
            seen: Mutex::default(),
            names: ArcSwap::default(),
            wanted: Mutex::default(),
            routed: Mutex::default(),
            stop: CancellationToken::new(),
        })
    }

    /// The TUN's name, which the upstream's sockets are bound to.
    pub fn interface(&self) -> &str {
        &self.config.interface
    }

    /// Brings the device in line with `config` and the register: started
    /// at the first site that names a peer, the fence and routes set to
    /// the sites' addresses, the peers as registered. A failure is logged
    /// (the sites then answer 502; `check` names what is missing).
    pub async fn apply(self: &Arc<Self>, config: &Config) {
        *lock(&self.wanted) = wanted(config);
        self.reload().await;
    }

    /// Reads the register again (after `wireguard add/remove/rotate`) and
    /// applies it with the sites last applied.
    pub async fn reload(self: &Arc<Self>) {
        let wanted = lock(&self.wanted).clone();
        let running = lock(&self.running).clone();
        let running = match running {
            Some(running) => running,
            None if wanted.is_empty() => return,
            None => match self.start().await {
                Ok(running) => running,
                Err(problem) => {
                    tracing::error!("WireGuard: {problem}; sites through it answer 502");
                    return;
                }
            },
        };
        // A key rotated on disk (`wireguard rotate-edge`) is taken at once.
        if let Ok(key) = self.peers.edge_key() {
            if let Err(problem) = running.device.set_private_key(key).await {
                tracing::error!("WireGuard: cannot take the edge's new key: {problem}");
            }
        }
        let edge = IpAddr::V4(self.config.address.addr());
        let reach: HashSet<SocketAddr> = wanted.values().flatten().copied().collect();
        self.fence.store(Arc::new(Fence {
            reach: reach.clone(),
            edge: Some(edge),
        }));
        let outside: Vec<IpAddr> = reach
            .iter()
            .map(SocketAddr::ip)
            .filter(|ip| match ip {
                IpAddr::V4(v4) => !self.config.address.contains(v4),
                IpAddr::V6(_) => true,
            })
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if let Err(problem) = device::route(&self.config.interface, &outside).await {
            tracing::error!("WireGuard: {problem}");
        }
        // Addresses no site names any more leave the tunnel's routes: the
        // machine reaches them as it did before.
        let gone: Vec<IpAddr> = {
            let mut routed = lock(&self.routed);
            let gone = routed
                .difference(&outside.iter().copied().collect())
                .copied()
                .collect();
            *routed = outside.iter().copied().collect();
            gone
        };
        device::unroute(&self.config.interface, &gone).await;
        if let Err(problem) = self.set_peers(&running, &wanted).await {
            tracing::error!("WireGuard: {problem}");
        }
        for name in wanted.keys() {
            if !self.names.load().values().any(|p| &p.name == name) {
                tracing::warn!("WireGuard: a site names peer `{name}`, which is not registered: `drawbridge wireguard add {name}`");
            }
        }
    }

    async fn start(self: &Arc<Self>) -> Result<Arc<device::Started>, String> {
        let key = self.peers.edge_key().map_err(|e| e.to_string())?;
        let started = Arc::new(device::start(&self.config, key, self.fence.clone()).await?);
        *lock(&self.running) = Some(started.clone());
        tracing::info!(
            "WireGuard on {} (udp), tunnel {} on {}",
            self.config.listen,
            self.config.address,
            self.config.interface
        );
        let me = Arc::downgrade(self);
        let stop = self.stop.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = stop.cancelled() => return,
                }
                let Some(me) = me.upgrade() else { return };
                me.sample().await;
            }
        });
        Ok(started)
    }

    async fn set_peers(
        &self,
        running: &device::Started,
        wanted: &HashMap<String, Vec<SocketAddr>>,
    ) -> Result<(), String> {
        let registered = self.peers.list().map_err(|e| e.to_string())?;
        let current = running.device.peers().await;
        let stored = self.peers.endpoints();
        let mut names = HashMap::new();
        let mut peers = Vec::new();
        for home in registered {
            let Some(public) = keys::public(&home.public_key) else {
                continue;
            };
            let mut allowed = vec![ipnetwork::IpNetwork::from(IpAddr::V4(home.address))];
            for addr in wanted.get(&home.name).into_iter().flatten() {
                allowed.push(ipnetwork::IpNetwork::from(addr.ip()));
            }
            let mut peer = Peer::new(public).with_allowed_ips(allowed);
            // A peer already talking keeps where it talks from; one heard
            // from before a restart is greeted there.
            if let Some(endpoint) = current
                .iter()
                .find(|c| c.peer.public_key == public)
                .and_then(|c| c.peer.endpoint)
                .or_else(|| stored.get(&home.public_key).copied())
            {
                peer = peer.with_endpoint(endpoint);
            }
            peers.push(peer);
            names.insert(home.public_key.clone(), home);
        }
        let keep: HashSet<_> = peers.iter().map(|p| p.public_key).collect();
        let bound = lock(&running.bound).is_some();
        if bound {
            for gone in current
                .iter()
                .filter(|c| !keep.contains(&c.peer.public_key))
            {
                let _ = running.device.remove_peer(&gone.peer.public_key).await;
            }
            for peer in peers {
                running
                    .device
                    .add_or_update_peer(peer)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        } else {
            // gotatun binds its socket when its peers are set anew, not
            // when one is added to none.
            let set_anew = async |device: &mut gotatun::device::configure::DeviceWrite<'_, _>| {
                device.clear_peers();
                device.add_peers(peers);
            };
            gotatun::device::Device::write(&running.device, set_anew)
                .await
                .map_err(|e| format!("cannot listen on {}: {e}", self.config.listen))?;
            // After a restart the home still holds a session this edge
            // forgot, and would not start a new one for up to two minutes.
            for (key, _) in stored.iter().filter(|(key, _)| names.contains_key(*key)) {
                if let Some(public) = keys::public(key) {
                    let _ = running.device.force_handshake(&public).await;
                }
            }
        }
        lock(&self.seen).retain(|key, _| names.contains_key(key));
        self.names.store(Arc::new(names));
        Ok(())
    }

    /// How many packets the fence turned away.
    pub fn refused(&self) -> u64 {
        lock(&self.running)
            .as_ref()
            .map_or(0, |r| r.refused.load(std::sync::atomic::Ordering::Relaxed))
    }
}

impl Drop for Wireguard {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
