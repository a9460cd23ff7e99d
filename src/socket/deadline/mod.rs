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
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};

use crate::socket::head_scan::HeadScan;

mod state;
mod watched_io;

pub use state::{ConnState, InFlight};

/// Deadlines for one connection.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// From the first byte of a request head to its end; `None` for HTTP/2,
    /// whose frames are bounded by h2 itself.
    pub head: Option<Duration>,
    /// With no request in flight and nothing read.
    pub idle: Duration,
}

/// How long an HTTP/1.1 keep-alive connection waits, answered and quiet,
/// before it is parked: hyper's connection (its 8 KiB read and write buffers)
/// is dropped and only the socket, its TLS state and its clocks stay, until the
/// client sends again. Long enough that a client sending request after request
/// keeps its hyper connection. A quiet HTTP/2 connection is woken once at this
/// point instead, for h2 to give its buffers back (its own `RELEASE_IDLE_AFTER`,
/// 100 ms, is shorter, so the wake finds it due).
pub const PARK_AFTER: Duration = Duration::from_millis(250);

/// A connection's IO with its deadlines, as hyper sees it.
///
/// Made by [`Parked::wake`], it can end the hyper connection of a quiet
/// HTTP/1.1 client by reporting end-of-stream to hyper — only when nothing of
/// the connection is in hyper's hands: the last request's head ended the last
/// read and announced no body, its response is done and flushed. hyper then
/// finishes without a word to the client, and dropping this hands the socket
/// back as a [`Parked`] connection.
pub struct Watched<IO> {
    /// Always present until dropped.
    live: Option<Parked<IO>>,
    /// Where a parked connection goes back to; `None`: never park.
    home: Option<oneshot::Sender<Parked<IO>>>,
}

/// A connection's IO and clocks, without a hyper connection.
pub struct Parked<IO> {
    io: IO,
    state: Arc<ConnState>,
    deadlines: Deadlines,
    /// Whether the first bytes were looked at (an h2c preface turns `head` off).
    sniffed: bool,
    seen_epoch: u64,
    scan: HeadScan,
    /// When the head being read must be complete.
    head_at: Option<Instant>,
    /// When the connection closes unless something happens.
    idle_at: Instant,
    /// When a quiet, answered connection may park (from the answer's end).
    quiet_at: Option<Instant>,
    /// One timer for the three: re-armed only when it would wake too late or
    /// has fired, not on every request (a reset takes the timer driver's lock).
    timer: Pin<Box<Sleep>>,
    /// The last read ended exactly with a body-less head (see `HeadScan`).
    at_boundary: bool,
    /// The epoch at which the IO last reported everything written.
    flushed_epoch: u64,
    /// hyper was told end-of-stream to park the connection.
    parking: bool,
}

impl<IO> Watched<IO> {
    /// Wraps `io`; the idle clock starts now. Never parks.
    pub fn new(io: IO, state: Arc<ConnState>, deadlines: Deadlines) -> Self {
        Parked::new(io, state, deadlines).keep()
    }

    fn live(&mut self) -> &mut Parked<IO> {
        self.live.as_mut().expect("present until dropped")
    }
}

impl<IO> Drop for Watched<IO> {
    fn drop(&mut self) {
        if let (Some(live), Some(home)) = (self.live.take(), self.home.take()) {
            if live.parking {
                let _ = home.send(live);
            }
        }
    }
}

impl<IO> Parked<IO> {
    /// A connection's IO; the idle clock starts now.
    pub fn new(io: IO, state: Arc<ConnState>, deadlines: Deadlines) -> Self {
        Parked {
            io,
            state,
            deadlines,
            sniffed: false,
            seen_epoch: 0,
            scan: HeadScan::default(),
            head_at: None,
            idle_at: Instant::now() + deadlines.idle,
            quiet_at: None,
            timer: Box::pin(tokio::time::sleep(deadlines.idle)),
            at_boundary: false,
            flushed_epoch: 0,
            parking: false,
        }
    }

    /// The IO for a new hyper connection, and where it comes back when parked.
    pub fn wake(mut self) -> (Watched<IO>, oneshot::Receiver<Parked<IO>>) {
        self.parking = false;
        self.quiet_at = None;
        self.at_boundary = false;
        let (home, back) = oneshot::channel();
        let watched = Watched {
            live: Some(self),
            home: Some(home),
        };
        (watched, back)
    }

    /// The IO for a hyper connection that keeps it to the end (HTTP/2,
    /// whose HPACK and stream state cannot be dropped while quiet): no
    /// channel back, whose room for a whole parked IO would live as long.
    pub fn keep(self) -> Watched<IO> {
        Watched {
            live: Some(self),
            home: None,
        }
    }

