//! The local admin socket, `state_dir/admin.sock` (mode 0600: only the user
//! drawbridge runs as, and root, can use it). One [`Command`] per connection
//! and one [`Reply`], each a line of JSON. `bans remove` is answered once the
//! change is on disk (or with an error saying it is not). The `drawbridge
//! bans` and `drawbridge cache` commands talk to it through [`request`];
//! `bans` works on the stored bans file when drawbridge is not running.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use serde::{Deserialize, Serialize};

use std::sync::Arc;

use crate::connection::Shared;
use crate::guard::ban::StoredBan;
use crate::guard::keys::ClientKey;
use crate::tunnel::hub::AgentStatus;

mod status;
pub use status::{keep_history, totals, CacheCounts, CertificateStatus, SiteStatus, Status};

/// What the admin commands and the admin listener read (the socket, the
/// HTTP API and `/metrics` alike): the process's context, borrowed, and the
/// token the listener asks for.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The process: guard, gateway (routes, cache), certificates, tunnels,
    /// handshake counts, metrics.
    pub process: Arc<Shared>,
    /// The token asked for, if any.
    pub token: Option<String>,
}

/// What the CLI asks the running process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// The bans in force.
    BansList,
    /// Lift the ban on an address (or an IPv6 /64).
    BansRemove {
        /// As the user typed it.
        address: String,
    },
    /// Ban an address (or an IPv6 /64) by hand.
    BansAdd {
        /// As the user typed it.
        address: String,
        /// For how long, in seconds.
        seconds: u64,
    },
    /// What the running process is doing, in one answer.
    Status,
    /// The enrolled agents and their connections.
    TunnelList,
    /// Read the tunnel register again (after `tunnel remove`): connections
    /// of removed agents close at once.
    TunnelReload,
    /// The WireGuard home peers and what the device knows of them.
    WireguardList,
    /// Read the WireGuard register again (after `wireguard add`, `rotate`
    /// or `remove`): a removed or rotated key stops working at once.
    WireguardReload,
    /// Drop cached responses whose key starts with `prefix` (all when empty).
    CachePurge {
        /// `host/path` prefix.
        prefix: String,
    },
}

/// What the running process answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// The bans in force.
    Bans(Vec<StoredBan>),
    /// Whether there was a ban to lift (it is lifted on disk too).
    Removed(bool),
    /// The ban made (it is on disk too).
    Added(StoredBan),
    /// How many cached responses were dropped.
    Purged(u64),
    /// The enrolled agents and their connections.
    Tunnels(Vec<AgentStatus>),
    /// The WireGuard home peers.
    Wireguard(Vec<crate::wireguard::PeerStatus>),
    /// Done.
    Done,
    /// What the running process is doing.
    Status(Box<Status>),
    /// The command could not be done; the sentence says why.
    Error(String),
}

/// The socket's path under `state_dir`.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("admin.sock")
}

/// Serves the admin socket `listener`, bound at `path`, until `shutdown`.
pub async fn serve(
    mut listener: UnixListener,
    path: PathBuf,
    sources: Sources,
    shutdown: CancellationToken,
) {
    let mut look = tokio::time::interval(SOCKET_CHECK);
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => break,
            _ = look.tick() => {
                // Deleted under the running process (the state folder
                // removed by hand): a new one, or the commands would wrongly
                // think drawbridge is not running and edit the stored file.
                if !path.exists() {
                    tracing::warn!(path = %path.display(), "the admin socket was removed; making a new one");
                    match bind(&path) {
                        Some(new) => listener = new,
                        None => return,
                    }
                }
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        let sources = sources.clone();
        tokio::spawn(async move {
            let _ = answer(stream, &sources).await;
        });
    }
    let _ = std::fs::remove_file(&path);
}

