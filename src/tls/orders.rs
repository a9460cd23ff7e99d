//! The ACME orders a `TlsStore` keeps account of: which sites' orders run
//! or failed (a failed one's handshakes are refused at once), their counts
//! for the metrics, each site's last error for `status` and the dashboard,
//! and the certificates' expiries.

use std::sync::PoisonError;

use crate::config::HostPattern;

use super::TlsStore;

impl TlsStore {
    /// An order for the site named by `hosts` starts: its handshakes wait
    /// for it again.
    pub fn order_started(&self, hosts: &[HostPattern]) {
        let mut failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        failed.retain(|f| f != hosts);
    }

    /// The order for the site named by `hosts` failed: until the next one
    /// starts, its handshakes are refused at once (and those waiting are told).
    pub fn order_failed(&self, hosts: &[HostPattern]) {
        self.failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(hosts.to_vec());
        self.installed.notify_waiters();
    }

    /// The order for the site named `name` ended: with `error`, or (None)
    /// with a certificate, which clears the last error.
    pub fn order_ended(&self, name: &str, error: Option<&str>) {
        let mut errors = self
            .last_errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        errors.retain(|(site, _, _)| site != name);
        if let Some(error) = error {
            errors.push((
                name.to_string(),
                crate::timestamp::unix_now(),
                error.to_string(),
            ));
        }
    }

    /// Each ACME site's last failed order since its last certificate: its
    /// first name, when, why.
    pub fn last_errors(&self) -> Vec<(String, u64, String)> {
        self.last_errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Counts one finished ACME order.
    pub fn count_order(&self, issued: bool) {
        let slot = if issued { 0 } else { 1 };
        self.orders[slot].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// ACME orders so far: (issued, failed).
    pub fn orders(&self) -> (u64, u64) {
        let [issued, failed] = &self.orders;
        (
            issued.load(std::sync::atomic::Ordering::Relaxed),
            failed.load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Each site's certificate expiry (its first name, Unix seconds); sites
    /// still waiting for their first certificate are left out.
    pub fn expiries(&self) -> Vec<(String, u64)> {
        let table = self.table.load();
        table
            .entries
            .iter()
            .filter_map(|entry| {
                let leaf = entry.key.as_ref()?.cert.first()?;
                let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
                let name = entry.hosts.first()?.to_string();
                Some((name, cert.validity().not_after.timestamp().max(0) as u64))
            })
            .collect()
    }
}
