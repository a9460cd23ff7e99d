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
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};

use crate::socket::head_scan::HeadScan;

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
    /// Bytes the socket should read at once from now on (0: as asked): set
    /// when the connection became an agent's tunnel (`rewind.rs`).
    read_ahead: AtomicUsize,
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

    /// From now on the socket reads up to `size` bytes at once (a tunnel
    /// connection carries films; see `rewind.rs`).
    pub fn read_ahead(&self, size: usize) {
        self.read_ahead.store(size, Ordering::Relaxed);
    }

    /// What `read_ahead` asked for (0: nothing).
    pub fn wants_read_ahead(&self) -> usize {
        self.read_ahead.load(Ordering::Relaxed)
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

/// How long an HTTP/1.1 keep-alive connection waits, answered and quiet,
/// before it is parked: hyper's connection (its 8 KiB read and write buffers)
/// is dropped and only the socket, its TLS state and its clocks stay, until the
/// client sends again. Long enough that a client sending request after request
/// keeps its hyper connection.
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
        let next = [self.head_at, park_at]
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
mod tests;
