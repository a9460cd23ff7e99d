//! `drawbridge check`: what `run` would refuse, short of binding, and the
//! summary of what it would serve.

use std::path::Path;
use std::process::ExitCode;

use drawbridge::config::{Config, Diagnostic, LogTarget, SiteConfig, TlsSource};

/// `drawbridge check` on the config at `path`: every problem in one run —
/// what is invalid, what `run` would refuse (log files, state folder,
/// user), what would quietly not work (an agent nobody enrolled, a
/// certificate for other names) — each at its `file:line:col`, in file
/// order; then the summary of what it would serve.
pub fn check(path: &Path) -> ExitCode {
    let (config, mut problems) = match Config::load_all(path) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    let invalid = problems.len();
    let mut warnings = Vec::new();
    if let Some(config) = &config {
        drawbridge::privileges::hand_new_files_to_the_service(config.server.user.as_deref());
        let (refusals, warned) = would_refuse(config);
        problems.extend(refusals);
        warnings.extend(warned);
        warnings.extend(super::findings::quiet_mistakes(config));
    }
    problems.sort_by_key(|d| (d.line, d.col));
    warnings.sort_by_key(|d| (d.line, d.col));
    for problem in &problems {
        eprintln!("{problem}");
    }
    for warning in &warnings {
        eprintln!(
            "{}:{}:{}: warning: {}",
            warning.file.display(),
            warning.line,
            warning.col,
            warning.message
        );
    }
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    let refused = problems.len() - invalid;
    if invalid > 0 {
        eprintln!(
            "{}: {invalid} error{}; the config is not valid{}",
            path.display(),
            plural(invalid),
            if refused > 0 {
                format!(
                    ", and `run` would also refuse to start ({refused} problem{})",
                    plural(refused)
                )
            } else {
                String::new()
            }
        );
        return ExitCode::FAILURE;
    }
    let Some(config) = config else {
        return ExitCode::FAILURE;
    };
    if refused > 0 {
        eprintln!(
            "{}: valid, but `run` would refuse to start ({refused} problem{})",
            path.display(),
            plural(refused)
        );
        return ExitCode::FAILURE;
    }
    summary(&config);
    ExitCode::SUCCESS
}

