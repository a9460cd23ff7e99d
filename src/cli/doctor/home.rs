//! The way home: the site's names in DNS, the upstream or the agent that
//! reaches it, Jellyfin's Known proxies, and the side-door gate.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use drawbridge::config::{Config, SiteConfig, UpstreamTarget};
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

use super::{bad, clock, good, note, Finding};

/// Whether `name` resolves, and to an address of this machine.
pub(super) async fn dns(name: &str) -> Finding {
    let lookup = tokio::time::timeout(Duration::from_secs(5), tokio::net::lookup_host((name, 443)));
    let addrs: Vec<IpAddr> = match lookup.await {
        Ok(Ok(addrs)) => addrs.map(|a| a.ip()).collect(),
        Ok(Err(error)) => {
            return bad(
                format!("{name} does not resolve: {error}"),
                format!(
                    "add A (and AAAA) records for {name} pointing at this machine's public address"
                ),
            )
        }
        Err(_) => {
            return bad(
                format!("{name}: no DNS answer within 5 s"),
                "check the machine's resolvers (/etc/resolv.conf)".into(),
            )
        }
    };
    // An address is this machine's when a socket can be bound to it.
    let foreign: Vec<String> = addrs
        .iter()
        .filter(|ip| std::net::UdpSocket::bind(SocketAddr::new(**ip, 0)).is_err())
        .map(ToString::to_string)
        .collect();
    if foreign.is_empty() {
        good(format!("{name} resolves to this machine"))
    } else {
        bad(
            format!("{name} resolves to {}, not an address of this machine", foreign.join(", ")),
            "fine behind a 1:1 NAT (most clouds); otherwise point the record here — an AAAA elsewhere breaks IPv6 clients and ACME alike".into(),
        )
    }
}

/// A site through the tunnel: an agent of its name enrolled here, and
/// connected when drawbridge runs.
pub(super) async fn tunnel_agent(
    config: &Config,
    site: &SiteConfig,
    agent: &str,
    service: &str,
) -> Finding {
    let name = site.name();
    let register = drawbridge::tunnel::register::Register::new(&config.server.state_dir);
    let enrolled = register.known_names();
    if !enrolled.iter().any(|known| known == agent) {
        let listed = if enrolled.is_empty() {
            "none is".to_string()
        } else {
            format!("enrolled: {}", enrolled.join(", "))
        };
        return bad(
            format!("site {name}: upstream tunnel:{agent}/{service}, but no agent called `{agent}` is enrolled ({listed})"),
            format!("fix the name in `upstream`, or run `drawbridge tunnel add {agent}` and enrol the agent at home"),
        );
    }
    let socket = drawbridge::admin::socket_path(&config.server.state_dir);
    match drawbridge::admin::request(&socket, &drawbridge::admin::Command::TunnelList).await {
        Ok(drawbridge::admin::Reply::Tunnels(agents)) => {
            let up: usize = agents
                .iter()
                .filter(|a| a.name == agent)
                .map(|a| a.connections.len())
                .sum();
            if up > 0 {
                good(format!("site {name}: agent `{agent}` is connected ({up} tunnel connections); it logs the address to put in Jellyfin's Known proxies"))
            } else {
                bad(
                    format!("site {name}: agent `{agent}` is enrolled but not connected"),
                    "start it at home (`sudo systemctl status drawbridge-agent`, or `drawbridge agent`) and read its log".into(),
                )
            }
        }
        _ => note(format!(
            "site {name}: agent `{agent}` is enrolled (drawbridge is not running: its connection was not checked)"
        )),
    }
}

/// One GET to `authority` (`/System/Info/Public`, or the network
/// configuration with an API key): status, body, and the address this
/// machine connected from.
pub(super) async fn probe(
    authority: &str,
    path: &str,
    api_key: Option<&str>,
) -> Result<(http::StatusCode, bytes::Bytes, SocketAddr, Option<String>), String> {
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| e.to_string())?;
    let from = stream.local_addr().map_err(|e| e.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let mut request = Request::get(path).header(http::header::HOST, authority);
    if let Some(key) = api_key {
        request = request.header(
            http::header::AUTHORIZATION,
            format!("MediaBrowser Token=\"{key}\""),
        );
    }
    let request = request
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let date = response
        .headers()
        .get(http::header::DATE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body, from, date))
}

