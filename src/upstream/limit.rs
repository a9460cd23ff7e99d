//! The upstream connection cap: at most `upstream_max_conns` connections to
//! one upstream at once — idle in the pool, busy with a request, or carrying
//! a WebSocket — and at most `upstream_max_conns_per_client` of them busy for
//! one client address, so one client cannot take the home server's
//! connections from everyone else. A request waits for its turn up to a
//! deadline (the site's `response_timeout`), in a queue of bounded length;
//! then it gets 503 with `Retry-After`.
//!
//! A connection's permit lives as long as the connection's handle (pooled or
//! lent); a client's share lives as long as its exchange (until the answer's
//! body ends or is dropped, or the WebSocket closes).

use std::net::IpAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::error::Busy;
use crate::guard::keys::ClientKey;

/// How many requests may wait for a turn, per permitted connection: a burst
/// waits, a flood gets 503 at once.
const WAITING_PER_CONN: usize = 4;

/// One upstream's cap and the clients' shares of it.
#[derive(Debug)]
pub struct Limit {
    conns: Arc<Semaphore>,
    max_conns: usize,
    per_client: usize,
    /// Busy connections per client: a short list (clients with requests
    /// in flight), searched in place, cheaper than hashing on every request.
    busy: Mutex<Vec<(ClientKey, usize)>>,
    /// A client's share came back.
    share_freed: Notify,
    waiting: AtomicUsize,
}

/// A client's share of the cap, given back on drop.
#[derive(Debug)]
pub struct Share {
    limit: Arc<Limit>,
    key: ClientKey,
}

/// A connection's place under the cap, given back on drop.
pub type ConnPermit = OwnedSemaphorePermit;

impl Limit {
    /// A cap of `max_conns`, `per_client` of them for one client.
    pub fn new(max_conns: usize, per_client: usize) -> Arc<Limit> {
        Arc::new(Limit {
            conns: Arc::new(Semaphore::new(max_conns)),
            max_conns,
            per_client: per_client.clamp(1, max_conns),
            busy: Mutex::new(Vec::new()),
            share_freed: Notify::new(),
            waiting: AtomicUsize::new(0),
        })
    }

    /// Waits until `client` may keep one more connection busy, up to
    /// `deadline`.
    pub async fn share(
        self: &Arc<Self>,
        client: IpAddr,
        deadline: &Deadline,
    ) -> Result<Share, Busy> {
        let key = ClientKey::of(client);
        if self.try_share(key) {
            return Ok(self.share_of(key));
        }
        let deadline = deadline.at();
        let _waiting = self.wait_turn().ok_or(Busy::Client)?;
        loop {
            let mut freed = pin!(self.share_freed.notified());
            freed.as_mut().enable();
            if self.try_share(key) {
                return Ok(self.share_of(key));
            }
            tokio::select! {
                () = freed => {}
                () = tokio::time::sleep_until(deadline) => return Err(Busy::Client),
            }
        }
    }

    fn share_of(self: &Arc<Self>, key: ClientKey) -> Share {
        Share {
            limit: self.clone(),
            key,
        }
    }

    fn try_share(&self, key: ClientKey) -> bool {
        let mut busy = self.busy.lock().unwrap_or_else(PoisonError::into_inner);
        match busy.iter_mut().find(|(k, _)| *k == key) {
            Some((_, count)) if *count >= self.per_client => false,
            Some((_, count)) => {
                *count += 1;
                true
            }
            None => {
                busy.push((key, 1));
                true
            }
        }
    }

    /// A connection permit at once, if one is free.
    pub fn try_conn(&self) -> Option<ConnPermit> {
        self.conns.clone().try_acquire_owned().ok()
    }