/// How often the socket's file is checked for.
const SOCKET_CHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// A listener at `path` (mode 0600), its folder made and an old socket
/// replaced; None, with a warning, when it cannot be had.
pub fn bind(path: &Path) -> Option<UnixListener> {
    if let Some(dir) = path.parent() {
        let _ = crate::owner::create_dir_all(dir);
    }
    // A socket left by a previous run would make bind fail.
    let _ = std::fs::remove_file(path);
    match UnixListener::bind(path) {
        Ok(listener) => {
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
            Some(listener)
        }
        Err(error) => {
            tracing::warn!(%error, path = %path.display(), "cannot open the admin socket; `drawbridge bans` will work on the stored file only");
            None
        }
    }
}

async fn answer(stream: UnixStream, sources: &Sources) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    // One short line is all a command is.
    let mut reader = BufReader::new(tokio::io::AsyncReadExt::take(read, 1024));
    reader.read_line(&mut line).await?;
    let reply = match serde_json::from_str::<Command>(&line) {
        Ok(command) => execute(command, sources).await,
        Err(error) => Reply::Error(format!("not a command drawbridge knows ({error})")),
    };
    let mut reply = serde_json::to_string(&reply).unwrap_or_default();
    reply.push('\n');
    write.write_all(reply.as_bytes()).await
}

/// Carries out `command`: the one admin protocol, behind the socket and the
/// admin listener's `POST /api` alike.
pub async fn execute(command: Command, sources: &Sources) -> Reply {
    let now = Instant::now();
    let process = &sources.process;
    let (guard, cache, hub) = (
        process.guard.clone(),
        process.gateway.cache(),
        &process.edge.hub,
    );
    match command {
        Command::Status => Reply::Status(Box::new(status::at(process, now))),
        Command::BansList => Reply::Bans(guard.bans.list(now)),
        Command::BansRemove { address } => {
            let key = match ClientKey::parse_one(&address) {
                Ok(key) => key,
                Err(why) => return Reply::Error(why),
            };
            let removed = guard.bans.remove(key, now);
            // Lifted only when it stays lifted after a restart.
            let stored = tokio::task::spawn_blocking(move || guard.bans.flush())
                .await
                .unwrap_or_else(|_| Err("the bans writer stopped".into()));
            match stored {
                Ok(()) => Reply::Removed(removed),
                Err(error) => Reply::Error(format!("lifted in the running drawbridge, but not stored ({error}): the ban returns at the next start")),
            }
        }
        Command::BansAdd { address, seconds } => {
            let key = match ClientKey::parse_one(&address) {
                Ok(key) => key,
                Err(why) => return Reply::Error(why),
            };
            let ban = guard.bans.add(key, std::time::Duration::from_secs(seconds), now);
            // Its connections close at once, as after failed logins.
            guard.close_connections(key);
            let stored = tokio::task::spawn_blocking(move || guard.bans.flush())
                .await
                .unwrap_or_else(|_| Err("the bans writer stopped".into()));
            match stored {
                Ok(()) => Reply::Added(ban),
                Err(error) => Reply::Error(format!("banned in the running drawbridge, but not stored ({error}): the ban is gone at the next start")),
            }
        }
        Command::TunnelList => Reply::Tunnels(hub.status()),
        Command::TunnelReload => {
            hub.reload();
            Reply::Done
        }
        Command::WireguardList => Reply::Wireguard(process.wireguard.status()),
        Command::WireguardReload => {
            process.wireguard.reload().await;
            Reply::Done
        }
        Command::CachePurge { prefix } => match cache.purge(&prefix) {
            Ok(purged) => Reply::Purged(purged as u64),
            Err(error) => Reply::Error(format!("cannot remove cached responses from the disk ({error}): they would come back at the next start")),
        },
    }
}

/// Sends `command` to a running drawbridge; `Err` if none listens at `path`
/// (`NotFound`/`ConnectionRefused`) or its answer is not a `Reply`.
pub async fn request(path: &Path, command: &Command) -> io::Result<Reply> {
    let mut stream = UnixStream::connect(path).await?;
    let mut line = serde_json::to_string(command).map_err(io::Error::other)?;
    line.push('\n');
    stream.write_all(line.as_bytes()).await?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply).await?;
    serde_json::from_str(&reply).map_err(|error| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected answer from drawbridge: {error}"),
        )
    })
}
