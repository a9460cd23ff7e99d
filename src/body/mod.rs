//! Bodies in flight. `ClientBody` is a client's request body as hyper hands it
//! over; dropped before its end (an early answer such as 413 or 403), it is
//! read and thrown away for a while, so the client, still uploading, reads the
//! answer instead of a reset (nginx's lingering close). `GuardedBody` wraps it
//! on its way upstream (`guarded.rs`): it is cut when it passes the site's `max_body`, pauses
//! longer than `body_timeout`, or trickles below `body_min_rate` (slow POST).
//! `Tail` counts a response body's bytes and reports once when the body is
//! done or dropped. None buffers: frames pass through as they come, so memory
//! per stream is bounded by hyper's own buffers whatever the body's size.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use prometheus_client::metrics::counter::Counter;

use crate::metrics::streams::Watched;

mod guarded;

pub use guarded::{BodyLimits, GuardedBody, TooLarge};

/// Errors a response body may end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every response drawbridge sends.
pub type Body = BoxBody<Bytes, BoxError>;

/// An empty body.
pub fn empty_body() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A body of `bytes`, all at once.
pub fn full_body(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Why a request body was cut.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// More bytes than `max_body`.
    #[error("request body over the {limit}-byte limit")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// Paused too long, or slower than the minimum rate.
    #[error("request body too slow")]
    TooSlow,
    /// The client's side failed (connection lost, bad chunk).
    #[error("request body from the client failed: {0}")]
    Client(#[source] BoxError),
}

/// How much of a request body is read and thrown away after an early
/// answer, and for how long, before the stream is reset.
pub const LINGER_BYTES: u64 = 1024 * 1024;
/// See `LINGER_BYTES`.
pub const LINGER_TIME: Duration = Duration::from_secs(2);

/// A client's request body: hyper's (HTTP/1.1, HTTP/2) or an HTTP/3
/// stream's. Dropped before its end, it is read and thrown away in the
/// background, up to `LINGER_BYTES` or `LINGER_TIME`, then dropped (which
/// resets an HTTP/2 or HTTP/3 stream or ends an HTTP/1.1 connection).
#[derive(Debug)]
pub struct ClientBody {
    inner: Option<Inner>,
}

#[derive(Debug)]
enum Inner {
    Hyper(Incoming),
    /// An HTTP/3 request stream's body (`http3/`).
    Stream(BoxBody<Bytes, BoxError>),
}

impl ClientBody {
    /// Wraps the body hyper handed over.
    pub fn new(inner: Incoming) -> ClientBody {
        ClientBody {
            inner: Some(Inner::Hyper(inner)),
        }
    }

    /// Wraps a body read from an HTTP/3 request stream.
    pub fn stream(inner: BoxBody<Bytes, BoxError>) -> ClientBody {
        ClientBody {
            inner: Some(Inner::Stream(inner)),
        }
    }
}

impl HttpBody for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.inner.as_mut() {
            Some(Inner::Hyper(inner)) => Pin::new(inner).poll_frame(cx).map_err(Into::into),
            Some(Inner::Stream(inner)) => Pin::new(inner).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Some(Inner::Hyper(inner)) => inner.is_end_stream(),
            Some(Inner::Stream(inner)) => inner.is_end_stream(),
            None => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Some(Inner::Hyper(inner)) => inner.size_hint(),
            Some(Inner::Stream(inner)) => inner.size_hint(),
            None => SizeHint::with_exact(0),
        }
    }
}

impl Drop for ClientBody {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        match inner {
            Inner::Hyper(inner) if !inner.is_end_stream() => {
                runtime.spawn(linger(inner));
            }
            Inner::Stream(inner) if !inner.is_end_stream() => {
                runtime.spawn(linger(inner));
            }
            _ => {}
        }
    }
}

/// Reads `body` and throws it away, up to `LINGER_BYTES` or `LINGER_TIME`.
async fn linger<B: HttpBody + Unpin>(mut body: B) {
    use http_body_util::BodyExt;
    let _ = tokio::time::timeout(LINGER_TIME, async {
        let mut read = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            read += frame.data_ref().map_or(0, |d| d.remaining() as u64);
            if read > LINGER_BYTES {
                return;
            }
        }
    })
    .await;
}

/// A response body that reports how many bytes it carried, once, when it ends
/// or is dropped (the client went away), and whether it ended whole; and,
/// with `counting`, adds them to a counter as they go (every
/// `COUNT_STEP`), so a film's bytes are counted while it plays.
pub struct Tail<B: HttpBody, F: FnOnce(u64, bool)> {
    inner: B,
    bytes: u64,
    complete: bool,
    report: Option<F>,
    counter: Option<(Counter, u64)>,
    watched: Option<Watched>,
}

/// How many bytes a counting `Tail` carries before it adds them.
const COUNT_STEP: u64 = 256 * 1024;

impl<B: HttpBody, F: FnOnce(u64, bool)> Tail<B, F> {
    /// Wraps `inner`; `report(bytes, complete)` runs once at the end.
    pub fn new(inner: B, report: F) -> Self {
        Tail {
            inner,
            bytes: 0,
            complete: false,
            report: Some(report),
            counter: None,
            watched: None,
        }
    }

    /// Keeps the listed stream's bytes up as they are counted.
    pub fn watched(mut self, watched: Option<Watched>) -> Self {
        self.watched = watched;
        self
    }

    /// Adds the bytes to `counter` as they go.
    pub fn counting(mut self, counter: Counter) -> Self {
        self.counter = Some((counter, 0));
        self
    }

    fn count(&mut self) {
        if let Some((counter, counted)) = &mut self.counter {
            counter.inc_by(self.bytes - *counted);
            *counted = self.bytes;
        }
        if let Some(watched) = &self.watched {
            watched.progress(self.bytes);
        }
    }
}

impl<B, F> HttpBody for Tail<B, F>
where
    B: HttpBody<Data = Bytes> + Unpin,
    F: FnOnce(u64, bool) + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                    if let Some((_, counted)) = self.counter {
                        if self.bytes - counted >= COUNT_STEP {
                            self.count();
                        }
                    }
                }
            }
            Poll::Ready(None) => self.complete = true,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: HttpBody, F: FnOnce(u64, bool)> Drop for Tail<B, F> {
    fn drop(&mut self) {
        self.count();
        if let Some(report) = self.report.take() {
            // hyper stops polling once is_end_stream() says so, so the end may
            // never be seen as Ready(None).
            report(self.bytes, self.complete || self.inner.is_end_stream());
        }
    }
}
