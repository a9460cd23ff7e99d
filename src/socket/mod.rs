//! The I/O layers stacked under hyper, from the socket up:
//!
//! ```text
//! TcpStream
//!   └ rewind::Rewind           the PROXY header read off (proxy_protocol, only
//!                              on listeners that ask), or nothing; first, so
//!                              the guard sees the real client before any TLS
//!                              work; reads ahead on agent connections
//!     └ TLS (tokio-rustls)     the handshake in `connection/handshake.rs`
//!       └ coalesce::Coalesce   HTTP/2 only: answers gathered into full TLS
//!                              records; above TLS, because records are what it
//!                              fills
//!         └ deadline::Parked   head and idle deadlines, requests in flight,
//!           / Watched          and parking of quiet HTTP/1.1 connections; on
//!                              top, because it must see hyper's reads as
//!                              hyper makes them (`head_scan` reads the raw
//!                              head bytes through it)
//!           └ hyper
//! ```
//!
//! Each layer owns one thing about the bytes and knows nothing of requests;
//! `connection/` puts them together.

pub mod coalesce;
pub mod deadline;
pub mod head_scan;
pub mod proxy_protocol;
pub mod rewind;

/// A socket of `kind` (TCP or UDP) for `addr`, not yet bound: IPv6-only
/// when `addr` is IPv6, so that `0.0.0.0:443` and `[::]:443` — the shipped
/// listeners — can both be bound, over TCP and over QUIC alike.
pub fn for_address(
    addr: std::net::SocketAddr,
    kind: socket2::Type,
) -> std::io::Result<socket2::Socket> {
    let protocol = if kind == socket2::Type::DGRAM {
        socket2::Protocol::UDP
    } else {
        socket2::Protocol::TCP
    };
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), kind, Some(protocol))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    Ok(socket)
}
