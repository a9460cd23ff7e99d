//! A request body on its way upstream, guarded as it streams: cut when it
//! passes the site's `max_body`, pauses longer than `body_timeout`, or
//! trickles below `body_min_rate` (slow POST); its trailers dropped.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use prometheus_client::metrics::counter::Counter;
use tokio::time::{Instant, Sleep};

use super::{empty_body, Body, BodyError, BoxError, ClientBody};

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
