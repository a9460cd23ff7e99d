//! PROXY protocol v1 and v2 (HAProxy's), on listeners that ask for it: the
//! load balancer in front says who the client is in a header before the first
//! TLS or HTTP byte. A connection on such a listener without a valid header in
//! time is closed; listeners that did not ask never read one. Parsing is
//! `ppp`'s; this file reads just enough bytes and hands the rest on.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use ppp::{v1, v2, HeaderResult, PartialResult};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::rewind::Rewind;

/// Longest header read (v1 is at most 107 bytes; v2 with TLVs stays far below).
const MAX_HEADER: usize = 4096;

/// Why a PROXY header was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    /// The connection failed or closed.
    #[error("connection lost before the PROXY header: {0}")]
    Io(#[from] io::Error),
    /// Not a PROXY header, or a broken one.
    #[error("invalid PROXY protocol header")]
    Invalid,
    /// No complete header in time.
    #[error("no PROXY protocol header in time")]
    Timeout,
}

/// Reads the PROXY header from `stream` within `limit`. Returns the client's
/// address it names (the peer itself for LOCAL/UNKNOWN, a balancer's health
/// check) and the stream with any bytes read past the header put back.
pub async fn accept(
    mut stream: TcpStream,
    peer: SocketAddr,
    limit: Duration,
) -> Result<(Rewind, SocketAddr), ProxyHeaderError> {
    let read = async {
        let mut buf = Vec::with_capacity(256);
        loop {
            let mut chunk = [0u8; 512];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(ProxyHeaderError::Invalid);
            }
            buf.extend_from_slice(&chunk[..n]);
            let parsed = HeaderResult::parse(&buf);
            if parsed.is_incomplete() {
                if buf.len() >= MAX_HEADER {
                    return Err(ProxyHeaderError::Invalid);
                }
                continue;
            }
            let (length, source) = match parsed {
                HeaderResult::V1(Ok(header)) => (header.header.len(), v1_source(&header.addresses)),
                HeaderResult::V2(Ok(header)) => (header.len(), v2_source(&header)),
                _ => return Err(ProxyHeaderError::Invalid),
            };
            let rest = Bytes::copy_from_slice(&buf[length..]);
            return Ok((rest, source.unwrap_or(peer)));
        }
    };
    let (rest, client) = match tokio::time::timeout(limit, read).await {
        Ok(result) => result?,
        Err(_) => return Err(ProxyHeaderError::Timeout),
    };
    Ok((Rewind::with_prefix(stream, rest), client))
}

fn v1_source(addresses: &v1::Addresses) -> Option<SocketAddr> {
    match addresses {
        v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v1::Addresses::Unknown => None,
    }
}

fn v2_source(header: &v2::Header<'_>) -> Option<SocketAddr> {
    if header.command == v2::Command::Local {
        return None;
    }
    match header.addresses {
        v2::Addresses::IPv4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v2::Addresses::IPv6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        _ => None,
    }
}
