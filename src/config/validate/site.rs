//! Validation of each `[[site]]`: names, upstream, TLS source, headers,
//! access rules, guard and cache settings, and what the preset adds.

use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use super::Validator;
use crate::config::raw::{RawPath, RawSite, RawTls};
use crate::config::{
    AccessList, Acme, Challenge, GateMode, HostPattern, PathRule, Preset, Rate, Refuse, SiteConfig,
    TlsSource,
};

/// Connections to one upstream at once: a household's streams, WebSockets
/// and a browser's poster burst fit; a flood from one client does not bring
/// the home server down (see `docs/config.md`).
const DEFAULT_UPSTREAM_MAX_CONNS: u32 = 128;

impl Validator<'_> {
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

    pub(super) fn all_sites(
        &mut self,
        raw: Vec<(Range<usize>, RawSite)>,
        acme: &Acme,
    ) -> Vec<SiteConfig> {
        let mut sites: Vec<SiteConfig> = Vec::new();
        for (span, raw) in raw {
            let places = crate::config::SitePlaces {
                site: self.report.place(&span),
                upstream: raw.upstream.as_ref().map(|u| self.report.place(&u.span())),
                tls: raw.tls.as_ref().map(|t| self.report.place(&t.span())),
            };
            let Some(site) = self.site(&span, raw, &sites, acme) else {
                continue;
            };
            sites.push(site);
            self.places.sites.push(places);
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
            Some(upstream) => self.upstream(&upstream, raw.upstream_pin, raw.upstream_ca),
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
            None if jellyfin => crate::config::JELLYFIN_AUTH_PATHS.iter().map(ToString::to_string).collect(),
            None => Vec::new(),
        };
        if jellyfin && !paths.iter().any(|p| p.prefix == "/metrics") {
            let private = crate::config::PRIVATE_NETWORKS
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
                crate::config::JELLYFIN_CACHE_PATHS
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
        let gate = match raw.gate.as_ref().map(|g| g.get_ref().as_str()) {
            None if jellyfin => GateMode::Enforce,
            None => GateMode::Off,
            Some("enforce") => GateMode::Enforce,
            Some("report") => GateMode::Report,
            Some("off") => GateMode::Off,
            Some(other) => {
                let span = raw.gate.as_ref().map(Spanned::span).unwrap_or_default();
                self.report.at(
                    &span,
                    format!("unknown gate `{other}`; use \"enforce\", \"report\" or \"off\""),
                );
                GateMode::Off
            }
        };
        let gate_public = self.patterns(raw.gate_public).unwrap_or_default();
        let connect_timeout = self.duration(raw.connect_timeout, Duration::from_secs(3));
        let response_timeout = self.duration(raw.response_timeout, Duration::from_secs(60));
        let upstream_max_conns = match raw.upstream_max_conns {
            Some(n) if (1..=100_000).contains(n.get_ref()) => *n.get_ref(),
            Some(n) => {
                self.report.at(&n.span(), "must be between 1 and 100000");
                DEFAULT_UPSTREAM_MAX_CONNS
            }
            None => DEFAULT_UPSTREAM_MAX_CONNS,
        };
        let upstream_max_conns_per_client = match raw.upstream_max_conns_per_client {
            Some(n) if (1..=upstream_max_conns).contains(n.get_ref()) => *n.get_ref(),
            Some(n) => {
                self.report.at(
                    &n.span(),
                    format!("must be between 1 and upstream_max_conns ({upstream_max_conns})"),
                );
                upstream_max_conns.div_ceil(2)
            }
            None => upstream_max_conns.div_ceil(2),
        };
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
            upstream_max_conns,
            upstream_max_conns_per_client,
            access,
            paths,
            refuse,
            login_rate,
            login_burst,
            auth_paths,
            cache_paths,
            cache_public_paths,
            gate,
            gate_public,
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
                if let Err(e) = crate::certfile::load(&cert, &key) {
                    self.report.at(&span, e.to_string());
                    return None;
                }
                Some(TlsSource::Files { cert, key })
            }
        }
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
}

/// Parses a rate like `"5/min"`, `"10/s"`, `"100/hour"`.
pub(super) fn parse_rate(text: &str) -> Result<Rate, String> {
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
