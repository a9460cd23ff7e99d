//! A site's upstream as the config names it: an HTTP server reached
//! directly (`http://`, `https://` with its certificate check), an agent's
//! service through the tunnel (`tunnel:AGENT/SERVICE`), or an address at home
//! through the home router's WireGuard (`wireguard:PEER/http://…`).

use std::path::PathBuf;

use super::PRIVATE_NETWORKS;

/// Whether `name` may name a tunnel agent: 1 to 32 of a-z, 0-9, `-`, `_`.
pub fn valid_agent_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Where a site's requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamTarget {
    /// An HTTP server reached directly (`http://host:port`).
    Http(UpstreamAddr),
    /// A service of an agent reached through the tunnel
    /// (`tunnel:AGENT/SERVICE`).
    Tunnel {
        /// The agent's name (`drawbridge tunnel add NAME`).
        agent: String,
        /// The service, as the agent's `[services]` names it.
        service: String,
    },
    /// An address at home reached through the home router's own WireGuard
    /// (`wireguard:PEER/http://ADDRESS:PORT`).
    Wireguard {
        /// The peer's name (`drawbridge wireguard add NAME`).
        peer: String,
        /// Jellyfin's address as the peer routes it (an IP literal).
        addr: UpstreamAddr,
    },
}

impl UpstreamTarget {
    /// Plain HTTP to an address that is not on this machine or the home
    /// network: what the upstream is sent crosses the internet readable.
    pub fn plain_to_public(&self) -> bool {
        let UpstreamTarget::Http(addr) = self else {
            return false;
        };
        if addr.tls.is_some() {
            return false;
        }
        match addr.host.parse::<std::net::IpAddr>() {
            Ok(ip) => !PRIVATE_NETWORKS
                .iter()
                // Carrier-grade NAT (Tailscale, WireGuard overlays), link-local.
                .chain(&["100.64.0.0/10", "169.254.0.0/16", "fe80::/10"])
                .filter_map(|net| net.parse::<ipnet::IpNet>().ok())
                .any(|net| net.contains(&ip)),
            Err(_) => {
                let host = addr.host.to_ascii_lowercase();
                let local = !host.contains('.')
                    || [
                        ".lan",
                        ".local",
                        ".home.arpa",
                        ".internal",
                        ".localhost",
                        ".home",
                    ]
                    .iter()
                    .any(|suffix| host.ends_with(suffix));
                !local
            }
        }
    }

    /// Whether the target is a host name to resolve.
    pub fn needs_dns(&self) -> bool {
        matches!(self, UpstreamTarget::Http(addr) if addr.host.parse::<std::net::IpAddr>().is_err())
    }
}

impl std::fmt::Display for UpstreamTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamTarget::Http(addr) => {
                let scheme = if addr.tls.is_some() { "https" } else { "http" };
                if addr.host.contains(':') {
                    write!(f, "{scheme}://[{}]:{}", addr.host, addr.port)
                } else {
                    write!(f, "{scheme}://{}:{}", addr.host, addr.port)
                }
            }
            UpstreamTarget::Tunnel { agent, service } => write!(f, "tunnel:{agent}/{service}"),
            UpstreamTarget::Wireguard { peer, addr } => {
                write!(f, "wireguard:{peer}/{}", UpstreamTarget::Http(addr.clone()))
            }
        }
    }
}

/// An upstream address: `http://host:port`, fixed by the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamAddr {
    /// Host name or IP literal (without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// TLS to the upstream (`https://`), and how its certificate is checked.
    pub tls: Option<UpstreamTls>,
}

/// How an `https://` upstream's certificate is checked. Never skipped: a
/// certificate that does not verify is a 502, not plain text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamTls {
    /// Against the system's roots, for the upstream's host name.
    SystemRoots,
    /// By the pin of its key alone (`upstream_pin`, for Jellyfin's own
    /// self-signed certificate).
    Pin(String),
    /// Against a CA certificate file (`upstream_ca`), for the host name.
    CaFile(PathBuf),
}
