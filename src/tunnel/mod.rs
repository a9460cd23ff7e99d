//! The home leg without a port forward: an agent at home dials out to the
//! edge over TLS 1.3 on the HTTPS port, and on that connection the roles are
//! reversed — the edge is the HTTP/2 client, the agent the HTTP/2 server that
//! forwards to the services its own config names. Trust is by pinned keys on
//! both sides, set up once with a one-time token (`register.rs`).
//!
//! - `identity.rs`: each end's key and its pin.
//! - `trust.rs`: rustls verifiers by pin.
//! - `register.rs`: enrolled agents and pending tokens on the edge.
//! - `edge.rs`: agents told apart by ALPN at the edge's handshake; enrollment.
//! - `hub.rs`: the agent connections that are up, as HTTP/2 clients.
//!
//! The agent's side is `agent/`. The forward step reaches the hub through
//! `upstream/` (`tunnel:NAME/service`), so the pipeline does not know which
//! transport a site uses.

pub mod edge;
pub mod hub;
pub mod identity;
pub mod register;
pub mod trust;

/// ALPN of a tunnel connection (agent → edge).
pub const TUNNEL_ALPN: &[u8] = b"drawbridge-tunnel/1";

/// ALPN of an enrollment connection.
pub const ENROLL_ALPN: &[u8] = b"drawbridge-enroll/1";

/// What each end of a tunnel connection reads from its socket at once
/// (`socket::rewind`): a film crosses it in TLS records of 16 KiB, one system
/// call each without it (docs/performance.md, "The home leg").
pub const READ_AHEAD: usize = 256 * 1024;

/// The largest HTTP/2 frame either end accepts: a stream's DATA in frames of
/// this size rather than 16 KiB ones, fewer to frame, wake and forward.
pub const MAX_FRAME: u32 = 256 * 1024;
