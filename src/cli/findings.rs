//! What `check` warns about beyond validity: settings that are valid but
//! would quietly not do what was meant — plain HTTP across the internet, a
//! tunnel to an agent nobody enrolled, a certificate file for other names,
//! ACME on ports the CA cannot reach. Each at its place in the file.

use drawbridge::config::{Challenge, Config, Diagnostic, SiteConfig, TlsSource, UpstreamTarget};
use drawbridge::tunnel::register::Register;

/// Every quiet mistake in `config`, as warnings.
pub fn quiet_mistakes(config: &Config) -> Vec<Diagnostic> {
    let mut warnings = Vec::new();
    let known = Register::new(&config.server.state_dir).known_names();
    let local_routes = std::fs::read_to_string("/proc/net/route")
        .map(|table| routes(&table))
        .unwrap_or_default();
    let peers: Vec<String> = drawbridge::wireguard::register::Peers::new(&config.server.state_dir)
        .list()
        .unwrap_or_default()
        .into_iter()
        .map(|p| p.name)
        .collect();
    for (site, places) in config.sites.iter().zip(&config.places.sites) {
        let upstream = places.upstream.or(Some(places.site));
        if site.upstream.plain_to_public() {
            warnings.push(config.diagnostic(upstream, format!(
                "site {}: upstream {} is plain HTTP to a public address: credentials cross the internet in clear text; use the tunnel or https",
                site.name(),
                site.upstream
            )));
        }
        if let Some(word) = unknown_agent(site, &known) {
            warnings.push(config.diagnostic(upstream, word));
        }
        if let Some(word) = unknown_peer(site, &peers) {
            warnings.push(config.diagnostic(upstream, word));
        }
        if let Some(word) = routed_elsewhere(site, config, &local_routes) {
            warnings.push(config.diagnostic(upstream, word));
        }
        if let Some(word) = foreign_certificate(site) {
            warnings.push(config.diagnostic(places.tls.or(Some(places.site)), word));
        }
    }
    if let Some((site, places)) = config
        .sites
        .iter()
        .zip(&config.places.sites)
        .find(|(site, _)| site.tls == TlsSource::Acme)
    {
        if let Some(word) = unreachable_challenges(config) {
            let place = places.tls.or(Some(places.site));
            warnings.push(config.diagnostic(place, format!("site {}: {word}", site.name())));
        }
    }
    warnings
}

/// A `wireguard:NAME/…` whose NAME no peer is registered under: every
/// request would get 502.
fn unknown_peer(site: &SiteConfig, peers: &[String]) -> Option<String> {
    let UpstreamTarget::Wireguard { peer, .. } = &site.upstream else {
        return None;
    };
    (!peers.contains(peer)).then(|| {
        format!("no WireGuard peer called `{peer}` is registered here: `drawbridge wireguard add {peer}` makes its keys and prints the router's config (`drawbridge wireguard list` shows them)")
    })
}

/// The IPv4 routes of this machine other than the default, as
/// `/proc/net/route` lists them: (interface, network).
fn routes(table: &str) -> Vec<(String, ipnet::Ipv4Net)> {
    let hex = |field: &str| u32::from_str_radix(field, 16).ok();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (destination, mask) = (hex(fields.get(1)?)?, hex(fields.get(7)?)?);
            // The kernel prints them in the machine's own byte order.
            let destination = std::net::Ipv4Addr::from(destination.to_ne_bytes());
            let prefix = std::net::Ipv4Addr::from(mask.to_ne_bytes());
            let net = ipnet::Ipv4Net::with_netmask(destination, prefix).ok()?;
            (net.prefix_len() > 0).then(|| (fields[0].to_string(), net))
        })
        .collect()
}

