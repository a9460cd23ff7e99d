//! The local admin socket, `state_dir/admin.sock` (mode 0600: only the user
//! drawbridge runs as, and root, can use it). One command per connection, one
//! line each way: `bans list` answers a JSON array; `bans remove ADDRESS`
//! answers `{"removed":true|false}` once the change is on disk, or
//! `{"error":…}` when it could not be stored; `cache purge [PREFIX]` answers
//! `{"purged":N}`. The `drawbridge bans` and `drawbridge cache` commands talk to
//! it; `bans` works on the stored bans file when drawbridge is not running.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cache::Cache;
use crate::guard::keys::ClientKey;
use crate::guard::Guard;

/// The socket's path under `state_dir`.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("admin.sock")
}

/// Serves the admin socket until `shutdown`.
pub async fn serve(
    path: PathBuf,
    guard: Arc<Guard>,
    cache: Arc<Cache>,
    shutdown: CancellationToken,
) {
    let Some(mut listener) = bind(&path) else {
        return;
    };
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
        let (guard, cache) = (guard.clone(), cache.clone());
        tokio::spawn(async move {
            let _ = answer(stream, guard, &cache).await;
        });
    }
    let _ = std::fs::remove_file(&path);
}

/// How often the socket's file is checked for.
const SOCKET_CHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// A listener at `path` (mode 0600), its folder made and an old socket
/// replaced; None, with a warning, when it cannot be had.
fn bind(path: &Path) -> Option<UnixListener> {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
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

async fn answer(stream: UnixStream, guard: Arc<Guard>, cache: &Cache) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    // One short line is all a command is.
    let mut reader = BufReader::new(tokio::io::AsyncReadExt::take(read, 1024));
    reader.read_line(&mut line).await?;
    let now = Instant::now();
    let reply = match line.split_whitespace().collect::<Vec<_>>().as_slice() {
        ["bans", "list"] => serde_json::to_string(&guard.bans.list(now)).unwrap_or_default(),
        ["bans", "remove", address] => match ClientKey::parse(address) {
            Some(key) => {
                let removed = guard.bans.remove(key, now);
                // Lifted only when it stays lifted after a restart.
                let stored = tokio::task::spawn_blocking(move || guard.bans.flush())
                    .await
                    .unwrap_or_else(|_| Err("the bans writer stopped".into()));
                match stored {
                    Ok(()) => serde_json::json!({ "removed": removed }).to_string(),
                    Err(error) => serde_json::json!({ "error": format!("lifted in the running drawbridge, but not stored ({error}): the ban returns at the next start") }).to_string(),
                }
            }
            None => serde_json::json!({ "error": format!("`{address}` is not an address") }).to_string(),
        },
        ["cache", "purge", rest @ ..] if rest.len() <= 1 => {
            match cache.purge(rest.first().copied().unwrap_or("")) {
                Ok(purged) => serde_json::json!({ "purged": purged }).to_string(),
                Err(error) => serde_json::json!({ "error": format!("cannot remove cached responses from the disk ({error}): they would come back at the next start") }).to_string(),
            }
        }
        _ => serde_json::json!({ "error": "unknown command; use `bans list`, `bans remove ADDRESS` or `cache purge [PREFIX]`" }).to_string(),
    };
    write.write_all(reply.as_bytes()).await?;
    write.write_all(b"\n").await
}

/// Sends `command` to a running drawbridge; `Err` if none listens at `path`.
pub async fn request(path: &Path, command: &str) -> io::Result<String> {
    let mut stream = UnixStream::connect(path).await?;
    stream.write_all(command.as_bytes()).await?;
    stream.write_all(b"\n").await?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply).await?;
    Ok(reply)
}
