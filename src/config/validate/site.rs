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

    /// One `[[site]]`: each key read by its own line, defaults from the
    /// preset; `None` when any key was wrong (every problem reported).
    fn site(
        &mut self,
        span: &Range<usize>,
        raw: RawSite,
        earlier: &[SiteConfig],
        acme: &Acme,
    ) -> Option<SiteConfig> {
        let errors_before = self.report.errors.len();
        let hosts = self.hosts(span, raw.host, raw.hosts, earlier)?;
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
        let tls = self.tls(raw.tls, hosts.iter().all(HostPattern::is_local));
        if tls == Some(TlsSource::Acme)
            && hosts.iter().any(|h| matches!(h, HostPattern::Wildcard(_)))
            && !acme.challenges.contains(&Challenge::Dns01)
        {
            self.report.at(span, "a wildcard name can only be validated by DNS-01: add \"dns-01\" to [acme] challenges and set [acme] dns_hook");
        }
        let acme_webroot = raw.acme_webroot.and_then(|dir| self.folder(&dir));
        let preset = self.word(
            "preset",
            raw.preset,
            &[("jellyfin", Preset::Jellyfin), ("none", Preset::None)],
            Preset::Jellyfin,
            Preset::None,
        );
        let jellyfin = preset == Preset::Jellyfin;
        let refuse = self.word(
            "refuse",
            raw.refuse,
            &[("403", Refuse::Forbidden), ("close", Refuse::Close)],
            Refuse::Forbidden,
            Refuse::Forbidden,
        );
        let gate = self.word(
            "gate",
            raw.gate,
            &[
                ("enforce", GateMode::Enforce),
                ("report", GateMode::Report),
                ("off", GateMode::Off),
            ],
            if jellyfin {
                GateMode::Enforce
            } else {
                GateMode::Off
            },
            GateMode::Off,
        );
        let mut paths: Vec<PathRule> = (raw.path.unwrap_or_default().into_iter())
            .filter_map(|p| self.path_rule(p))
            .collect();
        if jellyfin && !paths.iter().any(|p| p.prefix == "/metrics") {
            paths.push(metrics_for_the_home_network());
        }
        let upstream_max_conns = self.count(
            raw.upstream_max_conns,
            DEFAULT_UPSTREAM_MAX_CONNS,
            1,
            100_000,
        );
        let half = upstream_max_conns.div_ceil(2);
        let caching = raw.cache.unwrap_or(jellyfin);
        let jellyfin_cache_paths =
            || jellyfin.then(|| strings(crate::config::JELLYFIN_CACHE_PATHS));
        // Fields are read in the order written: `upstream` and `tls` last,
        // so a wrong one still lets every other key be checked.
        let site = SiteConfig {
            https_redirect: raw.https_redirect.unwrap_or(true),
            acme_webroot,
            preset,
            max_body: self.size(raw.max_body, 20 << 20, 0, usize::MAX) as u64,
            access_log: raw.access_log.unwrap_or(true),
            headers: self.headers(raw.headers),
            remove_headers: self.header_names(raw.remove_headers),
            connect_timeout: self.duration(raw.connect_timeout, Duration::from_secs(3)),
            response_timeout: self.duration(raw.response_timeout, Duration::from_secs(60)),
            upstream_max_conns,
            upstream_max_conns_per_client: self.number(
                raw.upstream_max_conns_per_client,
                1..=upstream_max_conns,
                half,
                &format!("must be between 1 and upstream_max_conns ({upstream_max_conns})"),
            ),
            access: AccessList {
                allow: self.nets(raw.allow),
                deny: self.nets(raw.deny),
            },
            paths,
            refuse,
            login_rate: self.login_rate(raw.login_rate, jellyfin),
            login_burst: self.count(raw.login_burst, 5, 1, 10_000),
            auth_paths: self.auth_paths(raw.auth_paths, jellyfin),
            cache_paths: (self.patterns(raw.cache_paths).unwrap_or_default())
                .into_iter()
                .filter(|_| caching)
                .collect(),
            cache_public_paths: (self.patterns(raw.cache_public_paths))
                .or_else(jellyfin_cache_paths)
                .unwrap_or_default()
                .into_iter()
                .filter(|_| caching)
                .collect(),
            gate,
            gate_public: self.patterns(raw.gate_public).unwrap_or_default(),
            hosts,
            upstream: upstream?,
            tls: tls?,
        };
        (self.report.errors.len() == errors_before).then_some(site)
    }

    /// `host` or `hosts`: each name once across the sites.
    fn hosts(
        &mut self,
        span: &Range<usize>,
        host: Option<Spanned<String>>,
        hosts: Option<Vec<Spanned<String>>>,
        earlier: &[SiteConfig],
    ) -> Option<Vec<HostPattern>> {
        let names: Vec<Spanned<String>> = match (host, hosts) {
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
        Some(hosts)
    }

    /// `login_rate`: "off", a rate, or the preset's 5 a minute.
    fn login_rate(&mut self, raw: Option<Spanned<String>>, jellyfin: bool) -> Option<Rate> {
        match raw {
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
        }
    }

    /// `auth_paths`: each starts with `/`; the preset's login routes when
    /// absent.
    fn auth_paths(&mut self, raw: Option<Vec<Spanned<String>>>, jellyfin: bool) -> Vec<String> {
        let Some(list) = raw else {
            return match jellyfin {
                true => strings(crate::config::JELLYFIN_AUTH_PATHS),
                false => Vec::new(),
            };
        };
        let mut paths = Vec::new();
        for p in list {
            if p.get_ref().starts_with('/') {
                paths.push(p.into_inner());
            } else {
                self.report.at(&p.span(), "an auth path starts with `/`, like \"/api/login\" or \"/Users/*/Authenticate\"");
            }
        }
        paths
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

/// The Jellyfin preset's `/metrics` rule: the home network only.
fn metrics_for_the_home_network() -> PathRule {
    PathRule {
        prefix: "/metrics".to_string(),
        access: AccessList {
            allow: (crate::config::PRIVATE_NETWORKS.iter())
                .map(|n| n.parse().expect("built-in range"))
                .collect(),
            deny: Vec::new(),
        },
    }
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(ToString::to_string).collect()
}
