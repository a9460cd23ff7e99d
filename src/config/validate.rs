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
use super::raw::{RawAcme, RawCache, RawGuard, RawLimits, RawLog, RawServer, RawSite};
use super::units::{parse_duration, parse_size};
use super::{AccessFormat, Acme, Cache, Challenge, Config, Guard, Limits, Log, LogTarget, Server};

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

mod site;

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
