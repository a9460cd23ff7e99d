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
    RawAcme, RawCache, RawGate, RawGuard, RawLimits, RawLog, RawServer, RawSite, RawWireguard,
};
use super::{Config, Places, ServerConfig};

/// Validates `text` (read from `path`) into a `Config`, or returns every error.
pub fn validate(path: &Path, text: &str) -> Result<Config, Vec<Diagnostic>> {
    match checked(path, text) {
        (Some(config), errors) if errors.is_empty() => Ok(config),
        (_, errors) => Err(errors),
    }
}

/// Every error in `text`, and the config as far as it could be read
/// (defaults where a value was wrong); None when `text` is not TOML.
pub fn checked(path: &Path, text: &str) -> (Option<Config>, Vec<Diagnostic>) {
    let mut report = Reporter::new(path, text);
    let root = match DeTable::parse(text) {
        Ok(root) => root,
        Err(error) => {
            report.toml_error(&error, &(0..0));
            return (None, report.errors);
        }
    };
    let dirty = report.unknown_keys(root.get_ref());
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut v = Validator {
        report,
        base,
        places: Places::default(),
    };

    let mut raw_server = RawServer::default();
    let mut raw_limits = RawLimits::default();
    let mut raw_log = RawLog::default();
    let mut raw_acme = RawAcme::default();
    let mut raw_guard = RawGuard::default();
    let mut raw_cache = RawCache::default();
    let mut raw_gate = RawGate::default();
    let mut raw_wireguard = RawWireguard::default();
    let mut raw_sites = Vec::new();
    for (key, value) in root.into_inner() {
        if dirty.contains(&value.span()) {
            continue;
        }
        match key.get_ref().as_ref() {
            "server" => {
                v.places.server = Some(v.report.place(&value.span()));
                raw_server = v.section(value).unwrap_or_default();
            }
            "limits" => raw_limits = v.section(value).unwrap_or_default(),
            "log" => raw_log = v.section(value).unwrap_or_default(),
            "acme" => raw_acme = v.section(value).unwrap_or_default(),
            "guard" => raw_guard = v.section(value).unwrap_or_default(),
            "cache" => raw_cache = v.section(value).unwrap_or_default(),
            "gate" => raw_gate = v.section(value).unwrap_or_default(),
            "wireguard" => raw_wireguard = v.section(value).unwrap_or_default(),
            "site" => raw_sites = v.sites(value, &dirty),
            _ => {}
        }
    }

    let server = v.server(raw_server);
    let limits = v.limits(raw_limits);
    let log = v.log(raw_log);
    let acme = v.acme(raw_acme);
    let nftables = raw_guard
        .nftables
        .as_ref()
        .filter(|on| *on.get_ref())
        .map(|on| on.span());
    let guard = v.guard(raw_guard);
    if let (Some(span), Some(_)) = (nftables, &server.user) {
        v.report.at(
            &span,
            "kernel bans need CAP_NET_ADMIN for as long as drawbridge runs, and `[server] user` gives every capability up: run drawbridge from its systemd unit with a drop-in adding CAP_NET_ADMIN (docs/operations.md), without `user`",
        );
    }
    let cache = v.cache(raw_cache);
    let gate = v.gate(raw_gate);
    let wireguard = v.wireguard(raw_wireguard);
    let sites = v.all_sites(raw_sites, &acme);
    if sites.is_empty() && v.report.errors.is_empty() {
        v.report.at(
            &(0..0),
            "no [[site]] is configured; add one with `host` and `upstream`",
        );
    }
    // In the order a reader meets them in the file.
    v.report.errors.sort_by_key(|d| (d.line, d.col));
    let config = Config {
        path: path.to_path_buf(),
        server,
        limits,
        log,
        acme,
        guard,
        cache,
        gate,
        wireguard,
        sites,
        places: v.places,
    };
    (Some(config), v.report.errors)
}

mod sections;
mod site;
mod upstream;
mod values;
mod wireguard;

struct Validator<'a> {
    report: Reporter<'a>,
    base: PathBuf,
    places: Places,
}

