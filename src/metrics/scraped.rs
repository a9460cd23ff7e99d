//! The series that mirror state kept elsewhere (the guard's events, QUIC
//! Retries, ACME orders, the cache's bytes, tunnels, handshake failures,
//! certificates): brought up to date when `/metrics` is scraped, not on the
//! request path.

use super::{AgentLabel, Metrics, OutcomeLabel, ReasonLabel, SiteLabel, TierLabel};

impl Metrics {
    /// Brings the guard's counters up to `totals` (reason, since the start).
    pub fn set_guard_events(&self, totals: &[(&'static str, u64)]) {
        for (reason, total) in totals {
            let counter = self.guard.get_or_create(&ReasonLabel { reason });
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }

    /// Brings the QUIC Retry counter up to `total`.
    pub fn set_quic_retries(&self, total: u64) {
        self.quic_retries
            .inc_by(total.saturating_sub(self.quic_retries.get()));
    }

    /// Brings the ACME order counters up to `issued` and `failed`.
    pub fn set_acme_orders(&self, issued: u64, failed: u64) {
        for (outcome, total) in [("issued", issued), ("failed", failed)] {
            let counter = self.acme_orders.get_or_create(&OutcomeLabel { outcome });
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }

    /// Sets the edge cache's bytes in memory and on disk.
    pub fn set_cache_bytes(&self, memory: u64, disk: u64) {
        for (tier, bytes) in [("memory", memory), ("disk", disk)] {
            self.cache_bytes
                .get_or_create(&TierLabel { tier })
                .set(bytes as i64);
        }
    }

    /// Sets the gauge of each agent's connections (agents gone drop to 0).
    pub fn set_tunnels(&self, connected: &[(String, usize)]) {
        self.tunnels.clear();
        for (agent, count) in connected {
            self.tunnels
                .get_or_create(&AgentLabel {
                    agent: agent.clone(),
                })
                .set(*count as i64);
        }
    }

    /// Brings the handshake-failure counters up to `totals` (not TLS,
    /// refused, timed out, since the start).
    pub fn set_handshake_failures(&self, totals: [u64; 3]) {
        for (reason, total) in ["not_tls", "refused", "timed_out"].into_iter().zip(totals) {
            let counter = self
                .handshake_failures
                .get_or_create(&ReasonLabel { reason });
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }

    /// Sets each site's certificate expiry (Unix seconds).
    pub fn set_certificate_expiries(&self, expiries: &[(String, u64)]) {
        self.certificate_expiry.clear();
        for (site, at) in expiries {
            self.certificate_expiry
                .get_or_create(&SiteLabel { site: site.clone() })
                .set(*at as i64);
        }
    }
}