    /// Waits for a connection permit up to `deadline`; `returned` fires when
    /// a pooled connection comes back (the caller then tries the pool).
    pub async fn conn_or_returned(
        &self,
        returned: &Notify,
        deadline: &Deadline,
    ) -> Result<Option<ConnPermit>, Busy> {
        let _waiting = self.wait_turn().ok_or(Busy::Upstream)?;
        let deadline = deadline.at();
        tokio::select! {
            permit = self.conns.clone().acquire_owned() => Ok(permit.ok()),
            () = returned.notified() => Ok(None),
            () = tokio::time::sleep_until(deadline) => Err(Busy::Upstream),
        }
    }

    /// A place in the queue, or None when the queue is full.
    fn wait_turn(&self) -> Option<Waiting<'_>> {
        let bound = self.max_conns.saturating_mul(WAITING_PER_CONN);
        let before = self.waiting.fetch_add(1, Ordering::AcqRel);
        let place = Waiting(&self.waiting);
        (before < bound).then_some(place)
    }

    /// Connections open now.
    #[cfg(test)]
    pub fn open(&self) -> usize {
        self.max_conns - self.conns.available_permits()
    }
}

/// A request counted as waiting until dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        let limit = &self.limit;
        let mut busy = limit.busy.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(at) = busy.iter().position(|(k, _)| *k == self.key) {
            busy[at].1 -= 1;
            if busy[at].1 == 0 {
                busy.swap_remove(at);
            }
        }
        drop(busy);
        if limit.waiting.load(Ordering::Acquire) > 0 {
            limit.share_freed.notify_waiters();
        }
    }
}

/// When a wait for a turn ends: `wait` after the first time it is asked
/// for, so a request that never waits never reads the clock.
#[derive(Debug)]
pub struct Deadline {
    wait: std::time::Duration,
    at: std::sync::OnceLock<Instant>,
}

impl Deadline {
    /// A deadline `wait` from when it is first needed.
    pub fn after(wait: std::time::Duration) -> Deadline {
        Deadline {
            wait,
            at: std::sync::OnceLock::new(),
        }
    }

    /// The instant itself.
    pub fn at(&self) -> Instant {
        *self.at.get_or_init(|| Instant::now() + self.wait)
    }
}

#[cfg(test)]
mod tests {
    use super::{Busy, Deadline, Limit};
    use std::time::Duration;
    use tokio::sync::Notify;

    #[tokio::test(start_paused = true)]
    async fn a_client_waits_for_its_share_then_gets_busy() {
        let limit = Limit::new(4, 2);
        let (a, b) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let soon = Deadline::after(Duration::from_secs(1));
        let first = limit.share(a, &soon).await.unwrap();
        let _second = limit.share(a, &soon).await.unwrap();
        assert_eq!(limit.share(a, &soon).await.unwrap_err(), Busy::Client);
        let _other = limit
            .share(b, &soon)
            .await
            .expect("another client has its own share");
        let waiter = {
            let limit = limit.clone();
            tokio::spawn(async move {
                let later = Deadline::after(Duration::from_secs(5));
                limit.share(a, &later).await.is_ok()
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(first);
        assert!(waiter.await.unwrap(), "a freed share goes to the waiter");
    }

    #[tokio::test(start_paused = true)]
    async fn connections_stay_under_the_cap_and_the_queue_is_bounded() {
        let limit = Limit::new(2, 2);
        let returned = Notify::new();
        let one = limit.try_conn().unwrap();
        let _two = limit.try_conn().unwrap();
        assert!(limit.try_conn().is_none());
        assert_eq!(limit.open(), 2);
        let soon = Deadline::after(Duration::from_millis(100));
        assert_eq!(
            limit.conn_or_returned(&returned, &soon).await.unwrap_err(),
            Busy::Upstream
        );
        drop(one);
        let later = Deadline::after(Duration::from_secs(1));
        assert!(limit
            .conn_or_returned(&returned, &later)
            .await
            .unwrap()
            .is_some());
        // 2 connections × 4 may wait; the ninth is refused at once.
        let mut queue = Vec::new();
        for _ in 0..8 {
            queue.push(limit.wait_turn().unwrap());
        }
        assert!(limit.wait_turn().is_none());
    }
}
