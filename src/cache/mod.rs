//! The edge cache: posters and the web client served from the VPS, following
//! the upstream's own Cache-Control and validators (RFC 9111 decisions come
//! from `http-cache-semantics`, none are written here), and served stale when
//! home is unreachable rather than a broken page.
//!
//! Only GET/HEAD on a site's cache routes take part; media and HLS never do.
//! Keys are host, path and query, with access tokens left out and parameters
//! sorted. A response is stored only when complete, under the object cap,
//! without Set-Cookie and storable for a shared cache; it is filled by a tee on
//! the streaming body, so the client never waits for the cache. Concurrent
//! misses for one key wait for the first to finish instead of all going home.

mod answer;
mod disk;
mod entry;
mod home;
mod lru;
pub mod rules;
pub mod store;
mod tee;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http::{header, HeaderValue, Method, Response};
use http_cache_semantics::BeforeRequest;
use tokio::sync::Notify;

use crate::body::Body;
use crate::error::ProxyError;
use crate::upstream::head::Visitor;
use crate::upstream::Upstream;
use home::{send, view, Done};
use rules::has_credentials;
pub use rules::{key, CacheRules, Visibility};
use store::Store;

/// Hit, miss, stale and bypass counts; responses stored in memory and on disk.
#[derive(Debug, Default)]
pub struct Stats {
    hits: AtomicU64,
    misses: AtomicU64,
    stale: AtomicU64,
    bypass: AtomicU64,
    bytes_served: AtomicU64,
    stored: AtomicU64,
    persisted: AtomicU64,
}

/// The process's cache.
#[derive(Debug)]
pub struct Cache {
    store: Store,
    inflight: Mutex<HashMap<String, Arc<Notify>>>,
    stats: Stats,
    max_object: u64,
    status_header: bool,
}

/// A request on a cache route, as the cache needs it.
#[derive(Debug)]
pub struct Lookup<'a> {
    /// The key (see `key`).
    pub key: String,
    /// The kind of route.
    pub visibility: Visibility,
    /// Method, as the client sent it.
    pub method: Method,
    /// The client's head: its headers (conditions, Range, Vary,
    /// credentials) and target (credentials in the query); a copy of it is
    /// forwarded on a miss or a revalidation.
    pub head: http::request::Parts,
    /// Who the client is, for the forward step.
    pub visitor: Visitor<'a>,
    /// Where to forward misses and revalidations.
    pub upstream: &'a Upstream,
}

impl Cache {
    /// A cache with `config`'s bounds, its disk tier under `state_dir/cache`.
    pub fn new(config: &crate::config::CacheConfig, state_dir: &Path) -> Arc<Cache> {
        Arc::new(Cache {
            store: Store::open(config.memory, config.disk, &state_dir.join("cache")),
            inflight: Mutex::new(HashMap::new()),
            stats: Stats::default(),
            max_object: config.max_object,
            status_header: config.status_header,
        })
    }

    /// Bytes held in memory and on disk.
    pub fn stored_bytes(&self) -> (u64, u64) {
        self.store.bytes()
    }

    /// Hits, misses, stale answers and bypasses so far.
    pub fn counts(&self) -> [u64; 4] {
        [
            self.stats.hits.load(Ordering::Relaxed),
            self.stats.misses.load(Ordering::Relaxed),
            self.stats.stale.load(Ordering::Relaxed),
            self.stats.bypass.load(Ordering::Relaxed),
        ]
    }

    /// Responses stored so far: in memory, and written to the disk tier.
    pub fn stored(&self) -> (u64, u64) {
        (
            self.stats.stored.load(Ordering::Relaxed),
            self.stats.persisted.load(Ordering::Relaxed),
        )
    }

    /// Forgets every key starting with `prefix`.
    pub fn purge(&self, prefix: &str) -> Result<usize, std::io::Error> {
        self.store.purge(prefix)
    }

