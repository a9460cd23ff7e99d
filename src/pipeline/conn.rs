//! What the pipeline knows of the connection a request came on, and the one
//! answer that is no answer (`Closed`).

use std::net::SocketAddr;
use std::sync::Arc;

use crate::socket::deadline::ConnState;

/// What the pipeline knows about the connection a request came on.
#[derive(Debug)]
pub struct Conn {
    /// The TCP peer.
    pub client: SocketAddr,
    /// The TLS server name, when the request came over TLS.
    pub sni: Option<String>,
    /// Whether the listener is a TLS one.
    pub tls: bool,
    /// Requests in flight on this connection (long-lived tunnels hold one).
    pub state: Arc<ConnState>,
    /// Fired when the connection must end at once (a ban, the end of the
    /// shutdown grace); tunnels end then too.
    pub kill: tokio_util::sync::CancellationToken,
    /// Fired when shutdown begins (no new requests; WebSockets say goodbye).
    pub drain: tokio_util::sync::CancellationToken,
    /// Where long-lived tasks of the connection (WebSocket relays) run, so
    /// shutdown waits for them.
    pub tasks: tokio_util::task::TaskTracker,
    /// The connection's number, from the guard.
    pub id: u64,
    /// The TLS exporter's 32 bytes (`tunnel::protocol::EXPORTER_LABEL`),
    /// on HTTP/1.1 over TLS while the tunnel's door is open: an agent's
    /// proof is bound to them.
    pub exporter: Option<[u8; 32]>,
    /// The address is banned, but the household's agent attaches from it:
    /// nothing but an agent's knock is answered.
    pub agent_only: bool,
    /// The last credentials the gate let through on this connection.
    pub recall: crate::gate::Recall,
}

/// The request gets no response: close the connection (nginx's 444).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection closed without a response")
    }
}

impl std::error::Error for Closed {}
