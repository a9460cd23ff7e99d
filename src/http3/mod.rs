//! HTTP/3: QUIC on UDP beside each TLS listener (`[server] quic`), one more
//! way into the same pipeline — same certificates by SNI, sites, guard,
//! cache and logs. The order of a connection is the TCP one's: admit (the
//! guard, on the first packet's source, before any crypto) → handshake
//! (within `handshake_timeout`; an unknown or absent name has no
//! certificate and fails) → serve (`stream.rs`: each request stream into
//! `Gateway::handle`).
//!
//! Spoofed-source floods: while more than `RETRY_ABOVE` handshakes are
//! under way, a new connection from an address not yet validated is sent a
//! Retry first (a token it must echo from its real address), so forged
//! sources cost a packet, not a handshake. 0-RTT is off (a replayed login);
//! connection migration is on (a phone changing networks keeps its film).
//! WebSocket over HTTP/3 (RFC 9220) is not in the released `h3` crate: an
//! extended CONNECT is refused, and browsers keep WebSockets on HTTP/2 or
//! HTTP/1.1.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::Limits;
use crate::connection::Shared;
use crate::pipeline::Conn;
use crate::socket::deadline::ConnState;
use crate::tls::failures::HandshakeFailure;

mod stream;

/// Handshakes under way above which unvalidated sources get a Retry first.
const RETRY_ABOVE: usize = 64;

/// QUIC flow-control credit per stream and per connection: one film at a
/// 4K bitrate over a long path (as the HTTP/2 windows).
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 8 * 1024 * 1024;

/// Binds a QUIC endpoint on each of `addrs` with `tls` (`TlsStore::quic_config`);
/// the address that could not be bound, and why.
pub fn bind(
    addrs: &[SocketAddr],
    tls: Arc<rustls::ServerConfig>,
    limits: &Limits,
) -> Result<Vec<quinn::Endpoint>, (SocketAddr, std::io::Error)> {
    let Some(first) = addrs.first() else {
        return Ok(Vec::new());
    };
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| (*first, std::io::Error::other(e.to_string())))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(limits.h2_max_concurrent_streams.into())
        // The peer's control and QPACK streams, with room to spare.
        .max_concurrent_uni_streams(8u32.into())
        .stream_receive_window(STREAM_WINDOW.into())
        .receive_window(CONNECTION_WINDOW.into())
        .max_idle_timeout(Some(limits.h2_idle_timeout.try_into().unwrap_or_else(
            |_| quinn::IdleTimeout::from(quinn::VarInt::from_u32(180_000)),
        )));
    config.transport_config(Arc::new(transport));
    config.migration(true);
    addrs
        .iter()
        .map(|addr| endpoint(config.clone(), *addr).map_err(|e| (*addr, e)))
        .collect()
}

/// A QUIC server endpoint on `addr`. The socket is made here, not by
/// `quinn::Endpoint::server`: an IPv6 one only for IPv6 (as the TCP
/// listeners are), so that `0.0.0.0:443` and `[::]:443` — the default — can
/// both be listed.
fn endpoint(config: quinn::ServerConfig, addr: SocketAddr) -> std::io::Result<quinn::Endpoint> {
    let socket = crate::socket::for_address(addr, socket2::Type::DGRAM)?;
    socket.bind(&addr.into())?;
    let runtime =
        quinn::default_runtime().ok_or_else(|| std::io::Error::other("no async runtime found"))?;
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(config),
        socket.into(),
        runtime,
    )
}

/// Accepts QUIC connections on `endpoint` until `shutdown`.
pub async fn accept_loop(
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    drain: CancellationToken,
) {
    let local = endpoint
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(quic = %local, "HTTP/3 open (QUIC, UDP)");
    let counts = shared.quic.clone();
    loop {
        let incoming = tokio::select! {
            () = shutdown.cancelled() => break,
            incoming = endpoint.accept() => incoming,
        };
        let Some(incoming) = incoming else { break };
        let peer = incoming.remote_address();
        if !incoming.remote_address_validated()
            && counts.handshaking.load(Ordering::Acquire) > RETRY_ABOVE
        {
            // Under load: prove the address first (a forged one cannot).
            if incoming.retry().is_ok() {
                counts.retries.fetch_add(1, Ordering::Relaxed);
            }
            continue;
        }
        // Admit: the guard, before any crypto (bans and connection caps).
        let admission = match shared.admit(peer) {
            Ok(admission) => admission,
            Err(refused) => {
                tracing::debug!(%refused, %peer, "QUIC connection refused at its first packet");
                incoming.refuse();
                continue;
            }
        };
        let span = tracing::debug_span!("conn", client.addr = %peer, listener = %local, quic = true, tls.sni = tracing::field::Empty);
        let shared = shared.clone();
        let drain = drain.clone();
        let counts = counts.clone();
        let tasks = tracker.clone();
        tracker.spawn(
            async move {
                counts.handshaking.fetch_add(1, Ordering::AcqRel);
                let connected = handshake(incoming, &shared).await;
                counts.handshaking.fetch_sub(1, Ordering::AcqRel);
                let Some(connection) = connected else { return };
                let sni = connection
                    .handshake_data()
                    .and_then(|data| data.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
                    .and_then(|data| data.server_name);
                tracing::Span::current().record("tls.sni", sni.as_deref());
                let conn = Conn {
                    client: peer,
                    sni,
                    tls: true,
                    state: Arc::new(ConnState::default()),
                    kill: admission.kill.clone(),
                    drain,
                    tasks,
                    id: admission.id,
                    exporter: None,
                    agent_only: false,
                    recall: Default::default(),
                };
                let serving = shared.metrics.serving(crate::metrics::Protocol::Http3);
                stream::serve(connection, conn, &shared).await;
                drop((serving, admission));
            }
            .instrument(span),
        );
    }
    // No new connections; those open finish their requests (GOAWAY).
    endpoint.set_server_config(None);
}

/// The QUIC handshake within `handshake_timeout`, counted when it fails.
async fn handshake(incoming: quinn::Incoming, shared: &Shared) -> Option<quinn::Connection> {
    let connecting = match incoming.accept() {
        Ok(connecting) => connecting,
        Err(error) => {
            tracing::debug!(%error, "QUIC connection not accepted");
            return None;
        }
    };
    match tokio::time::timeout(shared.limits.handshake_timeout, connecting).await {
        Ok(Ok(connection)) => Some(connection),
        Ok(Err(error)) => {
            tracing::debug!(%error, "QUIC handshake refused");
            shared.handshake_failures.count(HandshakeFailure::Refused);
            None
        }
        Err(_) => {
            tracing::debug!("QUIC handshake not finished in time");
            shared.handshake_failures.count(HandshakeFailure::TimedOut);
            None
        }
    }
}
