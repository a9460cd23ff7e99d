//! What ACME leaves on disk under `state_dir`, in a layout a person can find:
//! `acme/<directory>/account.json` (the account key, mode 0600) and
//! `certificates/<site>/{cert.pem,key.pem}` (key mode 0600), and beside
//! them `last-error.txt` while the last order for the site failed (what
//! `drawbridge doctor` reports).
//!
//! A certificate and its key are two files, so they cannot be replaced by one
//! rename. Both are written beside the old ones first (`.cert.pem.new`,
//! `.key.pem.new`, fsynced), then renamed key-then-certificate. A crash before
//! the renames leaves the old pair; a crash between them is rolled forward at
//! the next load, since the new certificate is already complete on disk.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rustls::sign::CertifiedKey;

use crate::atomic_file::{rename_synced, write_atomic, write_synced};
use crate::certfile;
use crate::config::HostPattern;

/// A certificate read back from disk.
#[derive(Debug)]
pub struct Stored {
    /// The pair, ready to serve.
    pub key: CertifiedKey,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// The DNS names it covers.
    pub names: Vec<String>,
    /// Its identity for ACME Renewal Information (authority key id and serial).
    pub ari_id: Option<instant_acme::CertificateIdentifier<'static>>,
}

impl Stored {
    /// Whether it names every host of the site.
    pub fn covers(&self, hosts: &[HostPattern]) -> bool {
        hosts.iter().all(|h| {
            self.names
                .iter()
                .any(|n| n.eq_ignore_ascii_case(&h.to_string()))
        })
    }
}

/// The folder of a site's certificate (`*` becomes `_wildcard`).
pub fn site_dir(state_dir: &Path, hosts: &[HostPattern]) -> PathBuf {
    let name = hosts[0].to_string().replace('*', "_wildcard");
    state_dir.join("certificates").join(name)
}

/// The folder of the account for a directory URL.
pub fn account_path(state_dir: &Path, directory: &str) -> PathBuf {
    let slug: String = directory
        .trim_start_matches("https://")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    state_dir.join("acme").join(slug).join("account.json")
}

/// Writes the account credentials (mode 0600, atomically).
pub fn save_account(path: &Path, json: &[u8]) -> io::Result<()> {
    write_atomic(path, json, 0o600)
}

/// The file that holds a site's last order failure, while it stands.
pub fn last_error_path(dir: &Path) -> PathBuf {
    dir.join("last-error.txt")
}

/// Notes a failed order (`when`, RFC 3339, and the CA's words), or clears
/// the note after a success (`None`).
pub fn note_order(dir: &Path, failure: Option<(&str, &str)>) -> io::Result<()> {
    let path = last_error_path(dir);
    match failure {
        Some((when, message)) => {
            crate::owner::create_dir_all(dir)?;
            write_atomic(&path, format!("{when} {message}\n").as_bytes(), 0o644)
        }
        None => match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
    }
}

/// Writes a new certificate chain and key for a site.
pub fn save(dir: &Path, chain_pem: &str, key_pem: &str) -> io::Result<()> {
    crate::owner::create_dir_all(dir)?;
    let (cert_new, key_new) = (dir.join(".cert.pem.new"), dir.join(".key.pem.new"));
    write_synced(&key_new, key_pem.as_bytes(), 0o600)?;
    write_synced(&cert_new, chain_pem.as_bytes(), 0o644)?;
    rename_synced(&key_new, &dir.join("key.pem"))?;
    rename_synced(&cert_new, &dir.join("cert.pem"))
}

/// Reads a site's certificate, finishing an interrupted `save` first.
/// `Ok(None)` when there is none (or none usable).
pub fn load(dir: &Path) -> io::Result<Option<Stored>> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let (cert_new, key_new) = (dir.join(".cert.pem.new"), dir.join(".key.pem.new"));
    if let Ok(pair) = certfile::load(&cert, &key) {
        // The live pair is good: whatever is beside it is an unfinished write.
        let _ = std::fs::remove_file(&cert_new);
        let _ = std::fs::remove_file(&key_new);
        return Ok(describe(pair));
    }
    // Crashed between the renames: the key is new, the certificate is waiting.
    if certfile::load(&cert_new, &key).is_ok() {
        rename_synced(&cert_new, &cert)?;
        let _ = std::fs::remove_file(&key_new);
        return Ok(certfile::load(&cert, &key).ok().and_then(describe));
    }
    Ok(None)
}

