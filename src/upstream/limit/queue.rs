//! The queue for a connection home: a request that finds none free takes a
//! ticket (the queue's length bounded by `WAITING_PER_CONN` per connection
//! of the cap) and waits for its turn, which goes to the client keeping
//! the fewest connections busy, the earliest among equals — so a household
//! member's request does not wait behind a flooder's — until its deadline.

use std::net::IpAddr;
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{ConnPermit, Limit, WAITING_PER_CONN};
use crate::error::Busy;
use crate::guard::keys::ClientKey;

/// A request's place among those waiting for a connection; given up on
/// drop.
#[derive(Debug)]
pub struct Ticket {
    limit: Arc<Limit>,
    id: u64,
    _waiting: OwnedWaiting,
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

impl Limit {
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

#[cfg(test)]
mod tests {
    use super::{Deadline, Limit};
    use crate::error::Busy;
    use std::net::IpAddr;
    use std::time::Duration;
    use tokio::sync::Notify;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
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
