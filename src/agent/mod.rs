//! `drawbridge agent`: the home end of the tunnel. It dials the edge like
//! any browser — TLS to one of the edge's sites on the HTTPS port, so it
//! passes any network that lets HTTPS out — knocks with an HTTP/1.1
//! Upgrade carrying its key's proof, checks the edge's proof against the
//! pin its token gave it, and then serves HTTP/2 on that connection for the
//! edge (`serve.rs`). It keeps `connections` of them up, each reconnecting
//! with full-jitter exponential backoff; a key the edge removed is said so
//! and tried again only every few minutes.

pub mod config;
mod knock;
mod known_proxy;
mod serve;

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;

pub use config::AgentConfig;
use knock::{client_config, dial, exporter, knock};
use serve::Services;

use crate::socket::coalesce::Coalesce;
use crate::socket::rewind::Rewind;
use crate::tunnel::identity::{Identity, IdentityError};
use crate::tunnel::protocol::{self, EnrollReply, Knock, Proof};
use crate::tunnel::register::Token;

/// The first retry's ceiling, and the most a retry waits.
const BACKOFF_BASE: Duration = Duration::from_millis(250);
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// A connection up this long resets the backoff.
const HEALTHY: Duration = Duration::from_secs(60);
/// How long connecting, the TLS handshake and the knock may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a removed agent knocks again (the edge may have it enrolled
/// again with a new token, or restored from a backup), and says so.
const REMOVED_RETRY: Duration = Duration::from_secs(300);
const REMOVED_SAID_EVERY: Duration = Duration::from_secs(3600);

/// Why the agent could not start or enroll.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The agent's key.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// rustls refused the configuration.
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

/// Why one knock at the edge did not make a tunnel connection.
#[derive(Debug)]
enum Turned {
    /// The edge says this agent's key was removed (`tunnel remove`).
    Removed,
    /// Anything else, in words for the log.
    Away(String),
}

/// Enrolls at the edge `token` names: makes the agent's key at `key_path`,
/// proves it and the token's secret over one TLS connection, and returns the
/// agent's name once the edge has registered the key.
pub async fn enroll(
    token: &str,
    key_path: &std::path::Path,
) -> Result<(Token, String), AgentError> {
    let token = Token::decode(token).ok_or(AgentError::BadToken)?;
    let identity = Identity::load_or_create(key_path)?;
    let config = client_config()?;
    let edge_error = |why: String| AgentError::Edge {
        edge: token.edge.clone(),
        why,
    };
    let asked = async {
        let mut stream = dial(&token.edge, &token.name, config).await?;
        let exported = exporter(&stream)?;
        let knocked = Knock::Enroll {
            proof: Proof::make(&identity, protocol::AGENT_SIGNS, &exported),
            id: token.id.clone(),
            secret_proof: token.proof(&exported),
        };
        knock(&mut stream, &knocked, &token.name, &token.pin, &exported).await
    };
    let answer = tokio::time::timeout(DIAL_TIMEOUT, asked)
        .await
        .unwrap_or_else(|_| Err("timed out".to_string()))
        .map_err(|why| {
            edge_error(format!(
                "{why}; if the token is old, used or from another edge, run `drawbridge tunnel add` there for a new one"
            ))
        })?;
    match serde_json::from_slice::<EnrollReply>(&answer.body) {
        Ok(EnrollReply::Enrolled(name)) if answer.status == 200 => Ok((token, name)),
        Ok(EnrollReply::Refused(why)) => Err(AgentError::Refused(why)),
        _ => Err(edge_error(format!(
            "an answer ({}) that is not an enrolment's",
            answer.status
        ))),
    }
}

