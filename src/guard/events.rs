//! What the guard did since the start, counted by the reason the metrics
//! name (`drawbridge_guard_events_total`) and the dashboard draws.

use std::sync::atomic::{AtomicU64, Ordering};

/// The guard's doings since the start, by the reason the metrics name.
#[derive(Debug, Default)]
pub struct Events {
    pub(super) refused_banned: AtomicU64,
    pub(super) refused_full: AtomicU64,
    pub(super) refused_full_for_client: AtomicU64,
    /// Login requests refused by the rate limit (the login filter counts).
    pub login_rate_limited: AtomicU64,
    /// Requests refused by a site's allow or deny lists (the access filter
    /// counts).
    pub refused_by_list: AtomicU64,
    pub(super) failed_logins: AtomicU64,
    pub(super) banned_now: AtomicU64,
}

impl Events {
    /// Each count by its metric label.
    pub fn totals(&self) -> [(&'static str, u64); 7] {
        let read = |count: &AtomicU64| count.load(Ordering::Relaxed);
        [
            ("banned", read(&self.refused_banned)),
            ("full", read(&self.refused_full)),
            ("full_for_client", read(&self.refused_full_for_client)),
            ("login_rate_limited", read(&self.login_rate_limited)),
            ("access_list", read(&self.refused_by_list)),
            ("failed_login", read(&self.failed_logins)),
            ("banned_now", read(&self.banned_now)),
        ]
    }
}
