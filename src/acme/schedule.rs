//! When to order: renewal once a third of a certificate's life remains, and
//! backoff after failures (about 1 min, 10 min, 100 min, then every 4 hours),
//! with jitter so that many instances do not hit the CA in step. Pure time
//! arithmetic; the caller passes `now`.

use std::time::{Duration, SystemTime};

/// Within this of expiry, every check logs a loud warning.
pub const WARN_BEFORE_EXPIRY: Duration = Duration::from_secs(7 * 86_400);

/// When a certificate valid from `not_before` to `not_after` is due for renewal.
pub fn renew_at(not_before: SystemTime, not_after: SystemTime) -> SystemTime {
    let life = not_after.duration_since(not_before).unwrap_or_default();
    not_after - life / 3
}

/// How long to wait after the `failures`-th failure in a row (1-based).
pub fn backoff(failures: u32) -> Duration {
    match failures {
        0 | 1 => Duration::from_secs(60),
        2 => Duration::from_secs(600),
        3 => Duration::from_secs(6_000),
        _ => Duration::from_secs(4 * 3_600),
    }
}

/// A renewal time within the CA's suggested ARI window (RFC 9773 §4.2: a
/// uniformly random point of it), decided by `seed`. A pick already in the
/// past means "now" to the caller (`until` is then zero).
pub fn ari_pick(start: SystemTime, end: SystemTime, seed: u64) -> SystemTime {
    let width = end.duration_since(start).unwrap_or_default();
    let fraction =
        (seed.wrapping_mul(6_364_136_223_846_793_005) >> 11) as f64 / (1u64 << 53) as f64;
    start + width.mul_f64(fraction)
}

/// `delay` moved by up to ±10 %, decided by `seed` (any varying number).
pub fn jitter(delay: Duration, seed: u64) -> Duration {
    let permille = (seed.wrapping_mul(6_364_136_223_846_793_005) >> 33) % 201; // 0..=200
    delay * (900 + permille as u32) / 1000
}

/// How long from `now` until `at` (zero if it has passed).
pub fn until(at: SystemTime, now: SystemTime) -> Duration {
    at.duration_since(now).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::{backoff, jitter, renew_at, until};
    use std::time::{Duration, SystemTime};

    #[test]
    fn renewal_when_a_third_of_the_life_remains() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let end = start + Duration::from_secs(90 * 86_400);
        assert_eq!(
            renew_at(start, end),
            start + Duration::from_secs(60 * 86_400)
        );
        assert_eq!(until(renew_at(start, end), end), Duration::ZERO);
    }

    #[test]
    fn ari_picks_inside_the_window() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let start = now + Duration::from_secs(3600);
        let end = start + Duration::from_secs(86_400);
        let picks: Vec<SystemTime> = (0..200)
            .map(|seed| super::ari_pick(start, end, seed))
            .collect();
        assert!(picks.iter().all(|p| *p >= start && *p <= end));
        assert!(
            picks.iter().any(|p| *p != picks[0]),
            "spread over the window"
        );
        let past = now - Duration::from_secs(7200);
        let pick = super::ari_pick(past, now - Duration::from_secs(10), 7);
        assert_eq!(
            super::until(pick, now),
            Duration::ZERO,
            "a window in the past: renew now"
        );
    }

    #[test]
    fn backoff_grows_then_settles() {
        let minutes: Vec<u64> = (1..=6).map(|n| backoff(n).as_secs() / 60).collect();
        assert_eq!(minutes, [1, 10, 100, 240, 240, 240]);
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        let base = Duration::from_secs(1000);
        let all: Vec<Duration> = (0..500).map(|seed| jitter(base, seed)).collect();
        assert!(all
            .iter()
            .all(|d| *d >= Duration::from_secs(900) && *d <= Duration::from_secs(1100)));
        assert!(all.iter().any(|d| *d != all[0]), "it varies");
    }
}
