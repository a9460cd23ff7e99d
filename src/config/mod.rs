//! The validated configuration: what the operator wrote, with defaults filled in
//! and every value checked. Runtime types here do not derive `Deserialize`.
//!
//! Owns loading and validation (`Config::load`, `Config::parse`); owns nothing
//! that runs. `routes` turns a `Config` into the snapshot the pipeline serves.

mod diag;
mod host;
pub mod locate;
mod raw;
mod site;
mod units;
mod upstream;
mod validate;
mod wireguard;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use diag::Diagnostic;
pub use host::{normalise as normalise_host, HostPattern};
pub use site::{
    AccessList, Acme, CacheConfig, Challenge, GateConfig, GateMode, GuardConfig, PathRule, Rate,
    Refuse, SiteConfig, TlsSource, JELLYFIN_AUTH_PATHS, JELLYFIN_CACHE_PATHS, LETS_ENCRYPT,
    LETS_ENCRYPT_STAGING, PRIVATE_NETWORKS,
};
pub use units::{parse_duration, parse_size};
pub use upstream::{valid_agent_name, UpstreamAddr, UpstreamTarget, UpstreamTls};
pub use wireguard::WireguardConfig;

/// Everything drawbridge runs from.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from (relative paths in it are relative to its folder).
    pub path: PathBuf,
    /// Listeners and process-wide settings.
    pub server: ServerConfig,
    /// Protocol limits and timeouts.
    pub limits: Limits,
    /// Where the error log goes.
    pub log: Log,
    /// The ACME client, for sites with `tls = "acme"`.
    pub acme: Acme,
    /// Bans and connection limits.
    pub guard: GuardConfig,
    /// The edge cache's bounds.
    pub cache: CacheConfig,
    /// The side-door gate's memory and bounds.
    pub gate: GateConfig,
    /// The WireGuard responder for home routers.
    pub wireguard: WireguardConfig,
    /// The sites, in file order.
    pub sites: Vec<SiteConfig>,
    /// Where some values were written, for what `check` finds after
    /// validation (a log file it cannot open, an agent not enrolled).
    pub places: Places,
}

/// A place in the config file: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    /// Line.
    pub line: usize,
    /// Column, in characters.
    pub col: usize,
}

/// Where the values `check` looks at again were written (None: not
/// written, the default applies).
#[derive(Debug, Clone, Default)]
pub struct Places {
    /// `[log] error`.
    pub error_log: Option<Place>,
    /// `[log] access`.
    pub access_log: Option<Place>,
    /// `[server] state_dir`.
    pub state_dir: Option<Place>,
    /// `[server] user`.
    pub user: Option<Place>,
    /// `[server]` itself.
    pub server: Option<Place>,
    /// Per site, in the order of `Config::sites`.
    pub sites: Vec<SitePlaces>,
}

/// Where one site's values were written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SitePlaces {
    /// The `[[site]]` table.
    pub site: Place,
    /// Its `upstream`.
    pub upstream: Option<Place>,
    /// Its `tls`.
    pub tls: Option<Place>,
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
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
    /// Where `/metrics` is served (`None`: nowhere).
    pub admin_listen: Option<SocketAddr>,
    /// The bearer token the admin listener asks for (required off loopback).
    pub admin_token: Option<String>,
    /// UDP addresses HTTP/3 (QUIC) is served on; by default the `https`
    /// ones, empty to turn it off.
    pub quic: Vec<SocketAddr>,
    /// Who to become when started as root (`None`: `drawbridge` if it
    /// exists; `"root"`: stay root). See `privileges.rs`.
    pub user: Option<String>,
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
    /// Bytes of a request body kept in memory while it is read whole at the
    /// edge (`spool.rs`); the rest goes to a spool file.
    pub body_memory: u64,
    /// Bytes all spool files together may hold.
    pub body_spool: u64,
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
            body_memory: 64 * 1024,
            body_spool: 1 << 30,
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
    /// The error log's line format.
    pub error_format: ErrorFormat,
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
            error_format: ErrorFormat::Text,
            access: Some(LogTarget::Stderr),
            format: AccessFormat::Combined,
        }
    }
}

/// Error log line formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorFormat {
    /// One readable line per event (time, level, fields, message).
    Text,
    /// One JSON object per event (for Loki, Elasticsearch, jq).
    Json,
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

    /// Reads and validates the config at `path` as `check` does: every
    /// error, and the config as far as it could be read (defaults where a
    /// value was wrong), so what `check` tests after validation (log files,
    /// state folder, agents) is tested too. None when the file is not TOML.
    pub fn load_all(path: &Path) -> Result<(Option<Config>, Vec<Diagnostic>), LoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(validate::checked(path, &text))
    }

    /// A diagnostic at `place` (the config's first line when None).
    pub fn diagnostic(&self, place: Option<Place>, message: impl Into<String>) -> Diagnostic {
        let place = place.unwrap_or(Place { line: 1, col: 1 });
        Diagnostic {
            file: self.path.clone(),
            line: place.line,
            col: place.col,
            message: message.into(),
        }
    }
}
