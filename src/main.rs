//! The `drawbridge` command: `run` serves (the edge), `agent` runs the home
//! end of the tunnel; `check`, `doctor`, `status`, `bans`, `cache` and
//! `tunnel` look after a setup (`cli/`). Logging, signals (SIGTERM drains,
//! SIGHUP reloads, SIGUSR1 reopens logs) and giving up root live here. The
//! only place `anyhow` is used.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use drawbridge::log_file::LogFile;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use drawbridge::config::{Config, LoadError, LogTarget};
use drawbridge::privileges::{self, Plan};
use drawbridge::server::Server;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

mod cli;

use cli::admin::{bans, purge, status, BansAction, CacheAction};
use cli::tunnel::{AgentAction, TunnelAction};
use cli::wireguard::WireguardAction;
use cli::{check, doctor, tunnel, wireguard};

/// Put a home media server on the internet safely: TLS, HTTP/2, WebSocket,
/// streaming, security headers and a closed door for unknown names.
#[derive(Debug, Parser)]
#[command(name = "drawbridge", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: CliCommand,
}

#[derive(Debug, Subcommand)]
enum CliCommand {
    /// Serve in the foreground (SIGHUP reloads the config, SIGTERM drains and stops).
    Run {
        /// The config file (default: $DRAWBRIDGE_CONFIG, ./drawbridge.toml, /etc/drawbridge/drawbridge.toml).
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Write the process id here once serving (for supervisors other than systemd).
        #[arg(long)]
        pid_file: Option<PathBuf>,
    },
    /// Validate a config like `nginx -t`: every error as file:line:col, then a summary.
    Check {
        /// The config file (default: $DRAWBRIDGE_CONFIG, ./drawbridge.toml, /etc/drawbridge/drawbridge.toml).
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// List or lift bans (of the running drawbridge, or the stored list when it is not running).
    Bans {
        /// The config file, for its state_dir (default: $DRAWBRIDGE_CONFIG, ./drawbridge.toml, /etc/drawbridge/drawbridge.toml).
        #[arg(short, long, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: BansAction,
    },
    /// Agents at home that reach this edge through the tunnel (no port forward).
    Tunnel {
        /// The config file, for its state_dir and address (default: $DRAWBRIDGE_CONFIG, ./drawbridge.toml, /etc/drawbridge/drawbridge.toml).
        #[arg(short, long, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: TunnelAction,
    },
    /// Home routers that speak WireGuard themselves (no software at home).
    Wireguard {
        /// The config file, for its state_dir and [wireguard] (default: $DRAWBRIDGE_CONFIG, ./drawbridge.toml, /etc/drawbridge/drawbridge.toml).
        #[arg(short, long, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: WireguardAction,
    },
    /// Run the home end of the tunnel (or `agent enroll TOKEN` once first).
    Agent {
        /// The agent's config file (default: $DRAWBRIDGE_AGENT_CONFIG, ./agent.toml, /etc/drawbridge/agent.toml).
        #[arg(short, long, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: Option<AgentAction>,
    },
    /// Write the man page and shell completions into DIR (for packaging).
    #[command(hide = true)]
    Assets {
        /// Where to write drawbridge.1, drawbridge.bash, _drawbridge and drawbridge.fish.
        dir: PathBuf,
    },
    /// What the running drawbridge is doing: sites and certificates, connections, bans, cache, tunnels.
    Status {
        /// The config file, for its sites and state_dir (default: $DRAWBRIDGE_CONFIG, ./drawbridge.toml, /etc/drawbridge/drawbridge.toml).
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// As JSON, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Check the setup: DNS, the upstream being Jellyfin, state_dir, the user; each ✗ with its fix.
    Doctor {
        /// The config file (default: $DRAWBRIDGE_CONFIG, ./drawbridge.toml, /etc/drawbridge/drawbridge.toml).
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Jellyfin's API key (Dashboard → API Keys), to check its Known
        /// proxies; never stored. Also read from DRAWBRIDGE_JELLYFIN_API_KEY.
        #[arg(long)]
        jellyfin_api_key: Option<String>,
    },
    /// Control the edge cache of the running drawbridge.
    Cache {
        /// The config file, for its state_dir (default: $DRAWBRIDGE_CONFIG, ./drawbridge.toml, /etc/drawbridge/drawbridge.toml).
        #[arg(short, long, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: CacheAction,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        CliCommand::Check { config } => match edge_config(config.as_deref()) {
            Ok(config) => check::check(&config),
            Err(error) => report(Err(error)),
        },
        CliCommand::Cache {
            config,
            action: CacheAction::Purge { prefix },
        } => with_config(config.as_deref(), |config| purge(config, prefix.as_deref())),
        CliCommand::Bans { config, action } => {
            with_config(config.as_deref(), |config| bans(config, &action))
        }
        CliCommand::Status { config, json } => {
            with_config(config.as_deref(), |config| status(config, json))
        }
        CliCommand::Doctor {
            config,
            jellyfin_api_key,
        } => {
            let key =
                jellyfin_api_key.or_else(|| std::env::var("DRAWBRIDGE_JELLYFIN_API_KEY").ok());
            with_config(config.as_deref(), |config| {
                doctor::doctor(config, key.as_deref())
            })
        }
        CliCommand::Tunnel { config, action } => {
            with_config(config.as_deref(), |config| tunnel::command(config, &action))
        }
        CliCommand::Wireguard { config, action } => with_config(config.as_deref(), |config| {
            wireguard::command(config, &action)
        }),
        CliCommand::Agent { config, action } => {
            report(tunnel::agent(config.as_deref(), action.as_ref()))
        }
        CliCommand::Run { config, pid_file } => {
            report(edge_config(config.as_deref()).and_then(|c| run(&c, pid_file.as_deref())))
        }
        CliCommand::Assets { dir } => report(assets(&dir)),
    }
}

/// The man page and the completions for bash, zsh and fish, generated from
/// the command line's own definition.
fn assets(dir: &Path) -> anyhow::Result<()> {
    use clap::CommandFactory;
    use clap_complete::Shell;
    std::fs::create_dir_all(dir)?;
    let mut command = Cli::command();
    // A page for drawbridge and one for each subcommand (drawbridge-run.1,
    // drawbridge-bans-add.1, …), every option on one of them.
    clap_mangen::generate_to(command.clone(), dir)?;
    for (shell, file) in [
        (Shell::Bash, "drawbridge.bash"),
        (Shell::Zsh, "_drawbridge"),
        (Shell::Fish, "drawbridge.fish"),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut command, "drawbridge", &mut out);
        std::fs::write(dir.join(file), out)?;
    }
    Ok(())
}