/// A `wireguard:` site's address that this machine already reaches by a
/// route of its own (a provider's private network on the VPS): routing it
/// into the tunnel would cut that path for everything else on the machine.
fn routed_elsewhere(
    site: &SiteConfig,
    config: &Config,
    routes: &[(String, ipnet::Ipv4Net)],
) -> Option<String> {
    let UpstreamTarget::Wireguard { addr, .. } = &site.upstream else {
        return None;
    };
    let std::net::IpAddr::V4(ip) = addr.host.parse().ok()? else {
        return None;
    };
    if config.wireguard.address.contains(&ip) {
        return None;
    }
    let (interface, net) = routes
        .iter()
        .find(|(interface, net)| *interface != config.wireguard.interface && net.contains(&ip))?;
    Some(format!(
        "site {}: {ip} is on this machine's own network {net} ({interface}); drawbridge routes it into the WireGuard tunnel, which cuts that path for the rest of the machine — give Jellyfin an address the VPS does not use, or renumber one of the networks",
        site.name()
    ))
}

/// A `tunnel:NAME/…` whose NAME no agent is enrolled under and no token
/// was made for: every request would wait 5 s and get 502.
fn unknown_agent(site: &SiteConfig, known: &[String]) -> Option<String> {
    let UpstreamTarget::Tunnel { agent, .. } = &site.upstream else {
        return None;
    };
    if known.contains(agent) {
        return None;
    }
    let nearest = known
        .iter()
        .map(|name| (strsim::levenshtein(name, agent), name))
        .filter(|(distance, _)| *distance <= 2)
        .min();
    Some(match nearest {
        Some((_, name)) => format!(
            "no agent called `{agent}` is enrolled here; did you mean `{name}`? (`drawbridge tunnel list` shows them)"
        ),
        None => format!(
            "no agent called `{agent}` is enrolled here yet: run `drawbridge tunnel add {agent}` and enrol it at home, or every request will get 502"
        ),
    })
}

/// A certificate file that names none of the site's hosts: every browser
/// would refuse it.
fn foreign_certificate(site: &SiteConfig) -> Option<String> {
    let TlsSource::Files { cert, .. } = &site.tls else {
        return None;
    };
    let names = drawbridge::certfile::leaf_names(cert)?;
    let uncovered: Vec<String> = site
        .hosts
        .iter()
        .map(ToString::to_string)
        .filter(|host| !drawbridge::certfile::names_cover(&names, host))
        .collect();
    if uncovered.is_empty() {
        return None;
    }
    Some(format!(
        "the certificate {} names {}, not {}: browsers and apps will refuse it for those names",
        cert.display(),
        if names.is_empty() {
            "no DNS name".to_string()
        } else {
            names.join(", ")
        },
        uncovered.join(", ")
    ))
}

/// ACME whose challenges the CA cannot answer here: it connects to port 80
/// (HTTP-01) and 443 (TLS-ALPN-01) of the site's address.
fn unreachable_challenges(config: &Config) -> Option<String> {
    let on = |listeners: &[std::net::SocketAddr], port: u16| {
        listeners.iter().any(|addr| addr.port() == port)
    };
    let reachable = config
        .acme
        .challenges
        .iter()
        .any(|challenge| match challenge {
            Challenge::Http01 => on(&config.server.http, 80),
            Challenge::TlsAlpn01 => on(&config.server.https, 443),
            Challenge::Dns01 => true,
        });
    if reachable {
        return None;
    }
    let ports: Vec<String> = config
        .server
        .http
        .iter()
        .chain(&config.server.https)
        .map(|addr| addr.port().to_string())
        .collect();
    Some(format!(
        "the CA checks HTTP-01 on port 80 and TLS-ALPN-01 on port 443, and drawbridge listens on {}: orders will fail unless a port forward maps 80 or 443 here, or use challenges = [\"dns-01\"]",
        if ports.is_empty() { "none".to_string() } else { ports.join(", ") }
    ))
}

#[cfg(test)]
mod tests {
    use super::routes;

    #[test]
    fn the_machines_routes_are_read_in_its_byte_order() {
        let table =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                     eth1\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        let found = routes(table);
        if cfg!(target_endian = "little") {
            assert_eq!(
                found,
                [("eth1".to_string(), "192.168.1.0/24".parse().unwrap())]
            );
        }
        assert_eq!(found.len(), 1, "the default route is left out");
    }
}
