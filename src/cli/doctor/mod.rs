//! `drawbridge doctor`: the setup checked the way a helpful person would,
//! one line a check, ✓ or ✗ and, for ✗, what to do. Runs against the config
//! file whether or not drawbridge is running.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use drawbridge::config::{Config, HostPattern, UpstreamTarget};

mod certificates;
mod home;
mod wireguard;

use certificates::clock;
use certificates::{acme_account, certificate, last_order};
use home::{dns, gate, tunnel_agent, upstream};

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
    let runtime = crate::cli::current_thread()?;
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
            UpstreamTarget::Wireguard { peer, .. } => {
                findings.push(runtime.block_on(wireguard::wireguard_peer(config, site, peer)));
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
