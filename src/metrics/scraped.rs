//! The series that mirror state kept elsewhere (the guard's events, QUIC
//! Retries, ACME orders, the cache's bytes, tunnels, handshake failures,
//! certificates): brought up to date when `/metrics` is scraped, not on the
//! request path.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{add, Metrics, OutcomeLabel, ReasonLabel, SiteLabel, TierLabel};
use crate::wireguard::PeerStatus;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct AgentLabel {
    agent: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabel {
    peer: String,
}

/// The WireGuard series.
#[derive(Debug)]
pub(super) struct WireguardFamilies {
    up: Family<PeerLabel, Gauge>,
    handshake_age: Family<PeerLabel, Gauge>,
    received: Family<PeerLabel, Gauge>,
    sent: Family<PeerLabel, Gauge>,
    refused: Counter,
}

impl WireguardFamilies {
    pub(super) fn register(r: &mut Registry) -> WireguardFamilies {
        WireguardFamilies {
            up: add(r, "wireguard_peer_up", "WireGuard home peers heard from within the allowed silence (1) or not (0)", Family::default()),
            handshake_age: add(r, "wireguard_handshake_age_seconds", "Seconds since each WireGuard home peer's last handshake", Family::default()),
            received: add(r, "wireguard_received_bytes", "Bytes received from each WireGuard home peer (since its key was set)", Family::default()),
            sent: add(r, "wireguard_sent_bytes", "Bytes sent to each WireGuard home peer (since its key was set)", Family::default()),
            refused: add(r, "wireguard_fence_refused_packets", "Packets the WireGuard fence refused (not to or from a site's named service, or a connection home tried to open)", Counter::default()),
        }
    }
}

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

    /// Sets the WireGuard peers' series (peers removed disappear) and the
    /// fence's refusals (a running total).
    pub fn set_wireguard(&self, peers: &[PeerStatus], refused: u64) {
        let w = &self.wireguard;
        for family in [&w.up, &w.handshake_age, &w.received, &w.sent] {
            family.clear();
        }
        for peer in peers {
            let label = PeerLabel {
                peer: peer.name.clone(),
            };
            w.up.get_or_create(&label).set(i64::from(peer.up));
            if let Some(age) = peer.handshake_age {
                w.handshake_age.get_or_create(&label).set(age as i64);
            }
            w.received.get_or_create(&label).set(peer.received as i64);
            w.sent.get_or_create(&label).set(peer.sent as i64);
        }
        w.refused.inc_by(refused.saturating_sub(w.refused.get()));
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