/// The edge's config file: `-c`, else where `config::locate::EDGE` looks.
fn edge_config(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    Ok(drawbridge::config::locate::EDGE.find(given)?)
}

/// Runs `command` on the config found from `given`, once it is valid; run
/// as root, what it writes goes to the service's user.
fn with_config(
    given: Option<&Path>,
    command: impl FnOnce(&Config) -> anyhow::Result<()>,
) -> ExitCode {
    let path = match edge_config(given) {
        Ok(path) => path,
        Err(error) => return report(Err(error)),
    };
    match load_or_report(&path) {
        Some(config) => {
            privileges::hand_new_files_to_the_service(config.server.user.as_deref());
            report(command(&config))
        }
        None => report(Err(anyhow::anyhow!("the config is not valid"))),
    }
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("drawbridge: {}", drawbridge::error::causes(error.as_ref()));
            ExitCode::FAILURE
        }
    }
}

fn load_or_report(path: &Path) -> Option<Config> {
    match Config::load(path) {
        Ok(config) => Some(config),
        Err(LoadError::Invalid(errors)) => {
            for error in &errors {
                eprintln!("{error}");
            }
            let n = errors.len();
            eprintln!(
                "{}: {n} error{}; the config is not valid",
                path.display(),
                if n == 1 { "" } else { "s" }
            );
            None
        }
        Err(error) => {
            eprintln!("{error}");
            None
        }
    }
}

fn run(path: &Path, pid_file: Option<&Path>) -> anyhow::Result<()> {
    let Some(config) = load_or_report(path) else {
        anyhow::bail!("not starting: fix the config first");
    };
    privileges::hand_new_files_to_the_service(config.server.user.as_deref());
    let error_log = drawbridge::error_log::init(&config.log)?;
    // Who to become is settled before anything binds: a `user` that does
    // not exist stops the start here.
    let plan = privileges::plan(config.server.user.as_deref())?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(serve(path.to_path_buf(), config, pid_file, error_log, plan))
}

