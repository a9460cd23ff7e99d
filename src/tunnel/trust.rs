//! The rustls verifiers of drawbridge's TLS clients that do not check a
//! server by the public CA system: by its key's pin alone (`upstream_pin`),
//! or not by its certificate at all where the key is proven inside the
//! connection (the agent dialling the edge: the edge shows its site's own
//! certificate to everyone, and proves its tunnel key in its answer to the
//! knock, bound to the connection — `protocol.rs`). rustls checks every
//! handshake signature against the presented certificate's key either way.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

use super::identity::pin_of;

/// A server certificate checked by its key's pin alone: an `https`
/// upstream's with `upstream_pin` (Jellyfin's own self-signed one).
#[derive(Debug)]
pub struct PinnedServer {
    /// None: any certificate (the key is proven inside the connection).
    pin: Option<String>,
    provider: Arc<CryptoProvider>,
}

impl PinnedServer {
    /// Accepts only the key whose pin is `pin`.
    pub fn new(pin: &str) -> PinnedServer {
        PinnedServer {
            pin: Some(pin.to_string()),
            provider: Arc::new(crate::tls::provider()),
        }
    }

    /// Accepts whatever certificate the server shows, its handshake
    /// signature checked: for the agent, whose check of the edge is the
    /// edge's proof of its pinned key on this very connection.
    pub fn proven_inside() -> PinnedServer {
        PinnedServer {
            pin: None,
            provider: Arc::new(crate::tls::provider()),
        }
    }
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match (&self.pin, pin_of(end_entity)) {
            (None, _) => Ok(ServerCertVerified::assertion()),
            (Some(wanted), Some(pin)) if pin == *wanted => Ok(ServerCertVerified::assertion()),
            _ => Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
