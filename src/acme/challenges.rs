//! Answers to ACME challenges while an order is open, kept in memory and read
//! by the two listeners: HTTP-01 key authorizations by token (port 80, before
//! any redirect), and TLS-ALPN-01 certificates by name (RFC 8737: a
//! self-signed certificate with the `acmeIdentifier` extension, shown only to a
//! ClientHello that offers `acme-tls/1`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rcgen::{CertificateParams, CustomExtension, KeyPair};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// The ALPN protocol of TLS-ALPN-01.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Open challenges.
#[derive(Debug, Default)]
pub struct Challenges {
    http: Mutex<HashMap<String, String>>,
    alpn: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl Challenges {
    /// The key authorization for an HTTP-01 `token`.
    pub fn http_answer(&self, token: &str) -> Option<String> {
        self.http
            .lock()
            .expect("challenge lock")
            .get(token)
            .cloned()
    }

    /// The TLS-ALPN-01 certificate for `name`.
    pub fn alpn_certificate(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.alpn.lock().expect("challenge lock").get(name).cloned()
    }

    pub(crate) fn put_http(&self, token: String, key_authorization: String) {
        self.http
            .lock()
            .expect("challenge lock")
            .insert(token, key_authorization);
    }

    pub(crate) fn remove_http(&self, token: &str) {
        self.http.lock().expect("challenge lock").remove(token);
    }

    pub(crate) fn put_alpn(&self, name: String, certificate: CertifiedKey) {
        self.alpn
            .lock()
            .expect("challenge lock")
            .insert(name, Arc::new(certificate));
    }

    pub(crate) fn remove_alpn(&self, name: &str) {
        self.alpn.lock().expect("challenge lock").remove(name);
    }
}

/// The TLS-ALPN-01 certificate for `name`, carrying the SHA-256 `digest` of the
/// key authorization.
pub fn alpn_certificate(name: &str, digest: &[u8]) -> Result<CertifiedKey, rcgen::Error> {
    let mut params = CertificateParams::new(vec![name.to_string()])?;
    params.custom_extensions = vec![CustomExtension::new_acme_identifier(digest)];
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    CertifiedKey::from_der(vec![cert.der().clone()], private, &crate::tls::provider())
        .map_err(|_| rcgen::Error::CouldNotParseKeyPair)
}