    /// The wrapped IO.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// Waits until the client sends again (or closes); an error when the idle
    /// deadline passes first.
    pub async fn readable(&mut self) -> io::Result<()>
    where
        IO: Readiness,
    {
        std::future::poll_fn(|cx| {
            let now = Instant::now();
            if now >= self.idle_at {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "idle connection",
                )));
            }
            let idle_at = self.idle_at;
            self.wake_by(idle_at, now, cx);
            self.io.poll_read_ready(cx)
        })
        .await
    }

    /// Makes sure the task is woken by `at`: the timer is moved only when it
    /// would wake later than that, or has already fired.
    fn wake_by(&mut self, at: Instant, now: Instant, cx: &mut Context<'_>) {
        let set = self.timer.deadline();
        if set > at || set <= now {
            self.timer.as_mut().reset(at);
        }
        // Registers the waker; an early wake only re-runs the checks.
        if self.timer.as_mut().poll(cx).is_ready() {
            // It fired since the checks ran (no waker is kept then): run them
            // again at once rather than never.
            cx.waker().wake_by_ref();
        }
    }

    /// The clocks, while hyper waits to read: an expired deadline, the moment
    /// to park (only asked when `may_park`), or nothing yet.
    fn check(&mut self, cx: &mut Context<'_>, may_park: bool) -> Due {
        if self.state.upgraded.load(Ordering::Acquire) {
            return Due::Wait;
        }
        // hyper may poll for the next request before the last response body is
        // dropped; the drop wakes us through this.
        self.state.waker.register(cx.waker());
        let epoch = self.state.epoch.load(Ordering::Acquire);
        let in_flight = self.state.in_flight.load(Ordering::Acquire);
        let now = Instant::now();
        if epoch != self.seen_epoch {
            // A request started or ended: the head being timed is complete, and
            // idleness counts from now.
            self.seen_epoch = epoch;
            self.head_at = None;
            self.idle_at = now + self.deadlines.idle;
            self.quiet_at = (in_flight == 0).then(|| now + PARK_AFTER);
        }
        if in_flight > 0 {
            return Due::Wait;
        }
        if self.head_at.is_some_and(|at| now >= at) {
            return Due::Expired("request head not received in time");
        }
        if now >= self.idle_at {
            return Due::Expired("idle connection");
        }
        let park_at = self.quiet_at.filter(|_| may_park && self.may_park());
        if park_at.is_some_and(|at| now >= at) {
            return Due::Park;
        }
        // HTTP/2 is not parked, but its connection gives its buffers back
        // when polled after a quiet spell (h2 as patched, vendor/README.md):
        // one wake for that, `PARK_AFTER` after the last request ended.
        let mut wake_h2_at = self.quiet_at.filter(|_| self.deadlines.head.is_none());
        if wake_h2_at.is_some_and(|at| now >= at) {
            self.quiet_at = None;
            wake_h2_at = None;
        }
        let next = [self.head_at, park_at, wake_h2_at]
            .into_iter()
            .flatten()
            .fold(self.idle_at, Instant::min);
        self.wake_by(next, now, cx);
        Due::Wait
    }

    /// Whether hyper holds nothing of this connection: its last head ended the
    /// last read and announced no body, and the answer is done and flushed.
    fn may_park(&self) -> bool {
        self.quiet_at.is_some()
            && self.at_boundary
            && !self.state.upgraded.load(Ordering::Acquire)
            && self.deadlines.head.is_some()
            && self.flushed_epoch == self.seen_epoch
            && self.state.epoch.load(Ordering::Acquire) == self.seen_epoch
    }
}

/// What the clocks say while hyper waits to read.
enum Due {
    Wait,
    Expired(&'static str),
    Park,
}

/// Tells when a parked connection's client has sent something.
pub trait Readiness {
    /// Ready when a read would not wait (data, end of stream or an error).
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

#[cfg(test)]
pub(super) mod tests {
    use super::{ConnState, Deadlines, Parked, Watched};
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    pub(super) fn deadlines() -> Deadlines {
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

    /// A Watched that may park, after one request read and answered.
    pub(super) async fn answered(
        request: &[u8],
    ) -> (
        tokio::io::DuplexStream,
        Watched<tokio::io::DuplexStream>,
        tokio::sync::oneshot::Receiver<Parked<tokio::io::DuplexStream>>,
        Arc<ConnState>,
    ) {
        let (mut client, server) = tokio::io::duplex(256);
        let state = Arc::new(ConnState::default());
        let (mut watched, back) = Parked::new(server, state.clone(), deadlines()).wake();
        client.write_all(request).await.unwrap();
        let mut buf = [0u8; 256];
        assert_eq!(watched.read(&mut buf).await.unwrap(), request.len());
        let in_flight = state.request_started();
        watched.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        drop(in_flight);
        watched.flush().await.unwrap();
        (client, watched, back, state)
    }
}