fn describe(key: CertifiedKey) -> Option<Stored> {
    let leaf = key.cert.first()?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let time = |t: x509_parser::time::ASN1Time| {
        let secs = t.timestamp();
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64)
    };
    let validity = parsed.validity();
    let names = crate::certfile::dns_names(&parsed);
    let ari_id = authority_key_id(&parsed).map(|aki| {
        let serial = parsed.tbs_certificate.raw_serial();
        instant_acme::CertificateIdentifier::new(aki.into(), serial.into()).into_owned()
    });
    Some(Stored {
        not_before: time(validity.not_before),
        not_after: time(validity.not_after),
        names,
        ari_id,
        key,
    })
}

fn authority_key_id<'a>(
    cert: &'a x509_parser::certificate::X509Certificate<'_>,
) -> Option<&'a [u8]> {
    cert.extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|k| k.0)
            }
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::{load, save, site_dir};
    use crate::config::HostPattern;
    use std::os::unix::fs::PermissionsExt;

    fn pair(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn saved_pair_loads_with_its_names_and_a_private_key_mode() {
        let dir = tempfile::tempdir().unwrap();
        let site = site_dir(dir.path(), &[HostPattern::parse("*.example.com").unwrap()]);
        assert!(site.ends_with("certificates/_wildcard.example.com"));
        let (cert, key) = pair("*.example.com");
        save(&site, &cert, &key).unwrap();
        let stored = load(&site).unwrap().unwrap();
        assert!(stored.covers(&[HostPattern::parse("*.example.com").unwrap()]));
        assert!(!stored.covers(&[HostPattern::parse("other.example.com").unwrap()]));
        assert!(stored.not_after > stored.not_before);
        let mode = std::fs::metadata(site.join("key.pem"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_ca_signed_certificate_has_its_renewal_information_identity() {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let mut leaf = rcgen::CertificateParams::new(vec!["a.example.com".to_string()]).unwrap();
        leaf.use_authority_key_identifier_extension = true;
        leaf.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x0c, 0xaf, 0xe0]));
        let cert = leaf.signed_by(&key, &issuer).unwrap();
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), &cert.pem(), &key.serialize_pem()).unwrap();
        let id = load(dir.path())
            .unwrap()
            .unwrap()
            .ari_id
            .expect("authority key id and serial");
        assert_eq!(id.serial, "DK_g", "base64url of the serial's DER bytes");
        assert!(!id.authority_key_identifier.is_empty());
        let (self_cert, self_key) = pair("b.example.com");
        save(dir.path(), &self_cert, &self_key).unwrap();
        assert!(
            load(dir.path()).unwrap().unwrap().ari_id.is_none(),
            "no authority key id: no ARI"
        );
    }

    #[test]
    fn a_crash_before_the_renames_keeps_the_old_pair() {
        let dir = tempfile::tempdir().unwrap();
        let (old_cert, old_key) = pair("a.example.com");
        save(dir.path(), &old_cert, &old_key).unwrap();
        let before = load(dir.path()).unwrap().unwrap().key.cert[0].clone();
        // A writer killed after writing the new files, before renaming them.
        let (new_cert, new_key) = pair("a.example.com");
        std::fs::write(
            dir.path().join(".key.pem.new"),
            &new_key[..new_key.len() / 2],
        )
        .unwrap();
        std::fs::write(dir.path().join(".cert.pem.new"), &new_cert).unwrap();
        let after = load(dir.path()).unwrap().unwrap();
        assert_eq!(
            after.key.cert[0], before,
            "the old certificate is still served"
        );
        assert!(
            !dir.path().join(".cert.pem.new").exists(),
            "leftovers cleaned"
        );
    }

    #[test]
    fn a_crash_between_the_renames_rolls_forward() {
        let dir = tempfile::tempdir().unwrap();
        let (old_cert, old_key) = pair("a.example.com");
        save(dir.path(), &old_cert, &old_key).unwrap();
        let (new_cert, new_key) = pair("a.example.com");
        // Key renamed into place; certificate still beside it.
        std::fs::write(dir.path().join("key.pem"), &new_key).unwrap();
        std::fs::write(dir.path().join(".cert.pem.new"), &new_cert).unwrap();
        let stored = load(dir.path())
            .unwrap()
            .expect("the new pair is completed");
        use rustls::pki_types::pem::PemObject;
        let new_der =
            rustls::pki_types::CertificateDer::from_pem_slice(new_cert.as_bytes()).unwrap();
        assert_eq!(stored.key.cert[0], new_der);
    }
}
