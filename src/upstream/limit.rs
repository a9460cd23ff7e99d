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
    /// Requests waiting for a connection, in arrival order.
    turns: Mutex<Vec<(u64, ClientKey)>>,
    next_turn: AtomicU64,
    /// Who is next may have changed (a waiter came or went, a share
    /// came back).
    turn_changed: Notify,
}

/// A request's place among those waiting for a connection; given up on
/// drop.
#[derive(Debug)]
pub struct Ticket {
    limit: Arc<Limit>,
    id: u64,
    _waiting: OwnedWaiting,
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

    /// Whether requests are waiting for a connection (a new one then takes
    /// a ticket and its turn, rather than what comes free).
    pub fn anyone_waiting(&self) -> bool {
        !self
            .turns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// A place among the requests waiting for a connection for `client`,
    /// or `Busy::Upstream` when the queue is full.
    pub fn ticket(self: &Arc<Self>, client: IpAddr) -> Result<Ticket, Busy> {
        let bound = self.max_conns.saturating_mul(WAITING_PER_CONN);
        let before = self.waiting.fetch_add(1, Ordering::AcqRel);
        let waiting = OwnedWaiting(self.clone());
        if before >= bound {
            return Err(Busy::Upstream);
        }
        let id = self.next_turn.fetch_add(1, Ordering::Relaxed);
        self.turns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((id, ClientKey::of(client)));
        self.turn_changed.notify_waiters();
        Ok(Ticket {
            limit: self.clone(),
            id,
            _waiting: waiting,
        })
    }

    /// Whether `ticket` is next: its client keeps the fewest connections
    /// busy among those waiting, and it came first among its equals.
    pub fn at_turn(&self, ticket: &Ticket) -> bool {
        let turns = self.turns.lock().unwrap_or_else(PoisonError::into_inner);
        let busy = self.busy.lock().unwrap_or_else(PoisonError::into_inner);
        let busy_of = |key: &ClientKey| {
            busy.iter()
                .find(|(k, _)| k == key)
                .map_or(0, |(_, count)| *count)
        };
        let next = turns
            .iter()
            .min_by_key(|(id, key)| (busy_of(key), *id))
            .map(|(id, _)| *id);
        next == Some(ticket.id)
    }

    /// Waits, holding `ticket`, until something may have come free for it:
    /// a connection permit when it is its turn (`Some`), a pooled
    /// connection returned or a change of turn (`None`: look again), or
    /// `deadline` (`Busy::Upstream`).
    pub async fn wait(
        &self,
        ticket: &Ticket,
        returned: &Notify,
        deadline: &Deadline,
    ) -> Result<Option<ConnPermit>, Busy> {
        let deadline = deadline.at();
        let mut changed = pin!(self.turn_changed.notified());
        changed.as_mut().enable();
        if !self.at_turn(ticket) {
            return tokio::select! {
                () = changed => Ok(None),
                () = tokio::time::sleep_until(deadline) => Err(Busy::Upstream),
            };
        }
        tokio::select! {
            permit = self.conns.clone().acquire_owned() => Ok(permit.ok()),
            () = returned.notified() => Ok(None),
            () = changed => Ok(None),
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

/// `Waiting`, for a ticket that outlives a borrow.
#[derive(Debug)]
struct OwnedWaiting(Arc<Limit>);

impl Drop for OwnedWaiting {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut turns = self
            .limit
            .turns
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        turns.retain(|(id, _)| *id != self.id);
        drop(turns);
        self.limit.turn_changed.notify_waiters();
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

/// When a wait for a turn ends, and whose request waits: `wait` after the
/// first time it is asked for, so a request that never waits never reads
/// the clock; the client decides its place in the queue.
#[derive(Debug)]
pub struct Deadline {
    wait: std::time::Duration,
    at: std::sync::OnceLock<Instant>,
    client: IpAddr,
}

impl Deadline {
    /// A deadline `wait` from when it is first needed, for `client`'s
    /// request.
    pub fn after(wait: std::time::Duration, client: IpAddr) -> Deadline {
        Deadline {
            wait,
            at: std::sync::OnceLock::new(),
            client,
        }
    }

    /// The instant itself.
    pub fn at(&self) -> Instant {
        *self.at.get_or_init(|| Instant::now() + self.wait)
    }

    /// Whose request waits.
    pub fn client(&self) -> IpAddr {
        self.client
    }
}

#[cfg(test)]
mod tests {
    use super::{Busy, Deadline, Limit};
    use std::net::IpAddr;
    use std::time::Duration;
    use tokio::sync::Notify;

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

    #[tokio::test(start_paused = true)]
    async fn connections_stay_under_the_cap_and_the_queue_is_bounded() {
        let limit = Limit::new(2, 2);
        let returned = Notify::new();
        let a = ip("192.0.2.1");
        let one = limit.try_conn().unwrap();
        let _two = limit.try_conn().unwrap();
        assert!(limit.try_conn().is_none());
        assert_eq!(limit.open(), 2);
        let soon = Deadline::after(Duration::from_millis(100), a);
        let ticket = limit.ticket(a).unwrap();
        assert!(limit.at_turn(&ticket));
        assert_eq!(
            limit.wait(&ticket, &returned, &soon).await.unwrap_err(),
            Busy::Upstream
        );
        drop(one);
        let later = Deadline::after(Duration::from_secs(1), a);
        assert!(limit
            .wait(&ticket, &returned, &later)
            .await
            .unwrap()
            .is_some());
        drop(ticket);
        // 2 connections × 4 may wait; the ninth is refused at once.
        let mut queue = Vec::new();
        for _ in 0..8 {
            queue.push(limit.ticket(a).unwrap());
        }
        assert_eq!(limit.ticket(a).unwrap_err(), Busy::Upstream);
    }

    /// Two flooders keep connections busy and queue more requests (each
    /// waiting request holds its client's share); a household member who
    /// comes last is next, and gets the first connection that comes free.
    #[tokio::test(start_paused = true)]
    async fn the_queue_serves_the_client_with_the_fewest_connections_first() {
        let limit = Limit::new(4, 3);
        let returned = Notify::new();
        let (x, y, home) = (ip("198.51.100.1"), ip("198.51.100.2"), ip("192.0.2.9"));
        let far = Deadline::after(Duration::from_secs(60), home);
        let mut held = Vec::new();
        for flooder in [x, y] {
            for _ in 0..2 {
                held.push((
                    limit.share(flooder, &far).await.unwrap(),
                    limit.try_conn().unwrap(),
                ));
            }
        }
        let _x_share = limit.share(x, &far).await.unwrap();
        let x_waits = limit.ticket(x).unwrap();
        let _y_share = limit.share(y, &far).await.unwrap();
        let y_waits = limit.ticket(y).unwrap();
        assert!(limit.at_turn(&x_waits), "first come, among equals");
        let _share = limit.share(home, &far).await.unwrap();
        let household = limit.ticket(home).unwrap();
        assert!(limit.at_turn(&household), "one connection busy beats three");
        assert!(!limit.at_turn(&x_waits) && !limit.at_turn(&y_waits));
        // A connection of y's comes free: the household's turn still.
        drop(held.pop());
        let got = limit.wait(&household, &returned, &far).await.unwrap();
        assert!(got.is_some());
        drop(household);
        // Then y, whose client now keeps fewer busy than x.
        assert!(limit.at_turn(&y_waits));
    }
}
