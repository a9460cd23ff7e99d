//! A tunnel end's identity: an ECDSA P-256 key with a self-signed
//! certificate, known to the other end only by its pin — `sha256/` and the
//! base64 SHA-256 of the certificate's SubjectPublicKeyInfo, as HPKP and
//! curl's `--pinnedpubkey` spell it. No CA, no names, no expiry that matters:
//! the pin is the whole trust, so the tunnel works before ACME has a
//! certificate and does not depend on the public CA system.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use rcgen::{CertificateParams, KeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};

use crate::atomic_file::write_new;

/// A key and its self-signed certificate.
#[derive(Debug)]
pub struct Identity {
    /// The certificate (DER).
    pub cert: CertificateDer<'static>,
    /// The private key (PKCS#8 DER).
    pub key: PrivatePkcs8KeyDer<'static>,
}

/// Why an identity could not be had.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading or writing the key file failed.
    #[error("tunnel key {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The stored file is not a key and certificate drawbridge wrote.
    #[error("tunnel key {} is damaged; remove it to make a new one (agents must then enroll again)", path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
    },
    /// rcgen could not make the key or certificate.
    #[error("cannot make a tunnel key: {0}")]
    Generate(#[from] rcgen::Error),
}

impl Identity {
    /// The identity stored at `path` (key and certificate in one PEM file,
    /// mode 0600), made and stored first when there is none.
    pub fn load_or_create(path: &Path) -> Result<Identity, IdentityError> {
        match std::fs::read(path) {
            Ok(pem) => Self::from_pem(&pem).ok_or_else(|| IdentityError::Damaged {
                path: path.to_path_buf(),
            }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let key = KeyPair::generate()?;
                let cert = CertificateParams::new(vec!["drawbridge-tunnel".to_string()])?
                    .self_signed(&key)?;
                let pem = format!("{}{}", key.serialize_pem(), cert.pem());
                let io = |source| IdentityError::Io {
                    path: path.to_path_buf(),
                    source,
                };
                if let Some(dir) = path.parent() {
                    crate::owner::create_dir_all(dir).map_err(io)?;
                }
                // Never over another's: `run` and `tunnel add` may both
                // make the edge's key on first use, and a token printed
                // with one pin while the file keeps another enrols no one.
                let pem = if write_new(path, pem.as_bytes(), 0o600).map_err(io)? {
                    pem.into_bytes()
                } else {
                    std::fs::read(path).map_err(io)?
                };
                Self::from_pem(&pem).ok_or_else(|| IdentityError::Damaged {
                    path: path.to_path_buf(),
                })
            }
            Err(source) => Err(IdentityError::Io {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    fn from_pem(pem: &[u8]) -> Option<Identity> {
        let cert = CertificateDer::pem_slice_iter(pem).next()?.ok()?;
        let key = PrivatePkcs8KeyDer::pem_slice_iter(pem).next()?.ok()?;
        Some(Identity { cert, key })
    }

    /// This identity's pin.
    pub fn pin(&self) -> String {
        pin_of(&self.cert).unwrap_or_default()
    }

    /// An ECDSA P-256 signature (ASN.1) of `message` with this key; empty
    /// if the key cannot sign (a damaged file is refused at load).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let rng = ring::rand::SystemRandom::new();
        ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            self.key.secret_pkcs8_der(),
            &rng,
        )
        .ok()
        .and_then(|key| key.sign(&rng, message).ok())
        .map(|signature| signature.as_ref().to_vec())
        .unwrap_or_default()
    }
}

/// The pin of a certificate's public key: `sha256/<base64>`; None when the
/// certificate cannot be read.
pub fn pin_of(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let spki = parsed.tbs_certificate.subject_pki.raw;
    let digest = ring::digest::digest(&ring::digest::SHA256, spki);
    Some(format!(
        "sha256/{}",
        base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
    ))
}

#[cfg(test)]
mod tests {
    use super::{pin_of, Identity};

    /// `drawbridge run` and `drawbridge tunnel add` making the edge's key
    /// at the same moment: one key, the one both go on with.
    #[test]
    fn two_makers_at_once_go_on_with_one_key() {
        for _ in 0..10 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("tunnel/edge.pem");
            let start = std::sync::Barrier::new(4);
            let pins: Vec<String> = std::thread::scope(|scope| {
                let makers: Vec<_> = (0..4)
                    .map(|_| {
                        scope.spawn(|| {
                            start.wait();
                            Identity::load_or_create(&path).unwrap().pin()
                        })
                    })
                    .collect();
                makers.into_iter().map(|m| m.join().unwrap()).collect()
            });
            let stored = Identity::load_or_create(&path).unwrap().pin();
            assert!(
                pins.iter().all(|pin| *pin == stored),
                "{pins:?} vs {stored}"
            );
        }
    }

    #[test]
    fn an_identity_is_made_once_and_keeps_its_pin() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t/edge.pem");
        let first = Identity::load_or_create(&path).unwrap();
        let again = Identity::load_or_create(&path).unwrap();
        assert_eq!(first.pin(), again.pin());
        assert!(first.pin().starts_with("sha256/") && first.pin().len() == 51);
        let other = Identity::load_or_create(&dir.path().join("other.pem")).unwrap();
        assert_ne!(first.pin(), other.pin());
        assert_eq!(pin_of(&first.cert), Some(first.pin()));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_damaged_file_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge.pem");
        std::fs::write(&path, "not a key").unwrap();
        assert!(Identity::load_or_create(&path).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"not a key");
    }
}
