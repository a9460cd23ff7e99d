//! The rustls server configs: TLS 1.2 and 1.3, Mozilla intermediate suites,
//! ALPN h2 and http/1.1 (and acme-tls/1 for a CA validating), certificates
//! from the store's resolver.

use std::fmt;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use super::challenges::ACME_TLS_ALPN;
use super::{TlsError, TlsStore};
use crate::config::normalise_host;

/// The crypto provider: ring, with Mozilla's "intermediate" cipher suites
/// (every AEAD suite of TLS 1.3; ECDHE with AES-GCM or ChaCha20 for TLS 1.2).
pub fn provider() -> CryptoProvider {
    use rustls::crypto::ring::{cipher_suite as cs, default_provider};
    CryptoProvider {
        cipher_suites: vec![
            cs::TLS13_AES_128_GCM_SHA256,
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS13_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ],
        ..default_provider()
    }
}

impl TlsStore {
    /// The rustls server configs that serve this store's certificates.
    pub fn server_config(self: &Arc<Self>) -> Result<ServerConfigs, TlsError> {
        let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        // acme-tls/1 last: only a CA validating TLS-ALPN-01 offers it alone.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()];
        let client_order = Arc::new(config.clone());
        config.ignore_client_order = true;
        Ok(ServerConfigs {
            client_order,
            ours: Arc::new(config),
        })
    }
}

impl TlsStore {
    /// The rustls config for QUIC: TLS 1.3 only (QUIC has no other), ALPN
    /// `h3`, the same certificates by SNI (an unknown or absent name: no
    /// certificate, the handshake fails), no 0-RTT (a replayed login).
    pub fn quic_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        config.alpn_protocols = vec![b"h3".to_vec()];
        config.max_early_data_size = 0;
        config.ignore_client_order = true;
        Ok(Arc::new(config))
    }
}

/// One rustls config following the client's cipher suite order, and one
/// following ours (AES-128-GCM first, as Mozilla's intermediate profile lists
/// them). A client whose first choice is ChaCha20 says it has no AES in
/// hardware and gets its order; any other gets ours: OpenSSL-based clients ask
/// for AES-256-GCM first, which costs SHA-384 in every handshake and four more
/// AES rounds on every record, for no gain in security. Both configs share one
/// session store and resolver.
#[derive(Debug, Clone)]
pub struct ServerConfigs {
    client_order: Arc<ServerConfig>,
    ours: Arc<ServerConfig>,
}

impl ServerConfigs {
    /// The config for a connection that sent `hello`.
    pub fn for_hello(&self, hello: &ClientHello<'_>) -> Arc<ServerConfig> {
        use rustls::CipherSuite as Suite;
        let supported = &self.ours.crypto_provider().cipher_suites;
        let first = hello
            .cipher_suites()
            .iter()
            .find(|offered| supported.iter().any(|s| s.suite() == **offered));
        let chacha = matches!(
            first,
            Some(
                Suite::TLS13_CHACHA20_POLY1305_SHA256
                    | Suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
                    | Suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
            )
        );
        if chacha {
            self.client_order.clone()
        } else {
            self.ours.clone()
        }
    }
}

/// Picks the certificate for a ClientHello's SNI; none for an unknown or absent name.
struct Resolver(Arc<TlsStore>);

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Resolver")
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = normalise_host(hello.server_name()?)?;
        let acme_validation = hello
            .alpn()
            .is_some_and(|mut offered| offered.any(|p| p == ACME_TLS_ALPN));
        if acme_validation {
            return self.0.challenges.alpn_certificate(&sni);
        }
        self.0.table.load().lookup(&sni)
    }
}
