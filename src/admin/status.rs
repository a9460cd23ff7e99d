//! What `drawbridge status` and the dashboard read of the running process
//! in one answer, and the history's sampler (`metrics::history`).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::connection::Shared;
use crate::guard::ban::StoredBan;
use crate::tunnel::hub::AgentStatus;

/// What `drawbridge status` shows of the running process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Client connections open.
    pub connections: u64,
    /// Bans in force.
    pub bans: Vec<StoredBan>,
    /// The edge cache's answers since the start.
    pub cache: CacheCounts,
    /// Each site's certificate and when it expires.
    pub certificates: Vec<CertificateStatus>,
    /// Enrolled tunnel agents and their connections.
    pub tunnels: Vec<AgentStatus>,
    /// Each site's upstream and what is on its way now.
    #[serde(default)]
    pub sites: Vec<SiteStatus>,
    /// The last hour and day, for the dashboard's charts.
    #[serde(default)]
    pub history: Option<crate::metrics::history::Charts>,
    /// The films and songs on their way now.
    #[serde(default)]
    pub streams: Vec<crate::metrics::streams::StreamStatus>,
    /// The home routers that reach this edge by their own WireGuard.
    #[serde(default)]
    pub wireguard: Vec<crate::wireguard::PeerStatus>,
}

/// The edge cache's answers since the start, in `Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheCounts {
    /// Answered from the cache, fresh.
    pub hits: u64,
    /// Went home and were stored (or could have been).
    pub misses: u64,
    /// Answered from the cache, stale, while home did not answer.
    pub stale: u64,
    /// Went home past the cache (credentials on a private route, ranges).
    pub bypass: u64,
}

/// One site's certificate in `Status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateStatus {
    /// The site's first name.
    pub site: String,
    /// When the certificate expires, Unix seconds (0: none issued yet).
    pub expires: u64,
    /// The last renewal that failed since the certificate was issued: when
    /// (Unix seconds) and why.
    #[serde(default)]
    pub last_error: Option<(u64, String)>,
}

/// One site in `Status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteStatus {
    /// Its first name.
    pub name: String,
    /// Where its requests go.
    pub upstream: String,
    /// Whether its last request home got an answer (`None`: none yet).
    pub upstream_up: Option<bool>,
    /// Since when home has been up or down, Unix seconds (0: not asked yet).
    #[serde(default)]
    pub up_since: u64,
    /// How long home's last answer's head took, milliseconds.
    #[serde(default)]
    pub answer_ms: u64,
    /// Responses being sent now (films being watched among them).
    pub in_flight: i64,
    /// WebSockets open now.
    pub websockets: i64,
    /// Requests answered since the start.
    pub requests: u64,
    /// The side-door gate's mode (`enforce`, `report`, `off`).
    #[serde(default)]
    pub gate: String,
    /// Requests the gate refused since the start (in `report` mode: would
    /// have refused).
    #[serde(default)]
    pub gate_refused: u64,
}

/// The process's status at `now`.
pub(super) fn at(process: &Shared, now: Instant) -> Status {
    let (guard, cache, hub) = (
        process.guard.clone(),
        process.gateway.cache(),
        &process.edge.hub,
    );
    Status {
        connections: guard.open_connections() as u64,
        bans: guard.bans.list(now),
        cache: {
            let [hits, misses, stale, bypass] = cache.counts();
            CacheCounts {
                hits,
                misses,
                stale,
                bypass,
            }
        },
        certificates: {
            let errors = process.certificates.last_errors();
            let mut certificates: Vec<CertificateStatus> = process
                .certificates
                .expiries()
                .into_iter()
                .map(|(site, expires)| CertificateStatus {
                    last_error: errors
                        .iter()
                        .find(|(name, _, _)| *name == site)
                        .map(|(_, when, why)| (*when, why.clone())),
                    site,
                    expires,
                })
                .collect();
            // A site whose first order failed: no certificate yet (0).
            for (site, when, why) in errors {
                if !certificates.iter().any(|c| c.site == site) {
                    certificates.push(CertificateStatus {
                        site,
                        expires: 0,
                        last_error: Some((when, why)),
                    });
                }
            }
            certificates
        },
        tunnels: hub.status(),
        wireguard: process.wireguard.status(),
        sites: process
            .gateway
            .routes()
            .sites()
            .iter()
            .map(|site| SiteStatus {
                name: site.name.clone(),
                upstream: site.upstream.to_string(),
                upstream_up: site.metrics.upstream_is_up(),
                up_since: site.metrics.health.up_since(),
                answer_ms: site.metrics.health.answer_ms(),
                in_flight: site.metrics.in_flight.get(),
                websockets: site.metrics.websockets.get(),
                requests: site.metrics.requests(),
                gate: site.gate.mode().word().to_string(),
                gate_refused: site.gate.refused(),
            })
            .collect(),
        history: Some(
            process
                .metrics
                .history
                .charts(crate::timestamp::unix_now(), &totals(process)),
        ),
        streams: process.metrics.streams.list(),
    }
}

/// What the counters say now, for the history (`metrics::history`): each
/// site's requests and bytes, the cache's answers, the refusals by kind —
/// the guard's, and the side-door gate's of every site.
pub fn totals(process: &Shared) -> crate::metrics::history::Totals {
    let routes = process.gateway.routes();
    let sites = routes.sites();
    let gate: u64 = sites.iter().map(|site| site.gate.refused()).sum();
    let events = process.guard.events.totals();
    let mut refusals: Vec<(&'static str, u64)> = events
        .iter()
        .filter(|(kind, _)| *kind != "failed_login" && *kind != "banned_now")
        .copied()
        .collect();
    refusals.push(("gate", gate));
    crate::metrics::history::Totals {
        sites: sites
            .iter()
            .map(|site| {
                let m = &site.metrics;
                (
                    site.name.clone(),
                    [m.requests(), m.sent.get(), m.received.get()],
                )
            })
            .collect(),
        cache: process.gateway.cache().counts(),
        refusals,
    }
}

/// Samples the history once a minute until `stop`.
pub async fn keep_history(process: Arc<Shared>, stop: tokio_util::sync::CancellationToken) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = stop.cancelled() => return,
        }
        process
            .metrics
            .history
            .sample(crate::timestamp::unix_now(), &totals(&process));
    }
}
