//! The validated `[[site]]` and the settings a site carries: certificate
//! source, guard, cache, gate and path rules (its upstream in `upstream.rs`).

use std::path::PathBuf;
use std::time::Duration;

use super::{HostPattern, Preset, UpstreamTarget};

/// One `[[site]]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteConfig {
    /// The names it answers to; the first is its display name.
    pub hosts: Vec<HostPattern>,
    /// Where its requests go.
    pub upstream: UpstreamTarget,
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
    /// Whether only a signed-in household gets past Jellyfin's login page.
    pub gate: GateMode,
    /// Paths of the site's own open to anyone past the gate (a plugin's
    /// anonymous pages), beside Jellyfin's public routes.
    pub gate_public: Vec<String>,
}

/// What the gate does with a request that does not belong to a signed-in
/// household (`gate/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateMode {
    /// Refuses it at the edge (401).
    Enforce,
    /// Lets it through, and logs and counts that it would have refused it.
    Report,
    /// No gate (a site that is not Jellyfin).
    Off,
}

impl GateMode {
    /// As the config spells it.
    pub fn word(self) -> &'static str {
        match self {
            GateMode::Enforce => "enforce",
            GateMode::Report => "report",
            GateMode::Off => "off",
        }
    }
}

/// `[gate]`: how long the gate remembers, and what bounds its asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateConfig {
    /// How long Jellyfin's "yes" to a token is remembered.
    pub remember_good: Duration,
    /// How long its "no" is.
    pub remember_bad: Duration,
    /// How long an address a checked session comes from may use the side
    /// doors without a token (image loaders and players that send none).
    pub address_grant: Duration,
    /// How long a browser session (the gate's cookie) lasts unused.
    pub session_idle: Duration,
    /// Checks one client may make Jellyfin do, after `check_burst`.
    pub checks_per_client: Rate,
    /// Checks one client may make at once before the rate applies.
    pub check_burst: u32,
    /// Checks under way at once, for every client together.
    pub max_checks: u32,
    /// Tokens, sessions and addresses remembered, each.
    pub max_remembered: u32,
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            remember_good: Duration::from_secs(60),
            remember_bad: Duration::from_secs(10),
            address_grant: Duration::from_secs(600),
            session_idle: Duration::from_secs(12 * 3600),
            checks_per_client: Rate {
                count: 20,
                per: Duration::from_secs(60),
            },
            check_burst: 20,
            max_checks: 16,
            max_remembered: 10_000,
        }
    }
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

/// `[guard]`: bans after failed logins, and connection limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardConfig {
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
    /// Bans also put into an nftables set, so the kernel drops banned
    /// packets on drawbridge's ports (`guard/nftables.rs`).
    pub nftables: bool,
    /// Failed logins from the machine's own addresses (loopback and those
    /// its interfaces carry) count toward bans too (fail2ban's `ignoreself
    /// = false`); off, they never ban the machine itself.
    pub ban_own_addresses: bool,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
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
            nftables: false,
            ban_own_addresses: false,
        }
    }
}

/// `[cache]`: the edge cache's bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
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

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
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
