//! The validated configuration: what the operator wrote, with defaults filled in
//! and every value checked. Runtime types here do not derive `Deserialize`.
//!
//! Owns loading and validation (`Config::load`, `Config::parse`); owns nothing
//! that runs. `routes` turns a `Config` into the snapshot the pipeline serves.

mod diag;
mod host;
mod raw;
mod units;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use diag::Diagnostic;
pub use host::{normalise as normalise_host, HostPattern};
pub use units::{parse_duration, parse_size};

/// Everything drawbridge runs from.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from (relative paths in it are relative to its folder).
    pub path: PathBuf,
    /// Listeners and process-wide settings.
    pub server: Server,
    /// Protocol limits and timeouts.
    pub limits: Limits,
    /// Where the error log goes.
    pub log: Log,
    /// The ACME client, for sites with `tls = "acme"`.
    pub acme: Acme,
    /// Bans and connection limits.
    pub guard: Guard,
    /// The edge cache's bounds.
    pub cache: Cache,
    /// The sites, in file order.
    pub sites: Vec<SiteConfig>,
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct Server {
    /// Plain-HTTP listeners (ACME challenges, redirects, opted-out sites).
    pub http: Vec<SocketAddr>,
    /// TLS listeners.
    pub https: Vec<SocketAddr>,
    /// The listeners (of `http` and `https`) that expect a PROXY protocol header.
    pub proxy_protocol: Vec<SocketAddr>,
    /// Where the local CA, certificates and other state live.
    pub state_dir: PathBuf,
    /// How long in-flight requests may run on after SIGTERM.
    pub shutdown_grace: Duration,
    /// How often certificate files are checked for changes.
    pub cert_watch_interval: Duration,
    /// DNS servers for upstream names (`[]`: the system's).
    pub resolvers: Vec<SocketAddr>,
    /// Bounds on how long an upstream's DNS answer is kept.
    pub dns_ttl: crate::dns::TtlBounds,
    /// Peers whose X-Forwarded-For is believed (load balancers, Cloudflare).
    pub trusted_proxies: crate::client_ip::TrustedProxies,
}

/// `[limits]`: bounds on what a client may make drawbridge hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// A TLS handshake must finish within this.
    pub handshake_timeout: Duration,
    /// A request head must arrive within this from its first byte (slowloris).
    pub header_timeout: Duration,
    /// An HTTP/1.1 connection with no request in flight is closed after this.
    pub keepalive_timeout: Duration,
    /// An HTTP/2 connection with no stream open is closed after this.
    pub h2_idle_timeout: Duration,
    /// Longest request target (414 beyond).
    pub max_request_line: usize,
    /// Longest single header line (431 beyond).
    pub max_header_line: usize,
    /// Largest whole request head (431 beyond).
    pub max_head: usize,
    /// Most header fields in one request (431 beyond).
    pub max_headers: usize,
    /// Most concurrent HTTP/2 streams per connection.
    pub h2_max_concurrent_streams: u32,
    /// A request body may pause this long between bytes, and must reach
    /// `body_min_rate` once this long has passed (slow POST).
    pub body_timeout: Duration,
    /// Slowest average request-body rate, in bytes per second, after `body_timeout`.
    pub body_min_rate: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(75),
            h2_idle_timeout: Duration::from_secs(180),
            max_request_line: 8 * 1024,
            max_header_line: 8 * 1024,
            max_head: 32 * 1024,
            max_headers: 100,
            h2_max_concurrent_streams: 100,
            body_timeout: Duration::from_secs(20),
            body_min_rate: 500,
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    /// A `tracing` filter: `info`, `debug`, `drawbridge=debug,info`, …
    pub level: String,
    /// Where the error log goes.
    pub error: LogTarget,
    /// Where the access log goes; `None` turns it off for every site.
    pub access: Option<LogTarget>,
    /// The access log's line format.
    pub format: AccessFormat,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: "info".to_string(),
            error: LogTarget::Stderr,
            access: Some(LogTarget::Stderr),
            format: AccessFormat::Combined,
        }
    }
}

/// Access log line formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessFormat {
    /// nginx's `combined` (what GoAccess and fail2ban read).
    Combined,
    /// One JSON object per line.
    Json,
}

/// Header behaviour presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// Security headers that work with the Jellyfin web client, Chromecast and trailers.
    Jellyfin,
    /// A bare proxy: no headers added.
    None,
}

/// A log destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// Standard error.
    Stderr,
    /// A file, appended to.
    File(PathBuf),
}

