//! drawbridge puts a home media server (Jellyfin first) on the internet safely,
//! from a public VPS: one program instead of nginx + certbot + fail2ban + DDNS.
//!
//! # Architecture in one page
//!
//! A request goes through four phases (see `docs/architecture.md`, whose
//! "reading path" lists the ten files to open in request order):
//!
//! 1. **connection** — [`server`] accepts; [`connection`] admits (the
//!    [`guard`]), runs the TLS handshake, where [`tls`] picks the certificate
//!    by SNI, then hyper serves HTTP/1.1 or HTTP/2 over the I/O layers of
//!    [`socket`].
//! 2. **request** — [`pipeline::Gateway::handle`] checks the head, finds the
//!    site in the [`routes`] snapshot from Host (an unknown host gets the door
//!    closed), puts the [`canonical`] path in place, checks Host against SNI,
//!    applies port-80 rules ([`webroot`]) and the site's [`filter`]s.
//! 3. **forward** — a [`websocket`] tunnel, the edge [`cache`], or the one
//!    forward step of the [`upstream`] (`upstream::head` writes the head).
//! 4. **response** — filters' `on_response`; errors become short pages in
//!    [`error`]; the [`access_log`] line is written when the body ends.
//!
//! # Layout (modules by floor: each imports only from those below it)
//!
//! - `main.rs` and `src/cli/` are the command line, logging and signals;
//!   [`admin`] is the admin socket (its protocol typed in [`admin::Command`]
//!   and [`admin::Reply`]), [`admin_listener`] the loopback HTTP listener for
//!   [`metrics`]; [`notify`] tells systemd how the process is doing.
//! - [`server`], [`connection`], [`pipeline`]: accept, one connection, one request.
//! - [`routes`], [`cache`], [`websocket`], [`upstream`], [`filter`], [`acme`]:
//!   what a request is served by; [`agent`] is the home end of the tunnel,
//!   [`tunnel`] its edge end (keys, enrollment, the hub the upstream sends
//!   through).
//! - [`tls`], [`guard`], [`access_log`], [`socket`]:
//!   certificates by SNI, bans and caps, the log, the upstream's head, the
//!   layers under hyper.
//! - [`config`], [`error`]: the validated config (errors as `file:line:col`)
//!   and `ProxyError` → status and page.
//! - [`body`], [`canonical`], [`client_ip`], [`dns`], [`atomic_file`],
//!   [`owner`], [`certfile`], [`log_file`], [`error_log`]: leaves with no
//!   drawbridge imports above them.
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
