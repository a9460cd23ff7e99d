//! TLS termination: the rustls server config (TLS 1.2 and 1.3, Mozilla
//! intermediate suites, ALPN h2 and http/1.1) and the certificate store that
//! picks a certificate by SNI.
//!
//! A ClientHello whose SNI names no site, or that has no SNI, gets no
//! certificate: the resolver returns nothing and rustls aborts the handshake
//! with an alert, so a scanner never learns which names are served.
//!
//! Owns certificates in memory and their refresh (files changed on disk, local
//! CA leaves near expiry); owns no sockets.

pub mod challenges;
pub mod failures;
pub mod local_ca;
mod orders;
mod server_config;

pub use server_config::{provider, ServerConfigs};

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::{ArcSwap, ArcSwapOption};

use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;

use tokio::sync::Notify;

use crate::certfile::{self, CertError, Fingerprint};
use crate::config::{Config, HostPattern, TlsSource};
use challenges::Challenges;
use local_ca::{CaError, LocalCa, LEAF_LIFETIME};

/// Why certificates could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The local CA failed.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// A certificate file pair failed.
    #[error(transparent)]
    File(#[from] CertError),
    /// rustls refused the server configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// One site's certificate and where it came from.
struct SiteCert {
    hosts: Vec<HostPattern>,
    source: TlsSource,
    /// None while an ACME site's first certificate is being ordered.
    key: Option<Arc<CertifiedKey>>,
    fingerprint: Option<Fingerprint>,
    renew_after: Option<SystemTime>,
}

/// The certificates currently served, looked up by SNI.
#[derive(Default)]
struct Table {
    entries: Vec<SiteCert>,
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

impl Table {
    fn new(entries: Vec<SiteCert>) -> Table {
        let mut table = Table::default();
        for entry in &entries {
            let Some(key) = &entry.key else { continue };
            for host in &entry.hosts {
                let map = match host {
                    HostPattern::Exact(name) => (&mut table.exact, name),
                    HostPattern::Wildcard(suffix) => (&mut table.wildcard, suffix),
                };
                map.0.insert(map.1.clone(), key.clone());
            }
        }
        table.entries = entries;
        table
    }

    /// The names of the ACME site `sni` belongs to, when it has no
    /// certificate yet.
    fn pending(&self, sni: &str) -> Option<&[HostPattern]> {
        if self.lookup(sni).is_some() {
            return None;
        }
        self.entries
            .iter()
            .find(|e| e.key.is_none() && e.hosts.iter().any(|h| h.matches(sni)))
            .map(|e| e.hosts.as_slice())
    }

    fn lookup(&self, sni: &str) -> Option<Arc<CertifiedKey>> {
        if let Some(key) = self.exact.get(sni) {
            return Some(key.clone());
        }
        let (_, parent) = sni.split_once('.')?;
        self.wildcard.get(parent).cloned()
    }
}

/// Certificates by SNI, swapped whole when the config or a file changes.
pub struct TlsStore {
    table: ArcSwap<Table>,
    ca: ArcSwapOption<LocalCa>,
    state_dir: PathBuf,
    challenges: Arc<Challenges>,
    /// Woken whenever an ACME certificate is installed, or an order fails.
    installed: Notify,
    /// ACME sites (by their names) whose last order failed, while no new
    /// order runs: a handshake for them is refused at once, not kept waiting.
    failed: std::sync::Mutex<Vec<Vec<HostPattern>>>,
    /// ACME orders that ended with a certificate, and that failed.
    orders: [std::sync::atomic::AtomicU64; 2],
    /// Each ACME site's last failed order, while no order since succeeded:
    /// its first name, when (Unix seconds), and why.
    last_errors: std::sync::Mutex<Vec<(String, u64, String)>>,
}

/// How long a handshake for a site whose first certificate is being ordered waits.
pub const FIRST_CERTIFICATE_WAIT: Duration = Duration::from_secs(10);

impl fmt::Debug for TlsStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsStore")
            .field("state_dir", &self.state_dir)
            .finish()
    }
}

impl TlsStore {
    /// Prepares every site's certificate; creates the local CA when a site uses it.
    pub fn new(config: &Config, challenges: Arc<Challenges>) -> Result<Arc<TlsStore>, TlsError> {
        let store = TlsStore {
            table: ArcSwap::from_pointee(Table::default()),
            ca: ArcSwapOption::empty(),
            state_dir: config.server.state_dir.clone(),
            challenges,
            installed: Notify::new(),
            failed: std::sync::Mutex::default(),
            last_errors: std::sync::Mutex::default(),
            orders: Default::default(),
        };
        store.install(config)?;
        Ok(Arc::new(store))
    }

    /// The local CA, opened (or created) on first use.
    fn ca(&self) -> Result<Arc<LocalCa>, TlsError> {
        if let Some(ca) = self.ca.load_full() {
            return Ok(ca);
        }
        let ca = Arc::new(LocalCa::open_or_create(&self.state_dir)?);
        self.ca.store(Some(ca.clone()));
        Ok(ca)
    }

    /// The local CA certificate's path, when the local CA is in use.
    pub fn ca_cert_path(&self) -> Option<PathBuf> {
        self.ca
            .load()
            .as_ref()
            .map(|ca| ca.cert_path().to_path_buf())
    }

