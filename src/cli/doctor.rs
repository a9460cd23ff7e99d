//! `drawbridge doctor`: the setup checked the way a helpful person would,
//! one line a check, ✓ or ✗ and, for ✗, what to do. Runs against the config
//! file whether or not drawbridge is running.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use drawbridge::config::{Config, HostPattern, SiteConfig, UpstreamTarget};
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

/// One finding.
struct Finding {
    ok: bool,
    what: String,
    fix: Option<String>,
    /// Shown with `·`: not checked, nothing failed.
    note: bool,
}

fn good(what: String) -> Finding {
    Finding {
        ok: true,
        what,
        fix: None,
        note: false,
    }
}

fn bad(what: String, fix: String) -> Finding {
    Finding {
        ok: false,
        what,
        fix: Some(fix),
        note: false,
    }
}

/// Not checked, and not a failure: what to check by hand.
fn note(what: String) -> Finding {
    Finding {
        ok: true,
        what,
        fix: None,
        note: true,
    }
}

/// Runs every check and prints them; `Err` when any failed.
/// `api_key`: Jellyfin's, to read its Known proxies (never stored).
pub fn doctor(config: &Config, api_key: Option<&str>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut findings = vec![state_dir(config), user()];
    for site in &config.sites {
        for host in &site.hosts {
            if let HostPattern::Exact(name) = host {
                let found = runtime.block_on(dns(name));
                // A local name (`jelly.localhost`, `media.lan`) needs no
                // public record: where it does not resolve, say how it is
                // reached instead of asking for records.
                findings.push(match found.ok || !host.is_local() {
                    true => found,
                    false => note(format!(
                        "{name} is a local name: no public DNS record is needed (clients reach it by the router's DNS, /etc/hosts, or `localhost` itself)"
                    )),
                });
            }
        }
        match &site.upstream {
            UpstreamTarget::Tunnel { agent, service } => {
                findings.push(runtime.block_on(tunnel_agent(config, site, agent, service)));
            }
            target => findings.extend(runtime.block_on(upstream(&site.name(), target, api_key))),
        }
        findings.push(certificate(config, site));
        findings.extend(gate(site));
        if site.tls == drawbridge::config::TlsSource::Acme {
            findings.extend(last_order(config, site));
        }
    }
    if config
        .sites
        .iter()
        .any(|s| s.tls == drawbridge::config::TlsSource::Acme)
    {
        findings.push(acme_account(config));
    }
    findings.extend(runtime.block_on(listening(config)));
    let failed = findings.iter().filter(|f| !f.ok).count();
    for finding in &findings {
        let mark = match (finding.ok, finding.note) {
            (_, true) => "·",
            (true, false) => "✓",
            (false, false) => "✗",
        };
        println!("{mark} {}", finding.what);
        if let Some(fix) = &finding.fix {
            println!("    → {fix}");
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} checks failed", findings.len());
    }
    Ok(())
}

fn state_dir(config: &Config) -> Finding {
    let dir = &config.server.state_dir;
    let probe = dir.join(format!(".doctor-{}", std::process::id()));
    let written = drawbridge::owner::create_dir_all(dir).and_then(|()| std::fs::write(&probe, b""));
    let _ = std::fs::remove_file(&probe);
    match written {
        Ok(()) => good(format!("state_dir {} is writable", dir.display())),
        Err(error) => bad(
            format!("state_dir {} is not writable: {error}", dir.display()),
            "make it the drawbridge user's (the package does: /var/lib/drawbridge), or name another in [server] state_dir".into(),
        ),
    }
}

fn user() -> Finding {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find_map(|l| l.strip_prefix("Uid:"))?.to_string();
            line.split_whitespace().next()?.parse::<u32>().ok()
        });
    match uid {
        Some(0) => bad(
            "running as root".into(),
            "run drawbridge from its systemd unit (its own user, only CAP_NET_BIND_SERVICE)".into(),
        ),
        Some(uid) => good(format!("running as user {uid}, not root")),
        None => good("running user unknown (no /proc)".into()),
    }
}

