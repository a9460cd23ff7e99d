//! `drawbridge doctor`: the setup checked the way a helpful person would,
//! one line a check, ✓ or ✗ and, for ✗, what to do. Runs against the config
//! file whether or not drawbridge is running.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use drawbridge::config::{Config, HostPattern, UpstreamTarget};
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

/// One finding.
struct Finding {
    ok: bool,
    what: String,
    fix: Option<String>,
}

fn good(what: String) -> Finding {
    Finding {
        ok: true,
        what,
        fix: None,
    }
}

fn bad(what: String, fix: String) -> Finding {
    Finding {
        ok: false,
        what,
        fix: Some(fix),
    }
}

/// Runs every check and prints them; `Err` when any failed.
pub fn doctor(config: &Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut findings = vec![state_dir(config), user()];
    for site in &config.sites {
        for host in &site.hosts {
            if let HostPattern::Exact(name) = host {
                findings.push(runtime.block_on(dns(name)));
            }
        }
        findings.push(runtime.block_on(upstream(&site.name(), &site.upstream)));
    }
    let failed = findings.iter().filter(|f| !f.ok).count();
    for finding in &findings {
        let mark = if finding.ok { "✓" } else { "✗" };
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
    let written = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&probe, b""));
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

/// Whether the upstream answers and is Jellyfin.
async fn upstream(site: &str, target: &UpstreamTarget) -> Finding {
    let UpstreamTarget::Http(addr) = target else {
        return good(format!(
            "site {site}: upstream {target} (the tunnel: see `drawbridge tunnel list`)"
        ));
    };
    if addr.tls.is_some() {
        return good(format!(
            "site {site}: upstream {target} over TLS (not probed by doctor)"
        ));
    }
    let authority = if addr.host.contains(':') {
        format!("[{}]:{}", addr.host, addr.port)
    } else {
        format!("{}:{}", addr.host, addr.port)
    };
    let probe = async {
        let stream = tokio::net::TcpStream::connect(&authority)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let request = Request::get("/System/Info/Public")
            .header(http::header::HOST, authority.as_str())
            .body(Empty::<bytes::Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok::<_, String>((status, body))
    };
    match tokio::time::timeout(Duration::from_secs(5), probe).await {
        Err(_) => bad(
            format!("site {site}: upstream {target} did not answer within 5 s"),
            "is Jellyfin running, and does a firewall let this machine reach it?".into(),
        ),
        Ok(Err(why)) => bad(
            format!("site {site}: upstream {target} cannot be reached: {why}"),
            "start Jellyfin, or fix the address and port in `upstream` (Jellyfin listens on 8096)"
                .into(),
        ),
        Ok(Ok((status, body))) => {
            let info: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            match (status.is_success(), info["ProductName"].as_str(), info["Version"].as_str()) {
                (true, Some(product), version) if product.starts_with("Jellyfin") => good(format!(
                    "site {site}: upstream {target} is {product} {}",
                    version.unwrap_or("(no version)")
                )),
                _ => bad(
                    format!("site {site}: upstream {target} answers, but not as Jellyfin (/System/Info/Public: {status})"),
                    "point `upstream` at Jellyfin itself, not at another service or proxy".into(),
                ),
            }
        }
    }
}
