//! The Known proxies hint: once the local service answers as Jellyfin, the
//! agent says which address Jellyfin sees it from, the address Jellyfin's
//! Known proxies must list for X-Forwarded-For to count.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Logs, once the service answers as Jellyfin, the address the agent
/// reaches it from: with the tunnel, that is the address Jellyfin's Known
/// proxies must list. Jellyfin may start long after the agent (a NAS
/// booting): asked every 2 s for the first minute, then every 10 s, until
/// it answers or the agent stops. A service that is not Jellyfin gets no hint.
pub(super) async fn announce_known_proxy(
    service: String,
    addr: String,
    shutdown: CancellationToken,
) {
    let started = Instant::now();
    let mut waiting_said = false;
    loop {
        match jellyfin_seen_from(&addr).await {
            Ok(Some(ip)) => {
                tracing::info!(
                    service,
                    "the agent reaches Jellyfin at {addr} from {ip}: add {ip} to Jellyfin's Known proxies \
                     (Dashboard → Networking), or Jellyfin will ignore X-Forwarded-For and see every client as {ip}"
                );
                return;
            }
            Ok(None) => {
                tracing::info!(
                    service,
                    addr,
                    "the service does not answer as Jellyfin: no Known proxies hint for it"
                );
                return;
            }
            Err(why) if !waiting_said => {
                tracing::warn!(service, addr, why, "local service not reachable yet; the agent will say which address to add to Jellyfin's Known proxies once it answers");
                waiting_said = true;
            }
            Err(_) => {}
        }
        let wait = if started.elapsed() < Duration::from_secs(60) {
            Duration::from_secs(2)
        } else {
            Duration::from_secs(10)
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// Asks the service at `addr` for Jellyfin's public system info: the
/// address the agent reached it from when it is Jellyfin, None when it
/// answered as something else, Err while it does not answer yet (Jellyfin
/// starting up answers 503).
async fn jellyfin_seen_from(addr: &str) -> Result<Option<std::net::IpAddr>, String> {
    use tokio::io::AsyncReadExt;
    let asked = async {
        let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let local = stream.local_addr().map_err(|e| e.to_string())?.ip();
        let request = format!(
            "GET /System/Info/Public HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        (&mut stream)
            .take(64 * 1024)
            .read_to_end(&mut answer)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((local, answer))
    };
    let (local, answer) = tokio::time::timeout(Duration::from_secs(5), asked)
        .await
        .map_err(|_| "no answer within 5 s".to_string())??;
    let text = String::from_utf8_lossy(&answer);
    let status = text.split_whitespace().nth(1).unwrap_or("");
    match status {
        "200" if text.contains("\"ProductName\":\"Jellyfin Server\"") => Ok(Some(local)),
        "503" | "" => Err(format!(
            "answered {}",
            if status.is_empty() { "nothing" } else { status }
        )),
        _ => Ok(None),
    }
}