/// Whether `name` resolves, and to an address of this machine.
async fn dns(name: &str) -> Finding {
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
            "fine behind a 1:1 NAT (most clouds); otherwise point the record here — an AAAA elsewhere breaks IPv6 visitors and ACME alike".into(),
        )
    }
}

/// A site through the tunnel: an agent of its name enrolled here, and
/// connected when drawbridge runs.
async fn tunnel_agent(config: &Config, site: &SiteConfig, agent: &str, service: &str) -> Finding {
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
async fn probe(
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
async fn upstream(site: &str, target: &UpstreamTarget, api_key: Option<&str>) -> Vec<Finding> {
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
async fn known_proxies(
    site: &str,
    authority: &str,
    from: IpAddr,
    api_key: Option<&str>,
) -> Finding {
    let add = format!(
        "in Jellyfin: Dashboard → Networking → Known proxies, add {from}, save and restart Jellyfin; until then Jellyfin sees this proxy as every visitor's address (its own logs, LAN detection and bitrate limits)"
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
fn gate(site: &SiteConfig) -> Option<Finding> {
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

fn clock(date: &str) -> Finding {
    let theirs = time::OffsetDateTime::parse(date, &time::format_description::well_known::Rfc2822);
    let Ok(theirs) = theirs else {
        return note(format!(
            "the clock was not compared: Jellyfin's Date `{date}` is not readable"
        ));
    };
    let skew = (time::OffsetDateTime::now_utc() - theirs).whole_seconds();
    if skew.abs() <= 300 {
        good(format!(
            "the clock agrees with Jellyfin's within {} s",
            skew.abs().max(1)
        ))
    } else {
        bad(
            format!("the clock is {skew} s off Jellyfin's"),
            "set the time right on both machines (`timedatectl set-ntp true`): certificates and ACME fail on a clock that is off".into(),
        )
    }
}

/// The certificate a site will serve, where doctor can read it: files and
/// stored ACME certificates (days left, names covered).
fn certificate(config: &Config, site: &drawbridge::config::SiteConfig) -> Finding {
    use drawbridge::config::TlsSource;
    let name = site.name();
    let path = match &site.tls {
        TlsSource::Internal => {
            return good(format!(
                "site {name}: certificate from drawbridge's local CA (issued and renewed by drawbridge)"
            ))
        }
        TlsSource::Files { cert, .. } => cert.clone(),
        TlsSource::Acme => {
            let stored = drawbridge::acme::store::site_dir(&config.server.state_dir, &site.hosts)
                .join("cert.pem");
            if !stored.exists() {
                return note(format!(
                    "site {name}: no ACME certificate stored yet (drawbridge orders one when it starts; `drawbridge status` shows it)"
                ));
            }
            stored
        }
    };
    let read = std::fs::read(&path)
        .map_err(|e| e.to_string())
        .and_then(|pem| {
            let (_, block) = x509_parser::pem::parse_x509_pem(&pem).map_err(|e| e.to_string())?;
            let (_, cert) =
                x509_parser::parse_x509_certificate(&block.contents).map_err(|e| e.to_string())?;
            let names = drawbridge::certfile::dns_names(&cert);
            Ok((cert.validity().not_after.timestamp(), names))
        });
    let (until, names) = match read {
        Ok(found) => found,
        Err(why) => {
            return bad(
                format!(
                    "site {name}: the certificate {} cannot be read: {why}",
                    path.display()
                ),
                "point `tls` at a PEM certificate chain, leaf first".into(),
            )
        }
    };
    let days = (until - time::OffsetDateTime::now_utc().unix_timestamp()) / 86_400;
    let missing: Vec<String> = site
        .hosts
        .iter()
        .filter_map(|host| match host {
            HostPattern::Exact(host) => Some(host.clone()),
            _ => None,
        })
        .filter(|host| {
            !names.iter().any(|san| {
                san.eq_ignore_ascii_case(host)
                    || san.strip_prefix("*.").is_some_and(|rest| {
                        host.split_once('.')
                            .is_some_and(|(_, parent)| parent.eq_ignore_ascii_case(rest))
                    })
            })
        })
        .collect();
    let renew = match site.tls {
        TlsSource::Acme => {
            "drawbridge renews it 30 days ahead: look for `could not get a certificate` in its log"
        }
        _ => "replace the files (drawbridge reads them again when they change)",
    };
    if days < 0 {
        bad(
            format!(
                "site {name}: the certificate {} has expired",
                path.display()
            ),
            renew.into(),
        )
    } else if !missing.is_empty() {
        bad(
            format!(
                "site {name}: the certificate does not cover {} (it names {})",
                missing.join(", "),
                names.join(", ")
            ),
            "issue it for every name of the site, or list the names it covers".into(),
        )
    } else if days < 7 {
        bad(
            format!("site {name}: the certificate expires in {days} days"),
            renew.into(),
        )
    } else {
        good(format!(
            "site {name}: certificate valid for {days} more days, covering its names"
        ))
    }
}

/// The ACME account drawbridge keeps for the configured CA.
fn acme_account(config: &Config) -> Finding {
    let directory = &config.acme.directory;
    let path = drawbridge::acme::store::account_path(&config.server.state_dir, directory);
    match std::fs::metadata(&path) {
        Ok(_) => good(format!("ACME account for {directory} is stored")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => note(format!(
            "no ACME account for {directory} yet (drawbridge creates it at its first order)"
        )),
        Err(error) => bad(
            format!("the ACME account {} cannot be read: {error}", path.display()),
            "run doctor as the drawbridge user (sudo -u drawbridge drawbridge doctor), or give state_dir back to it".into(),
        ),
    }
}

/// The site's last certificate order, when it failed (drawbridge notes it
/// in the site's certificate folder until an order succeeds).
fn last_order(config: &Config, site: &drawbridge::config::SiteConfig) -> Option<Finding> {
    let dir = drawbridge::acme::store::site_dir(&config.server.state_dir, &site.hosts);
    let text = std::fs::read_to_string(drawbridge::acme::store::last_error_path(&dir)).ok()?;
    let (when, message) = text.trim().split_once(' ').unwrap_or(("", text.trim()));
    Some(bad(
        format!("site {}: the last certificate order failed ({when}): {message}", site.name()),
        "fix what the CA says (often DNS not pointing here, or port 80 closed by a firewall), drawbridge retries by itself, or at once after `systemctl restart drawbridge`".into(),
    ))
}

/// Whether something answers on each TCP listen address of the config
/// (a wildcard address is tried on loopback): drawbridge itself when it
/// runs, else a port another program holds. A firewall in front of the
/// machine can only be seen from outside; that is said, not guessed.
async fn listening(config: &Config) -> Vec<Finding> {
    let mut findings = Vec::new();
    let server = &config.server;
    for (what, addrs) in [("http", &server.http), ("https", &server.https)] {
        // Port 0 is chosen at start: nothing to look for.
        for addr in addrs.iter().filter(|a| a.port() != 0) {
            let mut target = *addr;
            if target.ip().is_unspecified() {
                target.set_ip(match target {
                    SocketAddr::V4(_) => IpAddr::from([127, 0, 0, 1]),
                    SocketAddr::V6(_) => IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
                });
            }
            let connect = tokio::net::TcpStream::connect(target);
            match tokio::time::timeout(Duration::from_secs(3), connect).await {
                Ok(Ok(_)) => findings.push(good(format!("{what} {addr} is listening"))),
                _ => findings.push(bad(
                    format!("nothing listens on {what} {addr}"),
                    "start drawbridge (systemctl start drawbridge); if it runs, `journalctl -u drawbridge` says why it could not bind".into(),
                )),
            }
        }
    }
    let public = server
        .http
        .iter()
        .chain(&server.https)
        .any(|a| !a.ip().is_loopback());
    if public {
        findings.push(note(
            "reachability from the internet is not tested from here: open https://<your name> on a phone off Wi-Fi; a provider's firewall must let TCP 80 and 443 (and UDP 443 for HTTP/3) in".into(),
        ));
    }
    findings
}
