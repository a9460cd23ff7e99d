//! The local certificate authority behind `tls = "internal"`: a CA created once
//! under `state_dir/ca/`, and short-lived leaf certificates issued from it in
//! memory for each site.
//!
//! Owns CA files and leaf issuance; owns nothing about serving them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

use crate::atomic_file::write_atomic;
use crate::config::HostPattern;

/// How long a leaf issued by the local CA is valid.
pub const LEAF_LIFETIME: Duration = Duration::from_secs(30 * 86_400);

/// Why the local CA could not be opened or could not issue.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// Reading or writing a CA file failed.
    #[error("local CA file {}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A stored CA file is not a usable key or certificate.
    #[error("local CA file {} is damaged; move the ca folder away to make a new CA (browsers must then trust the new root)", path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: rcgen::Error,
    },
    /// rcgen could not produce a certificate or key.
    #[error("local CA: cannot issue a certificate")]
    Cert(#[from] rcgen::Error),
    /// rustls refused the issued pair.
    #[error("local CA: issued certificate unusable")]
    Rustls(#[from] rustls::Error),
}

/// The local CA: its signing key and certificate.
pub struct LocalCa {
    issuer: Issuer<'static, KeyPair>,
    cert_path: PathBuf,
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCa")
            .field("cert_path", &self.cert_path)
            .finish()
    }
}

impl LocalCa {
    /// Opens the CA under `state_dir/ca/`, creating it on first use. The key is
    /// written with mode 0600, atomically, before the certificate that names it.
    pub fn open_or_create(state_dir: &Path) -> Result<LocalCa, CaError> {
        let dir = state_dir.join("ca");
        let cert_path = dir.join("root.pem");
        let key_path = dir.join("root.key");
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CaError::Io { path, source }
        };
        if cert_path.exists() && key_path.exists() {
            let key_pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
            let cert_pem = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
            let damaged = |path: &Path| {
                let path = path.to_path_buf();
                move |source| CaError::Damaged { path, source }
            };
            let key = KeyPair::from_pem(&key_pem).map_err(damaged(&key_path))?;
            let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
                .map_err(|_| rcgen::Error::CouldNotParseCertificate)
                .map_err(damaged(&cert_path))?;
            let issuer = Issuer::from_ca_cert_der(&cert_der, key).map_err(damaged(&cert_path))?;
            return Ok(LocalCa { issuer, cert_path });
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params
            .distinguished_name
            .push(DnType::CommonName, "drawbridge local CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(3650);
        let cert = params.self_signed(&key)?;
        write_atomic(&key_path, key.serialize_pem().as_bytes(), 0o600).map_err(io(&key_path))?;
        write_atomic(&cert_path, cert.pem().as_bytes(), 0o644).map_err(io(&cert_path))?;
        Ok(LocalCa {
            issuer: Issuer::new(params, key),
            cert_path,
        })
    }

    /// The CA certificate's file, for the user to trust.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// Issues a leaf for `hosts`, valid from an hour ago for `LEAF_LIFETIME`.
    pub fn issue(&self, hosts: &[HostPattern]) -> Result<CertifiedKey, CaError> {
        let names: Vec<String> = hosts.iter().map(ToString::to_string).collect();
        let mut params = CertificateParams::new(names.clone())?;
        params
            .distinguished_name
            .push(DnType::CommonName, names[0].clone());
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + LEAF_LIFETIME;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        // The leaf alone: a client either trusts the root already or cannot
        // be helped by being sent it (RFC 8446 §4.4.2 lets the root be left out).
        let chain = vec![cert.der().clone()];
        Ok(CertifiedKey::from_der(chain, private, &super::provider())?)
    }
}

#[cfg(test)]
mod tests {
    use super::LocalCa;
    use crate::config::HostPattern;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_once_then_reused_with_private_key_mode() {
        let dir = tempfile::tempdir().unwrap();
        let first = LocalCa::open_or_create(dir.path()).unwrap();
        let key = dir.path().join("ca/root.key");
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let root = std::fs::read(dir.path().join("ca/root.pem")).unwrap();
        drop(first);
        let second = LocalCa::open_or_create(dir.path()).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("ca/root.pem")).unwrap(),
            root,
            "the CA is not re-created"
        );
        let leaf = second
            .issue(&[HostPattern::parse("localhost").unwrap()])
            .unwrap();
        assert_eq!(leaf.cert.len(), 1, "the leaf alone, not the root");
        use rustls::pki_types::pem::PemObject;
        let root = rustls::pki_types::CertificateDer::from_pem_slice(&root).unwrap();
        assert_ne!(leaf.cert[0], root);
    }
}
