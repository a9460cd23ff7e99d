//! TLS to an `https://` upstream (a port forward kept, but not in clear
//! text): the certificate checked against the system's roots or a CA file
//! for the upstream's name, or by its key's pin alone. A certificate that
//! does not verify fails the connection with the reason, which the error
//! log names and the client sees as a 502 — never plain text instead.

use std::io;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::config::UpstreamTls;
use crate::tunnel::trust::PinnedServer;

/// What a TLS upstream connection needs: the rustls config and the name to
/// check the certificate for.
#[derive(Clone)]
pub struct UpstreamTlsConfig {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl std::fmt::Debug for UpstreamTlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTlsConfig")
            .field("name", &self.name)
            .finish()
    }
}

/// The system's root certificates, read once.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                tracing::error!("no system root certificates found: https upstreams without upstream_pin or upstream_ca will fail");
            }
            Arc::new(roots)
        })
        .clone()
}

impl UpstreamTlsConfig {
    /// The config for `how`, checking the certificate for `host`.
    pub fn new(host: &str, how: &UpstreamTls) -> UpstreamTlsConfig {
        let builder = ClientConfig::builder_with_provider(Arc::new(crate::tls::provider()))
            .with_safe_default_protocol_versions()
            .expect("the provider supports the default versions");
        let mut config = match how {
            UpstreamTls::SystemRoots => builder
                .with_root_certificates(system_roots())
                .with_no_client_auth(),
            UpstreamTls::CaFile(path) => {
                let mut roots = RootCertStore::empty();
                match CertificateDer::pem_file_iter(path) {
                    Ok(certs) => {
                        let (added, _) = roots.add_parsable_certificates(certs.flatten());
                        if added == 0 {
                            tracing::error!(path = %path.display(), "upstream_ca holds no certificate: the upstream will fail");
                        }
                    }
                    Err(error) => {
                        tracing::error!(path = %path.display(), %error, "cannot read upstream_ca: the upstream will fail");
                    }
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            UpstreamTls::Pin(pin) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedServer::new(pin)))
                .with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = ServerName::try_from(host.to_string())
            .unwrap_or_else(|_| ServerName::try_from("invalid.invalid").expect("a valid name"));
        UpstreamTlsConfig {
            config: Arc::new(config),
            name,
        }
    }

    /// TLS over `stream`; the error says why the certificate was refused.
    pub async fn connect(&self, stream: TcpStream) -> io::Result<TlsStream<TcpStream>> {
        TlsConnector::from(self.config.clone())
            .connect(self.name.clone(), stream)
            .await
            .map_err(|error| io::Error::new(error.kind(), format!("TLS: {error}")))
    }
}
