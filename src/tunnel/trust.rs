//! The TLS side of the tunnel's trust: TLS 1.3 only, each end known by its
//! key pin (`identity.rs`). The agent accepts the edge only by the pin its
//! token gave it; the edge accepts an agent only by a pin enrolled under
//! `state_dir/tunnel/agents.json` — or, on the enrollment protocol, any key
//! the client proves it holds (the one-time secret then decides).
//! rustls checks every handshake signature against the presented
//! certificate's key, so a pin cannot be shown without its private key.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::identity::pin_of;

/// Which client keys the edge lets finish a handshake.
pub trait PinSet: Send + Sync + fmt::Debug {
    /// Whether `pin` may connect.
    fn allows(&self, pin: &str) -> bool;
}

/// Any key (enrollment: the secret decides, after the handshake).
#[derive(Debug)]
pub struct AnyKey;

impl PinSet for AnyKey {
    fn allows(&self, _: &str) -> bool {
        true
    }
}

/// The handshake-signature checks both verifiers share: rustls's own, with
/// the provider's algorithms (a pin is shown only with its private key).
macro_rules! signatures {
    () => {
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
            let algorithms = &self.provider.signature_verification_algorithms;
            algorithms.supported_schemes()
        }
    };
}

fn refused() -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
}

/// The edge's check of an agent's certificate: its pin in `pins`.
#[derive(Debug)]
pub struct AgentVerifier {
    pins: Arc<dyn PinSet>,
    provider: Arc<CryptoProvider>,
}

impl AgentVerifier {
    /// Accepts the client keys `pins` allows.
    pub fn new(pins: Arc<dyn PinSet>) -> AgentVerifier {
        AgentVerifier {
            pins,
            provider: Arc::new(crate::tls::provider()),
        }
    }
}

impl ClientCertVerifier for AgentVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match pin_of(end_entity) {
            Some(pin) if self.pins.allows(&pin) => Ok(ClientCertVerified::assertion()),
            _ => Err(refused()),
        }
    }

    signatures!();
}

/// A server certificate checked by its key's pin alone: the agent's check of
/// the edge, and an `https` upstream's with `upstream_pin`.
#[derive(Debug)]
pub struct PinnedServer {
    pin: String,
    provider: Arc<CryptoProvider>,
}

impl PinnedServer {
    /// Accepts only the key whose pin is `pin`.
    pub fn new(pin: &str) -> PinnedServer {
        PinnedServer {
            pin: pin.to_string(),
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
        match pin_of(end_entity) {
            Some(pin) if pin == self.pin => Ok(ServerCertVerified::assertion()),
            _ => Err(refused()),
        }
    }

    signatures!();
}
