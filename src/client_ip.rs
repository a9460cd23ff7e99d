//! The client's address, decided once per request and used everywhere (access
//! log, forwarded headers, and the guard's allow lists, rate limits and bans).
//!
//! It is the TCP peer (or the PROXY protocol's source), unless that peer is a
//! trusted proxy. Then it is `CF-Connecting-IP` when the peer is one of
//! Cloudflare's own addresses, else the right-most address in
//! `X-Forwarded-For` that is not itself a trusted proxy. Whatever a client
//! wrote to the left of that is ignored, so it cannot be forged.

use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;

/// Cloudflare's published address ranges (www.cloudflare.com/ips), copied into
/// drawbridge; `trusted_proxies = ["cloudflare"]` uses them. If Cloudflare adds
/// ranges, list them as CIDRs beside `"cloudflare"` until drawbridge is updated.
pub const CLOUDFLARE: &[&str] = &[
    "173.245.48.0/20",
    "103.21.244.0/22",
    "103.22.200.0/22",
    "103.31.4.0/22",
    "141.101.64.0/18",
    "108.162.192.0/18",
    "190.93.240.0/20",
    "188.114.96.0/20",
    "197.234.240.0/22",
    "198.41.128.0/17",
    "162.158.0.0/15",
    "104.16.0.0/13",
    "104.24.0.0/14",
    "172.64.0.0/13",
    "131.0.72.0/22",
    "2400:cb00::/32",
    "2606:4700::/32",
    "2803:f800::/32",
    "2405:b500::/32",
    "2405:8100::/32",
    "2a06:98c0::/29",
    "2c0f:f248::/32",
];

/// Who may speak for clients.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    /// Configured ranges (Cloudflare's included when asked for).
    pub nets: Vec<IpNet>,
    /// Cloudflare's ranges, when `"cloudflare"` was listed.
    pub cloudflare: Vec<IpNet>,
}

impl TrustedProxies {
    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.nets
            .iter()
            .chain(&self.cloudflare)
            .any(|n| n.contains(&ip))
    }

    fn is_cloudflare(&self, ip: IpAddr) -> bool {
        self.cloudflare.iter().any(|n| n.contains(&ip))
    }
}

/// The built-in Cloudflare ranges.
pub fn cloudflare() -> Vec<IpNet> {
    CLOUDFLARE
        .iter()
        .map(|n| n.parse().expect("built-in range"))
        .collect()
}

/// `::ffff:a.b.c.d` is `a.b.c.d`.
pub fn normalise(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client of one request, and the `X-Forwarded-For` to send upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// The client's address.
    pub ip: IpAddr,
    /// The client, then the trusted hops, then the peer; it begins with the
    /// client's address as `ip_text` gives it.
    pub forwarded_for: String,
    /// Whether the peer was a trusted proxy (its other claims are kept).
    pub via_trusted_proxy: bool,
}

impl Client {
    /// The client's address as text (X-Real-IP): the start of `forwarded_for`,
    /// so the address is formatted once per request.
    pub fn ip_text(&self) -> &str {
        self.forwarded_for
            .split_once(", ")
            .map_or(&self.forwarded_for, |(first, _)| first)
    }
}

/// An address as text, as `Display` writes it. IPv4 without the formatting
/// machinery, paid on every request (measured in docs/performance.md).
pub fn ip_text(ip: IpAddr) -> String {
    let mut text = String::with_capacity(15);
    push_ip(&mut text, ip);
    text
}

/// Appends `ip` as `Display` writes it (see `ip_text`).
pub fn push_ip(out: &mut String, ip: IpAddr) {
    let IpAddr::V4(v4) = ip else {
        use std::fmt::Write;
        let _ = write!(out, "{ip}");
        return;
    };
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if octet >= 100 {
            out.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            out.push(char::from(b'0' + octet / 10 % 10));
        }
        out.push(char::from(b'0' + octet % 10));
    }
}

