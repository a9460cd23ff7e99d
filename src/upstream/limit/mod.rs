//! The upstream connection cap: at most `upstream_max_conns` connections to
//! one upstream at once — idle in the pool, busy with a request, or carrying
//! a WebSocket — and at most `upstream_max_conns_per_client` of them busy for
//! one client address, so one client cannot take the home server's
//! connections from everyone else. A request waits for its turn up to a
//! deadline (the site's `response_timeout`), in a queue of bounded length;
//! then it gets 503 with `Retry-After`. The queue is fair between clients:
//! the next connection goes to the waiting request whose client keeps the
//! fewest connections busy (the earliest among equals), so a household
//! member's request does not wait behind a flooder's.
//!
//! A connection's permit lives as long as the connection's handle (pooled or
//! lent); a client's share lives as long as its exchange (until the answer's
//! body ends or is dropped, or the WebSocket closes).

use std::net::IpAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::error::Busy;
use crate::guard::keys::ClientKey;

mod queue;

pub use queue::Deadline;

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
    /// Requests waiting for a connection, in arrival order.
    turns: Mutex<Vec<(u64, ClientKey)>>,
    next_turn: AtomicU64,
    /// Who is next may have changed (a waiter came or went, a share
    /// came back).
    turn_changed: Notify,
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
            turns: Mutex::new(Vec::new()),
            next_turn: AtomicU64::new(0),
            turn_changed: Notify::new(),
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
            // A client with fewer connections busy may come first now.
            limit.turn_changed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Busy, Deadline, Limit};
    use std::net::IpAddr;
    use std::time::Duration;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_waits_for_its_share_then_gets_busy() {
        let limit = Limit::new(4, 2);
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        let soon = Deadline::after(Duration::from_secs(1), a);
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
                let later = Deadline::after(Duration::from_secs(5), a);
                limit.share(a, &later).await.is_ok()
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(first);
        assert!(waiter.await.unwrap(), "a freed share goes to the waiter");
    }
}
