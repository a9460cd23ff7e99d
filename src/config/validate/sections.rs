//! Validation of the sections other than `[server]` and `[[site]]`:
//! `[limits]`, `[log]`, `[cache]`, `[guard]`, `[acme]`, and address ranges.

use toml::Spanned;

use super::Validator;
use crate::config::raw::{RawAcme, RawCache, RawGate, RawGuard, RawLimits, RawLog};
use crate::config::{
    AccessFormat, Acme, CacheConfig, Challenge, ErrorFormat, GateConfig, GuardConfig, Limits, Log,
    LogTarget,
};

impl Validator<'_> {
    pub(super) fn gate(&mut self, raw: RawGate) -> GateConfig {
        let d = GateConfig::default();
        let check_burst = self.count(raw.check_burst, d.check_burst, 1, 10_000);
        let max_checks = self.count(raw.max_checks, d.max_checks, 1, 1_000);
        let max_remembered = self.count(raw.max_remembered, d.max_remembered, 100, 10_000_000);
        let checks_per_client = match raw.checks_per_client {
            Some(rate) => match super::site::parse_rate(rate.get_ref()) {
                Ok(r) => r,
                Err(message) => {
                    self.report.at(&rate.span(), message);
                    d.checks_per_client
                }
            },
            None => d.checks_per_client,
        };
        GateConfig {
            remember_good: self.duration(raw.remember_good, d.remember_good),
            remember_bad: self.duration(raw.remember_bad, d.remember_bad),
            // "off": no grants (browsers still pass by the cookie).
            address_grant: match raw.address_grant {
                Some(off) if off.get_ref() == "off" => std::time::Duration::ZERO,
                other => self.duration(other, d.address_grant),
            },
            session_idle: self.duration(raw.session_idle, d.session_idle),
            checks_per_client,
            check_burst,
            max_checks,
            max_remembered,
        }
    }

    pub(super) fn limits(&mut self, raw: RawLimits) -> Limits {
        let d = Limits::default();
        let max_headers = self.count(raw.max_headers, d.max_headers as u32, 1, 1000) as usize;
        let streams = self.count(
            raw.h2_max_concurrent_streams,
            d.h2_max_concurrent_streams,
            1,
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
            body_memory: self.size(raw.body_memory, d.body_memory as usize, 0, 16 << 20) as u64,
            body_spool: self.size(raw.body_spool, d.body_spool as usize, 0, 1 << 40) as u64,
        }
    }

    pub(super) fn log(&mut self, raw: RawLog) -> Log {
        let mut log = Log::default();
        if let Some(level) = raw.level {
            // Each directive is a level word, or `module=word` (the words
            // the docs name; the logging library would take others with a
            // warning of its own, printed in colour even into a file).
            let words = ["off", "error", "warn", "info", "debug", "trace"];
            let known = level.get_ref().split(',').all(|directive| {
                let word = directive.rsplit_once('=').map_or(directive, |(_, w)| w);
                words.contains(&word.trim().to_ascii_lowercase().as_str())
            });
            match tracing_subscriber::EnvFilter::try_new(level.get_ref()) {
                Ok(_) if known => log.level = level.into_inner(),
                _ => self.report.at(
                    &level.span(),
                    format!(
                        "`{}` is not a log level; use error, warn, info, debug or trace (or per module, like \"drawbridge=debug,info\")",
                        level.get_ref()
                    ),
                ),
            }
        }
        self.places.error_log = raw.error.as_ref().map(|e| self.report.place(&e.span()));
        self.places.access_log = raw.access.as_ref().map(|a| self.report.place(&a.span()));
        if let Some(error) = raw.error {
            log.error = self.log_target(&error).unwrap_or(LogTarget::Stderr);
        }
        if let Some(access) = raw.access {
            log.access = match access.get_ref().as_str() {
                "off" => None,
                _ => self.log_target(&access),
            };
        }
        if let Some(format) = raw.error_format {
            log.error_format = match format.get_ref().as_str() {
                "text" => ErrorFormat::Text,
                "json" => ErrorFormat::Json,
                other => {
                    self.report.at(
                        &format.span(),
                        format!("unknown error log format `{other}`; use \"text\" or \"json\""),
                    );
                    ErrorFormat::Text
                }
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

    pub(super) fn log_target(&mut self, raw: &Spanned<String>) -> Option<LogTarget> {
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

    pub(super) fn cidrs(
        &mut self,
        raw: Option<Vec<Spanned<String>>>,
    ) -> crate::client_ip::TrustedProxies {
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

    pub(super) fn nets(&mut self, raw: Option<Vec<Spanned<String>>>) -> Vec<ipnet::IpNet> {
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

    pub(super) fn cache(&mut self, raw: RawCache) -> CacheConfig {
        let d = CacheConfig::default();
        CacheConfig {
            memory: self.size(raw.memory, d.memory as usize, 0, usize::MAX) as u64,
            disk: self.size(raw.disk, d.disk as usize, 0, usize::MAX) as u64,
            max_object: self.size(raw.max_object, d.max_object as usize, 1, usize::MAX) as u64,
            status_header: raw.status_header.unwrap_or(d.status_header),
            stats_interval: self.duration(raw.stats_interval, d.stats_interval),
        }
    }

    pub(super) fn guard(&mut self, raw: RawGuard) -> GuardConfig {
        let d = GuardConfig::default();
        let max_failures = self.count(raw.max_failures, d.max_failures, 1, 1000);
        let max_connections = self.count(raw.max_connections, d.max_connections, 1, 1_000_000);
        let max_connections_per_ip = self.count(
            raw.max_connections_per_ip,
            d.max_connections_per_ip,
            1,
            1_000_000,
        );
        let table_size = self.count(raw.table_size, d.table_size, 100, 10_000_000);
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
        GuardConfig {
            max_failures,
            window: self.duration(raw.window, d.window),
            ban_time: self.duration(raw.ban_time, d.ban_time),
            max_ban_time: self.duration(raw.max_ban_time, d.max_ban_time),
            failure_statuses,
            never_ban: self.nets(raw.never_ban),
            max_connections,
            max_connections_per_ip,
            table_size,
            nftables: raw.nftables.is_some_and(|on| *on.get_ref()),
            ban_own_addresses: raw.ban_own_addresses.is_some_and(|on| *on.get_ref()),
        }
    }

    pub(super) fn acme(&mut self, raw: RawAcme) -> Acme {
        let mut acme = Acme::default();
        if raw.staging == Some(true) {
            acme.directory = crate::config::LETS_ENCRYPT_STAGING.to_string();
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
        acme.ca_roots = raw
            .ca_roots
            .and_then(|roots| self.file(&roots, "is not a readable PEM file"));
        acme.dns_hook = raw
            .dns_hook
            .and_then(|hook| self.file(&hook, "is not a file drawbridge can run"));
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