/// One `[[site]]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteConfig {
    /// The names it answers to; the first is its display name.
    pub hosts: Vec<HostPattern>,
    /// Where its requests go.
    pub upstream: UpstreamAddr,
    /// Where its certificate comes from.
    pub tls: TlsSource,
    /// Whether plain-HTTP requests are redirected to https (else served as they are).
    pub https_redirect: bool,
    /// A folder served at `/.well-known/acme-challenge/` on port 80.
    pub acme_webroot: Option<PathBuf>,
    /// Which default headers the site gets.
    pub preset: Preset,
    /// Largest request body, in bytes (413 beyond).
    pub max_body: u64,
    /// Whether requests are written to the access log.
    pub access_log: bool,
    /// Headers added to every response, replacing any of the same name.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Headers removed from every response (after `headers` and the preset).
    pub remove_headers: Vec<http::HeaderName>,
    /// Connecting to the upstream must succeed within this (502 beyond).
    pub connect_timeout: Duration,
    /// The upstream must send response headers within this (504 beyond).
    pub response_timeout: Duration,
    /// Most connections open to the upstream at once (idle, busy, WebSocket).
    pub upstream_max_conns: u32,
    /// Most of them one client address may keep busy at once.
    pub upstream_max_conns_per_client: u32,
    /// Who may use the site at all.
    pub access: AccessList,
    /// Stricter rules under path prefixes.
    pub paths: Vec<PathRule>,
    /// How refused requests are answered.
    pub refuse: Refuse,
    /// Rate limit on the auth routes per client address (None: off).
    pub login_rate: Option<Rate>,
    /// Requests allowed at once before the rate applies.
    pub login_burst: u32,
    /// Path patterns of the auth routes (`*` = one segment, `**` = the rest).
    pub auth_paths: Vec<String>,
    /// Cacheable routes; a request with credentials bypasses the cache.
    pub cache_paths: Vec<String>,
    /// Cacheable routes whose answers are the same for everyone: credentials
    /// in the request do not bypass, and tokens are left out of the key.
    pub cache_public_paths: Vec<String>,
}

/// Jellyfin's authentication routes, matched without regard to case.
pub const JELLYFIN_AUTH_PATHS: &[&str] = &[
    "/Users/AuthenticateByName",
    "/Users/AuthenticateWithQuickConnect",
    "/Users/*/Authenticate",
    "/Users/ForgotPassword",
    "/Users/ForgotPassword/Pin",
    "/QuickConnect/**",
];

/// Where Jellyfin's unauthenticated `/metrics` may be read from: loopback and
/// private networks, never the internet.
pub const PRIVATE_NETWORKS: &[&str] = &[
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fc00::/7",
];

impl SiteConfig {
    /// The name used for this site in logs and summaries.
    pub fn name(&self) -> String {
        self.hosts[0].to_string()
    }
}

/// An upstream origin: `http://host:port`, fixed by the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamAddr {
    /// Host name or IP literal (without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

/// `[guard]`: bans after failed logins, and connection limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    /// Failed logins within `window` that earn a ban.
    pub max_failures: u32,
    /// How far back failed logins count.
    pub window: Duration,
    /// A first ban's length; each repeat doubles it.
    pub ban_time: Duration,
    /// The longest ban.
    pub max_ban_time: Duration,
    /// Upstream statuses on an auth route that count as a failed login.
    pub failure_statuses: Vec<u16>,
    /// Addresses never banned (sites' allow lists and trusted proxies neither).
    pub never_ban: Vec<ipnet::IpNet>,
    /// Most open connections in all.
    pub max_connections: u32,
    /// Most open connections from one address (IPv6: one /64).
    pub max_connections_per_ip: u32,
    /// Most addresses remembered per table (rate limits, failures), so a flood
    /// of sources cannot exhaust memory.
    pub table_size: u32,
}

impl Default for Guard {
    fn default() -> Self {
        Guard {
            // Jellyfin's own fail2ban guide: 3 failures in 12 h → 24 h.
            max_failures: 3,
            window: Duration::from_secs(12 * 3600),
            ban_time: Duration::from_secs(24 * 3600),
            max_ban_time: Duration::from_secs(30 * 86_400),
            failure_statuses: vec![401],
            never_ban: Vec::new(),
            max_connections: 4096,
            max_connections_per_ip: 256,
            table_size: 100_000,
        }
    }
}

