//! Certificates and keys read from PEM files (certbot's `fullchain.pem` and
//! `privkey.pem`, or any other), and the fingerprint that tells when they changed.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a certificate/key pair could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file held no usable PEM object of the expected kind.
    #[error("{} holds no {what} in PEM form", path.display())]
    NoPem {
        /// The file.
        path: PathBuf,
        /// "certificate" or "private key".
        what: &'static str,
    },
    /// rustls refused the pair (unsupported key type, or key and certificate differ).
    #[error("certificate {} and key {} cannot be used together: {source}", cert.display(), key.display())]
    Unusable {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        #[source]
        source: rustls::Error,
    },
}

/// Reads a certificate chain and its private key, checking that they match.
pub fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, CertError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| CertError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(CertError::NoPem {
            path: cert.to_path_buf(),
            what: "certificate",
        });
    }
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| CertError::NoPem {
        path: key.to_path_buf(),
        what: "private key",
    })?;
    // Only the key provider matters for loading a key (and checking it
    // matches the certificate): ring's, as in the TLS config.
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, private, &provider).map_err(|source| CertError::Unusable {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        source,
    })
}

/// What a pair of files looked like when last read: modification times and
/// sizes, following symlinks (certbot's `live/` links point into `archive/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint(Vec<(Option<SystemTime>, u64)>);

impl Fingerprint {
    /// The current fingerprint of `paths`; a missing file counts as a state too.
    pub fn of(paths: &[&Path]) -> Fingerprint {
        Fingerprint(
            paths
                .iter()
                .map(|p| match std::fs::metadata(p) {
                    Ok(m) => (m.modified().ok(), m.len()),
                    Err(_) => (None, 0),
                })
                .collect(),
        )
    }
}

/// The DNS names a certificate's subjectAltName lists (its names, for ACME
/// renewals and `doctor`).
pub fn dns_names(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    cert.subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(name) => Some(name.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The DNS names of the first certificate in the PEM file at `path` (None
/// when it cannot be read as one).
pub fn leaf_names(path: &Path) -> Option<Vec<String>> {
    let pem = std::fs::read(path).ok()?;
    let leaf = CertificateDer::pem_slice_iter(&pem).next()?.ok()?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    Some(dns_names(&parsed))
}

/// Whether a certificate naming `names` is good for the host `host` (a
/// name, or `*.example.com` for a wildcard site): the same name in any
/// case, or a certificate's wildcard standing for one label of it.
pub fn names_cover(names: &[String], host: &str) -> bool {
    names.iter().any(|name| {
        if name.eq_ignore_ascii_case(host) {
            return true;
        }
        let (Some(suffix), Some((_, rest))) = (name.strip_prefix("*."), host.split_once('.'))
        else {
            return false;
        };
        !host.starts_with('*') && rest.eq_ignore_ascii_case(suffix)
    })
}

#[cfg(test)]
mod tests {
    use super::names_cover;

    #[test]
    fn a_certificate_covers_its_names_and_one_label_under_a_wildcard() {
        let names = vec![
            "jelly.example.com".to_string(),
            "*.home.example.com".to_string(),
        ];
        assert!(names_cover(&names, "JELLY.example.com"));
        assert!(names_cover(&names, "tv.home.example.com"));
        assert!(names_cover(&names, "*.home.example.com"));
        assert!(!names_cover(&names, "a.tv.home.example.com"));
        assert!(!names_cover(&names, "home.example.com"));
        assert!(!names_cover(&names, "*.example.com"));
        assert!(!names_cover(&names, "other.example.com"));
    }
}
