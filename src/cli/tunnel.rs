//! `drawbridge tunnel add|list|remove` on the edge and `drawbridge agent
//! [enroll TOKEN]` at home: the commands, in the words a user reads.

use std::path::Path;

use anyhow::Context as _;
use drawbridge::admin::{self, Reply};
use drawbridge::agent::{self, AgentConfig};
use drawbridge::config::{locate, parse_duration, Config, HostPattern, UpstreamTarget};
use drawbridge::tunnel::hub::AgentStatus;
use drawbridge::tunnel::identity::Identity;
use drawbridge::tunnel::register::Register;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum TunnelAction {
    /// Make a one-time token for an agent called NAME and print the command to run at home.
    Add {
        /// The agent's name, as sites name it: upstream = "tunnel:NAME/jellyfin".
        name: String,
        /// How agents reach this edge, host:port (default: the first site's name and the HTTPS port).
        #[arg(long)]
        edge: Option<String>,
        /// How long the token may be used.
        #[arg(long, default_value = "1h")]
        expires: String,
    },
    /// Show the enrolled agents, connected or not.
    List,
    /// Revoke every agent called NAME at once (open tunnel connections close).
    Remove {
        /// The agent's name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AgentAction {
    /// Enroll this machine with the token `drawbridge tunnel add` printed on the edge.
    Enroll {
        /// The token.
        token: String,
    },
}

/// `drawbridge tunnel …` on the edge whose config is `config`.
pub fn command(config: &Config, action: &TunnelAction) -> anyhow::Result<()> {
    let state_dir = &config.server.state_dir;
    let register = Register::new(state_dir);
    let socket = admin::socket_path(state_dir);
    let runtime = super::current_thread()?;
    match action {
        TunnelAction::Add {
            name,
            edge,
            expires,
        } => {
            let ttl = parse_duration(expires).map_err(anyhow::Error::msg)?;
            let identity = Identity::load_or_create(&register.edge_key_path())?;
            // The agent dials like a browser: to one of the sites by name.
            let site = site_name(config, name).context(
                "no site has an exact name for an agent to ask this edge's TLS for; add one",
            )?;
            let port = config.server.https.first().map_or(443, |a| a.port());
            let edge = edge.clone().unwrap_or_else(|| format!("{site}:{port}"));
            let token = register.add_token(name, &edge, &site, &identity.pin(), ttl)?;
            println!("Run this once at home, next to Jellyfin, within {expires} (with sudo where drawbridge is installed from the package):\n");
            println!("  drawbridge agent enroll {}\n", token.encode());
            println!("then start the agent there: `sudo systemctl enable --now drawbridge-agent` (the package), or `drawbridge agent`.");
            let served: Vec<String> = config
                .sites
                .iter()
                .filter(|site| matches!(&site.upstream, UpstreamTarget::Tunnel { agent, .. } if agent == name))
                .map(|site| site.name())
                .collect();
            let tunnelled = config
                .sites
                .iter()
                .any(|site| matches!(site.upstream, UpstreamTarget::Tunnel { .. }));
            if !tunnelled {
                eprintln!("No site uses the tunnel yet, and the edge lets agents in only while one does: point a site at it, upstream = \"tunnel:{name}/jellyfin\", and reload.");
            } else if served.is_empty() {
                println!("Point a site here at it: upstream = \"tunnel:{name}/jellyfin\"");
            } else {
                println!("It serves {} here.", served.join(", "));
            }
        }
        TunnelAction::List => {
            let agents =
                match runtime.block_on(admin::request(&socket, &admin::Command::TunnelList)) {
                    Ok(Reply::Tunnels(agents)) => agents,
                    Ok(other) => anyhow::bail!("unexpected answer from drawbridge: {other:?}"),
                    Err(_) => {
                        eprintln!("(drawbridge is not running; showing the enrolled agents)");
                        register
                            .agents()?
                            .into_iter()
                            .map(|a| AgentStatus {
                                name: a.name,
                                pin: a.pin,
                                enrolled: a.enrolled,
                                connections: Vec::new(),
                                unreachable: Vec::new(),
                            })
                            .collect()
                    }
                };
            print_agents(&agents);
        }
        TunnelAction::Remove { name } => {
            let removed = register.remove(name)?;
            // Tell a running edge, which closes the agent's connections.
            let _ = runtime.block_on(admin::request(&socket, &admin::Command::TunnelReload));
            if removed {
                println!("agent `{name}` removed; its key can no longer connect");
            } else {
                println!("no agent or token called `{name}`");
            }
        }
    }
    Ok(())
}

/// The site name an agent called `agent` asks the edge's TLS for: the first
/// exact name of a site it serves, else of any site through the tunnel,
/// else of the first site.
fn site_name(config: &Config, agent: &str) -> Option<String> {
    let serves = |site: &&drawbridge::config::SiteConfig| matches!(&site.upstream, UpstreamTarget::Tunnel { agent: a, .. } if a == agent);
    let tunnelled = |site: &&drawbridge::config::SiteConfig| {
        matches!(site.upstream, UpstreamTarget::Tunnel { .. })
    };
    let exact = |site: &drawbridge::config::SiteConfig| {
        site.hosts.iter().find_map(|host| match host {
            HostPattern::Exact(name) => Some(name.clone()),
            HostPattern::Wildcard(_) => None,
        })
    };
    config
        .sites
        .iter()
        .filter(serves)
        .chain(config.sites.iter().filter(tunnelled))
        .chain(config.sites.iter())
        .find_map(exact)
}

fn when(unix: u64) -> String {
    drawbridge::timestamp::rfc3339_unix(unix)
}

fn print_agents(agents: &[AgentStatus]) {
    if agents.is_empty() {
        println!("no agents; add one with `drawbridge tunnel add NAME`");
    }
    for agent in agents {
        let state = if agent.connections.is_empty() {
            "not connected".to_string()
        } else {
            format!("{} connections", agent.connections.len())
        };
        println!(
            "{}\t{state}\tenrolled {}\tkey {}",
            agent.name,
            when(agent.enrolled),
            agent.pin
        );
        for link in &agent.connections {
            println!(
                "  from {} since {}\t{} bytes in, {} bytes out",
                link.from,
                when(link.since),
                link.received,
                link.sent
            );
        }
        for service in &agent.unreachable {
            println!("  cannot reach its service `{service}`: another agent of the name takes its requests while one is up");
        }
    }
}

/// Names Jellyfin's address for the config `agent enroll` writes.
const JELLYFIN_VARIABLE: &str = "DRAWBRIDGE_JELLYFIN";

/// Set in drawbridge's container image (`packaging/container`).
const IN_CONTAINER: &str = "DRAWBRIDGE_IN_CONTAINER";

/// `drawbridge agent [enroll TOKEN]`, with the config `given` by `-c` or
/// found where `config::locate::AGENT` looks.
pub fn agent(given: Option<&Path>, action: Option<&AgentAction>) -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    // Run with sudo, the key and the config are the service's user's.
    drawbridge::privileges::hand_new_files_to_the_service(None);
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    match action {
        Some(AgentAction::Enroll { token }) => {
            let path = locate::AGENT.for_writing(given);
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            // Before the token is spent: a folder the key and config
            // cannot be written to is said now, not after.
            writable(dir).with_context(|| {
                format!(
                    "cannot write the agent's key and config in {}; run it with sudo, or name another file with -c",
                    dir.display()
                )
            })?;
            // Where Jellyfin is, for a new config (a container beside it
            // names it, `http://jellyfin:8096`): checked before the token
            // is spent too.
            let jellyfin = std::env::var(JELLYFIN_VARIABLE)
                .ok()
                .filter(|v| !v.is_empty());
            if let Some(url) = &jellyfin {
                let trial = drawbridge::agent::config::initial(
                    "edge.invalid:443",
                    "edge.invalid",
                    "sha256/-",
                    Some(url),
                );
                AgentConfig::parse(&path, &trial).map_err(|error| {
                    anyhow::anyhow!("{JELLYFIN_VARIABLE}={url} is not where the agent can reach Jellyfin: {error}")
                })?;
            }
            let key = dir.join(drawbridge::agent::config::KEY_FILE);
            let (token, name) = runtime.block_on(agent::enroll(token, &key))?;
            let text = match std::fs::read_to_string(&path) {
                Ok(old) => with_edge(&old, &token)?,
                Err(_) => drawbridge::agent::config::initial(
                    &token.edge,
                    &token.name,
                    &token.pin,
                    jellyfin.as_deref(),
                ),
            };
            drawbridge::atomic_file::write_atomic(&path, text.as_bytes(), 0o600).with_context(
                || {
                    format!(
                        "cannot write {} (the same command may be run again within the token's hour)",
                        path.display()
                    )
                },
            )?;
            let run = if std::env::var_os(IN_CONTAINER).is_some() {
                "the agent's container (its command: `agent`)".to_string()
            } else if path == Path::new(locate::AGENT.system) {
                "sudo systemctl enable --now drawbridge-agent".to_string()
            } else {
                format!("drawbridge agent -c {}", path.display())
            };
            println!(
                "enrolled as `{name}` at {}; the agent's config is {}.\nCheck its [services], then run: {run}",
                token.edge,
                path.display(),
            );
            Ok(())
        }
        None => {
            let path = locate::AGENT.find(given)?;
            let config = AgentConfig::load(&path).map_err(anyhow::Error::msg)?;
            runtime.block_on(async {
                let shutdown = CancellationToken::new();
                let mut terminate = signal(SignalKind::terminate())?;
                let mut interrupt = signal(SignalKind::interrupt())?;
                let stop = shutdown.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = terminate.recv() => {}
                        _ = interrupt.recv() => {}
                    }
                    stop.cancel();
                });
                agent::run(config, shutdown).await?;
                tracing::info!("agent stopped");
                Ok(())
            })
        }
    }
}

/// Whether files can be made in `dir` (made if missing): a probe written
/// and removed.
fn writable(dir: &Path) -> std::io::Result<()> {
    drawbridge::owner::create_dir_all(dir)?;
    let probe = dir.join(format!(".enroll-{}", std::process::id()));
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(&probe)
}

/// An existing agent config with the edge and its pin replaced (enrolling
/// again, or with another edge), its services kept.
fn with_edge(old: &str, token: &drawbridge::tunnel::register::Token) -> anyhow::Result<String> {
    let mut table: toml::Table = old
        .parse()
        .context("the existing agent config is not TOML")?;
    table.insert("edge".into(), token.edge.clone().into());
    table.insert("edge_name".into(), token.name.clone().into());
    table.insert("edge_pin".into(), token.pin.clone().into());
    Ok(toml::to_string(&table)?)
}
