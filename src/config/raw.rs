//! The config file as written: serde structs that keep the span of every value a
//! validator may need to point at.
//!
//! Owns the file model and the list of known keys per table; owns no defaults
//! and no meaning (that is `validate`'s job).

use serde::Deserialize;
use toml::Spanned;

/// Known keys of the top-level table.
pub const TOP_KEYS: &[&str] = &[
    "server",
    "limits",
    "log",
    "acme",
    "guard",
    "cache",
    "gate",
    "wireguard",
    "site",
];
/// Known keys of `[wireguard]`.
pub const WIREGUARD_KEYS: &[&str] = &[
    "listen",
    "address",
    "endpoint",
    "keepalive",
    "mtu",
    "interface",
];
/// Known keys of `[gate]`.
pub const GATE_KEYS: &[&str] = &[
    "remember_good",
    "remember_bad",
    "address_grant",
    "session_idle",
    "checks_per_client",
    "check_burst",
    "max_checks",
    "max_remembered",
];
/// Known keys of `[cache]`.
pub const CACHE_KEYS: &[&str] = &[
    "memory",
    "disk",
    "max_object",
    "status_header",
    "stats_interval",
];
/// Known keys of `[guard]`.
pub const GUARD_KEYS: &[&str] = &[
    "max_failures",
    "window",
    "ban_time",
    "max_ban_time",
    "failure_statuses",
    "never_ban",
    "max_connections",
    "max_connections_per_ip",
    "table_size",
    "nftables",
    "ban_own_addresses",
];
/// Known keys of a `[[site.path]]`.
pub const PATH_KEYS: &[&str] = &["prefix", "allow", "deny"];
/// Known keys of `[acme]`.
pub const ACME_KEYS: &[&str] = &[
    "email",
    "directory",
    "staging",
    "ca_roots",
    "challenges",
    "dns_hook",
    "eab_kid",
    "eab_hmac_key",
];
/// Known keys of `[server]`.
pub const SERVER_KEYS: &[&str] = &[
    "http",
    "https",
    "state_dir",
    "shutdown_grace",
    "cert_watch_interval",
    "trusted_proxies",
    "proxy_protocol",
    "resolvers",
    "dns_min_ttl",
    "dns_max_ttl",
    "admin_listen",
    "admin_token",
    "user",
    "quic",
];
/// Known keys of `[limits]`.
pub const LIMITS_KEYS: &[&str] = &[
    "handshake_timeout",
    "header_timeout",
    "keepalive_timeout",
    "h2_idle_timeout",
    "max_request_line",
    "max_header_line",
    "max_head",
    "max_headers",
    "h2_max_concurrent_streams",
    "body_timeout",
    "body_min_rate",
    "body_memory",
    "body_spool",
];
/// Known keys of `[log]`.
pub const LOG_KEYS: &[&str] = &["level", "error", "error_format", "access", "format"];
/// Known keys of each `[[site]]`.
pub const SITE_KEYS: &[&str] = &[
    "host",
    "hosts",
    "upstream",
    "upstream_pin",
    "upstream_ca",
    "tls",
    "https_redirect",
    "acme_webroot",
    "preset",
    "max_body",
    "access_log",
    "headers",
    "remove_headers",
    "connect_timeout",
    "response_timeout",
    "upstream_max_conns",
    "upstream_max_conns_per_client",
    "allow",
    "deny",
    "refuse",
    "login_rate",
    "login_burst",
    "auth_paths",
    "path",
    "cache",
    "cache_paths",
    "cache_public_paths",
    "gate",
    "gate_public",
];
/// Known keys of a site's `tls = { … }` table.
pub const TLS_FILE_KEYS: &[&str] = &["cert", "key"];

/// `[server]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub http: Option<Vec<Spanned<String>>>,
    pub https: Option<Vec<Spanned<String>>>,
    pub state_dir: Option<Spanned<String>>,
    pub shutdown_grace: Option<Spanned<String>>,
    pub cert_watch_interval: Option<Spanned<String>>,
    pub trusted_proxies: Option<Vec<Spanned<String>>>,
    pub proxy_protocol: Option<Vec<Spanned<String>>>,
    pub resolvers: Option<Vec<Spanned<String>>>,
    pub dns_min_ttl: Option<Spanned<String>>,
    pub dns_max_ttl: Option<Spanned<String>>,
    pub admin_listen: Option<Spanned<String>>,
    pub admin_token: Option<Spanned<String>>,
    pub user: Option<Spanned<String>>,
    pub quic: Option<Vec<Spanned<String>>>,
}

/// `[limits]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub handshake_timeout: Option<Spanned<String>>,
    pub header_timeout: Option<Spanned<String>>,
    pub keepalive_timeout: Option<Spanned<String>>,
    pub h2_idle_timeout: Option<Spanned<String>>,
    pub max_request_line: Option<Spanned<String>>,
    pub max_header_line: Option<Spanned<String>>,
    pub max_head: Option<Spanned<String>>,
    pub max_headers: Option<Spanned<u32>>,
    pub h2_max_concurrent_streams: Option<Spanned<u32>>,
    pub body_timeout: Option<Spanned<String>>,
    pub body_min_rate: Option<Spanned<String>>,
    pub body_memory: Option<Spanned<String>>,
    pub body_spool: Option<Spanned<String>>,
}

