//! Raw file model → validated `Config`, collecting every error instead of
//! stopping at the first: each section is deserialized on its own, then each
//! value is checked where it stands.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use super::diag::{Diagnostic, Reporter};
use super::raw::{
    RawAcme, RawCache, RawGuard, RawLimits, RawLog, RawPath, RawServer, RawSite, RawTls,
};
use super::units::{parse_duration, parse_size};
use super::{
    AccessFormat, AccessList, Acme, Cache, Challenge, Config, Guard, HostPattern, Limits, Log,
    LogTarget, PathRule, Preset, Rate, Refuse, Server, SiteConfig, TlsSource, UpstreamAddr,
};

/// Validates `text` (read from `path`) into a `Config`, or returns every error.
pub fn validate(path: &Path, text: &str) -> Result<Config, Vec<Diagnostic>> {
    let mut report = Reporter::new(path, text);
    let root = match DeTable::parse(text) {
        Ok(root) => root,
        Err(error) => {
            report.toml_error(&error, &(0..0));
            return Err(report.errors);
        }
    };
    let dirty = report.unknown_keys(root.get_ref());
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut v = Validator { report, base };

    let mut raw_server = RawServer::default();
    let mut raw_limits = RawLimits::default();
    let mut raw_log = RawLog::default();
    let mut raw_acme = RawAcme::default();
    let mut raw_guard = RawGuard::default();
    let mut raw_cache = RawCache::default();
    let mut raw_sites = Vec::new();
    for (key, value) in root.into_inner() {
        if dirty.contains(&value.span()) {
            continue;
        }
        match key.get_ref().as_ref() {
            "server" => raw_server = v.section(value).unwrap_or_default(),
            "limits" => raw_limits = v.section(value).unwrap_or_default(),
            "log" => raw_log = v.section(value).unwrap_or_default(),
            "acme" => raw_acme = v.section(value).unwrap_or_default(),
            "guard" => raw_guard = v.section(value).unwrap_or_default(),
            "cache" => raw_cache = v.section(value).unwrap_or_default(),
            "site" => raw_sites = v.sites(value, &dirty),
            _ => {}
        }
    }

    let server = v.server(raw_server);
    let limits = v.limits(raw_limits);
    let log = v.log(raw_log);
    let acme = v.acme(raw_acme);
    let guard = v.guard(raw_guard);
    let cache = v.cache(raw_cache);
    let sites = v.all_sites(raw_sites, &acme);
    if sites.is_empty() && v.report.errors.is_empty() {
        v.report.at(
            &(0..0),
            "no [[site]] is configured; add one with `host` and `upstream`",
        );
    }
    if v.report.errors.is_empty() {
        Ok(Config {
            path: path.to_path_buf(),
            server,
            limits,
            log,
            acme,
            guard,
            cache,
            sites,
        })
    } else {
        Err(v.report.errors)
    }
}

struct Validator<'a> {
    report: Reporter<'a>,
    base: PathBuf,
}

