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
    /// The head being read named both Content-Length and Transfer-Encoding.
    ambiguous: AtomicBool,
}

impl ConnState {
    /// A request head was parsed and is being served.
    pub fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// Whether the last request head named both Content-Length and
    /// Transfer-Encoding (read from the raw bytes: hyper drops Content-Length
    /// in that case before the head reaches us). Clears the mark.
    pub fn take_ambiguous_framing(&self) -> bool {
        self.ambiguous.swap(false, Ordering::AcqRel)
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
    scan: HeadScan,
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
            scan: HeadScan::default(),
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

/// Watches the header names of an HTTP/1 request head as its bytes arrive.
#[derive(Debug, Default)]
struct HeadScan {
    /// The request (epoch) whose head is being scanned.
    epoch: u64,
    /// The head has ended; nothing more until the next request.
    done: bool,
    /// The current line's first bytes, lower-cased.
    line: [u8; 18],
    len: usize,
    content_length: bool,
    transfer_encoding: bool,
}

impl HeadScan {
    /// Feeds bytes read for the head of request `epoch`; true when the head
    /// turns out to name both Content-Length and Transfer-Encoding.
    fn feed(&mut self, epoch: u64, bytes: &[u8]) -> bool {
        if epoch != self.epoch {
            *self = HeadScan {
                epoch,
                ..HeadScan::default()
            };
        }
        for &b in bytes {
            if self.done {
                return false;
            }
            if b == b'\n' {
                let blank = self.len == 0 || (self.len == 1 && self.line[0] == b'\r');
                if blank && self.content_length | self.transfer_encoding {
                    self.done = true;
                    return self.content_length && self.transfer_encoding;
                }
                self.done = blank;
                self.len = 0;
                continue;
            }
            if self.len < self.line.len() {
                self.line[self.len] = b.to_ascii_lowercase();
            }
            self.len += 1;
            self.content_length |= self.len == 15 && &self.line[..15] == b"content-length:";
            self.transfer_encoding |= self.len == 18 && &self.line[..18] == b"transfer-encoding:";
        }
        false
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
                if idle_now && this.deadlines.head.is_some() {
                    let epoch = this.state.epoch.load(Ordering::Acquire);
                    if this.scan.feed(epoch, &buf.filled()[before..]) {
                        this.state.ambiguous.store(true, Ordering::Release);
                    }
                }
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
mod scan_tests {
    use super::HeadScan;

    #[test]
    fn both_framing_headers_in_one_head_are_seen_across_reads() {
        let mut scan = HeadScan::default();
        assert!(!scan.feed(
            0,
            b"POST / HTTP/1.1\r\nHost: a\r\nConTent-LENGTH: 5\r\nTransfer-En"
        ));
        assert!(scan.feed(0, b"coding: chunked\r\n\r\n0\r\n\r\n"));
    }

    #[test]
    fn one_of_them_or_both_in_a_body_is_fine() {
        let mut scan = HeadScan::default();
        let request = b"POST / HTTP/1.1\r\nContent-Length: 50\r\n\r\ntransfer-encoding: chunked\r\ncontent-length: 1\r\n\r\n";
        assert!(!scan.feed(0, request), "after the blank line it is body");
        let mut scan = HeadScan::default();
        assert!(!scan.feed(
            0,
            b"GET / HTTP/1.1\r\nX-Note: content-length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
        // The next request on the connection is scanned afresh.
        assert!(scan.feed(
            1,
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
        ));
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
