//! Failed TLS handshakes, counted by reason and summed up in one log line a
//! minute: anyone can make handshakes fail, so a line each (debug level) would
//! let them fill the error log, and none at all would hide a real problem.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often the summary is written (when anything failed).
pub const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// Why a handshake failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The first bytes were not a TLS ClientHello.
    NotTls,
    /// Refused: an unknown or missing name, an old version, no common cipher.
    Refused,
    /// The client did not finish in time.
    TimedOut,
}

/// Counts since the last summary, and since the start (for the metrics).
#[derive(Debug, Default)]
pub struct HandshakeFailures {
    not_tls: AtomicU64,
    refused: AtomicU64,
    timed_out: AtomicU64,
    totals: [AtomicU64; 3],
}

impl HandshakeFailures {
    /// Counts one failure.
    pub fn count(&self, failure: Failure) {
        let (counter, total) = match failure {
            Failure::NotTls => (&self.not_tls, &self.totals[0]),
            Failure::Refused => (&self.refused, &self.totals[1]),
            Failure::TimedOut => (&self.timed_out, &self.totals[2]),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        total.fetch_add(1, Ordering::Relaxed);
    }

    /// Failures since the start: not TLS, refused, too slow.
    pub fn totals(&self) -> [u64; 3] {
        [0, 1, 2].map(|i| self.totals[i].load(Ordering::Relaxed))
    }

    /// The summary of the failures since the last one, and a fresh count;
    /// None when there were none.
    pub fn summary(&self) -> Option<String> {
        let take = |c: &AtomicU64| c.swap(0, Ordering::Relaxed);
        let (refused, not_tls, timed_out) = (
            take(&self.refused),
            take(&self.not_tls),
            take(&self.timed_out),
        );
        let total = refused + not_tls + timed_out;
        (total > 0).then(|| {
            format!(
                "{total} TLS handshakes failed in the last {} s: {refused} refused (unknown name, old TLS version or no common cipher), {not_tls} not TLS, {timed_out} too slow",
                SUMMARY_EVERY.as_secs()
            )
        })
    }

    /// Writes the summary every `SUMMARY_EVERY` until `shutdown`.
    pub async fn report(&self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(SUMMARY_EVERY) => {}
            }
            if let Some(line) = self.summary() {
                tracing::warn!("{line}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Failure, HandshakeFailures};

    #[test]
    fn failures_are_summed_up_once_then_counted_afresh() {
        let failures = HandshakeFailures::default();
        assert_eq!(failures.summary(), None, "nothing failed: no line");
        for _ in 0..40 {
            failures.count(Failure::Refused);
        }
        failures.count(Failure::NotTls);
        failures.count(Failure::TimedOut);
        let line = failures.summary().unwrap();
        assert!(line.starts_with("42 TLS handshakes failed"), "{line}");
        assert!(
            line.contains("40 refused") && line.contains("1 not TLS"),
            "{line}"
        );
        assert_eq!(failures.summary(), None, "counted afresh");
    }
}

/// What the QUIC endpoints did with handshakes (`http3/`), for the metrics.
#[derive(Debug, Default)]
pub struct QuicCounts {
    /// Handshakes under way now.
    pub(crate) handshaking: AtomicUsize,
    /// Retries sent (sources asked to prove their address under load).
    pub(crate) retries: AtomicU64,
}

impl QuicCounts {
    /// Retries sent so far.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }
}
