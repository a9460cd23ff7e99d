//! One accepted connection: the TLS handshake (bounded in time), then exactly
//! the protocol ALPN agreed (RFC 7301: `h2` is HTTP/2, anything else or no
//! ALPN is HTTP/1.1, plain HTTP too) with the protocol limits of `[limits]`,
//! until the client leaves, a deadline passes, the pipeline closes the door,
//! or shutdown drains it. No guessing from the first bytes: an HTTP/1.1
//! request after `h2` ends the connection (hyper's HTTP/2 server closes it),
//! an HTTP/2 preface after `http/1.1` gets HTTP/1.1's 400.
//!
//! `serve` (here) reads admit → handshake (`handshake.rs`) → serve
//! (`http.rs`); the I/O layers under hyper are in `socket/`.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::config::Limits;
use crate::guard::Guard;
use crate::metrics::Protocol;
use crate::pipeline::{Conn, Gateway};
use crate::socket::coalesce::Coalesce;
use crate::socket::deadline::{ConnState, Deadlines};
use crate::socket::proxy_protocol;
use crate::socket::rewind::Rewind;
use crate::tls::challenges::ACME_TLS_ALPN;
use crate::tls::failures::HandshakeFailures;
use crate::tls::{ServerConfigs, TlsStore};
use crate::tunnel::edge::Edge;
use crate::tunnel::protocol::EXPORTER_LABEL;

mod handshake;
mod http;

use handshake::handshake;
use http::serve_http;
pub use http::HttpBuilders;

/// The process's context: everything a connection needs, shared by all
/// connections, and what the admin (`admin::Sources`) and the reloader
/// (`server::Reloader`) borrow rather than wire again.
pub struct Shared {
    /// The request handler.
    pub gateway: Arc<Gateway>,
    /// The rustls config (its resolver reads `certificates`).
    pub tls: ServerConfigs,
    /// Certificates by SNI, to wait for an ACME site's first one.
    pub certificates: Arc<TlsStore>,
    /// Protocol limits (fixed at start).
    pub limits: Limits,
    /// hyper's connection builders, configured once from `limits`.
    pub http: HttpBuilders,
    /// Fired when the shutdown grace is over: every connection and tunnel ends.
    pub kill: CancellationToken,
    /// Bans and connection limits.
    pub guard: Arc<Guard>,
    /// Failed handshakes, summed up once a minute.
    pub handshake_failures: Arc<HandshakeFailures>,
    /// QUIC handshakes under way and Retries sent (`http3/`).
    pub quic: Arc<crate::tls::failures::QuicCounts>,
    /// Every connection's task and every WebSocket relay: shutdown waits
    /// for them, up to its grace.
    pub tasks: tokio_util::task::TaskTracker,
    /// The tunnel's door and hub: agents knock on clients' connections.
    pub edge: Arc<Edge>,
    /// The router's own WireGuard (`wireguard:` upstreams).
    pub wireguard: Arc<crate::wireguard::Wireguard>,
    /// The process's metrics (connections by protocol).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// What the side-door gates remember (tokens, addresses), kept across
    /// reloads.
    pub gate: Arc<crate::gate::memory::Memory>,
}

/// What a listener speaks.
#[derive(Debug, Clone, Copy)]
pub struct ListenerKind {
    /// TLS (else plain HTTP).
    pub tls: bool,
    /// A PROXY protocol header comes first.
    pub proxy_protocol: bool,
}

