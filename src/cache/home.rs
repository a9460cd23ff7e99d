//! The edge cache's trips home: a miss filled as its answer streams to the
//! client (`Tee`), a stale entry revalidated with its validators, and the
//! request the cache sends for either (the key's view, no body).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use http_cache_semantics::{AfterResponse, BeforeRequest, CachePolicy};

use super::entry::Cached;
use super::tee::Tee;
use super::{Cache, Lookup, Visibility};
use crate::body::{empty_body, Body};
use crate::error::ProxyError;
use crate::upstream::head::copy_head;

impl Cache {
    /// A stale entry: ask the upstream whether it changed.
    pub(super) async fn revalidate(
        self: &Arc<Self>,
        lookup: &Lookup<'_>,
        view: &Request<()>,
        entry: Arc<Cached>,
        validators: &HeaderMap,
    ) -> Result<Response<Body>, ProxyError> {
        let mut head = copy_head(
            &lookup.head.method,
            &lookup.head.uri,
            lookup.head.version,
            &lookup.head.headers,
        );
        for name in [header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE] {
            if let Some(value) = validators.get(&name) {
                head.headers.insert(name, value.clone());
            }
        }
        let response = match send(lookup, &head).await {
            Ok(response) => response,
            Err(error) if lookup.visibility == Visibility::Public && error.home_unreachable() => {
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
    pub(super) fn fill(
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
}

/// Ends a miss's claim on its key (waiters look again).
pub(super) struct Done {
    pub(super) cache: Arc<Cache>,
    pub(super) key: String,
    pub(super) leader: bool,
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
pub(super) fn view(lookup: &Lookup<'_>) -> Request<()> {
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

/// `head` (the client's, or a revalidation's) through the forward step, without a body.
pub(super) async fn send(
    lookup: &Lookup<'_>,
    head: &http::request::Parts,
) -> Result<Response<Body>, ProxyError> {
    lookup
        .upstream
        .forward(
            copy_head(&head.method, &head.uri, head.version, &head.headers),
            empty_body(),
            lookup.visitor,
        )
        .await
}
