//! Per-client rate limits on a route class, as GCRA (the generic cell rate
//! algorithm, a token bucket kept as one timestamp per client): `count`
//! requests per `per`, with `burst` allowed at once. Pure arithmetic on an
//! explicit `now`; the state lives in a capped `KeyTable`.
//!
//! Written here rather than taken from `governor`: its keyed limiter's store
//! grows with every key it sees, and a capped table is the point under a flood.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Rate;
use crate::guard::keys::{ClientKey, KeyTable};

/// A rate limit over many clients.
#[derive(Debug)]
pub struct RateLimit {
    /// Time between two requests at the sustained rate.
    interval: Duration,
    /// How far ahead of `now` a client's theoretical arrival time may run.
    tolerance: Duration,
    table: Mutex<KeyTable<Instant>>,
}

impl RateLimit {
    /// `rate`, with `burst` requests allowed at once; at most `cap` clients remembered.
    pub fn new(rate: Rate, burst: u32, cap: usize) -> RateLimit {
        let interval = rate.per / rate.count;
        RateLimit {
            interval,
            tolerance: interval * burst.saturating_sub(1),
            table: Mutex::new(KeyTable::new(cap)),
        }
    }

    /// Counts a request by `client` at `now`; `Err(wait)` if over the limit.
    pub fn check(&self, client: ClientKey, now: Instant) -> Result<(), Duration> {
        let mut table = self.table.lock().expect("rate limit lock");
        let tat = table.entry(client, || now);
        let start = (*tat).max(now);
        if start > now + self.tolerance {
            return Err(start - (now + self.tolerance));
        }
        *tat = start + self.interval;
        Ok(())
    }

    /// How many clients are remembered.
    pub fn remembered(&self) -> usize {
        self.table.lock().expect("rate limit lock").len()
    }
}

#[cfg(test)]
mod tests {
    use super::RateLimit;
    use crate::config::Rate;
    use crate::guard::keys::ClientKey;
    use std::time::Duration;
    use tokio::time::Instant;

    fn key(s: &str) -> ClientKey {
        ClientKey::of(s.parse().unwrap())
    }

    #[test]
    fn burst_then_the_sustained_rate() {
        let limit = RateLimit::new(
            Rate {
                count: 5,
                per: Duration::from_secs(60),
            },
            5,
            1000,
        );
        let now = Instant::now();
        for _ in 0..5 {
            assert!(limit.check(key("192.0.2.1"), now).is_ok());
        }
        let wait = limit.check(key("192.0.2.1"), now).unwrap_err();
        assert_eq!(wait, Duration::from_secs(12), "one more request every 12 s");
        assert!(
            limit.check(key("192.0.2.2"), now).is_ok(),
            "another client is unaffected"
        );
        assert!(limit
            .check(key("192.0.2.1"), now + Duration::from_secs(11))
            .is_err());
        assert!(limit
            .check(key("192.0.2.1"), now + Duration::from_secs(12))
            .is_ok());
        assert!(limit
            .check(key("192.0.2.1"), now + Duration::from_secs(12))
            .is_err());
        // After a quiet period the whole burst is back.
        let later = now + Duration::from_secs(600);
        for _ in 0..5 {
            assert!(limit.check(key("192.0.2.1"), later).is_ok());
        }
    }

    #[test]
    fn one_ipv6_64_is_one_client() {
        let limit = RateLimit::new(
            Rate {
                count: 1,
                per: Duration::from_secs(60),
            },
            1,
            1000,
        );
        let now = Instant::now();
        assert!(limit.check(key("2001:db8:0:1::1"), now).is_ok());
        assert!(
            limit.check(key("2001:db8:0:1::2"), now).is_err(),
            "same /64"
        );
        assert!(
            limit.check(key("2001:db8:0:2::1"), now).is_ok(),
            "other /64"
        );
    }

    #[test]
    fn memory_is_capped_under_a_flood() {
        let limit = RateLimit::new(
            Rate {
                count: 5,
                per: Duration::from_secs(60),
            },
            5,
            5000,
        );
        let now = Instant::now();
        for n in 0..1_000_000u32 {
            let _ = limit.check(ClientKey::of(std::net::IpAddr::V4(n.into())), now);
        }
        assert!(limit.remembered() <= 5000);
    }
}
