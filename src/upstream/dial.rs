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

use super::Upstream;

/// After this long without an answer from one address, the next one is tried
/// alongside it (RFC 8305's connection attempt delay): an address that drops
/// packets costs a quarter second, not the whole `connect_timeout`.
const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// A connection to the upstream: plain, or TLS for an `https://` one.
pub(super) type UpstreamIo = Either<TcpStream, TlsStream<TcpStream>>;

impl Upstream {
    /// A connection to the upstream, with TLS when it is `https://`, all
    /// within `connect_timeout`.
    pub(super) async fn dial_io(&self) -> io::Result<UpstreamIo> {
        let stream = self.dial().await?;
        match &self.tls {
            None => Ok(Either::Left(stream)),
            Some(tls) => tokio::time::timeout(self.connect_timeout, tls.connect(stream))
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
    pub(super) async fn dial(&self) -> io::Result<TcpStream> {
        let port = self.port;
        let attempts = async {
            let ips = self.addresses.resolved(self.connect_timeout).await?;
            let mut queue = interleaved(&ips).into_iter();
            let mut racing = JoinSet::new();
            let mut last = io::Error::from(io::ErrorKind::NotFound);
            loop {
                if let Some(ip) = queue.next() {
                    racing.spawn(TcpStream::connect(SocketAddr::new(ip, port)));
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
        let stream = tokio::time::timeout(self.connect_timeout, attempts)
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
