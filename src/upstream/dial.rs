//! Connecting to a site's upstream: its current addresses raced Happy
//! Eyeballs style (RFC 8305) within `connect_timeout`, the socket set up for
//! a long-lived keep-alive connection.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;

use super::tls::UpstreamTlsConfig;
use crate::config::UpstreamAddr;
use crate::dns::Addresses;
use std::sync::Arc;

/// After this long without an answer from one address, the next one is tried
/// alongside it (RFC 8305's connection attempt delay): an address that drops
/// packets costs a quarter second, not the whole `connect_timeout`.
const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// A connection to the upstream: plain, or TLS for an `https://` one.
pub(super) type UpstreamIo = Either<TcpStream, TlsStream<TcpStream>>;

/// The direct way home: the upstream's addresses (followed in DNS when it
/// is named), its port, and TLS for an `https://` upstream.
#[derive(Debug)]
pub(super) struct Direct {
    pub(super) addresses: Arc<Addresses>,
    /// The host name to keep resolving; None for an IP address.
    pub(super) name: Option<String>,
    pub(super) port: u16,
    /// Set for an `https://` upstream.
    pub(super) tls: Option<UpstreamTlsConfig>,
    /// Set when home is reached through the router's WireGuard.
    pub(super) through: Option<Through>,
}

/// The home peer a `wireguard:` upstream goes through.
#[derive(Debug)]
pub(super) struct Through {
    pub(super) wireguard: Arc<crate::wireguard::Wireguard>,
    pub(super) peer: String,
}

/// A TCP connection to `addr`; through WireGuard, from a socket bound to
/// the TUN, so it can leave by no other way whatever the routes say.
async fn connect(addr: SocketAddr, device: Option<String>) -> io::Result<TcpStream> {
    let Some(device) = device else {
        return TcpStream::connect(addr).await;
    };
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket2::SockRef::from(&socket).bind_device(Some(device.as_bytes()))?;
    socket.connect(addr).await
}

impl Direct {
    /// The way to `addr`, through WireGuard's `through` when given.
    pub(super) fn new(addr: &UpstreamAddr, through: Option<Through>) -> Direct {
        let (addresses, name) = match addr.host.parse::<IpAddr>() {
            Ok(ip) => (Addresses::fixed(ip), None),
            Err(_) => (Addresses::unresolved(), Some(addr.host.clone())),
        };
        Direct {
            addresses,
            name,
            port: addr.port,
            tls: addr
                .tls
                .as_ref()
                .map(|how| UpstreamTlsConfig::new(&addr.host, how)),
            through,
        }
    }

    /// Why nothing should be sent: the WireGuard peer this goes through
    /// has not been heard from lately.
    pub(super) fn silent(&self) -> Option<io::Error> {
        let through = self.through.as_ref()?;
        (!through.wireguard.is_up(&through.peer)).then(|| {
            io::Error::new(
                io::ErrorKind::NotConnected,
                format!("WireGuard peer `{}` has not been heard from", through.peer),
            )
        })
    }

    /// A connection to the upstream, with TLS when it is `https://`, all
    /// within `connect_timeout`.
    pub(super) async fn dial_io(&self, connect_timeout: Duration) -> io::Result<UpstreamIo> {
        let stream = self.dial(connect_timeout).await?;
        match &self.tls {
            None => Ok(Either::Left(stream)),
            Some(tls) => tokio::time::timeout(connect_timeout, tls.connect(stream))
                .await
                .unwrap_or_else(|_| {
                    Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "TLS handshake timed out",
                    ))
                })
                .map(Either::Right),
        }
    }

    /// Connects to the upstream's current addresses, within `connect_timeout`.
    /// With several (a name with A and AAAA records), the next address is
    /// tried as soon as one refuses or after `ATTEMPT_DELAY` without an
    /// answer, alternating families; the first to connect wins.
    pub(super) async fn dial(&self, connect_timeout: Duration) -> io::Result<TcpStream> {
        let port = self.port;
        if let Some(silent) = self.silent() {
            // A silent peer: at once, not after `connect_timeout`.
            return Err(silent);
        }
        let device = self
            .through
            .as_ref()
            .map(|t| t.wireguard.interface().to_string());
        let attempts = async {
            let ips = self.addresses.resolved(connect_timeout).await?;
            let mut queue = interleaved(&ips).into_iter();
            let mut racing = JoinSet::new();
            let mut last = io::Error::from(io::ErrorKind::NotFound);
            loop {
                if let Some(ip) = queue.next() {
                    racing.spawn(connect(SocketAddr::new(ip, port), device.clone()));
                } else if racing.is_empty() {
                    return Err(last);
                }
                let more = queue.len() > 0;
                tokio::select! {
                    Some(done) = racing.join_next() => match done {
                        Ok(Ok(stream)) => return Ok(stream),
                        Ok(Err(error)) => last = error,
                        Err(error) => last = io::Error::other(error),
                    },
                    () = tokio::time::sleep(ATTEMPT_DELAY), if more => {}
                }
            }
        };
        let stream = tokio::time::timeout(connect_timeout, attempts)
            .await
            .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))?;
        stream.set_nodelay(true)?;
        let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(60));
        socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive)?;
        Ok(stream)
    }
}

/// The addresses to try, in order: the first one's family first, then
/// alternating (RFC 8305 §4), so a broken IPv6 route costs one attempt delay.
pub(super) fn interleaved(ips: &[IpAddr]) -> Vec<IpAddr> {
    let Some(first) = ips.first() else {
        return Vec::new();
    };
    let (same, other): (Vec<IpAddr>, Vec<IpAddr>) =
        ips.iter().partition(|ip| ip.is_ipv6() == first.is_ipv6());
    let mut other = other.into_iter();
    let mut order = Vec::with_capacity(ips.len());
    for ip in same {
        order.push(ip);
        order.extend(other.next());
    }
    order.extend(other);
    order
}

#[cfg(test)]
mod tests {
    use super::interleaved;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    #[test]
    fn addresses_alternate_families_starting_with_the_first() {
        let v4 = |n| IpAddr::V4(Ipv4Addr::new(192, 0, 2, n));
        let v6 = |n| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, n));
        assert_eq!(
            interleaved(&[v6(1), v6(2), v6(3), v4(1)]),
            [v6(1), v4(1), v6(2), v6(3)]
        );
        assert_eq!(
            interleaved(&[v4(1), v4(2), v6(1), v6(2), v6(3)]),
            [v4(1), v6(1), v4(2), v6(2), v6(3)]
        );
        assert!(interleaved(&[]).is_empty());
    }
}
