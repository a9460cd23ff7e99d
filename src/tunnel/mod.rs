//! The home leg without a port forward: an agent at home dials out to the
//! edge like any browser — TLS to a site's own name on the HTTPS port — and
//! knocks with an HTTP/1.1 Upgrade carrying its key's proof; on that
//! connection the roles are then reversed — the edge is the HTTP/2 client,
//! the agent the HTTP/2 server that forwards to the services its own config
//! names. Trust is by pinned keys on both sides, proven inside the TLS
//! connection and bound to it, set up once with a one-time token
//! (`register.rs`).
//!
//! - `protocol.rs`: the knock, the proofs, the answers, the agent's
//!   refusals and a link's HTTP/2 settings — what both ends read.
//! - `identity.rs`: each end's key, its pin and its signatures.
//! - `trust.rs`: the rustls verifiers a TLS client of ours may need (by pin,
//!   or none at all where the key is proven inside).
//! - `register.rs`: enrolled agents, pending tokens, removed keys on the edge.
//! - `edge.rs`: the door on a client's connection: a knock told apart from
//!   a client's request; enrolment.
//! - `hub.rs`: the links that are up, as HTTP/2 clients.
//!
//! The agent's side is `agent/`. The forward step reaches the hub through
//! `upstream/` (`tunnel:NAME/service`), so the pipeline does not know which
//! transport a site uses. Nothing on the edge imports `agent/`.

pub mod edge;
pub mod hub;
pub mod identity;
pub mod protocol;
pub mod register;
pub mod trust;