/// `[cache]`: the edge cache's bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cache {
    /// Bytes kept in memory.
    pub memory: u64,
    /// Bytes kept on disk under `state_dir/cache` (0: no disk tier).
    pub disk: u64,
    /// Largest object stored.
    pub max_object: u64,
    /// Whether responses on cache routes say `X-Cache: HIT|MISS|STALE|BYPASS`.
    pub status_header: bool,
    /// How often the hit ratio is logged.
    pub stats_interval: Duration,
}

impl Default for Cache {
    fn default() -> Self {
        Cache {
            memory: 64 << 20,
            disk: 1 << 30,
            max_object: 8 << 20,
            status_header: true,
            stats_interval: Duration::from_secs(300),
        }
    }
}

/// Jellyfin's routes that are safe to cache for everyone (anonymous images and
/// the web client's files); tokens are left out of their cache keys.
pub const JELLYFIN_CACHE_PATHS: &[&str] = &[
    "/Items/*/Images/**",
    "/Artists/*/Images/**",
    "/Genres/*/Images/**",
    "/MusicGenres/*/Images/**",
    "/Persons/*/Images/**",
    "/Studios/*/Images/**",
    "/Users/*/Images/**",
    "/web/**",
];

/// A rate: `count` per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests…
    pub count: u32,
    /// …per this long.
    pub per: Duration,
}

/// How refused requests are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refuse {
    /// 403 Forbidden.
    Forbidden,
    /// The connection closed without an answer.
    Close,
}

/// Allow and deny lists of one scope (a site, or a path prefix in it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessList {
    /// If not empty, only these may come in.
    pub allow: Vec<ipnet::IpNet>,
    /// These may not.
    pub deny: Vec<ipnet::IpNet>,
}

/// A `[[site.path]]` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathRule {
    /// Lower-case path prefix.
    pub prefix: String,
    /// Who may request under it.
    pub access: AccessList,
}

/// Let's Encrypt's production directory.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory (untrusted certificates, generous limits).
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// `[acme]`: how certificates are ordered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acme {
    /// The CA's directory URL.
    pub directory: String,
    /// Contact address for the account (optional).
    pub email: Option<String>,
    /// A PEM file with the root that signs the directory's HTTPS certificate
    /// (for test CAs such as Pebble); the system's roots otherwise.
    pub ca_roots: Option<PathBuf>,
    /// Challenge types, in the order they are tried.
    pub challenges: Vec<Challenge>,
    /// Command run as `HOOK present|cleanup DOMAIN TXT_VALUE` for DNS-01.
    pub dns_hook: Option<PathBuf>,
    /// External Account Binding: key id and base64url HMAC key.
    pub eab: Option<(String, String)>,
}

impl Default for Acme {
    fn default() -> Self {
        Acme {
            directory: LETS_ENCRYPT.to_string(),
            email: None,
            ca_roots: None,
            challenges: vec![Challenge::TlsAlpn01, Challenge::Http01],
            dns_hook: None,
            eab: None,
        }
    }
}

/// An ACME challenge type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// RFC 8737: answered in the TLS handshake on the https listener.
    TlsAlpn01,
    /// Answered from memory at `/.well-known/acme-challenge/` on the http listener.
    Http01,
    /// A TXT record set by the `dns_hook` command.
    Dns01,
}

impl Challenge {
    /// The name ACME gives it.
    pub fn name(self) -> &'static str {
        match self {
            Challenge::TlsAlpn01 => "tls-alpn-01",
            Challenge::Http01 => "http-01",
            Challenge::Dns01 => "dns-01",
        }
    }
}

/// Where a site's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// Ordered from an ACME CA, stored under `state_dir/certificates`.
    Acme,
    /// Issued by drawbridge's local CA under `state_dir`.
    Internal,
    /// Read from PEM files, re-read when they change.
    Files {
        /// Certificate chain, leaf first.
        cert: PathBuf,
        /// Private key (PKCS#8, PKCS#1 or SEC1).
        key: PathBuf,
    },
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("{}: cannot read config: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file was read; these are everything wrong with it.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Diagnostic>),
}

impl Config {
    /// Reads and validates the config at `path`.
    pub fn load(path: &Path) -> Result<Config, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(path, &text).map_err(LoadError::Invalid)
    }

    /// Validates `text` as if read from `path`, returning every error found.
    pub fn parse(path: &Path, text: &str) -> Result<Config, Vec<Diagnostic>> {
        validate::validate(path, text)
    }
}
