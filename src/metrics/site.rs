//! The series kept per site: requests by method and status class, bytes
//! each way, home's health and answer time, WebSockets and responses in
//! flight, dynamic DNS changes. Made once per site when the routes are
//! built, so a request costs an index and an atomic add.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::{Method, StatusCode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use super::{
    add, add_in, histograms, Metrics, RequestLabels, SiteLabel, BUCKETS, METHODS, STATUSES,
};

/// The families labelled by site alone, beside the request counters.
#[derive(Debug)]
pub(super) struct PerSite {
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
    /// The process's streams being watched now.
    pub streams: Arc<super::streams::Streams>,
}

/// A response on its way: it counts as in flight until dropped with its
/// body; the body's bytes go to the site's sent bytes as they go
/// (`body::Tail::counting`).
#[derive(Debug)]
pub struct Sending {
    sent: Counter,
    _live: Live,
}

impl Sending {
    /// The site's sent bytes, for the body to count into.
    pub fn counter(&self) -> Counter {
        self.sent.clone()
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

impl PerSite {
    pub(super) fn register(r: &mut Registry) -> PerSite {
        PerSite {
            received: add(
                r,
                "received_bytes",
                "Request body bytes received from clients, by site",
                Family::default(),
            ),
            sent: add(
                r,
                "sent_bytes",
                "Response body bytes sent to clients, by site",
                Family::default(),
            ),
            upstream_time: add_in(
                r,
                "upstream_response_time",
                "Time from sending a request home to its answer's head, by site",
                Unit::Seconds,
                histograms(),
            ),
            upstream_up: add(
                r,
                "upstream_up",
                "Whether the site's last request home got an answer (1) or failed (0)",
                Family::default(),
            ),
            websockets: add(
                r,
                "websockets_open",
                "WebSockets open, by site",
                Family::default(),
            ),
            in_flight: add(
                r,
                "responses_in_flight",
                "Responses whose body is still being sent (streams among them), by site",
                Family::default(),
            ),
            dns_changes: add(
                r,
                "upstream_dns_changes",
                "Changes of the upstream name's addresses (dynamic DNS), by site",
                Family::default(),
            ),
        }
    }
}

impl Metrics {
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
                times: Arc::default(),
            },
            websockets: family.websockets.get_or_create(&label).clone(),
            in_flight: family.in_flight.get_or_create(&label).clone(),
            dns_changes: family.dns_changes.get_or_create(&label).clone(),
            streams: self.streams.clone(),
        }
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
    /// For the dashboard: since when, how fast.
    times: Arc<HealthTimes>,
}

/// Since when home has been up or down, and how fast it last answered.
#[derive(Debug, Default)]
struct HealthTimes {
    /// When `up` last changed (Unix seconds; 0 before the first request).
    changed: AtomicU64,
    /// How long the last answer's head took, milliseconds.
    answer_ms: AtomicU64,
}

impl Health {
    /// A request home got its answer's head after `elapsed`, or home did
    /// not answer (unreachable, silent, broken).
    pub fn record(&self, answered: Option<Duration>) {
        let (family, label, up) = &*self.up;
        let first = up.get().is_none();
        let up = up.get_or_init(|| family.get_or_create(label).clone());
        let now_up = i64::from(answered.is_some());
        if first || up.get() != now_up {
            let now = crate::timestamp::unix_now();
            self.times.changed.store(now, Ordering::Relaxed);
        }
        up.set(now_up);
        if let Some(elapsed) = answered {
            self.time.observe(elapsed.as_secs_f64());
            let millis = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
            self.times.answer_ms.store(millis, Ordering::Relaxed);
        }
    }

    /// Since when home has been as `is_up` says (Unix seconds; 0 before the
    /// first request home).
    pub fn up_since(&self) -> u64 {
        self.times.changed.load(Ordering::Relaxed)
    }

    /// How long home's last answer's head took, milliseconds.
    pub fn answer_ms(&self) -> u64 {
        self.times.answer_ms.load(Ordering::Relaxed)
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
            times: Arc::default(),
        }
    }
}