/// Decides the client of a request that came from `peer` with `headers`.
pub fn identify(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> Client {
    let peer = normalise(peer);
    if !trusted.contains(peer) {
        return Client {
            ip: peer,
            forwarded_for: ip_text(peer),
            via_trusted_proxy: false,
        };
    }
    if trusted.is_cloudflare(peer) {
        let claimed = headers
            .get("cf-connecting-ip")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        if let Some(ip) = claimed.map(normalise) {
            return Client {
                ip,
                forwarded_for: format!("{}, {}", ip_text(ip), ip_text(peer)),
                via_trusted_proxy: true,
            };
        }
    }
    let chain: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut hops = vec![peer];
    let mut client = None;
    for entry in chain.iter().rev() {
        let Ok(ip) = entry.parse::<IpAddr>().map(normalise) else {
            break;
        };
        if trusted.contains(ip) {
            hops.push(ip);
        } else {
            client = Some(ip);
            break;
        }
    }
    // Every hop trusted (or nothing usable): the left-most trusted hop is all we know.
    let ip = client.unwrap_or_else(|| hops.pop().expect("the peer is a hop"));
    let mut forwarded = vec![ip_text(ip)];
    forwarded.extend(hops.iter().rev().map(|hop| ip_text(*hop)));
    Client {
        ip,
        forwarded_for: forwarded.join(", "),
        via_trusted_proxy: true,
    }
}

#[cfg(test)]
mod tests {
    use super::{cloudflare, identify, ip_text, normalise, TrustedProxies};
    use http::HeaderMap;
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn trusted(nets: &[&str], with_cloudflare: bool) -> TrustedProxies {
        TrustedProxies {
            nets: nets.iter().map(|n| n.parse().unwrap()).collect(),
            cloudflare: if with_cloudflare {
                cloudflare()
            } else {
                Vec::new()
            },
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn untrusted_peers_claims_are_ignored() {
        let c = identify(
            ip("203.0.113.9"),
            &headers(&[
                ("x-forwarded-for", "1.2.3.4"),
                ("cf-connecting-ip", "1.2.3.4"),
            ]),
            &trusted(&["10.0.0.0/8"], true),
        );
        assert_eq!(c.ip, ip("203.0.113.9"));
        assert_eq!(c.forwarded_for, "203.0.113.9");
        assert!(!c.via_trusted_proxy);
    }

    #[test]
    fn right_most_untrusted_hop_wins_and_forged_prefix_is_dropped() {
        let t = trusted(&["10.0.0.0/8"], false);
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.0.0.3")]);
        let c = identify(ip("10.0.0.2"), &h, &t);
        assert_eq!(c.ip, ip("198.51.100.7"));
        assert_eq!(c.forwarded_for, "198.51.100.7, 10.0.0.3, 10.0.0.2");
        let split = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "198.51.100.7"),
        ]);
        assert_eq!(identify(ip("10.0.0.2"), &split, &t).ip, ip("198.51.100.7"));
    }

    #[test]
    fn cloudflare_header_only_from_cloudflare() {
        let t = trusted(&["10.0.0.0/8"], true);
        let h = headers(&[
            ("cf-connecting-ip", "198.51.100.7"),
            ("x-forwarded-for", "192.0.2.1"),
        ]);
        assert_eq!(identify(ip("104.16.0.1"), &h, &t).ip, ip("198.51.100.7"));
        assert_eq!(
            identify(ip("10.0.0.2"), &h, &t).ip,
            ip("192.0.2.1"),
            "a load balancer's client cannot forge CF-Connecting-IP"
        );
    }

    #[test]
    fn mapped_addresses_and_garbage() {
        assert_eq!(normalise(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        let t = trusted(&["10.0.0.0/8"], false);
        let c = identify(
            ip("::ffff:10.0.0.2"),
            &headers(&[("x-forwarded-for", "not-an-ip, ::ffff:198.51.100.7")]),
            &t,
        );
        assert_eq!(c.ip, ip("198.51.100.7"));
        let only_trusted = identify(
            ip("10.0.0.2"),
            &headers(&[("x-forwarded-for", "garbage")]),
            &t,
        );
        assert_eq!(only_trusted.ip, ip("10.0.0.2"));
        assert_eq!(only_trusted.forwarded_for, "10.0.0.2");
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for a in [0u8, 1, 9, 10, 42, 99, 100, 101, 199, 200, 255] {
            for b in [0u8, 7, 10, 100, 255] {
                let ip = IpAddr::from([a, b, 255 - a, b / 3]);
                assert_eq!(ip_text(ip), ip.to_string());
            }
        }
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(ip_text(v6), "2001:db8::1");
    }

    #[test]
    fn the_client_address_text_is_the_first_forwarded_entry() {
        let trusted = TrustedProxies {
            nets: vec!["10.0.0.0/8".parse().unwrap()],
            ..TrustedProxies::default()
        };
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "198.51.100.7".parse().unwrap());
        let via = identify("10.0.0.2".parse().unwrap(), &headers, &trusted);
        assert_eq!(via.ip_text(), "198.51.100.7");
        let direct = identify("203.0.113.9".parse().unwrap(), &headers, &trusted);
        assert_eq!(direct.ip_text(), "203.0.113.9");
    }
}