/// What `check` prints of a good config.
fn summary(config: &Config) {
    let list = |addrs: &[std::net::SocketAddr]| {
        addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("{}: the config is valid", config.path.display());
    println!("  http listeners:  {}", list(&config.server.http));
    println!("  https listeners: {}", list(&config.server.https));
    println!("  state_dir:       {}", config.server.state_dir.display());
    if config.sites.iter().any(|s| s.tls == TlsSource::Acme) {
        let challenges: Vec<&str> = config.acme.challenges.iter().map(|c| c.name()).collect();
        println!(
            "  acme:            {} via {}",
            config.acme.directory,
            challenges.join(", ")
        );
    }
    for site in &config.sites {
        println!("  site {}", describe(site));
        if site.gate != drawbridge::config::GateMode::Off {
            println!("    {}", public_in_force(site));
        }
    }
}

/// The paths a gated site lets through without credentials: Jellyfin's
/// login screen's, then the site's own `gate_public`.
fn public_in_force(site: &SiteConfig) -> String {
    let own = if site.gate_public.is_empty() {
        String::new()
    } else {
        format!("; the site's own: {}", site.gate_public.join(", "))
    };
    format!(
        "open without credentials: {}{own}",
        drawbridge::gate::routes::PUBLIC.join(", ")
    )
}

/// What `run` would stop at, short of binding: log files that cannot be
/// opened for appending, a `state_dir` that cannot be made or written, a
/// `user` that does not exist (certificate files and their keys are
/// checked by the validation); and, as warnings (the systemd unit grants
/// what this shell may lack), ports below 1024 without the capability to
/// bind them, kernel bans without `nft` or the capability.
fn would_refuse(config: &Config) -> (Vec<Diagnostic>, Vec<Diagnostic>) {
    let mut refusals = Vec::new();
    let mut warnings = Vec::new();
    let places = &config.places;
    let logs = [
        ("error log", Some(&config.log.error), places.error_log),
        ("access log", config.log.access.as_ref(), places.access_log),
    ];
    for (what, target, place) in logs {
        if let Some(LogTarget::File(file)) = target {
            if let Err(error) = drawbridge::owner::open_append(file) {
                refusals.push(config.diagnostic(
                    place,
                    format!(
                        "cannot open the {what} {} for appending: {error}",
                        file.display()
                    ),
                ));
            }
        }
    }
    let state = &config.server.state_dir;
    let probe = state.join(format!(".check-{}", std::process::id()));
    let writable =
        drawbridge::owner::create_dir_all(state).and_then(|()| std::fs::write(&probe, b""));
    let _ = std::fs::remove_file(&probe);
    if let Err(error) = writable {
        refusals.push(config.diagnostic(
            places.state_dir.or(places.server),
            format!(
                "state_dir {} cannot be made or written: {error}",
                state.display()
            ),
        ));
    }
    // Started as root, `run` becomes `[server] user`: one that does not
    // exist stops it.
    match drawbridge::privileges::plan(config.server.user.as_deref()) {
        Err(error) => refusals.push(config.diagnostic(places.user, error.to_string())),
        Ok(drawbridge::privileges::Plan::StayRoot { asked: false }) => warnings.push(config.diagnostic(places.server, format!(
            "run as root, drawbridge would stay root: no `{0}` user exists; create it (`useradd --system {0}`), set [server] user, or use the packaged unit",
            drawbridge::privileges::DEFAULT_USER
        ))),
        Ok(_) => {}
    }
    let low: Vec<&std::net::SocketAddr> = config
        .server
        .http
        .iter()
        .chain(&config.server.https)
        .filter(|addr| addr.port() != 0 && addr.port() < 1024)
        .collect();
    let lowest = low.iter().map(|addr| addr.port()).min();
    if lowest.is_some_and(|port| !may_bind(port)) {
        let low: Vec<String> = low.iter().map(ToString::to_string).collect();
        warnings.push(config.diagnostic(places.server, format!(
            "{} need the CAP_NET_BIND_SERVICE capability, which this shell does not have: the systemd unit grants it; otherwise give the binary the capability (setcap cap_net_bind_service=+ep) or listen on ports above 1024",
            low.join(", ")
        )));
    }
    if config.guard.nftables {
        if std::process::Command::new("nft")
            .arg("--version")
            .output()
            .is_err()
        {
            warnings.push(config.diagnostic(None, "[guard] nftables: the `nft` command is not installed (apt install nftables); bans will hold in drawbridge only"));
        } else if !has_capability(12) {
            warnings.push(config.diagnostic(None, "[guard] nftables needs the CAP_NET_ADMIN capability, which this shell does not have: the systemd unit's drop-in grants it (docs/operations.md); without it bans hold in drawbridge only"));
        }
    }
    let wireguard = config.sites.iter().any(|s| {
        matches!(
            s.upstream,
            drawbridge::config::UpstreamTarget::Wireguard { .. }
        )
    });
    if wireguard {
        if !has_capability(12) {
            warnings.push(config.diagnostic(None, "`wireguard:` upstreams need the CAP_NET_ADMIN capability for drawbridge's TUN device, which this shell does not have: the systemd unit's WireGuard drop-in grants it (docs/operations.md); without it those sites answer 502"));
        }
        if !std::path::Path::new("/dev/net/tun").exists() {
            warnings.push(config.diagnostic(None, "`wireguard:` upstreams need /dev/net/tun, which this machine (or container) does not have; without it those sites answer 502"));
        }
        if std::process::Command::new("ip").arg("-V").output().is_err() {
            warnings.push(config.diagnostic(None, "`wireguard:` upstreams outside the tunnel network need the `ip` command (apt install iproute2) to route them into the TUN"));
        }
    }
    (refusals, warnings)
}

/// Whether capability number `bit` is in this process's effective set.
fn has_capability(bit: u32) -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
            u64::from_str_radix(hex.trim(), 16).ok()
        })
        .is_some_and(|caps| caps & (1 << bit) != 0)
}

/// Whether this process may bind `port`: CAP_NET_BIND_SERVICE (bit 10) in
/// its effective capabilities, or the kernel lets every user bind it.
fn may_bind(port: u16) -> bool {
    let unprivileged = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|v| v.trim().parse::<u16>().ok())
        .is_some_and(|start| start <= port);
    unprivileged || has_capability(10)
}

/// A certificate's expiry as `run` and `status` say it.
pub fn days_left(expiry: u64, now: u64) -> String {
    let days = expiry.saturating_sub(now) / 86_400;
    if expiry <= now {
        "certificate: EXPIRED".to_string()
    } else {
        format!("certificate: {days} days left")
    }
}

/// One site in one line, as `check` and `run` print it.
pub fn describe(site: &SiteConfig) -> String {
    let hosts: Vec<String> = site.hosts.iter().map(ToString::to_string).collect();
    let tls = match &site.tls {
        TlsSource::Internal => "local CA".to_string(),
        TlsSource::Acme => "ACME".to_string(),
        TlsSource::Files { cert, .. } => format!("file {}", cert.display()),
    };
    let plain = if site.https_redirect {
        "redirected to https"
    } else {
        "served"
    };
    let on = |yes: bool| if yes { "on" } else { "off" };
    let cached = !site.cache_paths.is_empty() || !site.cache_public_paths.is_empty();
    format!(
        "{} -> {} (tls: {tls}; plain http: {plain}; login limit: {}; edge cache: {}; side-door gate: {})",
        hosts.join(", "),
        site.upstream,
        on(site.login_rate.is_some()),
        on(cached),
        site.gate.word(),
    )
}
