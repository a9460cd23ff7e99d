//! The streams being watched now, for the dashboard: each answer that looks
//! like a film or a song on its way (`is_stream`: audio or video, a range,
//! or a body known to be 8 MiB or more) is listed from its head until its body ends
//! or the client leaves, with who asked (the client's address and, where
//! the side-door gate knows it, the Jellyfin user), what (the path), how
//! (the protocol, direct or through which agent) and how far (bytes so far,
//! counted as the body goes). Small answers are not listed: they pay one
//! look at their head.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use http::{header, Response, StatusCode};
use serde::{Deserialize, Serialize};

/// A response that is a stream (`is_stream`), and the Jellyfin user the
/// gate let it through for: a response extension, set on streams only.
#[derive(Debug, Clone)]
pub struct Stream {
    pub user: Option<Arc<str>>,
}

/// Whether `response` looks like a stream worth listing (this runs for
/// every answer: the status, the body's known length, then the type).
pub fn is_stream<B: http_body::Body>(response: &Response<B>) -> bool {
    let status = response.status();
    if status == StatusCode::PARTIAL_CONTENT {
        return true;
    }
    if status != StatusCode::OK {
        return false;
    }
    let large = response
        .body()
        .size_hint()
        .upper()
        .is_some_and(|length| length >= 8 * 1024 * 1024);
    large
        || response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|kind| {
                let kind = kind.as_bytes();
                kind.starts_with(b"video/") || kind.starts_with(b"audio/")
            })
}

/// One stream, as the dashboard lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamStatus {
    pub site: String,
    pub client: IpAddr,
    pub path: String,
    /// The Jellyfin user, where the gate knows it.
    pub user: Option<String>,
    /// `HTTP/1.1`, `HTTP/2.0` or `HTTP/3.0` (as the access log writes it).
    pub protocol: String,
    /// `direct`, or `agent NAME` through the tunnel.
    pub via: String,
    /// When it began, Unix seconds.
    pub since: u64,
    /// Body bytes sent so far.
    pub bytes: u64,
}

#[derive(Debug)]
struct Entry {
    status: StreamStatus,
    bytes: AtomicU64,
}

/// The streams of a process.
#[derive(Debug, Default)]
pub struct Streams {
    next: AtomicU64,
    live: Mutex<HashMap<u64, Arc<Entry>>>,
}

/// A listed stream: its bytes are kept up by its body, and it leaves the
/// list when dropped (the body ended, or the client left).
#[derive(Debug)]
pub struct Watched {
    id: u64,
    entry: Arc<Entry>,
    streams: Arc<Streams>,
}

impl Streams {
    /// Lists `status` (its `bytes` kept up by the returned `Watched`).
    pub fn watch(self: &Arc<Self>, status: StreamStatus) -> Watched {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(Entry {
            status,
            bytes: AtomicU64::new(0),
        });
        self.live
            .lock()
            .expect("streams lock")
            .insert(id, entry.clone());
        Watched {
            id,
            entry,
            streams: self.clone(),
        }
    }

    /// The streams now, the oldest first.
    pub fn list(&self) -> Vec<StreamStatus> {
        let live = self.live.lock().expect("streams lock");
        let mut list: Vec<(u64, StreamStatus)> = live
            .iter()
            .map(|(id, entry)| {
                let mut status = entry.status.clone();
                status.bytes = entry.bytes.load(Ordering::Relaxed);
                (*id, status)
            })
            .collect();
        list.sort_by_key(|(id, _)| *id);
        list.into_iter().map(|(_, status)| status).collect()
    }
}

impl Watched {
    /// The body has carried `bytes` so far.
    pub fn progress(&self, bytes: u64) {
        self.entry.bytes.store(bytes, Ordering::Relaxed);
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.streams
            .live
            .lock()
            .expect("streams lock")
            .remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::{is_stream, StreamStatus, Streams};
    use bytes::Bytes;
    use http::{Response, StatusCode};
    use http_body_util::Full;
    use std::sync::Arc;

    #[test]
    fn films_and_songs_are_listed_while_they_go_and_small_answers_never() {
        let answer = |status: u16, kind: &str, length: usize| {
            Response::builder()
                .status(StatusCode::from_u16(status).unwrap())
                .header("content-type", kind)
                .body(Full::new(Bytes::from(vec![0u8; length])))
                .unwrap()
        };
        assert!(is_stream(&answer(200, "video/mp4", 100)));
        assert!(is_stream(&answer(200, "audio/mpeg", 100)));
        assert!(is_stream(&answer(206, "application/octet-stream", 100)));
        assert!(is_stream(&answer(200, "application/octet-stream", 8 << 20)));
        assert!(!is_stream(&answer(
            200,
            "application/octet-stream",
            (8 << 20) - 1
        )));
        assert!(!is_stream(&answer(200, "application/json", 2000)));
        assert!(!is_stream(&answer(404, "video/mp4", 100)));
        let streams = Arc::new(Streams::default());
        let status = StreamStatus {
            site: "a".into(),
            client: "192.0.2.1".parse().unwrap(),
            path: "/Videos/1/stream".into(),
            user: Some("mum".into()),
            protocol: "HTTP/2".into(),
            via: "direct".into(),
            since: 0,
            bytes: 0,
        };
        let watched = streams.watch(status);
        watched.progress(1234);
        assert_eq!(streams.list()[0].bytes, 1234);
        drop(watched);
        assert!(streams.list().is_empty());
    }
}
