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
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::{Method, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

mod gate;
mod process;

pub use gate::{GateCounts, CHECK_OUTCOMES};

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgentLabel {
    agent: String,
}

/// The process's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    gate: gate::GateFamilies,
    /// The unprefixed `process_*` series.
    process: Registry,
    requests: Family<RequestLabels, Counter>,
    response_time: Family<SiteLabel, Histogram>,
    /// Open client connections (the guard's count), set when scraped.
    pub connections: Gauge,
    /// Bans in force, set when scraped.
    pub bans: Gauge,
    /// Edge cache outcomes, set when scraped.
    pub cache: [Counter<u64, AtomicU64>; 4],
    /// Tunnel connections up per agent, set when scraped.
    tunnels: Family<AgentLabel, Gauge>,
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

/// The families labelled by site alone, beside the request counters.
#[derive(Debug)]
struct PerSite {
    received: Family<SiteLabel, Counter>,
    sent: Family<SiteLabel, Counter>,
    upstream_time: Family<SiteLabel, Histogram, fn() -> Histogram>,
    upstream_up: Family<SiteLabel, Gauge>,
    websockets: Family<SiteLabel, Gauge>,
    in_flight: Family<SiteLabel, Gauge>,
    dns_changes: Family<SiteLabel, Counter>,
}

/// One site's request counters and response-time histogram.
#[derive(Debug, Clone)]
pub struct SiteMetrics {
    requests: Vec<Counter>,
    response_time: Histogram,
    /// Request body bytes received from clients and forwarded.
    pub received: Counter,
    /// Response body bytes sent to clients.
    pub sent: Counter,
    /// Whether home answers, and how fast (recorded by the upstream).
    pub health: Health,
    /// WebSockets open now.
    pub websockets: Gauge,
    /// Responses whose body is still being sent (streams among them).
    pub in_flight: Gauge,
    /// Changes of the upstream name's addresses (dynamic DNS at work).
    pub dns_changes: Counter,
}

/// A response on its way: its body's bytes are added to the site's sent
/// bytes, and it counts as in flight, until its body ends or is dropped.
#[derive(Debug)]
pub struct Sending {
    sent: Counter,
    _live: Live,
}

impl Sending {
    /// The body has ended after `bytes`.
    pub fn done(self, bytes: u64) {
        self.sent.inc_by(bytes);
    }
}

/// Holds a gauge one higher while it lives (a WebSocket, a response being
/// sent).
#[derive(Debug)]
pub struct Live(Gauge);

impl Live {
    /// Raises `gauge` until dropped.
    pub fn new(gauge: &Gauge) -> Live {
        gauge.inc();
        Live(gauge.clone())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// The metrics, registered under `drawbridge_`.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("drawbridge");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by site, method class and status class",
            requests.clone(),
        );
        let response_time =
            Family::<SiteLabel, Histogram>::new_with_constructor(|| Histogram::new(BUCKETS));
        registry.register_with_unit(
            "response_time",
            "Time from a request's arrival to its answer's head, by site",
            prometheus_client::registry::Unit::Seconds,
            response_time.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "connections_open",
            "Client connections open",
            connections.clone(),
        );
        let bans = Gauge::default();
        registry.register("bans_active", "Client keys banned now", bans.clone());
        let cache: [Counter<u64, AtomicU64>; 4] = Default::default();
        for (counter, (name, help)) in cache.iter().zip([
            ("cache_hits", "Answers from the edge cache"),
            ("cache_misses", "Cache-route requests that went home"),
            (
                "cache_stale",
                "Stale answers served while home was unreachable",
            ),
            (
                "cache_bypass",
                "Cache-route requests that bypassed the cache",
            ),
        ]) {
            registry.register(name, help, counter.clone());
        }
        let tunnels = Family::<AgentLabel, Gauge>::default();
        registry.register(
            "tunnel_connections",
            "Tunnel connections up, by agent",
            tunnels.clone(),
        );
        let handshake_failures = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "tls_handshake_failures",
            "Failed TLS handshakes by reason (not_tls, refused, timed_out)",
            handshake_failures.clone(),
        );
        let certificate_expiry = Family::<SiteLabel, Gauge>::default();
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "When each site's certificate expires, Unix time",
            certificate_expiry.clone(),
        );
        let per_site = PerSite {
            received: Family::default(),
            sent: Family::default(),
            upstream_time: Family::new_with_constructor(|| Histogram::new(BUCKETS)),
            upstream_up: Family::default(),
            websockets: Family::default(),
            in_flight: Family::default(),
            dns_changes: Family::default(),
        };
        registry.register(
            "received_bytes",
            "Request body bytes received from clients, by site",
            per_site.received.clone(),
        );
        registry.register(
            "sent_bytes",
            "Response body bytes sent to clients, by site",
            per_site.sent.clone(),
        );
        registry.register_with_unit(
            "upstream_response_time",
            "Time from sending a request home to its answer's head, by site",
            prometheus_client::registry::Unit::Seconds,
            per_site.upstream_time.clone(),
        );
        registry.register(
            "upstream_up",
            "Whether the site's last request home got an answer (1) or failed (0)",
            per_site.upstream_up.clone(),
        );
        registry.register(
            "websockets_open",
            "WebSockets open, by site",
            per_site.websockets.clone(),
        );
        registry.register(
            "responses_in_flight",
            "Responses whose body is still being sent (streams among them), by site",
            per_site.in_flight.clone(),
        );
        registry.register(
            "upstream_dns_changes",
            "Changes of the upstream name's addresses (dynamic DNS), by site",
            per_site.dns_changes.clone(),
        );
        let guard = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "guard_events",
            "The guard's doings: connections refused (banned, full, full_for_client), login requests over the rate limit (login_rate_limited), failed logins (failed_login), bans issued (banned_now)",
            guard.clone(),
        );
        let acme_orders = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "acme_orders",
            "Certificate orders by outcome (issued, failed)",
            acme_orders.clone(),
        );
        let cache_bytes = Family::<TierLabel, Gauge>::default();
        registry.register(
            "cache_stored_bytes",
            "Bytes the edge cache holds, by tier (memory, disk)",
            cache_bytes.clone(),
        );
        let quic_retries = Counter::default();
        registry.register(
            "quic_retries",
            "QUIC Retries sent: new sources asked to prove their address while many handshakes were under way",
            quic_retries.clone(),
        );
        let by_protocol = Family::<ProtocolLabel, Gauge>::default();
        registry.register(
            "connections_serving",
            "Client connections past their handshake, by protocol (http1_plain, http1, http2, http3)",
            by_protocol.clone(),
        );
        let protocols = Protocol::ALL.map(|p| {
            by_protocol
                .get_or_create(&ProtocolLabel {
                    protocol: p.label(),
                })
                .clone()
        });
        let build_info = Family::<VersionLabel, Gauge>::default();
        build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register(
            "build_info",
            "Always 1; the label says which drawbridge runs",
            build_info,
        );
        let gate = gate::GateFamilies::register(&mut registry);
        let mut process = Registry::default();
        process.register_collector(Box::new(process::ProcessCollector));
        Metrics {
            protocols,
            quic_retries,
            registry,
            gate,
            process,
            requests,
            response_time,
            connections,
            bans,
            cache,
            tunnels,
            handshake_failures,
            certificate_expiry,
            per_site,
            guard,
            acme_orders,
            cache_bytes,
        }
    }

    /// Counts a client connection speaking `protocol` while the guard lives.
    pub fn serving(&self, protocol: Protocol) -> Live {
        Live::new(&self.protocols[protocol as usize])
    }

    /// The counters of site `name` (the same ones again after a reload).
    pub fn site(&self, name: &str) -> SiteMetrics {
        let mut requests = Vec::with_capacity(METHODS.len() * STATUSES.len());
        for method in METHODS {
            for status in STATUSES {
                let labels = RequestLabels {
                    site: name.to_string(),
                    method,
                    status,
                };
                requests.push(self.requests.get_or_create(&labels).clone());
            }
        }
        let response_time = self
            .response_time
            .get_or_create(&SiteLabel {
                site: name.to_string(),
            })
            .clone();
        let label = SiteLabel {
            site: name.to_string(),
        };
        let family = &self.per_site;
        SiteMetrics {
            requests,
            response_time,
            received: family.received.get_or_create(&label).clone(),
            sent: family.sent.get_or_create(&label).clone(),
            health: Health {
                time: family.upstream_time.get_or_create(&label).clone(),
                up: Arc::new((family.upstream_up.clone(), label.clone(), OnceLock::new())),
            },
            websockets: family.websockets.get_or_create(&label).clone(),
            in_flight: family.in_flight.get_or_create(&label).clone(),
            dns_changes: family.dns_changes.get_or_create(&label).clone(),
        }
    }

    /// The gate counters of site `name`, one refusal counter per route in
    /// `routes` (the same ones again after a reload).
    pub fn gate(&self, name: &str, routes: &[&'static str]) -> GateCounts {
        self.gate.for_site(name, routes)
    }

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

impl SiteMetrics {
    /// Counts one answered request.
    pub fn answered(&self, method: &Method, status: StatusCode, elapsed: Duration) {
        let method = match *method {
            Method::GET => 0,
            Method::HEAD => 1,
            Method::POST => 2,
            _ => 3,
        };
        let status = (usize::from(status.as_u16() / 100)).clamp(1, 5) - 1;
        self.requests[method * STATUSES.len() + status].inc();
        self.response_time.observe(elapsed.as_secs_f64());
    }

    /// A response starts on its way to the client.
    pub fn sending(&self) -> Sending {
        Sending {
            sent: self.sent.clone(),
            _live: Live::new(&self.in_flight),
        }
    }

    /// Requests answered so far (every class).
    pub fn requests(&self) -> u64 {
        self.requests.iter().map(Counter::get).sum()
    }

    /// Whether the last request home got an answer; `None` before the first.
    pub fn upstream_is_up(&self) -> Option<bool> {
        self.health.is_up()
    }
}

/// Whether a site's home answers, and how fast: every way out to home
/// records here (`upstream/`), so a poster's cache miss or a WebSocket
/// that got no answer says "down" as a plain request does.
#[derive(Debug, Clone)]
pub struct Health {
    time: Histogram,
    /// The site's `upstream_up` series, made at the first request home: a
    /// fresh start says nothing rather than "down".
    up: Arc<(Family<SiteLabel, Gauge>, SiteLabel, OnceLock<Gauge>)>,
}

impl Health {
    /// A request home got its answer's head after `elapsed`, or home did
    /// not answer (unreachable, silent, broken).
    pub fn record(&self, answered: Option<Duration>) {
        let (family, label, up) = &*self.up;
        let up = up.get_or_init(|| family.get_or_create(label).clone());
        match answered {
            Some(elapsed) => {
                up.set(1);
                self.time.observe(elapsed.as_secs_f64());
            }
            None => {
                up.set(0);
            }
        }
    }

    /// Whether the last request home got an answer; `None` before the first.
    pub fn is_up(&self) -> Option<bool> {
        self.up.2.get().map(|up| up.get() == 1)
    }

    /// A health that records nowhere (tests of the upstream alone).
    pub fn detached() -> Health {
        Health {
            time: Histogram::new(BUCKETS),
            up: Arc::new((
                Family::default(),
                SiteLabel {
                    site: String::new(),
                },
                OnceLock::new(),
            )),
        }
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
