//! drawbridge puts a home media server (Jellyfin first) on the internet safely,
//! from a public VPS: one program instead of nginx + certbot + fail2ban + DDNS.
//!
//! # Architecture in one page
//!
//! A request goes through four phases (see `docs/architecture.md`):
//!
//! 1. **connection** — [`server`] accepts; [`connection`] runs the TLS handshake,
//!    where [`tls`] picks the certificate by SNI (an unknown name gets no
//!    certificate), then hyper serves HTTP/1.1 or HTTP/2 under the
//!    [`deadline`]s.
//! 2. **request** — [`pipeline::Gateway::handle`] checks the head, finds the
//!    site in the [`routes`] snapshot from Host (an unknown host gets the door
//!    closed), checks Host against SNI, and applies port-80 rules.
//! 3. **forward** — to the site's fixed upstream (the proxy core).
//! 4. **response** — errors become short pages in one place, [`error`].
//!
//! # Layout
//!
//! - [`config`]: the TOML file → validated `Config`, errors as `file:line:col`.
//! - [`canonical`]: the canonical path every rule reads and the upstream receives.
//! - [`routes`]: the immutable routes snapshot, swapped whole on reload.
//! - [`pipeline`]: the request phases.
//! - [`filter`]: access lists, the login guard, security headers; [`guard`]
//!   holds bans (by client key) and connection caps for the whole process.
//! - [`forwarding`]: the head as the upstream sees it; [`upstream`]: the
//!   connection pool, the connection cap, forwarding; [`websocket`]: tunnels.
//! - [`cache`]: the edge cache; [`body`]: the body types and the guards on
//!   bodies in flight.
//! - [`error`]: `ProxyError` → status and page.
//! - [`webroot`]: `/.well-known/acme-challenge/` from a folder.
//! - [`server`]: listeners, accept loop, reload, shutdown.
//! - [`connection`]: one connection: handshake, hyper, limits.
//! - [`coalesce`]: an HTTP/2 connection's writes gathered into full TLS records.
//! - [`deadline`]: request-head and idle deadlines on a connection's IO, and
//!   parking of quiet HTTP/1.1 keep-alive connections ([`head_scan`] tells when).
//! - [`tls`]: rustls config, certificates by SNI, local CA, file reload,
//!   ACME challenge answers; [`acme`]: ordering and renewing certificates.
//! - [`dns`], [`client_ip`], [`proxy_protocol`], [`access_log`], [`admin`].
//! - [`atomic_file`]: crash-safe writes for keys, certificates and bans;
//!   [`certfile`]: certificate and key pairs read from PEM files.
//!
//! Words are fixed in `docs/glossary.md`.

pub mod access_log;
pub mod acme;
pub mod admin;
pub mod atomic_file;
pub mod body;
pub mod cache;
pub mod canonical;
pub mod certfile;
pub mod client_ip;
pub mod coalesce;
pub mod config;
pub mod connection;
pub mod deadline;
pub mod dns;
pub mod error;
pub mod filter;
pub mod forwarding;
pub mod guard;
pub mod head_scan;
pub mod pipeline;
pub mod proxy_protocol;
pub mod routes;
pub mod server;
pub mod tls;
pub mod upstream;
pub mod webroot;
pub mod websocket;