/// Serves one accepted TCP connection until it ends: admit → handshake →
/// one match on what the peer asked for, each arm a call into the room that
/// owns it.
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    listener: ListenerKind,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    // Admit: the PROXY header where one is expected, then the guard, before
    // any TLS work.
    let Some((mut stream, peer)) = proxy_header(stream, peer, listener, &shared).await else {
        return;
    };
    let Some((admission, agent_only)) = shared.admit_connection(peer, listener.tls) else {
        return;
    };
    let state = Arc::new(ConnState::default());
    stream.follow(state.clone());
    let mut conn = Conn {
        client: peer,
        sni: None,
        tls: listener.tls,
        state,
        kill: admission.kill.clone(),
        drain: shutdown,
        tasks: shared.tasks.clone(),
        id: admission.id,
        exporter: None,
        agent_only,
        recall: Default::default(),
    };
    let h1 = Deadlines {
        head: Some(shared.limits.header_timeout),
        idle: shared.limits.keepalive_timeout,
    };
    if !listener.tls {
        let _serving = shared.metrics.serving(Protocol::Plain);
        return serve_http(stream, conn, h1, &shared).await;
    }
    // Handshake. In a block: a local that was borrowed stays in the task's
    // state until its scope ends, moved or not, and the TLS stream is moved
    // into `serve_http` for the connection's whole life.
    let (stream, deadlines, protocol) = {
        // Boxed: the handshake's state is freed once it is done, and the task
        // keeps only what an open connection needs.
        let stream = tokio::select! {
            stream = Box::pin(handshake(stream, &shared, agent_only)) => stream,
            // Banned meanwhile, or the shutdown grace is over.
            () = conn.kill.cancelled() => None,
        };
        let Some(stream) = stream else {
            return;
        };
        let (_, session) = stream.get_ref();
        conn.sni = session.server_name().map(str::to_string);
        tracing::Span::current().record("tls.sni", conn.sni.as_deref());
        // What the peer asked for.
        match session.alpn_protocol() {
            // A CA validating TLS-ALPN-01: the handshake was the whole answer.
            Some(ACME_TLS_ALPN) => return,
            // HTTP/2's answers leave in shared TLS records (`socket/coalesce.rs`).
            Some(b"h2") => {
                let deadlines = Deadlines {
                    head: None,
                    idle: shared.limits.h2_idle_timeout,
                };
                (Coalesce::new(stream, true), deadlines, Protocol::Http2)
            }
            // HTTP/1.1, where an agent may knock (`tunnel/edge.rs`): the
            // connection's exporter its proof must be bound to.
            _ => {
                if shared.edge.is_open() {
                    let mut exported = [0u8; 32];
                    let exporter =
                        session.export_keying_material(&mut exported, EXPORTER_LABEL, None);
                    if exporter.is_ok() {
                        conn.exporter = Some(exported);
                    }
                }
                (Coalesce::new(stream, false), h1, Protocol::Http1)
            }
        }
    };
    // Serve.
    let _serving = shared.metrics.serving(protocol);
    serve_http(stream, conn, deadlines, &shared).await;
    drop(admission);
}

/// The stream with what a PROXY header says of the client, on listeners
/// that expect one; None when it is missing or malformed (closed).
async fn proxy_header(
    stream: TcpStream,
    peer: SocketAddr,
    listener: ListenerKind,
    shared: &Shared,
) -> Option<(Rewind, SocketAddr)> {
    if !listener.proxy_protocol {
        return Some((Rewind::new(stream), peer));
    }
    let read = proxy_protocol::accept(stream, peer, shared.limits.handshake_timeout);
    match Box::pin(read).await {
        Ok((stream, client)) => {
            tracing::Span::current().record("client.addr", tracing::field::display(client));
            Some((stream, client))
        }
        Err(error) => {
            tracing::debug!(%error, "closing: this listener expects a PROXY protocol header");
            None
        }
    }
}

impl Shared {
    /// What building the routes borrows from the process.
    pub fn for_routes(&self) -> crate::routes::Process<'_> {
        crate::routes::Process {
            guard: &self.guard,
            hub: &self.edge.hub,
            wireguard: &self.wireguard,
            metrics: &self.metrics,
            gate: &self.gate,
        }
    }

    /// The guard's word on a TCP connection from `peer`, and whether it may
    /// go no further than an agent's knock: a banned address is closed
    /// here, unless it is one the household's agent attached from (on a
    /// TLS listener) — the agent shares its household's address, and one
    /// member's mistyped passwords must not cut every remote viewer's
    /// tunnel for a day.
    fn admit_connection(
        &self,
        peer: SocketAddr,
        tls: bool,
    ) -> Option<(crate::guard::Admission, bool)> {
        match self.admit(peer) {
            Ok(admission) => Some((admission, false)),
            Err(crate::guard::Refused::Banned) if tls && self.edge.hub.is_home(peer.ip()) => {
                match self.guard.admit_agent(peer.ip()) {
                    Ok(admission) => Some((admission, true)),
                    Err(refused) => {
                        tracing::debug!(%refused, "connection closed at accept");
                        None
                    }
                }
            }
            Err(refused) => {
                tracing::debug!(%refused, "connection closed at accept");
                None
            }
        }
    }

    /// The guard's word on a new connection from `peer` (TCP or QUIC): a
    /// ban or a full cap refuses it before any TLS work. A trusted proxy
    /// carries many clients and is judged per request instead.
    pub fn admit(
        &self,
        peer: SocketAddr,
    ) -> Result<crate::guard::Admission, crate::guard::Refused> {
        let trusted = self
            .gateway
            .routes()
            .trusted_proxies
            .contains(crate::client_ip::normalise(peer.ip()));
        self.guard
            .admit(peer.ip(), trusted, tokio::time::Instant::now())
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("limits", &self.limits)
            .finish()
    }
}
