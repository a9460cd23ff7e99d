//! Failed TLS handshakes, counted by reason and summed up in one log line a
//! minute: anyone can make handshakes fail, so a line each (debug level) would
//! let them fill the error log, and none at all would hide a real problem.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often the summary is written (when anything failed).
pub const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// Why a handshake failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
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
    /// Names asked for that no site serves (TLS and plain HTTP).
    pub names: Arc<UnknownNames>,
}

/// The names clients asked for that no site serves, since the last
/// summary: a typo in a site's `host` (or a DNS record pointing here by
/// mistake) shows in the log with its count, while the door stays closed.
#[derive(Debug, Default)]
pub struct UnknownNames {
    asked: Mutex<BTreeMap<String, u64>>,
    /// Asks beyond the names kept (a scanner's random names).
    others: AtomicU64,
}

/// How many distinct unknown names a summary keeps.
const NAMES_KEPT: usize = 8;

impl UnknownNames {
    /// Counts an ask for `name` (`None`: no name at all, as when an
    /// address is typed).
    pub fn asked(&self, name: Option<&str>) {
        let name = name.unwrap_or("(no name)");
        let mut asked = self.asked.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = asked.get_mut(name) {
            *count += 1;
        } else if asked.len() < NAMES_KEPT && name.len() <= 253 {
            asked.insert(name.to_string(), 1);
        } else {
            self.others.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `name ×count, …` for the names asked since the last time, and a
    /// fresh count; None when nobody asked.
    fn take(&self) -> Option<String> {
        let asked = std::mem::take(&mut *self.asked.lock().unwrap_or_else(|e| e.into_inner()));
        let others = self.others.swap(0, Ordering::Relaxed);
        if asked.is_empty() && others == 0 {
            return None;
        }
        let mut listed: Vec<(String, u64)> = asked.into_iter().collect();
        listed.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut words: Vec<String> = listed
            .into_iter()
            .map(|(name, count)| format!("{name} ×{count}"))
            .collect();
        if others > 0 {
            words.push(format!("{others} more for other names"));
        }
        Some(words.join(", "))
    }
}

impl HandshakeFailures {
    /// Counts one failure.
    pub fn count(&self, failure: HandshakeFailure) {
        let (counter, total) = match failure {
            HandshakeFailure::NotTls => (&self.not_tls, &self.totals[0]),
            HandshakeFailure::Refused => (&self.refused, &self.totals[1]),
            HandshakeFailure::TimedOut => (&self.timed_out, &self.totals[2]),
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
        let names = self.names.take();
        let handshakes = (total > 0).then(|| {
            format!(
                "{total} TLS handshakes failed in the last {} s: {refused} refused (unknown name, old TLS version or no common cipher), {not_tls} not TLS, {timed_out} too slow",
                SUMMARY_EVERY.as_secs()
            )
        });
        let names = names.map(|names| {
            format!("names asked for that no site serves (a typo in `host`?): {names}")
        });
        match (handshakes, names) {
            (Some(h), Some(n)) => Some(format!("{h}; {n}")),
            (h, n) => h.or(n),
        }
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
    use super::{HandshakeFailure, HandshakeFailures};

    #[test]
    fn failures_are_summed_up_once_then_counted_afresh() {
        let failures = HandshakeFailures::default();
        assert_eq!(failures.summary(), None, "nothing failed: no line");
        for _ in 0..40 {
            failures.count(HandshakeFailure::Refused);
        }
        failures.count(HandshakeFailure::NotTls);
        failures.count(HandshakeFailure::TimedOut);
        let line = failures.summary().unwrap();
        assert!(line.starts_with("42 TLS handshakes failed"), "{line}");
        assert!(
            line.contains("40 refused") && line.contains("1 not TLS"),
            "{line}"
        );
        assert_eq!(failures.summary(), None, "counted afresh");
    }

    #[test]
    fn names_no_site_serves_are_counted_in_the_summary_and_bounded() {
        let failures = HandshakeFailures::default();
        for _ in 0..3 {
            failures.names.asked(Some("jely.example.com"));
        }
        failures.names.asked(None);
        let line = failures.summary().unwrap();
        assert!(
            line.contains("no site serves (a typo in `host`?): jely.example.com ×3, (no name) ×1"),
            "{line}"
        );
        for i in 0..100 {
            failures.names.asked(Some(&format!("scan{i}.test")));
        }
        let line = failures.summary().unwrap();
        assert!(line.contains("92 more for other names"), "{line}");
        assert_eq!(failures.summary(), None);
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
