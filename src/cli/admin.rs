//! `drawbridge bans` and `drawbridge cache`: the running process through its
//! admin socket, or the stored bans when it is not running.

use anyhow::Context as _;
use clap::Subcommand;
use drawbridge::admin::{self, Reply};

use drawbridge::config::Config;

#[derive(Debug, Subcommand)]
pub enum CacheAction {
    /// Forget cached responses whose key (host and path) starts with PREFIX; all without one.
    Purge {
        /// A path (`/Items/`: on every site) or a host and path (`jelly.example.com/web/`); nothing: everything.
        prefix: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum BansAction {
    /// Show the bans in force: address, site, failed logins, since, until.
    List {
        /// As JSON, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Ban an address (or IPv6 /64) by hand; its open connections close.
    Add {
        /// The address to ban.
        address: String,
        /// For how long ("24h", "7d", "90m"); the config's `ban_time` if not given.
        #[arg(long = "for")]
        length: Option<String>,
    },
    /// Lift the ban on an address (or IPv6 /64).
    Remove {
        /// The banned address, as `bans list` shows it.
        address: String,
    },
}

pub fn bans(config: &Config, action: &BansAction) -> anyhow::Result<()> {
    let state_dir = &config.server.state_dir;
    let socket = drawbridge::admin::socket_path(state_dir);
    let stored = state_dir.join("bans.json");
    let runtime = crate::cli::current_thread()?;
    let json = matches!(action, BansAction::List { json: true });
    let length = match action {
        BansAction::Add {
            length: Some(text), ..
        } => drawbridge::config::parse_duration(text)
            .map_err(|why| anyhow::anyhow!("--for {text}: {why}"))?,
        _ => config.guard.ban_time,
    };
    let command = match action {
        BansAction::List { .. } => admin::Command::BansList,
        BansAction::Remove { address } => admin::Command::BansRemove {
            address: address.clone(),
        },
        BansAction::Add { address, .. } => admin::Command::BansAdd {
            address: address.clone(),
            seconds: length.as_secs(),
        },
    };
    match runtime.block_on(drawbridge::admin::request(&socket, &command)) {
        Ok(Reply::Bans(bans)) => print_bans(&bans, json)?,
        Ok(Reply::Added(ban)) => print_added(&ban),
        Ok(Reply::Removed(removed)) => {
            if let BansAction::Remove { address } = action {
                report_removed(address, removed);
            }
        }
        Ok(Reply::Error(error)) => anyhow::bail!("{error}"),
        Ok(other) => anyhow::bail!("unexpected answer from drawbridge: {other:?}"),
        Err(error) if error.kind() == std::io::ErrorKind::InvalidData => return Err(error.into()),
        Err(_) => {
            eprintln!(
                "(drawbridge is not running; using the stored list {})",
                stored.display()
            );
            match action {
                BansAction::List { .. } => print_bans(
                    &drawbridge::guard::ban::read(&stored).map_err(anyhow::Error::msg)?,
                    json,
                )?,
                BansAction::Add { address, .. } => print_added(
                    &drawbridge::guard::ban::add_stored(&stored, address, length)
                        .map_err(anyhow::Error::msg)?,
                ),
                BansAction::Remove { address } => {
                    let removed = drawbridge::guard::ban::remove_stored(&stored, address)
                        .map_err(anyhow::Error::msg)?;
                    report_removed(address, removed);
                }
            }
        }
    }
    Ok(())
}

pub fn purge(config: &Config, prefix: Option<&str>) -> anyhow::Result<()> {
    let socket = drawbridge::admin::socket_path(&config.server.state_dir);
    let command = admin::Command::CachePurge {
        prefix: prefix.unwrap_or_default().to_string(),
    };
    let runtime = crate::cli::current_thread()?;
    let reply = runtime
        .block_on(drawbridge::admin::request(&socket, &command))
        .with_context(|| {
            format!(
                "drawbridge is not running (no admin socket at {})",
                socket.display()
            )
        })?;
    match reply {
        Reply::Purged(0) if prefix.is_some_and(|p| !p.is_empty() && !p.starts_with('/')) => {
            println!("0 cached responses purged: a prefix is a host and path (`jelly.example.com/Items/`), or a path starting with `/` for every site");
        }
        Reply::Purged(purged) => println!("{purged} cached responses purged"),
        Reply::Error(error) => anyhow::bail!("{error}"),
        other => anyhow::bail!("unexpected answer from drawbridge: {other:?}"),
    }
    Ok(())
}

fn print_bans(bans: &[drawbridge::guard::ban::StoredBan], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(bans)?);
        return Ok(());
    }
    if bans.is_empty() {
        println!("no bans");
    }
    for ban in bans {
        let site = if ban.site.is_empty() { "?" } else { &ban.site };
        let reason = if ban.reason.is_empty() {
            String::new()
        } else {
            format!("\t{}", ban.reason)
        };
        println!(
            "{}\tsite {site}\tfailed logins {}\tsince {}\tuntil {}\toffences {}{reason}",
            ban.address,
            ban.failures,
            rfc3339(ban.since),
            rfc3339(ban.until),
            ban.offences
        );
    }
    Ok(())
}

fn print_added(ban: &drawbridge::guard::ban::StoredBan) {
    println!("{} banned until {}", ban.address, rfc3339(ban.until));
}

fn rfc3339(unix: u64) -> String {
    drawbridge::timestamp::rfc3339_unix(unix)
}

fn report_removed(address: &str, removed: bool) {
    if removed {
        println!("ban on {address} lifted");
    } else {
        println!("{address} was not banned");
    }
}

/// `drawbridge status [--json]`: what the running process is doing, in one
/// screen (or as JSON for scripts).
pub fn status(config: &Config, json: bool) -> anyhow::Result<()> {
    let socket = admin::socket_path(&config.server.state_dir);
    let runtime = crate::cli::current_thread()?;
    let reply = runtime
        .block_on(admin::request(&socket, &admin::Command::Status))
        .with_context(|| {
            format!(
                "drawbridge is not running (no admin socket at {})",
                socket.display()
            )
        })?;
    let Reply::Status(status) = reply else {
        anyhow::bail!("unexpected answer from drawbridge: {reply:?}");
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    println!("drawbridge is running");
    for site in &config.sites {
        let name = site.name();
        let found = status.certificates.iter().find(|c| c.site == name);
        let mut certificate = match found {
            Some(c) if c.expires > 0 => super::check::days_left(c.expires, now),
            _ => "certificate: not issued yet".to_string(),
        };
        if let Some((_, why)) = found.and_then(|c| c.last_error.as_ref()) {
            certificate.push_str(&format!("; last order failed: {why}"));
        }
        let now_on = status.sites.iter().find(|s| s.name == name);
        let home = match now_on.and_then(|s| s.upstream_up) {
            Some(true) => "home up",
            Some(false) => "home DOWN",
            None => "home not asked yet",
        };
        let (streams, websockets) = now_on.map_or((0, 0), |s| (s.in_flight, s.websockets));
        let refused = now_on.map_or(0, |s| s.gate_refused);
        let gate = match site.gate {
            drawbridge::config::GateMode::Enforce => format!("side doors: {refused} refused"),
            drawbridge::config::GateMode::Report => {
                format!("side doors: {refused} would be refused (report)")
            }
            drawbridge::config::GateMode::Off => "side doors: gate off".to_string(),
        };
        println!(
            "  site {name} -> {}   {home}   {certificate}   {streams} streams, {websockets} WebSockets now   {gate}",
            site.upstream
        );
    }
    println!("  connections: {} open", status.connections);
    println!("  bans: {} in force", status.bans.len());
    for ban in &status.bans {
        println!("    {} (offences {})", ban.address, ban.offences);
    }
    let drawbridge::admin::CacheCounts {
        hits,
        misses,
        stale,
        bypass,
    } = status.cache;
    let asked = hits + stale + misses;
    let ratio = ((hits + stale) * 100).checked_div(asked).unwrap_or(0);
    println!("  edge cache: {hits} hits, {misses} misses, {stale} stale, {bypass} bypassed ({ratio} % from the edge)");
    if status.tunnels.is_empty() {
        println!("  tunnel: no agents enrolled");
    }
    for agent in &status.tunnels {
        let from: Vec<&str> = agent.connections.iter().map(|c| c.from.as_str()).collect();
        println!(
            "  tunnel agent {}: {} connections{}",
            agent.name,
            agent.connections.len(),
            if from.is_empty() {
                String::new()
            } else {
                format!(" from {}", from.join(", "))
            }
        );
    }
    Ok(())
}
