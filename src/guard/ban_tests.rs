//! Unit tests of `ban.rs`.

use super::{BanList, Outcome};
use crate::config::GuardConfig as Guard;
use crate::guard::keys::ClientKey;
use std::time::Duration;
use tokio::time::Instant;

fn key(s: &str) -> ClientKey {
    ClientKey::of(s.parse().unwrap())
}

fn hours(n: u64) -> Duration {
    Duration::from_secs(n * 3600)
}

#[test]
fn three_failures_in_the_window_ban_for_a_day_then_longer() {
    let dir = tempfile::tempdir().unwrap();
    let config = Guard {
        never_ban: vec!["10.0.0.0/8".parse().unwrap()],
        ..Guard::default()
    };
    let bans = BanList::open(&config, dir.path()).unwrap();
    let now = Instant::now();
    let c = key("203.0.113.9");
    assert_eq!(bans.failed_login(c, "s", false, now), Outcome::Counted(1));
    // The first failure leaves the 12 h window before the third comes.
    assert_eq!(
        bans.failed_login(c, "s", false, now + hours(12) + Duration::from_secs(1)),
        Outcome::Counted(1)
    );
    assert_eq!(
        bans.failed_login(c, "s", false, now + hours(13)),
        Outcome::Counted(2)
    );
    let Outcome::Banned(ban) = bans.failed_login(c, "s", false, now + hours(14)) else {
        panic!("banned")
    };
    assert_eq!(ban.until, now + hours(14) + hours(24));
    assert!(bans.is_banned(c, now + hours(37)));
    assert!(
        !bans.is_banned(c, now + hours(38) + Duration::from_secs(1)),
        "lifted when it ends"
    );
    for n in 0..2 {
        bans.failed_login(c, "s", false, now + hours(40 + n));
    }
    let Outcome::Banned(again) = bans.failed_login(c, "s", false, now + hours(42)) else {
        panic!()
    };
    assert_eq!(
        again.until,
        now + hours(42) + hours(48),
        "a repeat offender waits twice as long"
    );
    assert_eq!(
        bans.failed_login(key("10.1.2.3"), "s", false, now),
        Outcome::Exempt
    );
    assert_eq!(
        bans.failed_login(key("198.51.100.1"), "s", true, now),
        Outcome::Exempt
    );
}

#[test]
fn bans_outlive_a_restart_and_a_corrupt_file_is_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    let config = Guard {
        max_failures: 1,
        ..Guard::default()
    };
    let now = Instant::now();
    BanList::open(&config, dir.path()).unwrap().failed_login(
        key("2001:db8:1:2::7"),
        "s",
        false,
        now,
    );
    let again = BanList::open(&config, dir.path()).unwrap();
    assert!(
        again.is_banned(key("2001:db8:1:2::9"), Instant::now()),
        "restored, for the whole /64"
    );
    let list = again.list(Instant::now());
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].address, "2001:db8:1:2::/64");

    std::fs::write(dir.path().join("bans.json"), "{ not json").unwrap();
    let fresh = BanList::open(&config, dir.path()).unwrap();
    assert!(fresh.list(Instant::now()).is_empty());
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains("corrupt"))
        .collect();
    assert_eq!(
        aside.len(),
        1,
        "the damaged file is kept for a person to look at"
    );
}
