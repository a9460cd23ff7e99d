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
mod lru;
pub mod rules;
pub mod store;
mod tee;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use http_cache_semantics::{AfterResponse, BeforeRequest, CachePolicy};
use tokio::sync::Notify;

use crate::body::{empty_body, Body};
use crate::error::ProxyError;
use crate::upstream::head::Visitor;
use crate::upstream::Upstream;
use rules::has_credentials;
pub use rules::{key, CacheRules, Visibility};
use store::{Cached, Store};
use tee::Tee;

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
                            if lookup.visibility == Visibility::Public && unreachable(&error) =>
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

    /// A stale entry: ask the upstream whether it changed.
    async fn revalidate(
        self: &Arc<Self>,
        lookup: &Lookup<'_>,
        view: &Request<()>,
        entry: Arc<Cached>,
        validators: &HeaderMap,
    ) -> Result<Response<Body>, ProxyError> {
        let mut head = copy_head(&lookup.head);
        for name in [header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE] {
            if let Some(value) = validators.get(&name) {
                head.headers.insert(name, value.clone());
            }
        }
        let response = match send(lookup, &head).await {
            Ok(response) => response,
            Err(error) if lookup.visibility == Visibility::Public && unreachable(&error) => {
                return Ok(self.stale(&entry, lookup))
            }
            Err(error) => return Err(error),
        };
        if response.status() == StatusCode::NOT_MODIFIED {
            let now = SystemTime::now();
            let updated = match entry.policy.after_response(view, &response, now) {
                AfterResponse::NotModified(policy, parts)
                | AfterResponse::Modified(policy, parts) => Cached {
                    policy,
                    headers: parts.headers,
                    ..(*entry).clone()
                },
            };
            let headers = updated.policy.before_request(view, now);
            let headers = match headers {
                BeforeRequest::Fresh(parts) => parts.headers,
                BeforeRequest::Stale { .. } => updated.headers.clone(),
            };
            let stored = self.store.put(updated.clone());
            let cache = self.clone();
            tokio::task::spawn_blocking(move || cache.store.persist(&stored));
            return Ok(self.hit(&updated, headers, lookup, "HIT"));
        }
        if response.status().is_server_error() && lookup.visibility == Visibility::Public {
            return Ok(self.stale(&entry, lookup));
        }
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        let done = Done {
            cache: self.clone(),
            key: lookup.key.clone(),
            leader: false,
        };
        Ok(self.fill(response, lookup, view, done))
    }

    /// A response from the upstream on a miss: passed on at once, and stored
    /// through a tee when it may be.
    fn fill(
        self: &Arc<Self>,
        mut response: Response<Body>,
        lookup: &Lookup<'_>,
        view: &Request<()>,
        done: Done,
    ) -> Response<Body> {
        let policy = CachePolicy::new(view, &response);
        let declared = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let storable = lookup.method == Method::GET
            && policy.is_storable()
            && !response.headers().contains_key(header::SET_COOKIE)
            && declared.is_none_or(|n| n <= self.max_object);
        if storable {
            let status = response.status();
            let headers = response.headers().clone();
            let key = lookup.key.clone();
            let max = self.max_object;
            let cache = self.clone();
            response = response.map(|body| {
                Tee::new(body, max, move |whole| {
                    if let Some(body) = whole {
                        // In memory before the waiters wake; to disk in the background.
                        let entry = cache.store.put(Cached {
                            key,
                            policy,
                            status,
                            headers,
                            body,
                        });
                        cache.stats.stored.fetch_add(1, Ordering::Relaxed);
                        tokio::task::spawn_blocking(move || {
                            cache.store.persist(&entry);
                            cache.stats.persisted.fetch_add(1, Ordering::Relaxed);
                        });
                    }
                    drop(done);
                })
                .boxed()
            });
        } else {
            drop(done);
        }
        self.label(response, "MISS")
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

/// Ends a miss's claim on its key (waiters look again).
struct Done {
    cache: Arc<Cache>,
    key: String,
    leader: bool,
}

impl Drop for Done {
    fn drop(&mut self) {
        if self.leader {
            if let Some(notify) = self
                .cache
                .inflight
                .lock()
                .expect("cache lock")
                .remove(&self.key)
            {
                notify.notify_waiters();
            }
        }
    }
}

/// The request as the cache's policy sees it: the key as its URI, so tokens
/// and parameter order do not make two requests differ.
fn view(lookup: &Lookup<'_>) -> Request<()> {
    let mut view = Request::new(());
    *view.method_mut() = Method::GET;
    let uri: Uri = format!("http://{}", lookup.key).parse().unwrap_or_default();
    let mut headers = lookup.head.headers.clone();
    // The policy compares Host too: the key's host, without a port, like the key.
    if let Some(host) = uri.host().and_then(|h| HeaderValue::from_str(h).ok()) {
        headers.insert(header::HOST, host);
    }
    *view.uri_mut() = uri;
    *view.headers_mut() = headers;
    view
}

/// A copy of a request head (`Parts` holds extensions and is not `Clone`).
fn copy_head(head: &http::request::Parts) -> http::request::Parts {
    let mut copy = Request::new(()).into_parts().0;
    copy.method = head.method.clone();
    copy.uri = head.uri.clone();
    copy.version = head.version;
    copy.headers = head.headers.clone();
    copy
}

/// `head` (the client's, or a revalidation's) through the forward step, without a body.
async fn send(
    lookup: &Lookup<'_>,
    head: &http::request::Parts,
) -> Result<Response<Body>, ProxyError> {
    lookup
        .upstream
        .forward(copy_head(head), empty_body(), lookup.visitor)
        .await
}

/// The upstream did not answer at all (home down, too slow).
fn unreachable(error: &ProxyError) -> bool {
    matches!(
        error,
        ProxyError::UpstreamConnect { .. }
            | ProxyError::UpstreamTimeout { .. }
            | ProxyError::UpstreamFailed { .. }
            | ProxyError::UpstreamTunnel { .. }
    )
}
