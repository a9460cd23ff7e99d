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
    // Not CertifiedKey::from_der: its consistency check parses the certificate
    // with webpki, which refuses the critical acmeIdentifier extension.
    let signer = crate::tls::provider()
        .key_provider
        .load_private_key(private)
        .map_err(|_| rcgen::Error::CouldNotParseKeyPair)?;
    Ok(CertifiedKey::new(vec![cert.der().clone()], signer))
}

#[cfg(test)]
mod tests {
    use super::alpn_certificate;

    #[test]
    fn challenge_certificate_carries_the_digest_in_a_critical_extension() {
        let digest = [7u8; 32];
        let key = alpn_certificate("a.example.com", &digest).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(key.cert[0].as_ref()).unwrap();
        let oid = x509_parser::oid_registry::Oid::from(&[1, 3, 6, 1, 5, 5, 7, 1, 31]).unwrap();
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid == oid)
            .expect("acmeIdentifier present");
        assert!(ext.critical);
        assert!(ext.value.ends_with(&digest));
    }
}
