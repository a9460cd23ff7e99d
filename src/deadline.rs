//! Connection deadlines that hyper does not give us as wanted: a request head
//! must arrive within `header_timeout` of its first byte (slowloris), and a
//! connection with no request in flight closes after its idle timeout. hyper's
//! own `header_read_timeout` also runs while a keep-alive connection waits, which
//! would cut idle keep-alive to the head deadline; this wrapper keeps the two apart.
//!
//! `Watched` wraps a connection's IO; `ConnState` is shared with the service,
//! which counts requests in flight. While one is in flight, or once the
//! connection is upgraded (WebSocket), neither deadline applies: streams and
//! sockets have no total time limit.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// What the service tells the IO about the connection.
#[derive(Debug, Default)]
pub struct ConnState {
    in_flight: AtomicUsize,
    /// Bumped whenever `in_flight` changes, so the IO can restart its clocks.
    epoch: AtomicU64,
    upgraded: AtomicBool,
    /// Woken when a request ends, so the idle clock restarts at once.
    waker: atomic_waker::AtomicWaker,
}

impl ConnState {
    /// A request head was parsed and is being served.
    pub fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// The connection now carries an upgraded protocol: no deadlines any more.
    pub fn mark_upgraded(&self) {
        self.upgraded.store(true, Ordering::Release);
    }
}

/// Held while a request is in flight (until its response body is done).
#[derive(Debug)]
pub struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.epoch.fetch_add(1, Ordering::AcqRel);
        self.0.waker.wake();
    }
}

/// Deadlines for one connection.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// From the first byte of a request head to its end; `None` for HTTP/2,
    /// whose frames are bounded by h2 itself.
    pub head: Option<Duration>,
    /// With no request in flight and nothing read.
    pub idle: Duration,
}

/// A connection's IO with its deadlines.
pub struct Watched<IO> {
    io: IO,
    state: Arc<ConnState>,
    deadlines: Deadlines,
    /// Whether the first bytes were looked at (an h2c preface turns `head` off).
    sniffed: bool,
    seen_epoch: u64,
    head: Option<Pin<Box<Sleep>>>,
    idle: Pin<Box<Sleep>>,
}

impl<IO> Watched<IO> {
    /// Wraps `io`; the idle clock starts now.
    pub fn new(io: IO, state: Arc<ConnState>, deadlines: Deadlines) -> Self {
        Watched {
            io,
            state,
            deadlines,
            sniffed: false,
            seen_epoch: 0,
            head: None,
            idle: Box::pin(tokio::time::sleep(deadlines.idle)),
        }
    }

    /// The wrapped IO.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    fn check(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        if self.state.upgraded.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        // hyper may poll for the next request before the last response body is
        // dropped; the drop wakes us through this.
        self.state.waker.register(cx.waker());
        let epoch = self.state.epoch.load(Ordering::Acquire);
        if epoch != self.seen_epoch {
            // A request started or ended: the head being timed is complete, and
            // idleness counts from now.
            self.seen_epoch = epoch;
            self.head = None;
            self.idle
                .as_mut()
                .reset(Instant::now() + self.deadlines.idle);
        }
        if self.state.in_flight.load(Ordering::Acquire) > 0 {
            return Poll::Pending;
        }
        if let Some(head) = self.head.as_mut() {
            if head.as_mut().poll(cx).is_ready() {
                return Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "request head not received in time",
                ));
            }
        }
        if self.idle.as_mut().poll(cx).is_ready() {
            return Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, "idle connection"));
        }
        Poll::Pending
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                if !this.sniffed {
                    this.sniffed = true;
                    if buf.filled()[before..].starts_with(b"PRI ") {
                        this.deadlines.head = None;
                    }
                }
                let idle_now = this.state.in_flight.load(Ordering::Acquire) == 0;
                if let (true, None, Some(limit)) = (idle_now, &this.head, this.deadlines.head) {
                    this.head = Some(Box::pin(tokio::time::sleep(limit)));
                }
                this.idle
                    .as_mut()
                    .reset(Instant::now() + this.deadlines.idle);
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match this.check(cx) {
                Poll::Ready(error) => Poll::Ready(Err(error)),
                Poll::Pending => Poll::Pending,
            },
            other => other,
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::{ConnState, Deadlines, Watched};
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn deadlines() -> Deadlines {
        Deadlines {
            head: Some(Duration::from_secs(10)),
            idle: Duration::from_secs(75),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connection_closes_after_idle_timeout_not_head_timeout() {
        let (client, server) = tokio::io::duplex(64);
        let state = Arc::new(ConnState::default());
        let mut watched = Watched::new(server, state, deadlines());
        let start = tokio::time::Instant::now();
        let mut buf = [0u8; 8];
        let err = watched.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(start.elapsed(), Duration::from_secs(75));
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn partial_head_is_cut_at_head_deadline() {
        let (mut client, server) = tokio::io::duplex(64);
        let state = Arc::new(ConnState::default());
        let mut watched = Watched::new(server, state, deadlines());
        client.write_all(b"GET / HT").await.unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(watched.read(&mut buf).await.unwrap(), 8);
        let start = tokio::time::Instant::now();
        let err = watched.read(&mut buf).await.unwrap_err();
        assert_eq!(err.to_string(), "request head not received in time");
        assert_eq!(start.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn no_deadline_while_a_request_is_in_flight() {
        let (mut client, server) = tokio::io::duplex(64);
        let state = Arc::new(ConnState::default());
        let mut watched = Watched::new(server, state.clone(), deadlines());
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(watched.read(&mut buf).await.unwrap(), 18);
        let in_flight = state.request_started();
        let read = tokio::time::timeout(Duration::from_secs(3600), watched.read(&mut buf)).await;
        assert!(read.is_err(), "an hour-long response is not cut");
        drop(in_flight);
        let start = tokio::time::Instant::now();
        assert!(watched.read(&mut buf).await.is_err());
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(75),
            "idle counts from the response's end"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_clock_restarts_when_the_response_ends_during_a_pending_read() {
        let (_client, server) = tokio::io::duplex(64);
        let state = Arc::new(ConnState::default());
        let mut watched = Watched::new(server, state.clone(), deadlines());
        let in_flight = state.request_started();
        // hyper polls for the next request while the response is still streaming.
        let ended = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(500)).await;
            drop(in_flight);
            tokio::time::Instant::now()
        });
        let mut buf = [0u8; 8];
        assert!(watched.read(&mut buf).await.is_err());
        let closed_at = tokio::time::Instant::now();
        assert_eq!(closed_at - ended.await.unwrap(), Duration::from_secs(75));
    }

    #[tokio::test(start_paused = true)]
    async fn upgraded_connections_have_no_deadline() {
        let (_client, server) = tokio::io::duplex(64);
        let state = Arc::new(ConnState::default());
        let mut watched = Watched::new(server, state.clone(), deadlines());
        state.mark_upgraded();
        let mut buf = [0u8; 8];
        let read = tokio::time::timeout(Duration::from_secs(86_400), watched.read(&mut buf)).await;
        assert!(read.is_err(), "still open after a day of silence");
    }
}