/// Whether the upstream answers and is Jellyfin; with an API key, whether
/// Jellyfin counts this machine among its Known proxies.
pub(super) async fn upstream(
    site: &str,
    target: &UpstreamTarget,
    api_key: Option<&str>,
) -> Vec<Finding> {
    let UpstreamTarget::Http(addr) = target else {
        return vec![good(format!(
            "site {site}: upstream {target} (the tunnel: see `drawbridge tunnel list`; the agent logs the address to put in Known proxies)"
        ))];
    };
    if addr.tls.is_some() {
        return vec![good(format!(
            "site {site}: upstream {target} over TLS (not probed by doctor)"
        ))];
    }
    let authority = if addr.host.contains(':') {
        format!("[{}]:{}", addr.host, addr.port)
    } else {
        format!("{}:{}", addr.host, addr.port)
    };
    let answered = tokio::time::timeout(
        Duration::from_secs(5),
        probe(&authority, "/System/Info/Public", None),
    )
    .await;
    match answered {
        Err(_) => {
            vec![bad(
                format!("site {site}: upstream {target} did not answer within 5 s"),
                "is Jellyfin running, and does a firewall let this machine reach it?".into(),
            )]
        }
        Ok(Err(why)) => {
            vec![bad(
                format!("site {site}: upstream {target} cannot be reached: {why}"),
                "start Jellyfin, or fix the address and port in `upstream` (Jellyfin listens on 8096)"
                    .into(),
            )]
        }
        Ok(Ok((status, body, from, date))) => {
            let info: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            match (
                status.is_success(),
                info["ProductName"].as_str(),
                info["Version"].as_str(),
            ) {
                (true, Some(product), version) if product.starts_with("Jellyfin") => {
                    let is = good(format!(
                        "site {site}: upstream {target} is {product} {}",
                        version.unwrap_or("(no version)")
                    ));
                    let mut found = vec![
                        is,
                        known_proxies(site, &authority, from.ip(), api_key).await,
                    ];
                    found.extend(date.as_deref().map(clock));
                    found
                }
                _ => {
                    vec![bad(
                        format!("site {site}: upstream {target} answers, but not as Jellyfin (/System/Info/Public: {status})"),
                        "point `upstream` at Jellyfin itself, not at another service or proxy".into(),
                    )]
                }
            }
        }
    }
}

/// Whether `from` (the address drawbridge reaches Jellyfin from) is in
/// Jellyfin's Known proxies: read with the API key, never stored.
pub(super) async fn known_proxies(
    site: &str,
    authority: &str,
    from: IpAddr,
    api_key: Option<&str>,
) -> Finding {
    let add = format!(
        "in Jellyfin: Dashboard → Networking → Known proxies, add {from}, save and restart Jellyfin; until then Jellyfin sees this proxy as every client's address (its own logs, LAN detection and bitrate limits)"
    );
    let Some(key) = api_key else {
        return note(format!(
            "site {site}: whether Jellyfin trusts this proxy was not checked: give `--jellyfin-api-key KEY` (Dashboard → API Keys), or check that Dashboard → Networking → Known proxies lists {from}"
        ));
    };
    let read = tokio::time::timeout(
        Duration::from_secs(5),
        probe(authority, "/System/Configuration/network", Some(key)),
    )
    .await;
    let (status, body) = match read {
        Ok(Ok((status, body, _, _))) => (status, body),
        Ok(Err(why)) => {
            return bad(
                format!("site {site}: Jellyfin's network settings cannot be read: {why}"),
                add,
            )
        }
        Err(_) => {
            return bad(
                format!("site {site}: Jellyfin's network settings did not come within 5 s"),
                add,
            )
        }
    };
    if status == http::StatusCode::UNAUTHORIZED || status == http::StatusCode::FORBIDDEN {
        return bad(
            format!("site {site}: Jellyfin refused the API key ({status})"),
            "create a key in Jellyfin's Dashboard → API Keys and give it with --jellyfin-api-key"
                .into(),
        );
    }
    let settings: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let Some(listed) = settings["KnownProxies"].as_array() else {
        return bad(
            format!(
                "site {site}: Jellyfin's network settings have no Known proxies list ({status})"
            ),
            add,
        );
    };
    let listed: Vec<&str> = listed.iter().filter_map(|v| v.as_str()).collect();
    let mut trusted = false;
    for entry in &listed {
        let entry = entry.trim();
        trusted |= match (entry.parse::<IpAddr>(), entry.parse::<ipnet::IpNet>()) {
            (Ok(ip), _) => {
                drawbridge::client_ip::normalise(ip) == drawbridge::client_ip::normalise(from)
            }
            (_, Ok(net)) => net.contains(&from),
            // A host name: Jellyfin resolves it at its start.
            _ => tokio::net::lookup_host((entry, 0))
                .await
                .is_ok_and(|mut addrs| addrs.any(|a| a.ip() == from)),
        };
    }
    if trusted {
        good(format!(
            "site {site}: Jellyfin trusts this proxy ({from} is in its Known proxies)"
        ))
    } else {
        bad(
            format!(
                "site {site}: Jellyfin does not trust this proxy: {from} is not in its Known proxies ({})",
                if listed.is_empty() { "empty".to_string() } else { listed.join(", ") }
            ),
            add,
        )
    }
}

/// This machine's clock against the `Date` Jellyfin sent: certificates and
/// ACME fail on a clock that is off.
/// Whether the side-door gate is on for a Jellyfin site.
pub(super) fn gate(site: &SiteConfig) -> Option<Finding> {
    use drawbridge::config::{GateMode, Preset};
    let name = site.name();
    let jellyfin = site.preset == Preset::Jellyfin;
    Some(match site.gate {
        GateMode::Enforce => good(format!(
            "{name}: the side-door gate is on: Jellyfin's streams, images and subtitles reach home only for a signed-in household"
        )),
        GateMode::Report => note(format!(
            "{name}: the side-door gate only reports: what it would refuse is logged and counted (drawbridge_gate_refusals_total{{mode=\"report\"}}), and still reaches Jellyfin; set gate = \"enforce\" once nothing the household uses is counted"
        )),
        // Turned off on purpose: said plainly, not failed.
        GateMode::Off if jellyfin => note(format!(
            "{name}: the side-door gate is off (gate = \"off\"): Jellyfin serves its films, songs, images and subtitles to anyone who guesses an item id; \"report\" shows what \"enforce\" would refuse without refusing it"
        )),
        GateMode::Off => return None,
    })
}