/// Runs the agent until `shutdown`.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<(), AgentError> {
    let identity = Arc::new(Identity::load_or_create(&config.key)?);
    let tls = client_config()?;
    let services = Services::new(config.services.clone());
    for (name, addr) in &config.services {
        tokio::spawn(known_proxy::announce_known_proxy(
            name.clone(),
            addr.clone(),
            shutdown.clone(),
        ));
    }
    tracing::info!(edge = config.edge, connections = config.connections, services = ?config.services.keys().collect::<Vec<_>>(), "agent starting");
    let config = Arc::new(config);
    let mut tasks = tokio::task::JoinSet::new();
    for slot in 0..config.connections {
        let link = Dialler {
            slot,
            config: config.clone(),
            identity: identity.clone(),
            tls: tls.clone(),
        };
        tasks.spawn(keep_up(link, services.clone(), shutdown.clone()));
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// What one of the agent's connections dials with.
struct Dialler {
    slot: usize,
    config: Arc<AgentConfig>,
    identity: Arc<Identity>,
    tls: Arc<ClientConfig>,
}

impl Dialler {
    /// A tunnel connection, knocked and proven, ready for HTTP/2.
    async fn connect(&self) -> Result<TlsStream<Rewind>, Turned> {
        let config = &self.config;
        let away = Turned::Away;
        let attempt = async {
            let mut stream = dial(&config.edge, &config.edge_name, self.tls.clone())
                .await
                .map_err(away)?;
            let exported = exporter(&stream).map_err(away)?;
            let proof = Proof::make(&self.identity, protocol::AGENT_SIGNS, &exported);
            let answer = knock(
                &mut stream,
                &Knock::Tunnel(proof),
                &config.edge_name,
                &config.edge_pin,
                &exported,
            )
            .await
            .map_err(away)?;
            let refused = answer.headers.get(protocol::REFUSED_BY_EDGE);
            match (answer.status, refused) {
                (101, _) => Ok(stream),
                (_, Some(word)) if word.as_bytes() == protocol::REMOVED.as_bytes() => {
                    Err(Turned::Removed)
                }
                (status, _) => Err(Turned::Away(format!("the edge answered {status}"))),
            }
        };
        tokio::time::timeout(DIAL_TIMEOUT, attempt)
            .await
            .unwrap_or_else(|_| Err(Turned::Away("timed out".to_string())))
    }
}

/// One tunnel connection, made again whenever it ends.
async fn keep_up(dialler: Dialler, services: Services, shutdown: CancellationToken) {
    let (slot, edge) = (dialler.slot, dialler.config.edge.clone());
    let mut failures = 0u32;
    let mut removed_said: Option<Instant> = None;
    loop {
        let started = Instant::now();
        let mut wait = None;
        match dialler.connect().await {
            Ok(mut stream) => {
                removed_said = None;
                stream.get_mut().0.read_ahead(protocol::READ_AHEAD);
                tracing::info!(slot, edge, "tunnel connection up");
                let services = services.clone();
                let service = hyper::service::service_fn(move |request| {
                    let services = services.clone();
                    async move { Ok::<_, std::convert::Infallible>(services.handle(request).await) }
                });
                let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                protocol::agent_link(&mut builder);
                // Answers leave in shared TLS records, as the edge's own
                // HTTP/2 server's do (socket/coalesce.rs).
                let connection =
                    builder.serve_connection(TokioIo::new(Coalesce::new(stream, true)), service);
                tokio::pin!(connection);
                tokio::select! {
                    result = &mut connection => match result {
                        Ok(()) => {
                            // The edge closed it cleanly (it is restarting):
                            // the next start is a moment away.
                            tracing::info!(slot, edge, "tunnel connection closed by the edge");
                            failures = 0;
                        }
                        Err(error) => tracing::warn!(slot, edge, %error, "tunnel connection lost"),
                    },
                    () = shutdown.cancelled() => {
                        connection.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(Duration::from_secs(5), connection).await;
                        return;
                    }
                }
            }
            Err(Turned::Removed) => {
                if removed_said.is_none_or(|said| said.elapsed() >= REMOVED_SAID_EVERY) {
                    tracing::error!(slot, edge, "the edge says this agent was removed (`drawbridge tunnel remove`): it will not be let in again; enrol it anew with a token from `drawbridge tunnel add` on the edge");
                    removed_said = Some(Instant::now());
                }
                wait = Some(REMOVED_RETRY);
            }
            Err(Turned::Away(why)) => tracing::warn!(slot, edge, why, "cannot reach the edge"),
        }
        if started.elapsed() >= HEALTHY {
            failures = 0;
        }
        let wait = wait.unwrap_or_else(|| backoff(failures));
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