    /// Logs the hit ratio every `interval` until `shutdown`.
    pub async fn report(
        self: Arc<Self>,
        interval: Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            let s = &self.stats;
            let (hits, misses) = (
                s.hits.load(Ordering::Relaxed),
                s.misses.load(Ordering::Relaxed),
            );
            if hits + misses == 0 {
                continue;
            }
            let (memory, disk) = self.store.bytes();
            tracing::info!(
                hits,
                misses,
                stale = s.stale.load(Ordering::Relaxed),
                bypass = s.bypass.load(Ordering::Relaxed),
                hit_ratio = format!("{:.1}%", 100.0 * hits as f64 / (hits + misses) as f64),
                bytes_served = s.bytes_served.load(Ordering::Relaxed),
                memory_bytes = memory,
                disk_bytes = disk,
                "cache"
            );
        }
    }

    /// Answers a request on a cache route.
    pub async fn serve(self: &Arc<Self>, lookup: Lookup<'_>) -> Result<Response<Body>, ProxyError> {
        let bypass = lookup.visibility == Visibility::Private
            && has_credentials(&lookup.head.headers, &lookup.head.uri);
        if bypass || !matches!(lookup.method, Method::GET | Method::HEAD) {
            self.stats.bypass.fetch_add(1, Ordering::Relaxed);
            let response = send(&lookup, &lookup.head).await?;
            return Ok(self.label(response, "BYPASS"));
        }
        let view = view(&lookup);
        let mut waited = false;
        loop {
            let now = SystemTime::now();
            let cached = self.store.get(&lookup.key);
            if let Some(entry) = cached.clone() {
                match entry.policy.before_request(&view, now) {
                    BeforeRequest::Fresh(parts) => {
                        return Ok(self.hit(&entry, parts.headers, &lookup, "HIT"))
                    }
                    BeforeRequest::Stale {
                        request,
                        matches: true,
                    } => {
                        return self
                            .revalidate(&lookup, &view, entry, &request.headers)
                            .await
                    }
                    BeforeRequest::Stale { .. } => {}
                }
            }
            if lookup.head.headers.contains_key(header::RANGE) {
                // Parts of objects are never stored; only a whole cached one serves ranges.
                self.stats.bypass.fetch_add(1, Ordering::Relaxed);
                let response = send(&lookup, &lookup.head).await?;
                return Ok(self.label(response, "BYPASS"));
            }
            let (leader, notify) = {
                let mut inflight = self.inflight.lock().expect("cache lock");
                match inflight.get(&lookup.key) {
                    Some(notify) => (false, notify.clone()),
                    None => {
                        let notify = Arc::new(Notify::new());
                        inflight.insert(lookup.key.clone(), notify.clone());
                        (true, notify)
                    }
                }
            };
            if !leader && !waited {
                // Another request is fetching this key: wait for it, then look again.
                let done = notify.notified();
                let _ = tokio::time::timeout(Duration::from_secs(30), done).await;
                waited = true;
                continue;
            }
            self.stats.misses.fetch_add(1, Ordering::Relaxed);
            let done = Done {
                cache: self.clone(),
                key: lookup.key.clone(),
                leader,
            };
            let result = send(&lookup, &lookup.head).await;
            let response = match result {
                Ok(response) => response,
                Err(error) => {
                    drop(done);
                    return match cached {
                        Some(entry)
                            if lookup.visibility == Visibility::Public
                                && error.home_unreachable() =>
                        {
                            Ok(self.stale(&entry, &lookup))
                        }
                        _ => Err(error),
                    };
                }
            };
            return Ok(self.fill(response, &lookup, &view, done));
        }
    }

    /// Marks `response` with `X-Cache: label` when `status_header` is on.
    pub fn label<B>(&self, mut response: Response<B>, label: &'static str) -> Response<B> {
        if self.status_header {
            response
                .headers_mut()
                .insert("x-cache", HeaderValue::from_static(label));
        }
        response
    }
}
