//! Unit tests of `store.rs`.

use super::{decode, encode, Cached, Lru, Store, DISK_REST};
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_cache_semantics::CachePolicy;

fn entry(key: &str, size: usize) -> Cached {
    let req = Request::get(format!("http://a.test{key}"))
        .body(())
        .unwrap();
    let res = Response::builder()
        .header("cache-control", "public, max-age=60")
        .body(())
        .unwrap();
    Cached {
        key: key.to_string(),
        policy: CachePolicy::new(&req, &res),
        status: StatusCode::OK,
        headers: HeaderMap::new(),
        body: Bytes::from(vec![7u8; size]),
    }
}

#[test]
fn lru_stays_within_bytes_and_forgets_the_least_recent() {
    let mut lru = Lru::new(300);
    lru.insert("a".into(), 1, 100);
    lru.insert("b".into(), 2, 100);
    lru.insert("c".into(), 3, 100);
    lru.get("a");
    let evicted = lru.insert("d".into(), 4, 100);
    assert_eq!(
        evicted.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        ["b"]
    );
    assert!(lru.bytes() <= 300);
    assert!(
        lru.insert("huge".into(), 5, 301).is_empty() && lru.get("huge").is_none(),
        "larger than the cap: not kept"
    );
}

#[test]
fn disk_tier_survives_a_restart_and_damage_is_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(1 << 20, 1 << 20, dir.path());
    for key in ["/a", "/b"] {
        let stored = store.put(entry(key, 1000));
        store.persist(&stored);
    }
    drop(store);
    // Truncate one file as a crash would.
    let victim = std::fs::read_dir(dir.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..bytes.len() / 2]).unwrap();
    let store = Store::open(1 << 20, 1 << 20, dir.path());
    let kept = ["/a", "/b"]
        .iter()
        .filter(|k| store.get(k).is_some())
        .count();
    assert_eq!(kept, 1, "the intact entry is back, the damaged one gone");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn both_bounds_hold_when_filled_past_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(100_000, 200_000, dir.path());
    for n in 0..100 {
        let stored = store.put(entry(&format!("/img/{n}"), 10_000));
        store.persist(&stored);
    }
    let (memory, disk) = store.bytes();
    assert!(memory <= 100_000 && disk <= 200_000, "{memory} {disk}");
    let on_disk: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|f| f.unwrap().metadata().unwrap().len())
        .sum();
    assert!(
        on_disk <= 200_000 + 100 * 2048,
        "files on disk follow the index: {on_disk}"
    );
    assert!(store.get("/img/99").is_some() && store.get("/img/0").is_none());
}

#[test]
fn encoding_round_trips_and_detects_flipped_bits() {
    let original = entry("/x", 64);
    let mut bytes = encode(&original);
    assert_eq!(decode(&bytes).unwrap().body, original.body);
    let last = bytes.len() - 40;
    bytes[last] ^= 1;
    assert!(decode(&bytes).is_none());
}

#[tokio::test(start_paused = true)]
async fn a_failing_disk_rests_then_is_tried_again() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("cache");
    // A file where the folder should be: every write fails at once.
    std::fs::write(&folder, b"not a folder").unwrap();
    let store = Store::open(1 << 20, 1 << 20, &folder);
    store.persist(&store.put(entry("/a", 10)));
    std::fs::remove_file(&folder).unwrap();
    store.persist(&store.put(entry("/b", 10)));
    assert!(!folder.exists(), "resting: nothing written");
    tokio::time::advance(DISK_REST).await;
    store.persist(&store.put(entry("/c", 10)));
    assert_eq!(
        std::fs::read_dir(&folder).unwrap().count(),
        1,
        "stored on disk again after the rest"
    );
}

mod roundtrip {
    use super::super::{decode, encode, Cached};
    use http::{HeaderMap, Request, Response, StatusCode};
    use http_cache_semantics::{BeforeRequest, CachePolicy};

    #[test]
    fn a_policy_read_back_from_disk_still_matches() {
        let req = Request::get("http://jelly.test/Items/abc/Images/Primary?tag=keep")
            .body(())
            .unwrap();
        let res = Response::builder()
            .header("cache-control", "public, max-age=600")
            .body(())
            .unwrap();
        let entry = Cached {
            key: "k".into(),
            policy: CachePolicy::new(&req, &res),
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: bytes::Bytes::from_static(b"x"),
        };
        let back = decode(&encode(&entry)).unwrap();
        match back
            .policy
            .before_request(&req, std::time::SystemTime::now())
        {
            BeforeRequest::Fresh(_) => {}
            BeforeRequest::Stale { matches, .. } => {
                panic!("stale after a round trip, matches={matches}")
            }
        }
    }
}

#[test]
fn a_path_prefix_purges_that_path_on_every_site_in_any_case() {
    use super::purged_by;
    assert!(purged_by("jelly.test/Items/1/Images/Primary", "/Items/"));
    assert!(purged_by("tv.test/items/2/Images/Primary?tag=a", "/Items/"));
    assert!(!purged_by("jelly.test/web/index.html", "/Items/"));
    assert!(purged_by("jelly.test/web/index.html", "jelly.test/web/"));
    assert!(purged_by("jelly.test/web/index.html", "JELLY.test/Web/"));
    assert!(!purged_by("tv.test/web/index.html", "jelly.test/"));
    assert!(
        purged_by("jelly.test/web/index.html", ""),
        "empty: everything"
    );
}

#[test]
fn a_purge_is_not_undone_by_a_write_to_disk_that_was_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("cache");
    let store = Store::open(1 << 20, 1 << 20, &folder);
    let stored = store.put(entry("/Items/1/Images/Primary", 10));
    // The write to disk was queued; the purge runs first.
    assert_eq!(store.purge("/items/").unwrap(), 1);
    store.persist(&stored);
    assert_eq!(
        std::fs::read_dir(&folder).unwrap().count(),
        0,
        "nothing written"
    );
    let reopened = Store::open(1 << 20, 1 << 20, &folder);
    assert!(
        reopened.get(&stored.key).is_none(),
        "not back after a restart"
    );
}
