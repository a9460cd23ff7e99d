//! `[wireguard]`: the edge as a WireGuard responder for home routers that
//! speak it themselves (`wireguard:PEER/http://…` upstreams).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use ipnet::Ipv4Net;

/// `[wireguard]`, with its defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireguardConfig {
    /// The UDP address the responder listens on (`[::]:51820`, both
    /// families).
    pub listen: SocketAddr,
    /// The edge's own tunnel address and the network home peers are
    /// numbered from (`10.99.0.1/24`).
    pub address: Ipv4Net,
    /// What a home peer dials, `host:port` (None: the first site's name and
    /// the listen port).
    pub endpoint: Option<String>,
    /// How often a home peer sends a keepalive (its `PersistentKeepalive`);
    /// a peer silent for two of these and five seconds is down.
    pub keepalive: Duration,
    /// The tunnel's MTU, on the edge's TUN and in the home's config.
    pub mtu: u16,
    /// The name of the TUN device drawbridge makes.
    pub interface: String,
}

impl Default for WireguardConfig {
    fn default() -> Self {
        WireguardConfig {
            listen: SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 51820),
            address: Ipv4Net::new(Ipv4Addr::new(10, 99, 0, 1), 24).unwrap_or_default(),
            endpoint: None,
            keepalive: Duration::from_secs(25),
            mtu: 1420,
            interface: "drawbridge0".to_string(),
        }
    }
}

impl WireguardConfig {
    /// How long a peer may stay silent before it counts as down.
    pub fn silence_allowed(&self) -> Duration {
        self.keepalive * 2 + Duration::from_secs(5)
    }
}
