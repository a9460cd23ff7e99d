//! `drawbridge agent`: the home end of the tunnel. It dials the edge over
//! TLS 1.3 (TCP, the HTTPS port: it passes any network that lets HTTPS
//! out), proves itself with its key, checks the edge by the pin its token
//! gave it, and then serves HTTP/2 on that connection for the edge
//! (`serve.rs`). It keeps `connections` of them up, each reconnecting with
//! full-jitter exponential backoff, forever.

pub mod config;
mod serve;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

pub use config::AgentConfig;
use serve::Services;
pub use serve::{REFUSED, UNREACHABLE};

use crate::socket::coalesce::Coalesce;
use crate::socket::rewind::Rewind;
use crate::tunnel::edge::{EnrollReply, EnrollRequest};
use crate::tunnel::identity::{Identity, IdentityError};
use crate::tunnel::register::{Token, EXPORTER_LABEL};
use crate::tunnel::trust::PinnedServer;
use crate::tunnel::{ENROLL_ALPN, READ_AHEAD, TUNNEL_ALPN};

/// The first retry's ceiling, and the most a retry waits.
const BACKOFF_BASE: Duration = Duration::from_millis(250);
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// A connection up this long resets the backoff.
const HEALTHY: Duration = Duration::from_secs(60);
/// How long connecting and the TLS handshake may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// PINGs from the agent too, so a dead edge is noticed from home.
const PING_EVERY: Duration = Duration::from_secs(15);
const PING_TIMEOUT: Duration = Duration::from_secs(20);