impl Validator<'_> {
    /// A table deserialized at once, or, when that fails, key by key: every
    /// key whose value has the wrong type is reported (serde stops at the
    /// first), and the table is read without them, so the keys after a bad
    /// one are still checked.
    fn section<T: for<'de> Deserialize<'de>>(&mut self, value: Spanned<DeValue<'_>>) -> Option<T> {
        let span = value.span();
        let whole = match T::deserialize(ValueDeserializer::from(value.clone())) {
            Ok(section) => return Some(section),
            Err(error) => error,
        };
        let DeValue::Table(table) = value.into_inner() else {
            self.report.toml_error(&whole, &span);
            return None;
        };
        let alone = |key: &Spanned<_>, item: &Spanned<DeValue<'_>>| {
            let mut one = DeTable::new();
            one.insert(key.clone(), item.clone());
            T::deserialize(ValueDeserializer::from(Spanned::new(
                span.clone(),
                DeValue::Table(one),
            )))
        };
        let mut good = DeTable::new();
        let mut reported = false;
        for (key, item) in table {
            match alone(&key, &item) {
                // A key that is fine alone, or whose table misses a required
                // key only because it stands alone.
                Ok(_) => {
                    good.insert(key, item);
                }
                Err(error) if error.message().starts_with("missing field") => {
                    good.insert(key, item);
                }
                Err(error) => {
                    self.report.toml_error(&error, &item.span());
                    reported = true;
                }
            }
        }
        if !reported {
            // Not one key's fault (a required key missing): the whole error.
            self.report.toml_error(&whole, &span);
            return None;
        }
        T::deserialize(ValueDeserializer::from(Spanned::new(
            span.clone(),
            DeValue::Table(good),
        )))
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

    /// Two listen addresses that cannot both be bound: the same address, or
    /// one port of one family on a wildcard and on a specific address.
    fn listeners_apart(&mut self, listed: &[Spanned<String>]) {
        let parsed: Vec<(SocketAddr, &Spanned<String>)> = listed
            .iter()
            .filter_map(|raw| Some((raw.get_ref().parse().ok()?, raw)))
            .collect();
        for (at, (addr, raw)) in parsed.iter().enumerate() {
            let clash = parsed[..at].iter().find(|(earlier, _)| {
                // Port 0 is a fresh port each time.
                earlier.port() == addr.port()
                    && addr.port() != 0
                    && earlier.is_ipv6() == addr.is_ipv6()
                    && (earlier.ip() == addr.ip()
                        || earlier.ip().is_unspecified()
                        || addr.ip().is_unspecified())
            });
            if let Some((earlier, _)) = clash {
                self.report.at(
                    &raw.span(),
                    format!("`{addr}` cannot be listened on beside `{earlier}` (the same port, and one of them is every address); list each address once"),
                );
            }
        }
    }

    fn server(&mut self, raw: RawServer) -> ServerConfig {
        let spans: Vec<Spanned<String>> = raw
            .http
            .iter()
            .chain(raw.https.iter())
            .flatten()
            .cloned()
            .collect();
        let http = self.listeners(raw.http, &["0.0.0.0:80", "[::]:80"]);
        let https = self.listeners(raw.https, &["0.0.0.0:443", "[::]:443"]);
        let quic = match raw.quic {
            // Beside every TLS listener, on its port (UDP).
            None => https.clone(),
            Some(listed) => self.listeners(Some(listed), &[]),
        };
        self.listeners_apart(&spans);
        if http.is_empty() && https.is_empty() {
            self.report.at(
                &(0..0),
                "no listener: [server] http and https are both empty",
            );
        }
        self.places.state_dir = raw.state_dir.as_ref().map(|d| self.report.place(&d.span()));
        self.places.user = raw.user.as_ref().map(|u| self.report.place(&u.span()));
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
        let admin_listen = match raw.admin_listen {
            None => "127.0.0.1:9180".parse().ok(),
            Some(text) if text.get_ref() == "off" => None,
            Some(text) => match text.get_ref().parse::<SocketAddr>() {
                Ok(addr) if !addr.ip().is_loopback() && raw.admin_token.is_none() => {
                    self.report.at(
                        &text.span(),
                        format!("`{addr}` is not a loopback address: metrics there need `admin_token`, or listen on 127.0.0.1"),
                    );
                    None
                }
                Ok(addr) => Some(addr),
                Err(_) => {
                    self.report.at(
                        &text.span(),
                        format!("`{}` is not a listen address; write IP:port like \"127.0.0.1:9180\", or \"off\"", text.get_ref()),
                    );
                    None
                }
            },
        };
        let admin_token = raw.admin_token.map(Spanned::into_inner);
        let user = raw.user.and_then(|name| {
            let text = name.get_ref();
            let plain = text.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
                && text.len() <= 32
                && text.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
            if !plain {
                self.report.at(&name.span(), format!("`{text}` is not a user name (lower-case letters, digits, `_` and `-`), like \"drawbridge\""));
            }
            plain.then(|| name.into_inner())
        });
        ServerConfig {
            quic,
            user,
            admin_listen,
            admin_token,
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
}
