//! Bodies in flight. `ClientBody` is a client's request body as hyper hands it
//! over; dropped before its end (an early answer such as 413 or 403), it is
//! read and thrown away for a while, so the client, still uploading, reads the
//! answer instead of a reset (nginx's lingering close). `GuardedBody` wraps it
//! on its way upstream: it is cut when it passes the site's `max_body`, pauses
//! longer than `body_timeout`, or trickles below `body_min_rate` (slow POST).
//! `Tail` counts a response body's bytes and reports once when the body is
//! done or dropped. None buffers: frames pass through as they come, so memory
//! per stream is bounded by hyper's own buffers whatever the body's size.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use prometheus_client::metrics::counter::Counter;
use tokio::time::{Instant, Sleep};

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

/// Limits on a request body.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Most bytes.
    pub max: u64,
    /// Longest pause, and the grace before `min_rate` applies.
    pub timeout: Duration,
    /// Slowest average rate after the grace, bytes per second.
    pub min_rate: u64,
}

impl BodyLimits {
    /// The request body to forward: guarded as it streams, or `Err` at once
    /// when its declared length is over `max`. A body that is already over
    /// (a GET, HTTP/2 headers that end the stream) starts no clock.
    /// Every byte that passes is added to `received`.
    pub fn guard(
        &self,
        body: ClientBody,
        declared: Option<u64>,
        received: Counter,
    ) -> Result<Body, TooLarge> {
        if declared.is_some_and(|length| length > self.max) {
            return Err(TooLarge);
        }
        if HttpBody::is_end_stream(&body) {
            return Ok(empty_body());
        }
        let mut guarded = GuardedBody::new(body, *self);
        guarded.received = Some(received);
        Ok(guarded.map_err(BoxError::from).boxed())
    }
}

/// A declared length over the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge;

/// A request body checked against `BodyLimits` as it streams, its trailers
/// dropped.
pub struct GuardedBody<B> {
    inner: B,
    limits: BodyLimits,
    seen: u64,
    started: Instant,
    pause: Pin<Box<Sleep>>,
    received: Option<Counter>,
}

impl<B> GuardedBody<B> {
    /// Wraps `inner`; the clocks start now.
    pub fn new(inner: B, limits: BodyLimits) -> Self {
        GuardedBody {
            inner,
            limits,
            seen: 0,
            started: Instant::now(),
            pause: Box::pin(tokio::time::sleep(limits.timeout)),
            received: None,
        }
    }
}

impl<B> HttpBody for GuardedBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let mut polled = Pin::new(&mut this.inner).poll_frame(cx);
        // A request's trailers stay here: fields there (an X-Forwarded-For,
        // an Authorization) would pass every rewrite of the head, and an
        // upstream may merge them into it. They end a body, so what follows
        // is its end.
        while matches!(&polled, Poll::Ready(Some(Ok(frame))) if frame.is_trailers()) {
            polled = Pin::new(&mut this.inner).poll_frame(cx);
        }
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    if let Some(received) = &this.received {
                        received.inc_by(data.len() as u64);
                    }
                    if this.seen > this.limits.max {
                        return Poll::Ready(Some(Err(BodyError::TooLarge {
                            limit: this.limits.max,
                        })));
                    }
                    let elapsed = this.started.elapsed();
                    if elapsed > this.limits.timeout
                        && (this.seen as f64) < this.limits.min_rate as f64 * elapsed.as_secs_f64()
                    {
                        return Poll::Ready(Some(Err(BodyError::TooSlow)));
                    }
                    this.pause
                        .as_mut()
                        .reset(Instant::now() + this.limits.timeout);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                Poll::Ready(Some(Err(BodyError::Client(error.into()))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.pause.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(BodyError::TooSlow))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that reports how many bytes it carried, once, when it ends
/// or is dropped (the client went away), and whether it ended whole.
pub struct Tail<B: HttpBody, F: FnOnce(u64, bool)> {
    inner: B,
    bytes: u64,
    complete: bool,
    report: Option<F>,
}

impl<B: HttpBody, F: FnOnce(u64, bool)> Tail<B, F> {
    /// Wraps `inner`; `report(bytes, complete)` runs once at the end.
    pub fn new(inner: B, report: F) -> Self {
        Tail {
            inner,
            bytes: 0,
            complete: false,
            report: Some(report),
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
        if let Some(report) = self.report.take() {
            // hyper stops polling once is_end_stream() says so, so the end may
            // never be seen as Ready(None).
            report(self.bytes, self.complete || self.inner.is_end_stream());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{BodyError, BodyLimits, GuardedBody};
    use bytes::Bytes;
    use http_body_util::{BodyExt, StreamBody};
    use std::time::Duration;

    fn limits() -> BodyLimits {
        BodyLimits {
            max: 10,
            timeout: Duration::from_secs(20),
            min_rate: 1,
        }
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_cut() {
        let frames = futures_frames(&[b"12345", b"67890", b"x"]);
        let err = GuardedBody::new(frames, limits())
            .collect()
            .await
            .unwrap_err();
        assert!(matches!(err, BodyError::TooLarge { limit: 10 }));
        let fits = futures_frames(&[b"12345", b"67890"]);
        assert_eq!(
            GuardedBody::new(fits, limits())
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .len(),
            10
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_is_cut_after_the_pause_limit() {
        let (tx, rx) =
            tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, std::io::Error>>(1);
        tx.send(Ok(http_body::Frame::data(Bytes::from_static(b"a"))))
            .await
            .unwrap();
        let body = StreamBody::new(tokio_stream_from(rx));
        let start = tokio::time::Instant::now();
        let err = GuardedBody::new(body, limits())
            .collect()
            .await
            .unwrap_err();
        assert!(matches!(err, BodyError::TooSlow));
        assert_eq!(start.elapsed(), Duration::from_secs(20));
        drop(tx);
    }

    #[tokio::test]
    async fn a_requests_trailers_do_not_pass() {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-forwarded-for", "6.6.6.6".parse().unwrap());
        let frames = vec![
            Ok::<_, std::io::Error>(http_body::Frame::data(Bytes::from_static(b"12345"))),
            Ok(http_body::Frame::trailers(trailers)),
        ];
        let body = StreamBody::new(futures_util::stream::iter(frames));
        let collected = GuardedBody::new(body, limits()).collect().await.unwrap();
        assert!(collected.trailers().is_none());
        assert_eq!(collected.to_bytes(), "12345");
    }

    type Frames = futures_util::stream::Iter<
        std::vec::IntoIter<Result<http_body::Frame<Bytes>, std::io::Error>>,
    >;

    fn futures_frames(chunks: &[&'static [u8]]) -> StreamBody<Frames> {
        let frames: Vec<_> = chunks
            .iter()
            .map(|c| Ok(http_body::Frame::data(Bytes::from_static(c))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    fn tokio_stream_from<T>(
        mut rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures_util::Stream<Item = T> + Unpin {
        Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
    }
}