/// `[log]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub level: Option<Spanned<String>>,
    pub error: Option<Spanned<String>>,
    pub error_format: Option<Spanned<String>>,
    pub access: Option<Spanned<String>>,
    pub format: Option<Spanned<String>>,
}

/// `[acme]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAcme {
    pub email: Option<Spanned<String>>,
    pub directory: Option<Spanned<String>>,
    pub staging: Option<bool>,
    pub ca_roots: Option<Spanned<String>>,
    pub challenges: Option<Vec<Spanned<String>>>,
    pub dns_hook: Option<Spanned<String>>,
    pub eab_kid: Option<Spanned<String>>,
    pub eab_hmac_key: Option<Spanned<String>>,
}

/// `[guard]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGuard {
    pub max_failures: Option<Spanned<u32>>,
    pub window: Option<Spanned<String>>,
    pub ban_time: Option<Spanned<String>>,
    pub max_ban_time: Option<Spanned<String>>,
    pub failure_statuses: Option<Vec<Spanned<u16>>>,
    pub never_ban: Option<Vec<Spanned<String>>>,
    pub max_connections: Option<Spanned<u32>>,
    pub max_connections_per_ip: Option<Spanned<u32>>,
    pub table_size: Option<Spanned<u32>>,
    pub nftables: Option<Spanned<bool>>,
    pub ban_own_addresses: Option<Spanned<bool>>,
}

/// `[cache]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    pub memory: Option<Spanned<String>>,
    pub disk: Option<Spanned<String>>,
    pub max_object: Option<Spanned<String>>,
    pub status_header: Option<bool>,
    pub stats_interval: Option<Spanned<String>>,
}

/// One `[[site.path]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPath {
    pub prefix: Spanned<String>,
    pub allow: Option<Vec<Spanned<String>>>,
    pub deny: Option<Vec<Spanned<String>>>,
}

/// One `[[site]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSite {
    pub host: Option<Spanned<String>>,
    pub hosts: Option<Vec<Spanned<String>>>,
    pub upstream: Option<Spanned<String>>,
    pub upstream_pin: Option<Spanned<String>>,
    pub upstream_ca: Option<Spanned<String>>,
    pub tls: Option<Spanned<RawTls>>,
    pub https_redirect: Option<bool>,
    pub acme_webroot: Option<Spanned<String>>,
    pub preset: Option<Spanned<String>>,
    pub max_body: Option<Spanned<String>>,
    pub access_log: Option<bool>,
    pub headers: Option<std::collections::BTreeMap<Spanned<String>, Spanned<String>>>,
    pub remove_headers: Option<Vec<Spanned<String>>>,
    pub connect_timeout: Option<Spanned<String>>,
    pub response_timeout: Option<Spanned<String>>,
    pub upstream_max_conns: Option<Spanned<u32>>,
    pub upstream_max_conns_per_client: Option<Spanned<u32>>,
    pub allow: Option<Vec<Spanned<String>>>,
    pub deny: Option<Vec<Spanned<String>>>,
    pub refuse: Option<Spanned<String>>,
    pub login_rate: Option<Spanned<String>>,
    pub login_burst: Option<Spanned<u32>>,
    pub auth_paths: Option<Vec<Spanned<String>>>,
    pub path: Option<Vec<RawPath>>,
    pub cache: Option<bool>,
    pub cache_paths: Option<Vec<Spanned<String>>>,
    pub cache_public_paths: Option<Vec<Spanned<String>>>,
    pub gate: Option<Spanned<String>>,
    pub gate_public: Option<Vec<Spanned<String>>>,
}

/// A site's `tls`: a source name, or certificate and key files.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawTls {
    /// `"internal"` or `"acme"`.
    Name(String),
    /// `{ cert = "…", key = "…" }`.
    Files { cert: String, key: String },
}

/// `[gate]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGate {
    pub remember_good: Option<Spanned<String>>,
    pub remember_bad: Option<Spanned<String>>,
    pub address_grant: Option<Spanned<String>>,
    pub session_idle: Option<Spanned<String>>,
    pub checks_per_client: Option<Spanned<String>>,
    pub check_burst: Option<Spanned<u32>>,
    pub max_checks: Option<Spanned<u32>>,
    pub max_remembered: Option<Spanned<u32>>,
}

/// `[wireguard]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWireguard {
    pub listen: Option<Spanned<String>>,
    pub address: Option<Spanned<String>>,
    pub endpoint: Option<Spanned<String>>,
    pub keepalive: Option<Spanned<String>>,
    pub mtu: Option<Spanned<u32>>,
    pub interface: Option<Spanned<String>>,
}
