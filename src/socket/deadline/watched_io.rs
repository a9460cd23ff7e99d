//! `Watched` as the IO hyper reads and writes: every read runs the clocks,
//! and a quiet answered connection parks by reading as end-of-stream.

use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::{Due, Watched};

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let may_park = self.home.is_some();
        let this = self.live();
        if this.parking {
            return Poll::Ready(Ok(()));
        }
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
                this.at_boundary = false;
                if idle_now && this.deadlines.head.is_some() {
                    let epoch = this.state.epoch.load(Ordering::Acquire);
                    let scanned = this.scan.feed(epoch, &buf.filled()[before..]);
                    if scanned.ambiguous {
                        this.state.ambiguous.store(true, Ordering::Release);
                    }
                    this.at_boundary = scanned.at_boundary;
                }
                let now = Instant::now();
                if let (true, None, Some(limit)) = (idle_now, this.head_at, this.deadlines.head) {
                    this.head_at = Some(now + limit);
                }
                this.quiet_at = None;
                this.idle_at = now + this.deadlines.idle;
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match this.check(cx, may_park) {
                Due::Wait => Poll::Pending,
                Due::Expired(why) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, why))),
                Due::Park => {
                    // End-of-stream for hyper; the socket stays open.
                    this.parking = true;
                    Poll::Ready(Ok(()))
                }
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
        Pin::new(&mut self.live().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.live().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.live
            .as_ref()
            .is_some_and(|live| live.io.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.live();
        // Sampled first: a request ending during the flush must not count as flushed.
        let epoch = this.state.epoch.load(Ordering::Acquire);
        let flushed = Pin::new(&mut this.io).poll_flush(cx);
        if let Poll::Ready(Ok(())) = flushed {
            this.flushed_epoch = epoch;
        }
        flushed
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.live();
        if this.parking {
            // hyper closes its side; the client's connection stays open.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{answered, deadlines};
    use super::super::{ConnState, Deadlines, Parked, Watched, PARK_AFTER};
    use std::pin::Pin;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};

    #[tokio::test(start_paused = true)]
    async fn quiet_answered_connection_parks_and_comes_back() {
        let (mut client, mut watched, mut back, _state) =
            answered(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
        let start = tokio::time::Instant::now();
        let mut buf = [0u8; 64];
        assert_eq!(
            watched.read(&mut buf).await.unwrap(),
            0,
            "end-of-stream for hyper"
        );
        assert_eq!(start.elapsed(), PARK_AFTER);
        watched.shutdown().await.unwrap();
        assert!(back.try_recv().is_err(), "still with hyper until dropped");
        drop(watched);
        let parked = back.try_recv().expect("handed back on drop");
        // The client's side is still open, and what it sends next is there.
        client
            .write_all(b"GET /next HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let (mut watched, _back) = parked.wake();
        let n = watched.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"GET /next HTTP/1.1\r\n\r\n");
    }

    /// Reads until the idle deadline: an error, never a parking end-of-stream.
    async fn never_parks(mut watched: Watched<tokio::io::DuplexStream>) {
        let mut buf = [0u8; 64];
        let read = watched.read(&mut buf).await;
        assert!(read.is_err(), "the idle deadline, not parking: {read:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn never_parks_with_bytes_hyper_may_hold() {
        // A pipelined request read together with the first.
        let (_c, watched, _b, _s) =
            answered(b"GET / HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n").await;
        never_parks(watched).await;
        // A request with a body.
        let (_c, watched, _b, _s) =
            answered(b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi").await;
        never_parks(watched).await;
    }

    #[tokio::test(start_paused = true)]
    async fn never_parks_while_answering_or_unflushed_or_upgraded() {
        let (mut client, server) = tokio::io::duplex(256);
        let state = Arc::new(ConnState::default());
        let (mut watched, _back) = Parked::new(server, state.clone(), deadlines()).wake();
        let mut buf = [0u8; 64];
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert_eq!(watched.read(&mut buf).await.unwrap(), 18);
        let in_flight = state.request_started();
        let read = tokio::time::timeout(Duration::from_secs(60), watched.read(&mut buf)).await;
        assert!(
            read.is_err(),
            "no end-of-stream while a request is answered"
        );
        drop(in_flight);
        // Answered but never flushed.
        never_parks(watched).await;
        let (_c, watched, _b, state) = answered(b"GET /ws HTTP/1.1\r\n\r\n").await;
        state.mark_upgraded();
        let mut watched = watched;
        let read = tokio::time::timeout(Duration::from_secs(600), watched.read(&mut buf)).await;
        assert!(read.is_err(), "an upgraded connection is never parked");
    }

    #[tokio::test(start_paused = true)]
    async fn quiet_http2_connection_is_woken_once_to_give_its_buffers_back() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        use std::task::{Context, Wake, Waker};
        struct Wakes(AtomicUsize);
        impl Wake for Wakes {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, SeqCst);
            }
        }
        let (mut client, server) = tokio::io::duplex(256);
        let state = Arc::new(ConnState::default());
        let http2 = Deadlines {
            head: None,
            idle: Duration::from_secs(75),
        };
        let mut watched = Watched::new(server, state.clone(), http2);
        client.write_all(b"frames").await.unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(watched.read(&mut buf).await.unwrap(), 6);
        drop(state.request_started());
        let wakes = Arc::new(Wakes(AtomicUsize::new(0)));
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut read = ReadBuf::new(&mut buf);
        assert!(Pin::new(&mut watched)
            .poll_read(&mut cx, &mut read)
            .is_pending());
        tokio::time::advance(PARK_AFTER - Duration::from_millis(1)).await;
        assert_eq!(wakes.0.load(SeqCst), 0, "not before PARK_AFTER");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(wakes.0.load(SeqCst), 1, "woken at PARK_AFTER");
        assert!(Pin::new(&mut watched)
            .poll_read(&mut cx, &mut read)
            .is_pending());
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(wakes.0.load(SeqCst), 1, "once, then only the idle deadline");
    }

    #[tokio::test(start_paused = true)]
    async fn plain_watched_never_parks() {
        let (mut client, server) = tokio::io::duplex(256);
        let state = Arc::new(ConnState::default());
        let mut watched = Watched::new(server, state.clone(), deadlines());
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(watched.read(&mut buf).await.unwrap(), 18);
        drop(state.request_started());
        watched.flush().await.unwrap();
        never_parks(watched).await;
    }
}
