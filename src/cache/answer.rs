//! Answers from a cached object: the whole, one Range slice, a 304 for a
//! matching If-None-Match, or a stale copy when home does not answer.

use std::sync::atomic::Ordering;
use std::time::SystemTime;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};

use super::entry::Cached;
use super::{Cache, Lookup};
use crate::body::{empty_body, full_body, Body};

impl Cache {
    /// An answer from `entry`: 304 for a matching If-None-Match, a slice for
    /// one Range, else the whole object (HEAD: its headers).
    pub(super) fn hit(
        &self,
        entry: &Cached,
        headers: HeaderMap,
        lookup: &Lookup<'_>,
        label: &'static str,
    ) -> Response<Body> {
        let counter = if label == "STALE" {
            &self.stats.stale
        } else {
            &self.stats.hits
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let mut response = Response::new(empty_body());
        *response.status_mut() = entry.status;
        *response.headers_mut() = headers;
        let etag = entry.headers.get(header::ETAG);
        let matches = lookup
            .head
            .headers
            .get(header::IF_NONE_MATCH)
            .zip(etag)
            .is_some_and(|(wanted, have)| {
                wanted.to_str().is_ok_and(|w| {
                    w == "*"
                        || w.split(',')
                            .any(|t| t.trim() == have.to_str().unwrap_or(""))
                })
            });
        if matches {
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            response.headers_mut().remove(header::CONTENT_LENGTH);
            return self.label(response, label);
        }
        let mut body = entry.body.clone();
        if let Some(range) = lookup
            .head
            .headers
            .get(header::RANGE)
            .and_then(|r| r.to_str().ok())
        {
            match slice(range, body.len()) {
                Some((start, end)) => {
                    *response.status_mut() = StatusCode::PARTIAL_CONTENT;
                    let value = format!("bytes {start}-{end}/{}", body.len());
                    response.headers_mut().insert(
                        header::CONTENT_RANGE,
                        HeaderValue::from_str(&value).expect("ascii"),
                    );
                    body = body.slice(start..=end);
                }
                None => {
                    *response.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
                    let value = format!("bytes */{}", body.len());
                    response.headers_mut().insert(
                        header::CONTENT_RANGE,
                        HeaderValue::from_str(&value).expect("ascii"),
                    );
                    body = Bytes::new();
                }
            }
        }
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        if lookup.method != Method::HEAD {
            self.stats
                .bytes_served
                .fetch_add(body.len() as u64, Ordering::Relaxed);
            *response.body_mut() = full_body(body);
        }
        self.label(response, label)
    }

    /// `entry` served although stale, because home did not answer.
    pub(super) fn stale(&self, entry: &Cached, lookup: &Lookup<'_>) -> Response<Body> {
        let mut headers = entry.headers.clone();
        let age = entry.policy.age(SystemTime::now()).as_secs();
        headers.insert(header::AGE, HeaderValue::from(age));
        tracing::warn!(key = %entry.key, "upstream unreachable; serving a stale copy");
        self.hit(entry, headers, lookup, "STALE")
    }
}

/// One `bytes=a-b`, `bytes=a-` or `bytes=-n` range of a `len`-byte object.
fn slice(range: &str, len: usize) -> Option<(usize, usize)> {
    let spec = range.strip_prefix("bytes=")?;
    if spec.contains(',') || len == 0 {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (
        a.trim().parse::<usize>().ok(),
        b.trim().parse::<usize>().ok(),
    ) {
        (Some(a), Some(b)) => (a, b.min(len - 1)),
        (Some(a), None) if b.trim().is_empty() => (a, len - 1),
        (None, Some(n)) if a.trim().is_empty() && n > 0 => (len.saturating_sub(n), len - 1),
        _ => return None,
    };
    (start <= end && start < len).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::slice;

    #[test]
    fn ranges_of_a_cached_object() {
        assert_eq!(slice("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(slice("bytes=90-", 100), Some((90, 99)));
        assert_eq!(slice("bytes=-10", 100), Some((90, 99)));
        assert_eq!(slice("bytes=95-200", 100), Some((95, 99)));
        assert_eq!(slice("bytes=100-", 100), None);
        assert_eq!(slice("bytes=0-1,5-6", 100), None);
    }
}
