//! Validation of a site's `upstream` (and `upstream_pin`, `upstream_ca`):
//! `http://host:port`, `https://host:port` with how its certificate is
//! checked, or `tunnel:AGENT/SERVICE`.

use toml::Spanned;

use super::Validator;
use crate::config::{UpstreamAddr, UpstreamTarget, UpstreamTls};

impl Validator<'_> {
    pub(super) fn upstream(
        &mut self,
        raw: &Spanned<String>,
        pin: Option<Spanned<String>>,
        ca: Option<Spanned<String>>,
    ) -> Option<UpstreamTarget> {
        let text = raw.get_ref();
        let fail = |v: &mut Self, why: &str| {
            v.report.at(
                &raw.span(),
                format!("upstream `{text}` {why}; write it like \"http://192.168.1.10:8096\" or \"tunnel:home/jellyfin\""),
            );
            None
        };
        if let Some(rest) = text.strip_prefix("wireguard:") {
            let Some((peer, url)) = rest
                .split_once('/')
                .filter(|(peer, _)| crate::config::valid_agent_name(peer))
            else {
                return fail(
                    self,
                    "is not a WireGuard target: the peer's name (a-z, 0-9, - and _), a slash, and Jellyfin's address at home, like \"wireguard:home/http://192.168.1.10:8096\"",
                );
            };
            let url = Spanned::new(raw.span(), url.to_string());
            return match self.upstream(&url, pin, ca)? {
                UpstreamTarget::Http(addr) if addr.host.parse::<std::net::Ipv6Addr>().is_ok() => {
                    fail(
                        self,
                        "names an IPv6 address: the tunnel to the home router carries IPv4, give Jellyfin's IPv4 address at home",
                    )
                }
                UpstreamTarget::Http(addr) if addr.host.parse::<std::net::IpAddr>().is_ok() => {
                    Some(UpstreamTarget::Wireguard {
                        peer: peer.to_string(),
                        addr,
                    })
                }
                _ => fail(
                    self,
                    "names a host by name: through WireGuard the edge asks no DNS, give Jellyfin's IP address at home",
                ),
            };
        }
        if let Some(rest) = text.strip_prefix("tunnel:") {
            let named = rest.split_once('/').filter(|(agent, service)| {
                crate::config::valid_agent_name(agent) && valid_service(service)
            });
            let Some((agent, service)) = named else {
                return fail(
                    self,
                    "is not a tunnel target: the agent's name (a-z, 0-9, - and _), a slash, the service's name",
                );
            };
            return Some(UpstreamTarget::Tunnel {
                agent: agent.to_string(),
                service: service.to_string(),
            });
        }
        let Ok(uri) = text.parse::<http::Uri>() else {
            return fail(self, "is not a URL");
        };
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => {
                return fail(
                    self,
                    "must start with http://, https://, tunnel: or wireguard:",
                )
            }
        };
        let tls = match (https, pin, ca) {
            (_, Some(pin), Some(_)) => {
                self.report.at(
                    &pin.span(),
                    "give `upstream_pin` or `upstream_ca`, not both",
                );
                return None;
            }
            (false, Some(given), None) | (false, None, Some(given)) => {
                self.report.at(
                    &given.span(),
                    "`upstream_pin` and `upstream_ca` are for an https:// upstream",
                );
                return None;
            }
            (false, None, None) => None,
            (true, None, None) => Some(UpstreamTls::SystemRoots),
            (true, Some(pin), None) => {
                let text = pin.get_ref();
                let digest = text.strip_prefix("sha256/").map(|b64| {
                    use base64::Engine as _;
                    base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .map_or(0, |d| d.len())
                });
                if digest != Some(32) {
                    self.report.at(
                        &pin.span(),
                        format!("`{text}` is not a key pin; write it like \"sha256/\" and the base64 SHA-256 of the key (curl --pinnedpubkey's form)"),
                    );
                    return None;
                }
                Some(UpstreamTls::Pin(text.clone()))
            }
            (true, None, Some(ca)) => Some(UpstreamTls::CaFile(self.path(ca.get_ref()))),
        };
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
        if authority.port_u16().is_none() {
            return fail(
                self,
                "has no port (Jellyfin listens on 8096, or 8920 for https)",
            );
        }
        Some(UpstreamTarget::Http(UpstreamAddr {
            host: host.to_string(),
            port: authority.port_u16().unwrap_or(80),
            tls,
        }))
    }
}

/// Whether `name` may name an agent's service: what a URI authority's host
/// may carry, in lower case.
fn valid_service(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}