    /// Replaces the served certificates with those `config` names. Certificates
    /// whose source did not change are kept as they are (no needless re-issue).
    /// On error nothing changes.
    pub fn install(&self, config: &Config) -> Result<(), TlsError> {
        let current = self.table.load();
        let mut entries = Vec::new();
        for site in &config.sites {
            let kept = current
                .entries
                .iter()
                .find(|e| e.hosts == site.hosts && e.source == site.tls);
            let entry = match kept {
                // An ACME site still waiting keeps waiting for its task's order.
                Some(e) => SiteCert {
                    hosts: e.hosts.clone(),
                    source: e.source.clone(),
                    key: e.key.clone(),
                    fingerprint: e.fingerprint.clone(),
                    renew_after: e.renew_after,
                },
                None => self.fresh_entry(&site.hosts, &site.tls)?,
            };
            entries.push(entry);
        }
        self.table.store(Arc::new(Table::new(entries)));
        Ok(())
    }

    fn fresh_entry(&self, hosts: &[HostPattern], source: &TlsSource) -> Result<SiteCert, TlsError> {
        Ok(match source {
            TlsSource::Internal => {
                let ca = self.ca()?;
                SiteCert {
                    hosts: hosts.to_vec(),
                    source: source.clone(),
                    key: Some(Arc::new(ca.issue(hosts)?)),
                    fingerprint: None,
                    renew_after: Some(SystemTime::now() + LEAF_LIFETIME * 2 / 3),
                }
            }
            TlsSource::Files { cert, key } => {
                let fingerprint = Fingerprint::of(&[cert, key]);
                SiteCert {
                    hosts: hosts.to_vec(),
                    source: source.clone(),
                    key: Some(Arc::new(certfile::load(cert, key)?)),
                    fingerprint: Some(fingerprint),
                    renew_after: None,
                }
            }
            TlsSource::Acme => {
                // The ACME task installs what is stored as it starts, or
                // what it orders; handshakes wait for it meanwhile.
                SiteCert {
                    hosts: hosts.to_vec(),
                    source: source.clone(),
                    key: None,
                    fingerprint: None,
                    renew_after: None,
                }
            }
        })
    }

    /// Installs a new ACME certificate for the site named by `hosts`; the next
    /// handshakes get it, open connections keep theirs.
    pub fn install_acme(&self, hosts: &[HostPattern], key: CertifiedKey) {
        let key = Arc::new(key);
        let current = self.table.load();
        let entries = current
            .entries
            .iter()
            .map(|e| SiteCert {
                hosts: e.hosts.clone(),
                source: e.source.clone(),
                key: if e.hosts == hosts && e.source == TlsSource::Acme {
                    Some(key.clone())
                } else {
                    e.key.clone()
                },
                fingerprint: e.fingerprint.clone(),
                renew_after: e.renew_after,
            })
            .collect();
        self.table.store(Arc::new(Table::new(entries)));
        self.installed.notify_waiters();
    }

    /// Waits up to `max` while `sni`'s first ACME certificate is being ordered.
    pub async fn wait_for_first(&self, sni: &str, max: Duration) {
        let deadline = tokio::time::Instant::now() + max;
        loop {
            let installed = self.installed.notified();
            if !self.is_pending(sni) {
                return;
            }
            if tokio::time::timeout_at(deadline, installed).await.is_err() {
                return;
            }
        }
    }

    /// Whether `sni` names an ACME site without a certificate yet whose
    /// order is running (or has not been tried).
    pub fn is_pending(&self, sni: &str) -> bool {
        let table = self.table.load();
        let Some(hosts) = table.pending(sni) else {
            return false;
        };
        let failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        !failed.iter().any(|f| f == hosts)
    }

    /// Re-reads certificate files that changed on disk and re-issues local CA
    /// leaves past two thirds of their life. A file that fails to load is logged
    /// and the previous certificate keeps serving.
    pub fn refresh(&self) {
        let current = self.table.load();
        let mut changed = false;
        let mut entries = Vec::new();
        for e in &current.entries {
            let stale = match &e.source {
                TlsSource::Files { cert, key } => {
                    e.fingerprint.as_ref() != Some(&Fingerprint::of(&[cert, key]))
                }
                TlsSource::Internal => e.renew_after.is_some_and(|t| SystemTime::now() >= t),
                // The ACME task renews and installs these itself.
                TlsSource::Acme => false,
            };
            let fresh = if stale {
                match self.fresh_entry(&e.hosts, &e.source) {
                    Ok(fresh) => {
                        tracing::info!(site = %e.hosts[0], "certificate reloaded");
                        changed = true;
                        Some(fresh)
                    }
                    Err(error) => {
                        tracing::warn!(site = %e.hosts[0], %error, "certificate changed on disk but cannot be used; still serving the previous one");
                        None
                    }
                }
            } else {
                None
            };
            entries.push(fresh.unwrap_or_else(|| SiteCert {
                hosts: e.hosts.clone(),
                source: e.source.clone(),
                key: e.key.clone(),
                // Remember a bad file's state so it is not retried every tick.
                fingerprint: match &e.source {
                    TlsSource::Files { cert, key } if stale => Some(Fingerprint::of(&[cert, key])),
                    _ => e.fingerprint.clone(),
                },
                renew_after: e.renew_after,
            }));
        }
        if changed
            || entries
                .iter()
                .zip(&current.entries)
                .any(|(a, b)| a.fingerprint != b.fingerprint)
        {
            self.table.store(Arc::new(Table::new(entries)));
        }
    }

    /// Checks for changed certificates every `interval` until `shutdown`.
    pub async fn run(self: Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticker.tick() => {
                    let store = self.clone();
                    // File reads and signing are blocking work.
                    let _ = tokio::task::spawn_blocking(move || store.refresh()).await;
                }
            }
        }
    }
}
