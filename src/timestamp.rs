//! Times as people and scripts read them: RFC 3339 in UTC, whole seconds
//! (ban lists, tunnel lists, the last ACME error).

use std::time::{Duration, SystemTime};

/// `at` as RFC 3339 (`2026-12-04T01:02:03Z`); empty if it cannot be written.
pub fn rfc3339(at: SystemTime) -> String {
    time::OffsetDateTime::from(at)
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// Seconds since the Unix epoch as RFC 3339; `?` for 0 (not known).
pub fn rfc3339_unix(unix: u64) -> String {
    if unix == 0 {
        return "?".to_string();
    }
    rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(unix))
}

/// Now, in Unix seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    #[test]
    fn whole_seconds_in_utc() {
        assert_eq!(super::rfc3339_unix(1_796_346_123), "2026-12-04T01:02:03Z");
        assert_eq!(super::rfc3339_unix(0), "?");
    }
}
