//! The edge's listener side of the tunnel: agents arrive on the HTTPS
//! listeners, told apart from visitors by ALPN before any site logic
//! (`drawbridge-tunnel/1` for a tunnel connection, `drawbridge-enroll/1`
//! to enroll), after the guard has admitted them like any connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use super::hub::Hub;
use super::identity::{pin_of, Identity, IdentityError};
use super::register::{Register, RegisterError, EXPORTER_LABEL};
use super::trust::{AgentVerifier, AnyKey};
use super::{ENROLL_ALPN, TUNNEL_ALPN};

/// What an agent sends to enroll: the token's id and its proof.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrollRequest {
    /// The token's id.
    pub id: String,
    /// HMAC-SHA256 of the channel's exporter under the token's secret (hex).
    pub proof: String,
}

/// What the edge answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnrollReply {
    /// Enrolled under this name.
    Enrolled(String),
    /// Refused; the sentence says why.
    Refused(String),
}

/// The edge's tunnel: its key, the rustls configs of both protocols and the hub.
pub struct Edge {
    /// The connections up and the agents enrolled.
    pub hub: Arc<Hub>,
    /// The pin agents check the edge by.
    pub pin: String,
    tunnel: Arc<ServerConfig>,
    enroll: Arc<ServerConfig>,
}

impl std::fmt::Debug for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge").field("pin", &self.pin).finish()
    }
}

/// Why the edge's tunnel could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// The tunnel key.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// rustls refused the key.
    #[error("tunnel TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

impl Edge {
    /// The edge's tunnel from the register under `state_dir`, its key made on first use.
    pub fn open(state_dir: &std::path::Path) -> Result<Edge, EdgeError> {
        let register = Register::new(state_dir);
        let identity = Identity::load_or_create(&register.edge_key_path())?;
        let hub = Hub::new(register);
        let config = |alpn: &[u8],
                      verifier: AgentVerifier|
         -> Result<Arc<ServerConfig>, EdgeError> {
            let mut config = ServerConfig::builder_with_provider(Arc::new(crate::tls::provider()))
                .with_protocol_versions(&[&rustls::version::TLS13])?
                .with_client_cert_verifier(Arc::new(verifier))
                .with_single_cert(
                    vec![identity.cert.clone()],
                    rustls_pki_types::PrivateKeyDer::Pkcs8(identity.key.clone_key()),
                )?;
            config.alpn_protocols = vec![alpn.to_vec()];
            // No resumption: a resumed session skips the client certificate,
            // and a removed agent must not get back in on an old ticket.
            config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
            config.send_tls13_tickets = 0;
            Ok(Arc::new(config))
        };
        Ok(Edge {
            pin: identity.pin(),
            tunnel: config(TUNNEL_ALPN, AgentVerifier::new(hub.clone()))?,
            enroll: config(ENROLL_ALPN, AgentVerifier::new(Arc::new(AnyKey)))?,
            hub,
        })
    }

    /// The rustls config for a ClientHello offering `alpn`, when it asks for
    /// the tunnel or enrollment; None for a visitor.
    pub fn config_for<'a>(
        &self,
        mut alpn: impl Iterator<Item = &'a [u8]>,
    ) -> Option<Arc<ServerConfig>> {
        alpn.find_map(|protocol| match protocol {
            p if p == TUNNEL_ALPN => Some(self.tunnel.clone()),
            p if p == ENROLL_ALPN => Some(self.enroll.clone()),
            _ => None,
        })
    }

    /// Serves an agent's connection after its handshake: the tunnel, or one
    /// enrollment. `Err` when the agent failed to authenticate (the guard
    /// counts it like a failed login).
    pub async fn serve<IO>(
        &self,
        stream: tokio_rustls::server::TlsStream<IO>,
        from: SocketAddr,
        read_timeout: Duration,
    ) -> Result<(), RegisterError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (_, session) = stream.get_ref();
        let pin = session
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(pin_of)
            .unwrap_or_default();
        if session.alpn_protocol() == Some(TUNNEL_ALPN) {
            // The verifier admitted only enrolled pins.
            let Some(name) = self.hub.name_of(&pin) else {
                return Err(RegisterError::Unknown);
            };
            self.hub.attach(stream, name, pin, from).await;
            return Ok(());
        }
        let mut exported = [0u8; 32];
        if session
            .export_keying_material(&mut exported, EXPORTER_LABEL, None)
            .is_err()
        {
            return Ok(());
        }
        let mut stream = BufReader::new(stream);
        let mut line = String::new();
        let read = tokio::time::timeout(read_timeout, async {
            let mut limited = (&mut stream).take(4096);
            limited.read_line(&mut line).await
        });
        if !matches!(read.await, Ok(Ok(n)) if n > 0) {
            return Ok(());
        }
        let result = match serde_json::from_str::<EnrollRequest>(&line) {
            Ok(ask) => {
                let register = self.hub.register().clone();
                tokio::task::spawn_blocking(move || {
                    register.redeem(&ask.id, &ask.proof, &exported, &pin)
                })
                .await
                .unwrap_or(Err(RegisterError::Unknown))
            }
            Err(_) => Err(RegisterError::Unknown),
        };
        let reply = match &result {
            Ok(name) => {
                tracing::info!(agent = name, %from, "agent enrolled");
                self.hub.reload();
                EnrollReply::Enrolled(name.clone())
            }
            Err(error) => {
                tracing::warn!(%from, %error, "enrollment refused");
                EnrollReply::Refused(error.for_the_agent())
            }
        };
        let mut text = serde_json::to_string(&reply).unwrap_or_default();
        text.push('\n');
        let _ = stream.write_all(text.as_bytes()).await;
        let _ = stream.shutdown().await;
        result.map(|_| ())
    }
}