/// Why the agent could not start or enroll.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The agent's key.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// rustls refused the key.
    #[error("agent TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The token could not be read.
    #[error("this is not a drawbridge tunnel token (copy the whole line `drawbridge tunnel add` printed)")]
    BadToken,
    /// The edge could not be reached or did not prove its key.
    #[error("cannot reach the edge at {edge}: {why}")]
    Edge {
        /// Where.
        edge: String,
        /// Why.
        why: String,
    },
    /// The edge refused the enrollment.
    #[error("the edge refused: {0}")]
    Refused(String),
    /// The config could not be written.
    #[error("{}: {source}", path.display())]
    Write {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

fn client_config(
    identity: &Identity,
    edge_pin: &str,
    alpn: &[u8],
) -> Result<Arc<ClientConfig>, AgentError> {
    let mut config = ClientConfig::builder_with_provider(Arc::new(crate::tls::provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedServer::new(edge_pin)))
        .with_client_auth_cert(
            vec![identity.cert.clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(identity.key.clone_key()),
        )?;
    config.alpn_protocols = vec![alpn.to_vec()];
    // Every connection shows the agent's key again (the edge keeps no tickets).
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// TCP to `edge` (`host:port`) with TLS on top, within `DIAL_TIMEOUT`.
async fn dial(
    edge: &str,
    config: Arc<ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<Rewind>, String> {
    let host = edge.rsplit_once(':').map_or(edge, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(host.to_string())
        .map_err(|_| format!("`{host}` is not a host name or address"))?;
    let dialled = async {
        let stream = TcpStream::connect(edge).await.map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(30))
            .with_interval(Duration::from_secs(10));
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        TlsConnector::from(config)
            .connect(name, Rewind::new(stream))
            .await
            .map_err(|e| match e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
                Some(rustls::Error::InvalidCertificate(_)) => {
                    "its tunnel key does not match the pin (an impostor, or another edge); not connecting".to_string()
                }
                _ => e.to_string(),
            })
    };
    tokio::time::timeout(DIAL_TIMEOUT, dialled)
        .await
        .unwrap_or_else(|_| Err("timed out".to_string()))
}

/// Enrolls at the edge `token` names: makes the agent's key at `key_path`,
/// proves the token's secret over the TLS channel, and returns the agent's
/// name once the edge has registered the key.
pub async fn enroll(
    token: &str,
    key_path: &std::path::Path,
) -> Result<(Token, String), AgentError> {
    let token = Token::decode(token).ok_or(AgentError::BadToken)?;
    let identity = Identity::load_or_create(key_path)?;
    let config = client_config(&identity, &token.pin, ENROLL_ALPN)?;
    let edge_error = |why: String| AgentError::Edge {
        edge: token.edge.clone(),
        why,
    };
    let stream = dial(&token.edge, config).await.map_err(edge_error)?;
    let mut exported = [0u8; 32];
    stream
        .get_ref()
        .1
        .export_keying_material(&mut exported, EXPORTER_LABEL, None)
        .map_err(|e| edge_error(e.to_string()))?;
    let ask = EnrollRequest {
        id: token.id.clone(),
        proof: token.proof(&exported),
    };
    let mut line = serde_json::to_string(&ask).unwrap_or_default();
    line.push('\n');
    let mut stream = BufReader::new(stream);
    stream
        .write_all(line.as_bytes())
        .await
        .map_err(|e| edge_error(e.to_string()))?;
    let mut reply = String::new();
    let read = tokio::time::timeout(DIAL_TIMEOUT, stream.read_line(&mut reply)).await;
    if !matches!(read, Ok(Ok(n)) if n > 0) {
        return Err(edge_error("no answer to the enrollment".to_string()));
    }
    match serde_json::from_str::<EnrollReply>(&reply) {
        Ok(EnrollReply::Enrolled(name)) => Ok((token, name)),
        Ok(EnrollReply::Refused(why)) => Err(AgentError::Refused(why)),
        Err(_) => Err(edge_error("an answer that is not drawbridge's".to_string())),
    }
}

/// Runs the agent until `shutdown`.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<(), AgentError> {
    let identity = Identity::load_or_create(&config.key)?;
    let tls = client_config(&identity, &config.edge_pin, TUNNEL_ALPN)?;
    let services = Services::new(config.services.clone());
    for (name, addr) in &config.services {
        tokio::spawn(announce_known_proxy(
            name.clone(),
            addr.clone(),
            shutdown.clone(),
        ));
    }
    tracing::info!(edge = config.edge, connections = config.connections, services = ?config.services.keys().collect::<Vec<_>>(), "agent starting");
    let mut tasks = tokio::task::JoinSet::new();
    for slot in 0..config.connections {
        let (edge, tls, services, shutdown) = (
            config.edge.clone(),
            tls.clone(),
            services.clone(),
            shutdown.clone(),
        );
        tasks.spawn(keep_up(slot, edge, tls, services, shutdown));
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// One tunnel connection, made again whenever it ends.
async fn keep_up(
    slot: usize,
    edge: String,
    tls: Arc<ClientConfig>,
    services: Services,
    shutdown: CancellationToken,
) {
    let mut failures = 0u32;
    loop {
        let started = Instant::now();
        match dial(&edge, tls.clone()).await {
            Ok(mut stream) => {
                stream.get_mut().0.read_ahead(READ_AHEAD);
                tracing::info!(slot, edge, "tunnel connection up");
                let services = services.clone();
                let service = hyper::service::service_fn(move |request| {
                    let services = services.clone();
                    async move { Ok::<_, std::convert::Infallible>(services.handle(request).await) }
                });
                let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .enable_connect_protocol()
                    .keep_alive_interval(PING_EVERY)
                    .keep_alive_timeout(PING_TIMEOUT)
                    .max_concurrent_streams(512)
                    .initial_stream_window_size(2 * 1024 * 1024)
                    // HTTP/2's largest, as the edge's (tunnel/hub.rs): an
                    // upload home is slow to take must not hold the credit
                    // of every other request on the connection.
                    .initial_connection_window_size((1 << 31) - 1)
                    .max_frame_size(crate::tunnel::MAX_FRAME)
                    // Room for a few frames of an answer while the socket
                    // is busy (hyper's default, 400 KiB, is under two).
                    .max_send_buf_size(4 * crate::tunnel::MAX_FRAME as usize)
                    // Answers leave in shared TLS records, as the edge's own
                    // HTTP/2 server's do (socket/coalesce.rs).
                    .serve_connection(TokioIo::new(Coalesce::new(stream, true)), service);
                tokio::pin!(connection);
                tokio::select! {
                    result = &mut connection => match result {
                        Ok(()) => tracing::info!(slot, edge, "tunnel connection closed by the edge"),
                        Err(error) => tracing::warn!(slot, edge, %error, "tunnel connection lost"),
                    },
                    () = shutdown.cancelled() => {
                        connection.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(Duration::from_secs(5), connection).await;
                        return;
                    }
                }
            }
            Err(why) => tracing::warn!(slot, edge, why, "cannot reach the edge"),
        }
        if started.elapsed() >= HEALTHY {
            failures = 0;
        }
        let wait = backoff(failures);
        failures = failures.saturating_add(1);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// Full jitter: a random wait up to `BACKOFF_BASE × 2^failures`, capped.
fn backoff(failures: u32) -> Duration {
    use ring::rand::SecureRandom;
    let ceiling = BACKOFF_BASE
        .saturating_mul(1u32 << failures.min(16))
        .min(BACKOFF_CAP);
    let mut bytes = [0u8; 4];
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    let fraction = f64::from(u32::from_le_bytes(bytes)) / f64::from(u32::MAX);
    ceiling.mul_f64(fraction)
}

/// Logs, once the service answers as Jellyfin, the address the agent
/// reaches it from: with the tunnel, that is the address Jellyfin's Known
/// proxies must list. Jellyfin may start long after the agent (a NAS
/// booting): asked every 2 s for the first minute, then every 10 s, until
/// it answers or the agent stops. A service that is not Jellyfin gets no hint.
async fn announce_known_proxy(service: String, addr: String, shutdown: CancellationToken) {
    let started = Instant::now();
    let mut waiting_said = false;
    loop {
        match jellyfin_seen_from(&addr).await {
            Ok(Some(ip)) => {
                tracing::info!(
                    service,
                    "the agent reaches Jellyfin at {addr} from {ip}: add {ip} to Jellyfin's Known proxies \
                     (Dashboard → Networking), or Jellyfin will ignore X-Forwarded-For and see every visitor as {ip}"
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

#[cfg(test)]
mod tests {
    use super::{backoff, BACKOFF_BASE, BACKOFF_CAP};

    #[test]
    fn backoff_is_jittered_under_a_growing_cap() {
        for failures in 0..40 {
            let cap = BACKOFF_BASE
                .saturating_mul(1u32 << failures.min(16))
                .min(BACKOFF_CAP);
            assert!(backoff(failures) <= cap);
        }
        assert!(
            BACKOFF_BASE < std::time::Duration::from_secs(1),
            "sub-second first retry"
        );
        let spread: std::collections::HashSet<_> = (0..20).map(|_| backoff(10)).collect();
        assert!(spread.len() > 10, "jittered");
    }
}
