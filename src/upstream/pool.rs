//! The upstream's keep-alive pool: idle HTTP/1.1 connections, the most
//! recently used taken first. A connection comes back when the body of its
//! last answer has been read to the end (`lent.rs`); one dropped half-read
//! is closed, since its connection is mid-message.
//!
//! Each connection is a hyper `http1::SendRequest` whose connection task runs
//! on its own; a request hands its head to that task and gets the answer back,
//! with no pool task or lookup per request in between.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError, Weak};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use hyper::client::conn::http1::SendRequest;

use super::limit::ConnPermit;
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
    pub(super) fn checkin(&self, conn: PooledConn, epoch: u64) {
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

#[cfg(test)]
pub(in crate::upstream) mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;

    use http::Request;
    use http_body_util::BodyExt;
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    use super::{Pool, PooledConn, POOL_IDLE, SWEEP_EVERY};
    use crate::body::empty_body;
    use crate::upstream::lent::{Lease, UpstreamBody};

    /// An upstream answering every request on a connection with `answer`; with
    /// `close_after`, it closes the connection that long after its first answer.
    pub(in crate::upstream) async fn fake_upstream(
        answer: &'static [u8],
        close_after: Option<Duration>,
    ) -> SocketAddr {
        origin_telling_closes(answer, close_after).await.0
    }

    /// `fake_upstream`, also telling when drawbridge closed one of its connections.
    pub(in crate::upstream) async fn origin_telling_closes(
        answer: &'static [u8],
        close_after: Option<Duration>,
    ) -> (SocketAddr, mpsc::UnboundedReceiver<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (closed, closes) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let closed = closed.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = stream.read(&mut buf).await {
                        if n == 0 {
                            let _ = closed.send(());
                            return;
                        }
                        if stream.write_all(answer).await.is_err() {
                            return;
                        }
                        if let Some(after) = close_after {
                            tokio::time::sleep(after).await;
                            return;
                        }
                    }
                });
            }
        });
        (addr, closes)
    }

    pub(in crate::upstream) async fn connect(addr: SocketAddr) -> PooledConn {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        let permit = Arc::new(tokio::sync::Semaphore::new(1))
            .try_acquire_owned()
            .unwrap();
        PooledConn { sender, permit }
    }

    /// Sends one GET on `conn` and returns its body, leased from `pool`.
    pub(in crate::upstream) async fn get(
        mut conn: PooledConn,
        pool: &Arc<Pool>,
        epoch: u64,
    ) -> UpstreamBody {
        let request = Request::get("/").body(empty_body()).unwrap();
        let response = conn.sender.send_request(request).await.unwrap();
        let lease = Lease {
            conn,
            epoch,
            pool: pool.clone(),
        };
        UpstreamBody::new(response.into_body(), lease)
    }

    pub(in crate::upstream) const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

    #[tokio::test]
    async fn dns_moving_on_retires_idle_connections() {
        let addr = fake_upstream(OK, None).await;
        let pool = Arc::new(Pool::default());
        let body = get(connect(addr).await, &pool, 0).await;
        body.collect().await.unwrap();
        assert_eq!(pool.idle(), 1);
        assert!(pool.checkout(1).is_none(), "made for the old addresses");
        assert_eq!(pool.idle(), 0);
        // One lent under the old epoch is not taken back either.
        let body = get(connect(addr).await, &pool, 0).await;
        body.collect().await.unwrap();
        assert_eq!(pool.idle(), 0);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_is_never_checked_out() {
        let addr = fake_upstream(OK, Some(Duration::from_millis(100))).await;
        let pool = Arc::new(Pool::default());
        let sender = connect(addr).await;
        let body = get(sender, &pool, 0).await;
        body.collect().await.unwrap();
        assert_eq!(pool.idle(), 1, "given back before the close arrives");
        // The upstream closes it 100 ms after answering.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(
            pool.checkout(0).is_none(),
            "a closed connection was offered"
        );
        assert_eq!(pool.idle(), 0, "and it was dropped, not kept");
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_idle_past_the_pool_idle_time_is_closed_not_reused() {
        let addr = fake_upstream(OK, None).await;
        let pool = Arc::new(Pool::default());
        get(connect(addr).await, &pool, 0)
            .await
            .collect()
            .await
            .unwrap();
        tokio::time::advance(POOL_IDLE - Duration::from_secs(1)).await;
        let sender = pool.checkout(0).expect("not yet aged");
        get(sender, &pool, 0).await.collect().await.unwrap();
        tokio::time::advance(POOL_IDLE).await;
        assert!(pool.checkout(0).is_none(), "aged past POOL_IDLE");
        assert_eq!(pool.idle(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_sweep_closes_connections_idle_past_the_pool_idle_time_with_no_request_coming() {
        let (addr, mut closes) = origin_telling_closes(OK, None).await;
        let pool = Arc::new(Pool::default());
        let shutdown = CancellationToken::new();
        tokio::spawn(super::sweep(Arc::downgrade(&pool), shutdown.clone()));
        get(connect(addr).await, &pool, 0)
            .await
            .collect()
            .await
            .unwrap();
        tokio::time::advance(POOL_IDLE - SWEEP_EVERY).await;
        assert_eq!(pool.idle(), 1, "not yet aged");
        tokio::time::advance(2 * SWEEP_EVERY).await;
        assert_eq!(pool.idle(), 0, "swept without a checkout");
        closes
            .recv()
            .await
            .expect("the upstream saw the connection close");
        shutdown.cancel();
    }
}