impl Validator<'_> {
    fn section<T: for<'de> Deserialize<'de>>(&mut self, value: Spanned<DeValue<'_>>) -> Option<T> {
        let span = value.span();
        T::deserialize(ValueDeserializer::from(value))
            .map_err(|error| self.report.toml_error(&error, &span))
            .ok()
    }

    /// Each `[[site]]` separately, so one bad site does not hide the others'
    /// errors. Sites with an unknown key were already reported and are skipped.
    fn sites(
        &mut self,
        value: Spanned<DeValue<'_>>,
        dirty: &[Range<usize>],
    ) -> Vec<(Range<usize>, RawSite)> {
        let span = value.span();
        let DeValue::Array(items) = value.into_inner() else {
            self.report
                .at(&span, "`site` must be written as [[site]] tables");
            return Vec::new();
        };
        let mut sites = Vec::new();
        for item in items {
            let span = item.span();
            if dirty.contains(&span) {
                continue;
            }
            if let Some(site) = self.section::<RawSite>(item) {
                sites.push((span, site));
            }
        }
        sites
    }

    fn duration(&mut self, raw: Option<Spanned<String>>, default: Duration) -> Duration {
        let Some(raw) = raw else { return default };
        match parse_duration(raw.get_ref()) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                self.report
                    .at(&raw.span(), "a duration of zero is not allowed here");
                default
            }
            Err(message) => {
                self.report.at(&raw.span(), message);
                default
            }
        }
    }

    fn size(
        &mut self,
        raw: Option<Spanned<String>>,
        default: usize,
        min: usize,
        max: usize,
    ) -> usize {
        let Some(raw) = raw else { return default };
        match parse_size(raw.get_ref()) {
            Ok(n) if (min as u64..=max as u64).contains(&n) => n as usize,
            Ok(_) => {
                self.report.at(
                    &raw.span(),
                    format!("must be between {min} and {max} bytes"),
                );
                default
            }
            Err(message) => {
                self.report.at(&raw.span(), message);
                default
            }
        }
    }

    fn path(&self, text: &str) -> PathBuf {
        let path = Path::new(text);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base.join(path)
        }
    }

    fn listeners(
        &mut self,
        raw: Option<Vec<Spanned<String>>>,
        default: &[&str],
    ) -> Vec<SocketAddr> {
        let Some(raw) = raw else {
            return default.iter().filter_map(|a| a.parse().ok()).collect();
        };
        raw.into_iter()
            .filter_map(|addr| match addr.get_ref().parse::<SocketAddr>() {
                Ok(parsed) => Some(parsed),
                Err(_) => {
                    self.report.at(
                        &addr.span(),
                        format!(
                            "`{}` is not a listen address; write IP:port, like \"0.0.0.0:443\" or \"[::]:443\"",
                            addr.get_ref()
                        ),
                    );
                    None
                }
            })
            .collect()
    }

    fn server(&mut self, raw: RawServer) -> Server {
        let http = self.listeners(raw.http, &["0.0.0.0:80", "[::]:80"]);
        let https = self.listeners(raw.https, &["0.0.0.0:443", "[::]:443"]);
        if http.is_empty() && https.is_empty() {
            self.report.at(
                &(0..0),
                "no listener: [server] http and https are both empty",
            );
        }
        let state_dir = raw.state_dir.map_or_else(
            || PathBuf::from("/var/lib/drawbridge"),
            |d| self.path(d.get_ref()),
        );
        let mut proxy_protocol = Vec::new();
        for addr in raw.proxy_protocol.unwrap_or_default() {
            match addr.get_ref().parse::<SocketAddr>() {
                Ok(a) if http.contains(&a) || https.contains(&a) => proxy_protocol.push(a),
                _ => self.report.at(&addr.span(), format!("`{}` is not one of the http or https listeners; list a listener address exactly as written there", addr.get_ref())),
            }
        }
        let resolvers = raw
            .resolvers
            .unwrap_or_default()
            .into_iter()
            .filter_map(|r| {
                let text = r.get_ref();
                let parsed = text.parse::<SocketAddr>().ok().or_else(|| text.parse::<std::net::IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)));
                if parsed.is_none() {
                    self.report.at(&r.span(), format!("`{text}` is not a DNS server address, like \"1.1.1.1\" or \"[2606:4700:4700::1111]:53\""));
                }
                parsed
            })
            .collect();
        let dns_ttl = crate::dns::TtlBounds {
            min: self.duration(raw.dns_min_ttl, Duration::from_secs(5)),
            max: self.duration(raw.dns_max_ttl, Duration::from_secs(300)),
        };
        if dns_ttl.min > dns_ttl.max {
            self.report
                .at(&(0..0), "[server] dns_min_ttl is longer than dns_max_ttl");
        }
        Server {
            http,
            https,
            state_dir,
            resolvers,
            dns_ttl,
            shutdown_grace: self.duration(raw.shutdown_grace, Duration::from_secs(30)),
            cert_watch_interval: self.duration(raw.cert_watch_interval, Duration::from_secs(5)),
            proxy_protocol,
            trusted_proxies: self.cidrs(raw.trusted_proxies),
        }
    }

    fn limits(&mut self, raw: RawLimits) -> Limits {
        let d = Limits::default();
        let mut count = |raw: Option<Spanned<u32>>, default: u32, max: u32| match raw {
            Some(n) if (1..=max).contains(n.get_ref()) => *n.get_ref(),
            Some(n) => {
                self.report
                    .at(&n.span(), format!("must be between 1 and {max}"));
                default
            }
            None => default,
        };
        let max_headers = count(raw.max_headers, d.max_headers as u32, 1000) as usize;
        let streams = count(
            raw.h2_max_concurrent_streams,
            d.h2_max_concurrent_streams,
            1000,
        );
        Limits {
            handshake_timeout: self.duration(raw.handshake_timeout, d.handshake_timeout),
            header_timeout: self.duration(raw.header_timeout, d.header_timeout),
            keepalive_timeout: self.duration(raw.keepalive_timeout, d.keepalive_timeout),
            h2_idle_timeout: self.duration(raw.h2_idle_timeout, d.h2_idle_timeout),
            max_request_line: self.size(raw.max_request_line, d.max_request_line, 256, 1 << 20),
            max_header_line: self.size(raw.max_header_line, d.max_header_line, 256, 1 << 20),
            // hyper's read buffer cannot be smaller than 8 KiB.
            max_head: self.size(raw.max_head, d.max_head, 8192, 1 << 20),
            max_headers,
            h2_max_concurrent_streams: streams,
            body_timeout: self.duration(raw.body_timeout, d.body_timeout),
            body_min_rate: self.size(raw.body_min_rate, d.body_min_rate as usize, 0, 1 << 30)
                as u64,
        }
    }

    fn log(&mut self, raw: RawLog) -> Log {
        let mut log = Log::default();
        if let Some(level) = raw.level {
            match tracing_subscriber::EnvFilter::try_new(level.get_ref()) {
                Ok(_) => log.level = level.into_inner(),
                Err(e) => self.report.at(
                    &level.span(),
                    format!("invalid log level ({e}); use error, warn, info, debug or trace"),
                ),
            }
        }
        if let Some(error) = raw.error {
            log.error = self.log_target(&error).unwrap_or(LogTarget::Stderr);
        }
        if let Some(access) = raw.access {
            log.access = match access.get_ref().as_str() {
                "off" => None,
                _ => self.log_target(&access),
            };
        }
        if let Some(format) = raw.format {
            log.format = match format.get_ref().as_str() {
                "combined" => AccessFormat::Combined,
                "json" => AccessFormat::Json,
                other => {
                    self.report.at(
                        &format.span(),
                        format!(
                            "unknown access log format `{other}`; use \"combined\" or \"json\""
                        ),
                    );
                    AccessFormat::Combined
                }
            };
        }
        log
    }

    fn log_target(&mut self, raw: &Spanned<String>) -> Option<LogTarget> {
        match raw.get_ref().as_str() {
            "stderr" => Some(LogTarget::Stderr),
            "" => {
                self.report
                    .at(&raw.span(), "empty; use \"stderr\" or a file path");
                None
            }
            file => Some(LogTarget::File(self.path(file))),
        }
    }

    fn cidrs(&mut self, raw: Option<Vec<Spanned<String>>>) -> crate::client_ip::TrustedProxies {
        let mut trusted = crate::client_ip::TrustedProxies::default();
        for item in raw.unwrap_or_default() {
            let text = item.get_ref().trim();
            if text == "cloudflare" {
                trusted.cloudflare = crate::client_ip::cloudflare();
                continue;
            }
            let parsed = text
                .parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
            match parsed {
                Ok(net) => trusted.nets.push(net),
                Err(_) => self.report.at(&item.span(), format!("`{text}` is not an address, a CIDR range (\"10.0.0.0/8\", \"2001:db8::/32\") or \"cloudflare\"")),
            }
        }
        trusted
    }

    fn headers(
        &mut self,
        raw: Option<std::collections::BTreeMap<Spanned<String>, Spanned<String>>>,
    ) -> Vec<(http::HeaderName, http::HeaderValue)> {
        let mut headers = Vec::new();
        for (name, value) in raw.unwrap_or_default() {
            let Ok(header) = http::HeaderName::from_bytes(name.get_ref().as_bytes()) else {
                self.report.at(
                    &name.span(),
                    format!("`{}` is not a valid header name", name.get_ref()),
                );
                continue;
            };
            match http::HeaderValue::from_str(value.get_ref()) {
                Ok(v) => headers.push((header, v)),
                Err(_) => self.report.at(
                    &value.span(),
                    "not a valid header value (one line of visible characters)",
                ),
            }
        }
        headers
    }

    fn header_names(&mut self, raw: Option<Vec<Spanned<String>>>) -> Vec<http::HeaderName> {
        raw.unwrap_or_default()
            .into_iter()
            .filter_map(
                |name| match http::HeaderName::from_bytes(name.get_ref().as_bytes()) {
                    Ok(header) => Some(header),
                    Err(_) => {
                        self.report.at(
                            &name.span(),
                            format!("`{}` is not a valid header name", name.get_ref()),
                        );
                        None
                    }
                },
            )
            .collect()
    }

    fn all_sites(&mut self, raw: Vec<(Range<usize>, RawSite)>, acme: &Acme) -> Vec<SiteConfig> {
        let mut sites: Vec<SiteConfig> = Vec::new();
        for (span, raw) in raw {
            let Some(site) = self.site(&span, raw, &sites, acme) else {
                continue;
            };
            sites.push(site);
        }
        sites
    }

    fn site(
        &mut self,
        span: &Range<usize>,
        raw: RawSite,
        earlier: &[SiteConfig],
        acme: &Acme,
    ) -> Option<SiteConfig> {
        let errors_before = self.report.errors.len();
        let names: Vec<Spanned<String>> = match (raw.host, raw.hosts) {
            (Some(host), None) => vec![host],
            (None, Some(hosts)) if !hosts.is_empty() => hosts,
            (Some(host), Some(_)) => {
                self.report
                    .at(&host.span(), "write either `host` or `hosts`, not both");
                return None;
            }
            _ => {
                self.report.at(
                    span,
                    "a site needs `host` (or `hosts`), e.g. host = \"jelly.example.com\"",
                );
                return None;
            }
        };
        let mut hosts = Vec::new();
        for name in names {
            match HostPattern::parse(name.get_ref()) {
                Ok(pattern) => {
                    let taken = earlier.iter().any(|s| s.hosts.contains(&pattern))
                        || hosts.contains(&pattern);
                    if taken {
                        self.report.at(&name.span(), format!("host `{pattern}` is named by another site already; each host belongs to one site"));
                    } else {
                        hosts.push(pattern);
                    }
                }
                Err(message) => self.report.at(&name.span(), message),
            }
        }
        let upstream = match raw.upstream {
            Some(upstream) => self.upstream(&upstream),
            None => {
                self.report.at(
                    span,
                    "a site needs `upstream`, e.g. upstream = \"http://127.0.0.1:8096\"",
                );
                None
            }
        };
        let all_local = hosts.iter().all(HostPattern::is_local);
        let tls = self.tls(raw.tls, all_local);
        if tls == Some(TlsSource::Acme)
            && hosts.iter().any(|h| matches!(h, HostPattern::Wildcard(_)))
            && !acme.challenges.contains(&Challenge::Dns01)
        {
            self.report.at(span, "a wildcard name can only be validated by DNS-01: add \"dns-01\" to [acme] challenges and set [acme] dns_hook");
        }
        let acme_webroot = raw.acme_webroot.and_then(|dir| {
            let path = self.path(dir.get_ref());
            if path.is_dir() {
                Some(path)
            } else {
                self.report.at(
                    &dir.span(),
                    format!("`{}` is not a folder drawbridge can read", path.display()),
                );
                None
            }
        });
        let preset = match raw.preset.as_ref().map(|p| p.get_ref().as_str()) {
            None | Some("jellyfin") => Preset::Jellyfin,
            Some("none") => Preset::None,
            Some(other) => {
                let span = raw.preset.as_ref().map(Spanned::span).unwrap_or_default();
                self.report.at(
                    &span,
                    format!("unknown preset `{other}`; use \"jellyfin\" or \"none\""),
                );
                Preset::None
            }
        };
        let max_body = self.size(raw.max_body, 20 << 20, 0, usize::MAX) as u64;
        let headers = self.headers(raw.headers);
        let remove_headers = self.header_names(raw.remove_headers);
        let access = AccessList {
            allow: self.nets(raw.allow),
            deny: self.nets(raw.deny),
        };
        let mut paths: Vec<PathRule> = raw
            .path
            .unwrap_or_default()
            .into_iter()
            .filter_map(|p| self.path_rule(p))
            .collect();
        let refuse = match raw.refuse.as_ref().map(|r| r.get_ref().as_str()) {
            None | Some("403") => Refuse::Forbidden,
            Some("close") => Refuse::Close,
            Some(other) => {
                let span = raw.refuse.as_ref().map(Spanned::span).unwrap_or_default();
                self.report.at(
                    &span,
                    format!("unknown refuse `{other}`; use \"403\" or \"close\""),
                );
                Refuse::Forbidden
            }
        };
        let jellyfin = preset == Preset::Jellyfin;
        let login_rate = match raw.login_rate {
            Some(rate) if rate.get_ref() == "off" => None,
            Some(rate) => match parse_rate(rate.get_ref()) {
                Ok(r) => Some(r),
                Err(message) => {
                    self.report.at(&rate.span(), message);
                    None
                }
            },
            None if jellyfin => Some(Rate {
                count: 5,
                per: Duration::from_secs(60),
            }),
            None => None,
        };
        let login_burst = match raw.login_burst {
            Some(b) if (1..=10_000).contains(b.get_ref()) => *b.get_ref(),
            Some(b) => {
                self.report.at(&b.span(), "must be between 1 and 10000");
                1
            }
            None => 5,
        };
        let auth_paths: Vec<String> = match raw.auth_paths {
            Some(list) => list.into_iter().filter_map(|p| {
                if p.get_ref().starts_with('/') { Some(p.into_inner()) } else {
                    self.report.at(&p.span(), "an auth path starts with `/`, like \"/api/login\" or \"/Users/*/Authenticate\"");
                    None
                }
            }).collect(),
            None if jellyfin => super::JELLYFIN_AUTH_PATHS.iter().map(ToString::to_string).collect(),
            None => Vec::new(),
        };
        if jellyfin && !paths.iter().any(|p| p.prefix == "/metrics") {
            let private = super::PRIVATE_NETWORKS
                .iter()
                .map(|n| n.parse().expect("built-in range"))
                .collect();
            paths.push(PathRule {
                prefix: "/metrics".to_string(),
                access: AccessList {
                    allow: private,
                    deny: Vec::new(),
                },
            });
        }
        let caching = raw.cache.unwrap_or(jellyfin);
        let cache_paths = self.patterns(raw.cache_paths).unwrap_or_default();
        let cache_public_paths = self.patterns(raw.cache_public_paths).unwrap_or_else(|| {
            if jellyfin {
                super::JELLYFIN_CACHE_PATHS
                    .iter()
                    .map(ToString::to_string)
                    .collect()
            } else {
                Vec::new()
            }
        });
        let (cache_paths, cache_public_paths) = if caching {
            (cache_paths, cache_public_paths)
        } else {
            (Vec::new(), Vec::new())
        };
        let connect_timeout = self.duration(raw.connect_timeout, Duration::from_secs(3));
        let response_timeout = self.duration(raw.response_timeout, Duration::from_secs(60));
        if self.report.errors.len() > errors_before {
            return None;
        }
        Some(SiteConfig {
            hosts,
            upstream: upstream?,
            tls: tls?,
            https_redirect: raw.https_redirect.unwrap_or(true),
            acme_webroot,
            preset,
            max_body,
            access_log: raw.access_log.unwrap_or(true),
            headers,
            remove_headers,
            connect_timeout,
            response_timeout,
            access,
            paths,
            refuse,
            login_rate,
            login_burst,
            auth_paths,
            cache_paths,
            cache_public_paths,
        })
    }

    fn upstream(&mut self, raw: &Spanned<String>) -> Option<UpstreamAddr> {
        let text = raw.get_ref();
        let fail = |v: &mut Self, why: &str| {
            v.report.at(
                &raw.span(),
                format!("upstream `{text}` {why}; write it like \"http://192.168.1.10:8096\""),
            );
            None
        };
        let Ok(uri) = text.parse::<http::Uri>() else {
            return fail(self, "is not a URL");
        };
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return fail(self, "uses https, which is not supported for upstreams yet")
            }
            _ => return fail(self, "must start with http://"),
        }
        let Some(authority) = uri.authority() else {
            return fail(self, "has no host");
        };
        if authority.as_str().contains('@') {
            return fail(self, "must not carry a user name or password");
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return fail(
                self,
                "must not have a path or query (a path prefix is not supported)",
            );
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        Some(UpstreamAddr {
            host: host.to_string(),
            port: authority.port_u16().unwrap_or(80),
        })
    }

    fn tls(&mut self, raw: Option<Spanned<RawTls>>, all_local: bool) -> Option<TlsSource> {
        let Some(raw) = raw else {
            // No public CA signs local names; every public name gets ACME.
            return Some(if all_local {
                TlsSource::Internal
            } else {
                TlsSource::Acme
            });
        };
        let span = raw.span();
        match raw.into_inner() {
            RawTls::Name(name) => match name.as_str() {
                "internal" => Some(TlsSource::Internal),
                "acme" => Some(TlsSource::Acme),
                other => {
                    self.report.at(&span, format!("unknown tls source `{other}`; use \"internal\", \"acme\" or {{ cert = \"…\", key = \"…\" }}"));
                    None
                }
            },
            RawTls::Files { cert, key } => {
                let (cert, key) = (self.path(&cert), self.path(&key));
                if let Err(e) = crate::tls::certfile::load(&cert, &key) {
                    self.report.at(&span, e.to_string());
                    return None;
                }
                Some(TlsSource::Files { cert, key })
            }
        }
    }

    fn nets(&mut self, raw: Option<Vec<Spanned<String>>>) -> Vec<ipnet::IpNet> {
        raw.unwrap_or_default()
            .into_iter()
            .filter_map(|item| {
                let text = item.get_ref().trim();
                let parsed = text.parse::<ipnet::IpNet>().or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
                match parsed {
                    // ::ffff:a.b.c.d/n is written as the IPv4 range it means.
                    Ok(net) => Some(mapped_to_v4(net)),
                    Err(_) => {
                        self.report.at(&item.span(), format!("`{text}` is not an address or CIDR range, like \"192.168.1.0/24\" or \"2001:db8::/48\""));
                        None
                    }
                }
            })
            .collect()
    }

    fn path_rule(&mut self, raw: RawPath) -> Option<PathRule> {
        if !raw.prefix.get_ref().starts_with('/') {
            self.report.at(
                &raw.prefix.span(),
                "a path prefix starts with `/`, like \"/System/\"",
            );
            return None;
        }
        let access = AccessList {
            allow: self.nets(raw.allow),
            deny: self.nets(raw.deny),
        };
        Some(PathRule {
            prefix: raw.prefix.into_inner().to_ascii_lowercase(),
            access,
        })
    }

    fn cache(&mut self, raw: RawCache) -> Cache {
        let d = Cache::default();
        Cache {
            memory: self.size(raw.memory, d.memory as usize, 0, usize::MAX) as u64,
            disk: self.size(raw.disk, d.disk as usize, 0, usize::MAX) as u64,
            max_object: self.size(raw.max_object, d.max_object as usize, 1, usize::MAX) as u64,
            status_header: raw.status_header.unwrap_or(d.status_header),
            stats_interval: self.duration(raw.stats_interval, d.stats_interval),
        }
    }

    fn patterns(&mut self, raw: Option<Vec<Spanned<String>>>) -> Option<Vec<String>> {
        raw.map(|list| {
            list.into_iter()
                .filter_map(|p| {
                    if p.get_ref().starts_with('/') {
                        Some(p.into_inner())
                    } else {
                        self.report.at(&p.span(), "a path pattern starts with `/`, like \"/web/**\" or \"/Items/*/Images/**\"");
                        None
                    }
                })
                .collect()
        })
    }

    fn guard(&mut self, raw: RawGuard) -> Guard {
        let d = Guard::default();
        let mut count = |raw: Option<Spanned<u32>>, default: u32, min: u32, max: u32| match raw {
            Some(n) if (min..=max).contains(n.get_ref()) => *n.get_ref(),
            Some(n) => {
                self.report
                    .at(&n.span(), format!("must be between {min} and {max}"));
                default
            }
            None => default,
        };
        let max_failures = count(raw.max_failures, d.max_failures, 1, 1000);
        let max_connections = count(raw.max_connections, d.max_connections, 1, 1_000_000);
        let max_connections_per_ip = count(
            raw.max_connections_per_ip,
            d.max_connections_per_ip,
            1,
            1_000_000,
        );
        let table_size = count(raw.table_size, d.table_size, 100, 10_000_000);
        let failure_statuses = match raw.failure_statuses {
            Some(list) => list
                .into_iter()
                .filter_map(|s| {
                    if (400..600).contains(s.get_ref()) {
                        Some(*s.get_ref())
                    } else {
                        self.report
                            .at(&s.span(), "a failure status is between 400 and 599");
                        None
                    }
                })
                .collect(),
            None => d.failure_statuses,
        };
        Guard {
            max_failures,
            window: self.duration(raw.window, d.window),
            ban_time: self.duration(raw.ban_time, d.ban_time),
            max_ban_time: self.duration(raw.max_ban_time, d.max_ban_time),
            failure_statuses,
            never_ban: self.nets(raw.never_ban),
            max_connections,
            max_connections_per_ip,
            table_size,
        }
    }

    fn acme(&mut self, raw: RawAcme) -> Acme {
        let mut acme = Acme::default();
        if raw.staging == Some(true) {
            acme.directory = super::LETS_ENCRYPT_STAGING.to_string();
        }
        if let Some(directory) = raw.directory {
            if directory.get_ref().starts_with("https://")
                && directory.get_ref().parse::<http::Uri>().is_ok()
            {
                acme.directory = directory.into_inner();
            } else {
                self.report.at(
                    &directory.span(),
                    "the ACME directory must be an https:// URL",
                );
            }
        }
        if let Some(email) = raw.email {
            if email.get_ref().contains('@') && !email.get_ref().contains(char::is_whitespace) {
                acme.email = Some(email.into_inner());
            } else {
                self.report.at(&email.span(), "not an e-mail address");
            }
        }
        if let Some(roots) = raw.ca_roots {
            let path = self.path(roots.get_ref());
            if path.is_file() {
                acme.ca_roots = Some(path);
            } else {
                self.report.at(
                    &roots.span(),
                    format!("`{}` is not a readable PEM file", path.display()),
                );
            }
        }
        if let Some(hook) = raw.dns_hook {
            let path = self.path(hook.get_ref());
            if path.is_file() {
                acme.dns_hook = Some(path);
            } else {
                self.report.at(
                    &hook.span(),
                    format!("`{}` is not a file drawbridge can run", path.display()),
                );
            }
        }
        if let Some(list) = raw.challenges {
            let mut challenges = Vec::new();
            for item in list {
                let kind = match item.get_ref().as_str() {
                    "tls-alpn-01" => Challenge::TlsAlpn01,
                    "http-01" => Challenge::Http01,
                    "dns-01" => Challenge::Dns01,
                    other => {
                        self.report.at(&item.span(), format!("unknown challenge `{other}`; use \"tls-alpn-01\", \"http-01\" or \"dns-01\""));
                        continue;
                    }
                };
                if kind == Challenge::Dns01 && acme.dns_hook.is_none() {
                    self.report.at(
                        &item.span(),
                        "dns-01 needs [acme] dns_hook, a command that sets the TXT record",
                    );
                }
                if !challenges.contains(&kind) {
                    challenges.push(kind);
                }
            }
            if challenges.is_empty() {
                self.report
                    .at(&(0..0), "[acme] challenges is empty; list at least one");
            }
            acme.challenges = challenges;
        }
        match (raw.eab_kid, raw.eab_hmac_key) {
            (Some(kid), Some(key)) => acme.eab = Some((kid.into_inner(), key.into_inner())),
            (Some(one), None) | (None, Some(one)) => self.report.at(
                &one.span(),
                "External Account Binding needs both eab_kid and eab_hmac_key",
            ),
            (None, None) => {}
        }
        acme
    }
}

/// `::ffff:a.b.c.d/n` (n ≥ 96) as the IPv4 range `a.b.c.d/(n-96)`.
fn mapped_to_v4(net: ipnet::IpNet) -> ipnet::IpNet {
    match net {
        ipnet::IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, ipnet::IpNet::V4),
            None => net,
        },
        other => other,
    }
}

/// Parses a rate like `"5/min"`, `"10/s"`, `"100/hour"`.
fn parse_rate(text: &str) -> Result<Rate, String> {
    let bad = || {
        format!("`{text}` is not a rate; write requests per unit, like \"5/min\" or \"10/s\", or \"off\"")
    };
    let (count, unit) = text.split_once('/').ok_or_else(bad)?;
    let count: u32 = count.trim().parse().map_err(|_| bad())?;
    let per = match unit.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        "d" | "day" => Duration::from_secs(86_400),
        _ => return Err(bad()),
    };
    if count == 0 {
        return Err(bad());
    }
    Ok(Rate { count, per })
}
