//! The fence on the edge's TUN: what may cross between the edge and a home
//! peer. Toward home, only TCP to the addresses and ports the sites name
//! (`wireguard:PEER/http://ADDRESS:PORT`): nothing else of the home network
//! is reachable from the edge, whatever else on the VPS dials into the
//! tunnel's routes. From home, only TCP from those addresses and ports to
//! the edge's own tunnel address, and never the opening SYN of a new
//! connection: a compromised router answers the edge's connections and can
//! open none of its own to the VPS's services. WireGuard's cryptokey routing
//! already binds each source address to its peer.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const TCP: u8 = 6;
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

/// The endpoints home may be reached at, and the edge's own tunnel address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fence {
    /// Jellyfin's address and port at home, as each site names it.
    pub reach: HashSet<SocketAddr>,
    /// The edge's address in the tunnel network.
    pub edge: Option<IpAddr>,
}

/// A TCP segment's addresses and flags, from an IP packet.
#[derive(Debug, PartialEq, Eq)]
struct Segment {
    from: SocketAddr,
    to: SocketAddr,
    flags: u8,
}

/// The TCP segment in `packet`, if it is one: IPv4 (not a later fragment)
/// or IPv6 without extension headers.
fn segment(packet: &[u8]) -> Option<Segment> {
    let version = packet.first()? >> 4;
    let (from, to, tcp) = match version {
        4 => {
            let header = usize::from(packet[0] & 0x0f) * 4;
            let fragment_offset = u16::from_be_bytes([*packet.get(6)?, *packet.get(7)?]) & 0x1fff;
            if header < 20 || *packet.get(9)? != TCP || fragment_offset != 0 {
                return None;
            }
            let from: [u8; 4] = packet.get(12..16)?.try_into().ok()?;
            let to: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
            (
                IpAddr::V4(Ipv4Addr::from(from)),
                IpAddr::V4(Ipv4Addr::from(to)),
                packet.get(header..)?,
            )
        }
        6 => {
            if *packet.get(6)? != TCP {
                return None;
            }
            let from: [u8; 16] = packet.get(8..24)?.try_into().ok()?;
            let to: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
            (
                IpAddr::V6(Ipv6Addr::from(from)),
                IpAddr::V6(Ipv6Addr::from(to)),
                packet.get(40..)?,
            )
        }
        _ => return None,
    };
    let port = |at: usize| Some(u16::from_be_bytes([*tcp.get(at)?, *tcp.get(at + 1)?]));
    Some(Segment {
        from: SocketAddr::new(from, port(0)?),
        to: SocketAddr::new(to, port(2)?),
        flags: *tcp.get(13)?,
    })
}

impl Fence {
    /// Whether `packet`, leaving the edge for home, may go.
    pub fn lets_out(&self, packet: &[u8]) -> bool {
        segment(packet)
            .is_some_and(|s| self.reach.contains(&s.to) && Some(s.from.ip()) == self.edge)
    }

    /// Whether `packet`, come from home, may reach the edge.
    pub fn lets_in(&self, packet: &[u8]) -> bool {
        segment(packet).is_some_and(|s| {
            let opens = s.flags & SYN != 0 && s.flags & ACK == 0;
            !opens && self.reach.contains(&s.from) && Some(s.to.ip()) == self.edge
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4_tcp(from: &str, to: &str, flags: u8) -> Vec<u8> {
        let from: SocketAddr = from.parse().unwrap();
        let to: SocketAddr = to.parse().unwrap();
        let (IpAddr::V4(f), IpAddr::V4(t)) = (from.ip(), to.ip()) else {
            panic!("IPv4 only here")
        };
        let mut p = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, TCP, 0, 0];
        p.extend(f.octets());
        p.extend(t.octets());
        p.extend(from.port().to_be_bytes());
        p.extend(to.port().to_be_bytes());
        p.extend([0; 8]);
        p.extend([0x50, flags, 0, 0, 0, 0, 0, 0]);
        p
    }

    fn fence() -> Fence {
        Fence {
            reach: ["192.168.1.10:8096".parse().unwrap()].into(),
            edge: Some("10.99.0.1".parse().unwrap()),
        }
    }

    #[test]
    fn only_the_named_service_is_reached_and_home_opens_nothing() {
        let f = fence();
        let edge = "10.99.0.1:40000";
        let jellyfin = "192.168.1.10:8096";
        assert!(f.lets_out(&ipv4_tcp(edge, jellyfin, SYN)));
        assert!(f.lets_in(&ipv4_tcp(jellyfin, edge, SYN | ACK)));
        assert!(f.lets_in(&ipv4_tcp(jellyfin, edge, ACK)));
        // Another port or address at home: not from the edge.
        assert!(!f.lets_out(&ipv4_tcp(edge, "192.168.1.10:22", SYN)));
        assert!(!f.lets_out(&ipv4_tcp(edge, "192.168.1.1:8096", SYN)));
        // Home opening a connection to the VPS, even from Jellyfin's port.
        assert!(!f.lets_in(&ipv4_tcp(jellyfin, "10.99.0.1:22", SYN)));
        // From elsewhere at home, or to another address than the edge's.
        assert!(!f.lets_in(&ipv4_tcp("192.168.1.11:8096", edge, ACK)));
        assert!(!f.lets_in(&ipv4_tcp(jellyfin, "10.99.0.5:40000", ACK)));
        // Not TCP, a later fragment, truncated, garbage.
        let mut udp = ipv4_tcp(jellyfin, edge, ACK);
        udp[9] = 17;
        assert!(!f.lets_in(&udp));
        let mut fragment = ipv4_tcp(jellyfin, edge, ACK);
        fragment[7] = 1;
        assert!(!f.lets_in(&fragment));
        assert!(!f.lets_in(&ipv4_tcp(jellyfin, edge, ACK)[..30]));
        assert!(!f.lets_in(&[0x45]));
        assert!(!f.lets_in(&[]));
        assert!(!Fence::default().lets_out(&ipv4_tcp(edge, jellyfin, SYN)));
    }
}