/// Once bound: root handed over to the planned user, or a warning that
/// root is kept. The state folder and the log files go to the user first.
fn drop_root(plan: &Plan, owned: &[PathBuf]) -> anyhow::Result<()> {
    match plan {
        Plan::NotRoot => {}
        Plan::StayRoot { asked: true } => {
            tracing::warn!("running as root, as [server] user = \"root\" asks");
        }
        Plan::StayRoot { asked: false } => tracing::warn!(
            "running as root: no `{}` user exists to hand over to; create it (`useradd --system {}`), set [server] user, or use the packaged unit",
            privileges::DEFAULT_USER,
            privileges::DEFAULT_USER
        ),
        Plan::Become { name, uid, gid } => {
            let paths: Vec<&Path> = owned.iter().map(PathBuf::as_path).collect();
            privileges::become_user(name, *uid, *gid, &paths)?;
            tracing::info!(user = name, uid, gid, "bound and keys loaded; root given up");
        }
    }
    Ok(())
}

async fn serve(
    path: PathBuf,
    config: Config,
    pid_file: Option<&Path>,
    error_log: Option<Arc<LogFile>>,
    plan: Plan,
) -> anyhow::Result<()> {
    let owned: Vec<PathBuf> = std::iter::once(config.server.state_dir.clone())
        .chain(
            [Some(&config.log.error), config.log.access.as_ref()]
                .into_iter()
                .flatten()
                .filter_map(|target| match target {
                    LogTarget::File(path) => Some(path.clone()),
                    LogTarget::Stderr => None,
                }),
        )
        .collect();
    for site in config.sites.iter().filter(|s| s.upstream.plain_to_public()) {
        tracing::warn!(site = site.name(), upstream = %site.upstream, "plain HTTP to a public address: credentials cross the internet in clear text; use the tunnel or https");
    }
    let names: Vec<(String, String)> = config
        .sites
        .iter()
        .map(|site| (site.name(), check::describe(site)))
        .collect();
    let mut server = Server::bind(config).await?;
    let expiries = server.certificate_expiries();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    for (name, site) in &names {
        let certificate = match expiries.iter().find(|(first, _)| first == name) {
            Some((_, expiry)) => check::days_left(*expiry, now),
            None => "certificate: not issued yet".to_string(),
        };
        tracing::info!("site {site}; {certificate}");
    }
    // The signals are ours before anyone can learn the process is there
    // (the pid file, readiness): a reload sent at once must not end it.
    let mut hangup = signal(SignalKind::hangup())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut user1 = signal(SignalKind::user_defined1())?;
    if let Some(pid_file) = pid_file {
        drawbridge::notify::write_pid_file(pid_file)
            .with_context(|| format!("cannot write the pid file {}", pid_file.display()))?;
    }
    drop_root(&plan, &owned)?;
    server.open_admin_socket();
    let status = format!("STATUS=serving {} sites", names.len());
    drawbridge::notify::notify(&format!("READY=1\n{status}"));
    if let Some(ca) = server.ca_cert_path() {
        tracing::info!(path = %ca.display(), "local CA certificate: trust it in your browser or OS to avoid warnings");
    }
    let shutdown = CancellationToken::new();
    let reloader = server.reloader();
    let signals = {
        let shutdown = shutdown.clone();
        async move {
            loop {
                tokio::select! {
                    _ = hangup.recv() => {
                        tracing::info!(config = %path.display(), "SIGHUP: reloading the config");
                        drawbridge::notify::notify("RELOADING=1");
                        match Config::load(&path) {
                            Ok(config) => match reloader.reload(config).await {
                                Ok(()) => tracing::info!("config reloaded"),
                                Err(error) => tracing::error!(%error, "reload failed; the running config is kept"),
                            },
                            Err(error) => tracing::error!("reload failed; the running config is kept:\n{error}"),
                        }
                        drawbridge::notify::notify(&format!("READY=1\n{status}"));
                    }
                    _ = user1.recv() => {
                        let error_log = error_log.as_ref().map_or(Ok(()), |log| log.reopen());
                        match (error_log, reloader.reopen_logs()) {
                            (Ok(()), Ok(())) => tracing::info!("SIGUSR1: log files reopened"),
                            (Err(error), _) => tracing::error!(%error, "SIGUSR1: cannot reopen the error log"),
                            (_, Err(error)) => tracing::error!(%error, "SIGUSR1: cannot reopen the access log"),
                        }
                    }
                    _ = terminate.recv() => break,
                    _ = interrupt.recv() => break,
                }
            }
            drawbridge::notify::notify("STOPPING=1");
            shutdown.cancel();
        }
    };
    tokio::spawn(signals);
    server.run(shutdown).await;
    if let Some(pid_file) = pid_file {
        let _ = std::fs::remove_file(pid_file);
    }
    tracing::info!("stopped");
    Ok(())
}

/// jemalloc: less CPU per request than glibc's malloc under many concurrent
/// small allocations (see docs/performance.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
