//! drawbridge puts a home media server (Jellyfin first) on the internet safely,
//! from a public VPS: one program instead of nginx + certbot + fail2ban + DDNS.
//!
//! # Architecture in one page
//!
//! A request goes through four phases (see `docs/architecture.md`, whose
//! "reading path" lists the twelve files to open in request order):
//!
//! 1. **connection** — [`server`] accepts; [`connection`] admits (the
//!    [`guard`]), runs the TLS handshake, where [`tls`] picks the certificate
//!    by SNI, then hyper serves HTTP/1.1 or HTTP/2 over the I/O layers of
//!    [`socket`]; [`http3`] is the same over QUIC.
//! 2. **request** — [`pipeline::Gateway::handle`] checks the head, finds the
//!    site in the [`routes`] snapshot from Host (an unknown host gets the door
//!    closed), puts the [`canonical`] path in place, checks Host against SNI,
//!    applies port-80 rules ([`webroot`]), the site's [`filter`]s and the
//!    side-door [`gate`].
//! 3. **forward** — a [`websocket`] relay, the edge [`cache`], or the one
//!    forward step of the [`upstream`] (directly or through the [`tunnel`]),
//!    the request's body read whole first ([`spool`]).
//! 4. **response** — filters' `on_response`; errors become short pages in
//!    [`error`]; the [`access_log`] line is written when the body ends.
//!
//! # Layout (modules by floor: each imports only from those below it)
//!
//! - `main.rs` and `src/cli/` are the command line, logging and signals.
//! - [`server`] binds, accepts, reloads and shuts down; [`admin_listener`]
//!   serves `/metrics`, the [`dashboard`] and its API; [`admin`] is the admin
//!   socket (its protocol typed in [`admin::Command`] and [`admin::Reply`]);
//!   [`http3`] the QUIC endpoints.
//! - [`connection`] (one connection; [`connection::Shared`] is the process
//!   context the admin and the reloader borrow), [`pipeline`] (one request),
//!   [`routes`] (the snapshot of sites).
//! - [`agent`], [`gate`], [`websocket`], [`cache`]: the home end of the
//!   tunnel, the side-door gate, WebSocket relays, the edge cache.
//! - [`upstream`], [`dashboard`]: the way out (one `Transport`: direct or
//!   tunnel), the page.
//! - [`acme`], [`tunnel`] (its protocol, the edge's door, hub and register),
//!   [`filter`], [`webroot`].
//! - [`tls`], [`guard`], [`access_log`], [`error_log`], [`spool`],
//!   [`notify`].
//! - [`config`], [`error`], [`atomic_file`], [`privileges`], [`log_file`].
//! - Leaves with no drawbridge imports above them: [`metrics`], [`body`],
//!   [`canonical`], [`client_ip`], [`dns`], [`socket`], [`owner`],
//!   [`certfile`], [`timestamp`].
//!
//! Words are fixed in `docs/glossary.md`.

pub mod access_log;
pub mod acme;
pub mod admin;
pub mod admin_listener;
pub mod agent;
pub mod atomic_file;
pub mod body;
pub mod cache;
pub mod canonical;
pub mod certfile;
pub mod client_ip;
pub mod config;
pub mod connection;
pub mod dashboard;
pub mod dns;
pub mod error;
pub mod error_log;
pub mod filter;
pub mod gate;
pub mod guard;
pub mod http3;
pub mod log_file;
pub mod metrics;
pub mod notify;
pub mod owner;
pub mod pipeline;
pub mod privileges;
pub mod routes;
pub mod server;
pub mod socket;
pub mod spool;
pub mod timestamp;
pub mod tls;
pub mod tunnel;
pub mod upstream;
pub mod webroot;
pub mod websocket;
pub mod wireguard;
