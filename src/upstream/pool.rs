//! The upstream's keep-alive pool: idle HTTP/1.1 connections, the most
//! recently used taken first. A connection comes back when the body of its
//! last answer has been read to the end (`UpstreamBody`); one dropped half-read
//! is closed, since its connection is mid-message.
//!
//! Each connection is a hyper `http1::SendRequest` whose connection task runs
//! on its own; a request hands its head to that task and gets the answer back,
//! with no pool task or lookup per request in between.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;

use super::limit::{ConnPermit, Share};
use crate::body::Body;

/// A connection's request side.
pub(super) type Sender = SendRequest<Body>;

/// A connection's request side with its place under the upstream's cap:
/// dropping it closes the connection and frees the place.
#[derive(Debug)]
pub(super) struct PooledConn {
    pub(super) sender: Sender,
    pub(super) permit: ConnPermit,
}

/// How long an idle pooled connection is kept: below Kestrel's 130 s keep-alive,
/// so drawbridge, not Jellyfin, closes it and a request never races the close.
pub(super) const POOL_IDLE: Duration = Duration::from_secs(50);

/// How many idle connections the pool keeps. HTTP/1.1 carries one request
/// at a time, so a browser's burst of 100 poster requests over HTTP/2 needs
/// 100 upstream connections; a pool smaller than the bursts closes and reopens
/// connections on every burst (at 64, a third of the CPU of an HTTP/2 load went
/// to connect and close; at 256, 64 HTTP/2 clients with 10 streams each still
/// made a new connection every 50 requests). Unused ones close after
/// `POOL_IDLE`, so the bound only matters after a burst.
pub(super) const POOL_IDLE_MAX: usize = 1024;

/// How often idle connections are looked over for age and closes.
pub(super) const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Idle connections to one upstream.
#[derive(Debug, Default)]
pub(super) struct Pool {
    inner: Mutex<Idle>,
    /// A connection came back (requests waiting for the cap try again).
    pub(super) returned: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Idle {
    /// The address epoch the idle connections were made for.
    epoch: u64,
    /// Oldest first.
    senders: VecDeque<(PooledConn, Instant)>,
}

impl Pool {
    /// An idle connection ready for a request, made for the addresses of
    /// `epoch`. Connections that closed, aged past `POOL_IDLE`, or lead to
    /// addresses DNS has moved away from are dropped on the way.
    pub(super) fn checkout(&self, epoch: u64) -> Option<PooledConn> {
        let mut idle = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.epoch != epoch {
            idle.epoch = epoch;
            idle.senders.clear();
        }
        idle.expire(Instant::now());
        let mut at = idle.senders.len();
        while at > 0 {
            at -= 1;
            let sender = &idle.senders[at].0.sender;
            if sender.is_closed() {
                idle.senders.remove(at);
            } else if sender.is_ready() {
                return idle.senders.remove(at).map(|(conn, _)| conn);
            }
            // Else still finishing its last answer: left for a later request.
        }
        None
    }

    /// Takes `conn` back, unless it closed or DNS moved on from `epoch`.
    fn checkin(&self, conn: PooledConn, epoch: u64) {
        if conn.sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.epoch != epoch {
            return;
        }
        if idle.senders.len() >= POOL_IDLE_MAX {
            idle.senders.pop_front();
        }
        idle.senders.push_back((conn, now));
        drop(idle);
        self.returned.notify_one();
    }

    /// Closes the oldest idle connection, freeing its place under the cap
    /// for a new one (to addresses DNS moved to, or past one that is still
    /// finishing its last answer). False when none is idle.
    pub(super) fn evict_oldest(&self) -> bool {
        let mut idle = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        idle.senders.pop_front().is_some()
    }

    /// Closes the idle connections that aged past `POOL_IDLE` or that the
    /// upstream closed, without waiting for a request to come by.
    fn sweep(&self) {
        let mut idle = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        idle.expire(Instant::now());
        idle.senders.retain(|(conn, _)| !conn.sender.is_closed());
    }

    /// How many idle connections the pool holds (for tests).
    #[cfg(test)]
    pub(super) fn idle(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .senders
            .len()
    }
}

impl Idle {
    /// Drops the connections idle for `POOL_IDLE` or longer.
    fn expire(&mut self, now: Instant) {
        while self
            .senders
            .front()
            .is_some_and(|(_, since)| now.duration_since(*since) >= POOL_IDLE)
        {
            self.senders.pop_front();
        }
    }
}

/// Sweeps `pool` every `SWEEP_EVERY` until `shutdown` or until the pool is
/// dropped (its routes replaced by a reload): on a server gone quiet, idle
/// connections close at most `SWEEP_EVERY` after `POOL_IDLE` instead of
/// lingering until the next request.
pub(super) async fn sweep(pool: Weak<Pool>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(SWEEP_EVERY) => {}
        }
        match pool.upgrade() {
            Some(pool) => pool.sweep(),
            None => return,
        }
    }
}

/// A connection lent to one exchange.
#[derive(Debug)]
pub(super) struct Lease {
    pub(super) conn: PooledConn,
    pub(super) epoch: u64,
    pub(super) pool: Arc<Pool>,
}

/// An upstream answer's body. Read to its end, it gives its connection back
/// to the pool.
#[derive(Debug)]
pub struct UpstreamBody {
    inner: Incoming,
    lease: Option<Lease>,
    /// The client's share of the upstream's connections, given back with
    /// the connection.
    share: Option<Share>,
    /// A tunnel stream's place under the cap (no pooled connection).
    permit: Option<ConnPermit>,
    /// A tunnel stream's place on its link (a draining link waits for it).
    stream: Option<crate::tunnel::hub::StreamHold>,
}

impl UpstreamBody {
    pub(super) fn new(inner: Incoming, lease: Lease) -> UpstreamBody {
        UpstreamBody {
            inner,
            lease: Some(lease),
            share: None,
            permit: None,
            stream: None,
        }
    }

    /// The body of an answer through a tunnel stream that holds `permit`
    /// and `stream`.
    pub(super) fn tunneled(
        inner: Incoming,
        permit: ConnPermit,
        stream: crate::tunnel::hub::StreamHold,
    ) -> UpstreamBody {
        UpstreamBody {
            inner,
            lease: None,
            share: None,
            permit: Some(permit),
            stream: Some(stream),
        }
    }

    /// Keeps `share` until the body has been read or dropped.
    pub(super) fn hold(&mut self, share: Share) {
        self.share = Some(share);
    }

    fn give_back(&mut self) {
        if let Some(Lease { conn, epoch, pool }) = self.lease.take() {
            pool.checkin(conn, epoch);
        }
        self.share = None;
        self.permit = None;
        self.stream = None;
    }
}

impl HttpBody for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &frame {
            None => self.give_back(),
            // The connection is mid-message: it cannot carry another.
            Some(Err(error)) => {
                tracing::warn!(%error, "the upstream failed mid-body; the client's response is cut short");
                self.lease = None;
                self.share = None;
                self.permit = None;
            }
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // hyper stops reading a body once it says it has ended, without
        // asking for the end: that counts as read to the end.
        if self.inner.is_end_stream() {
            self.give_back();
        }
    }
}
