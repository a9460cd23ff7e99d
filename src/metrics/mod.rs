//! Prometheus metrics (`prometheus-client`: the OpenMetrics reference crate
//! for Rust, a registry of typed metrics and no global state, so a test can
//! run many servers in one process). Labels are bounded by construction:
//! sites from the config and fixed classes — never paths, addresses or
//! user agents.
//!
//! Counters on the request path are made once per site and method/status
//! class when the routes are built (`SiteMetrics`), so a request costs an
//! array index and an atomic add, not a label lookup. Gauges that mirror
//! state kept elsewhere (connections, bans, cache, tunnels) are read when
//! scraped.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry, Unit};

mod gate;
pub mod history;
mod process;
mod scraped;
use scraped::AgentLabel;
mod site;
pub mod streams;

pub use gate::{GateCounts, CHECK_OUTCOMES};
use site::PerSite;
pub use site::{Health, Live, Sending, SiteMetrics};

/// The method classes requests are counted by.
const METHODS: [&str; 4] = ["get", "head", "post", "other"];
/// The status classes requests are counted by.
const STATUSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// Upper bounds of the response-time histogram's buckets, seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    site: String,
    method: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SiteLabel {
    site: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

/// The process's metrics.
#[derive(Debug)]
pub struct Metrics {
    /// What the counters said over the last hour and day, for the
    /// dashboard's charts.
    pub history: history::History,
    /// The streams being watched now.
    pub streams: std::sync::Arc<streams::Streams>,
    registry: Registry,
    gate: gate::GateFamilies,
    /// The unprefixed `process_*` series.
    process: Registry,
    requests: Family<RequestLabels, Counter>,
    response_time: Family<SiteLabel, Histogram, fn() -> Histogram>,
    /// Open client connections (the guard's count), set when scraped.
    pub connections: Gauge,
    /// Bans in force, set when scraped.
    pub bans: Gauge,
    /// Edge cache outcomes, set when scraped.
    pub cache: [Counter<u64, AtomicU64>; 4],
    /// Tunnel connections up per agent, set when scraped.
    tunnels: Family<AgentLabel, Gauge>,
    /// WireGuard home peers and the fence's refusals, set when scraped.
    wireguard: scraped::WireguardFamilies,
    handshake_failures: Family<ReasonLabel, Counter>,
    certificate_expiry: Family<SiteLabel, Gauge>,
    per_site: PerSite,
    guard: Family<ReasonLabel, Counter>,
    acme_orders: Family<OutcomeLabel, Counter>,
    /// Bytes the edge cache holds (memory, disk), set when scraped.
    cache_bytes: Family<TierLabel, Gauge>,
    quic_retries: Counter,
    /// Client connections past their handshake, by `Protocol` (in its order).
    protocols: [Gauge; 4],
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabel {
    protocol: &'static str,
}

/// What a client connection speaks once its handshake is done.
#[derive(Debug, Clone, Copy)]
pub enum Protocol {
    /// HTTP/1.1 without TLS (port 80: redirects and ACME's HTTP-01).
    Plain,
    /// HTTP/1.1 over TLS.
    Http1,
    /// HTTP/2 over TLS.
    Http2,
    /// HTTP/3 over QUIC.
    Http3,
}

impl Protocol {
    const ALL: [Protocol; 4] = [
        Protocol::Plain,
        Protocol::Http1,
        Protocol::Http2,
        Protocol::Http3,
    ];

    fn label(self) -> &'static str {
        match self {
            Protocol::Plain => "http1_plain",
            Protocol::Http1 => "http1",
            Protocol::Http2 => "http2",
            Protocol::Http3 => "http3",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TierLabel {
    tier: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Registers `metric` under `name` and gives it back to be kept.
fn add<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

/// As `add`, with a unit the name ends in.
fn add_in<M: Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    unit: Unit,
    metric: M,
) -> M {
    registry.register_with_unit(name, help, unit, metric.clone());
    metric
}

fn histograms<L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync>(
) -> Family<L, Histogram, fn() -> Histogram> {
    Family::new_with_constructor(|| Histogram::new(BUCKETS))
}

impl Metrics {
    /// The metrics, registered under `drawbridge_`: one line each, in the
    /// order `/metrics` shows them.
    pub fn new() -> Metrics {
        let r = &mut Registry::with_prefix("drawbridge");
        let requests = add(
            r,
            "requests",
            "Requests answered, by site, method class and status class",
            Family::default(),
        );
        let response_time = add_in(
            r,
            "response_time",
            "Time from a request's arrival to its answer's head, by site",
            Unit::Seconds,
            histograms(),
        );
        let connections = add(
            r,
            "connections_open",
            "Client connections open",
            Gauge::default(),
        );
        let bans = add(r, "bans_active", "Client keys banned now", Gauge::default());
        let cache = [
            add(
                r,
                "cache_hits",
                "Answers from the edge cache",
                Counter::default(),
            ),
            add(
                r,
                "cache_misses",
                "Cache-route requests that went home",
                Counter::default(),
            ),
            add(
                r,
                "cache_stale",
                "Stale answers served while home was unreachable",
                Counter::default(),
            ),
            add(
                r,
                "cache_bypass",
                "Cache-route requests that bypassed the cache",
                Counter::default(),
            ),
        ];
        let tunnels = add(
            r,
            "tunnel_connections",
            "Tunnel connections up, by agent",
            Family::default(),
        );
        let wireguard = scraped::WireguardFamilies::register(r);
        let handshake_failures = add(
            r,
            "tls_handshake_failures",
            "Failed TLS handshakes by reason (not_tls, refused, timed_out)",
            Family::default(),
        );
        let certificate_expiry = add(
            r,
            "certificate_expiry_timestamp_seconds",
            "When each site's certificate expires, Unix time",
            Family::default(),
        );
        let per_site = PerSite::register(r);
        let guard = add(r, "guard_events", "The guard's doings: connections refused (banned, full, full_for_client), login requests over the rate limit (login_rate_limited), failed logins (failed_login), bans issued (banned_now)", Family::default());
        let acme_orders = add(
            r,
            "acme_orders",
            "Certificate orders by outcome (issued, failed)",
            Family::default(),
        );
        let cache_bytes = add(
            r,
            "cache_stored_bytes",
            "Bytes the edge cache holds, by tier (memory, disk)",
            Family::default(),
        );
        let quic_retries = add(r, "quic_retries", "QUIC Retries sent: new sources asked to prove their address while many handshakes were under way", Counter::default());
        let by_protocol: Family<ProtocolLabel, Gauge> = add(r, "connections_serving", "Client connections past their handshake, by protocol (http1_plain, http1, http2, http3)", Family::default());
        let build_info: Family<VersionLabel, Gauge> = add(
            r,
            "build_info",
            "Always 1; the label says which drawbridge runs",
            Family::default(),
        );
        build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        let gate = gate::GateFamilies::register(r);
        let protocols = Protocol::ALL.map(|p| {
            by_protocol
                .get_or_create(&ProtocolLabel {
                    protocol: p.label(),
                })
                .clone()
        });
        let mut process = Registry::default();
        process.register_collector(Box::new(process::ProcessCollector));
        Metrics {
            history: history::History::new(),
            streams: std::sync::Arc::default(),
            registry: std::mem::take(r),
            gate,
            process,
            requests,
            response_time,
            connections,
            bans,
            cache,
            tunnels,
            wireguard,
            handshake_failures,
            certificate_expiry,
            per_site,
            guard,
            acme_orders,
            cache_bytes,
            quic_retries,
            protocols,
        }
    }

    /// Counts a client connection speaking `protocol` while the guard lives.
    pub fn serving(&self, protocol: Protocol) -> Live {
        Live::new(&self.protocols[protocol as usize])
    }

    /// The gate counters of site `name`, one refusal counter per route in
    /// `routes` (the same ones again after a reload).
    pub fn gate(&self, name: &str, routes: &[&'static str]) -> GateCounts {
        self.gate.for_site(name, routes)
    }

    /// The OpenMetrics text of every metric: drawbridge's, then the
    /// process's (`process_*`, unprefixed as every exporter writes them).
    pub fn encode(&self) -> String {
        use prometheus_client::encoding::text;
        let mut text = String::new();
        // Writing to a String does not fail.
        let _ = text::encode_registry(&mut text, &self.registry);
        let _ = text::encode_registry(&mut text, &self.process);
        let _ = text::encode_eof(&mut text);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::Metrics;
    use http::{Method, StatusCode};
    use std::time::Duration;

    #[test]
    fn requests_are_counted_by_bounded_labels() {
        let metrics = Metrics::new();
        let site = metrics.site("jelly.test");
        site.answered(&Method::GET, StatusCode::OK, Duration::from_millis(3));
        site.answered(
            &Method::GET,
            StatusCode::NOT_FOUND,
            Duration::from_millis(3),
        );
        site.answered(
            &Method::from_bytes(b"PROPFIND").unwrap(),
            StatusCode::OK,
            Duration::ZERO,
        );
        // Built again (a reload): the same counters.
        metrics
            .site("jelly.test")
            .answered(&Method::GET, StatusCode::OK, Duration::ZERO);
        let text = metrics.encode();
        assert!(
            text.contains(
                r#"drawbridge_requests_total{site="jelly.test",method="get",status="2xx"} 2"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"drawbridge_requests_total{site="jelly.test",method="get",status="4xx"} 1"#
        ));
        assert!(text.contains(
            r#"drawbridge_requests_total{site="jelly.test",method="other",status="2xx"} 1"#
        ));
        assert!(
            text.contains("drawbridge_response_time_seconds_count{site=\"jelly.test\"} 4"),
            "{text}"
        );
        assert!(!text.contains("PROPFIND"));
        let version = env!("CARGO_PKG_VERSION");
        assert!(
            text.contains(&format!("drawbridge_build_info{{version=\"{version}\"}} 1")),
            "{text}"
        );
        // The process's own series, unprefixed, before the one end mark.
        for series in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(text.contains(series), "{series} in {text}");
        }
        let rss: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(rss > 1e6, "a real resident size: {rss}");
        assert_eq!(text.matches("# EOF").count(), 1);
        assert!(text.ends_with("# EOF\n"));
    }
}
