//! The edge cache through real requests: a tagged poster served without a
//! second trip home, index.html revalidated, media and HLS never stored, token
//! variants sharing an entry, credentials bypassing a private route, concurrent
//! misses collapsed, the object cap and broken bodies respected, a stale
//! poster when home is down, the disk tier kept across a restart, a failing
//! disk tolerated, purging, and the hit-ratio line in the log.

use std::time::Duration;

use crate::support::origin::Origin;
use crate::support::{server_block, site, Process, TestGateway};

async fn fetch(client: &reqwest::Client, url: &str) -> (u16, Option<String>, Vec<u8>) {
    let response = client.get(url).send().await.unwrap();
    let status = response.status().as_u16();
    let label = response
        .headers()
        .get("x-cache")
        .map(|v| v.to_str().unwrap().to_string());
    (status, label, response.bytes().await.unwrap().to_vec())
}

fn cache_site(origin: std::net::SocketAddr) -> String {
    site("jelly.test", origin, "cache_paths = [\"/private/**\"]")
}

#[tokio::test]
async fn posters_come_from_the_edge_and_token_variants_share_one_entry() {
    let origin = Origin::start().await;
    let gw = TestGateway::start(&cache_site(origin.addr)).await;
    let client = gw.reqwest(&["jelly.test"], true);
    let url = |q: &str| {
        gw.url(
            "jelly.test",
            &format!("/Items/abc/Images/Primary?tag=t1{q}"),
        )
    };
    let (status, label, first) = fetch(&client, &url("&api_key=alice")).await;
    assert_eq!((status, label.as_deref()), (200, Some("MISS")));
    gw.cache_stored(1, false).await;
    let (status, label, second) = fetch(&client, &url("&ApiKey=bob")).await;
    assert_eq!((status, label.as_deref()), (200, Some("HIT")));
    assert_eq!(first, second);
    assert_eq!(
        origin.seen.hits("/items/abc/images/primary"),
        1,
        "the second never went home"
    );
}

#[tokio::test]
async fn index_html_is_revalidated_every_time() {
    let origin = Origin::start().await;
    let gw = TestGateway::start(&cache_site(origin.addr)).await;
    let client = gw.reqwest(&["jelly.test"], false);
    let url = gw.url("jelly.test", "/web/index.html");
    let (_, label, body) = fetch(&client, &url).await;
    assert_eq!(label.as_deref(), Some("MISS"));
    gw.cache_stored(1, false).await;
    let (status, label, again) = fetch(&client, &url).await;
    assert_eq!(
        (status, label.as_deref()),
        (200, Some("HIT")),
        "revalidated with a 304, served from the edge"
    );
    assert_eq!(body, again);
    assert_eq!(
        origin.seen.hits("/web/index.html"),
        2,
        "no-cache: asked home both times"
    );
}

#[tokio::test]
async fn media_and_hls_are_never_stored() {
    let origin = Origin::start().await;
    let gw = TestGateway::start(&cache_site(origin.addr)).await;
    let client = gw.reqwest(&["jelly.test"], true);
    for path in ["/Videos/x/stream?Static=true", "/Videos/x/master.m3u8"] {
        for _ in 0..2 {
            let (status, label, _) = fetch(&client, &gw.url("jelly.test", path)).await;
            assert_eq!(status, 200);
            assert_eq!(label, None, "{path} is not a cache route");
        }
    }
    assert_eq!(origin.seen.hits("/videos/x/stream"), 2);
    assert_eq!(origin.seen.hits("/videos/x/master.m3u8"), 2);
}

#[tokio::test]
async fn credentials_bypass_a_private_route() {
    let origin = Origin::start().await;
    let gw = TestGateway::start(&cache_site(origin.addr)).await;
    let client = gw.reqwest(&["jelly.test"], false);
    let url = gw.url("jelly.test", "/private/x");
    for _ in 0..2 {
        let response = client
            .get(&url)
            .header("authorization", "MediaBrowser Token=\"t\"")
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["x-cache"], "BYPASS");
    }
    assert_eq!(origin.seen.hits("/private/x"), 2);
    assert_eq!(fetch(&client, &url).await.1.as_deref(), Some("MISS"));
    gw.cache_stored(1, false).await;
    assert_eq!(
        fetch(&client, &url).await.1.as_deref(),
        Some("HIT"),
        "without credentials it is cached"
    );
}

#[tokio::test]
async fn concurrent_misses_make_one_trip_home() {
    let origin = Origin::start().await;
    let gw = TestGateway::start(&cache_site(origin.addr)).await;
    let client = gw.reqwest(&["jelly.test"], true);
    let url = gw.url("jelly.test", "/Items/slow/Images/Primary?tag=z");
    let all = futures_util::future::join_all((0..10).map(|_| fetch(&client, &url))).await;
    assert!(all
        .iter()
        .all(|(status, _, body)| *status == 200 && body.len() == 1024));
    assert_eq!(origin.seen.hits("/items/slow/images/primary"), 1);
}

#[tokio::test]
async fn objects_over_the_cap_and_broken_bodies_are_not_stored() {
    let origin = Origin::start().await;
    let gw = TestGateway::start(&format!(
        "[cache]\nmax_object = \"16KiB\"\n\n{}",
        cache_site(origin.addr)
    ))
    .await;
    let client = gw.reqwest(&["jelly.test"], false);
    let big = gw.url("jelly.test", "/Items/big/Images/Backdrop");
    for _ in 0..2 {
        let (_, _, body) = fetch(&client, &big).await;
        assert_eq!(body.len(), 64 * 1024, "streamed whole to the client");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        origin.seen.hits("/items/big/images/backdrop"),
        2,
        "not stored"
    );
    let broken = gw.url("jelly.test", "/Items/die/Images/Primary");
    for _ in 0..2 {
        let response = client.get(&broken).send().await.unwrap();
        assert!(response.bytes().await.is_err(), "the client's body is cut");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        origin.seen.hits("/items/die/images/primary"),
        2,
        "never stored truncated"
    );
}

#[tokio::test]
async fn a_stale_poster_is_served_when_home_is_down() {
    let origin = Origin::start().await;
    let gw = TestGateway::start(&cache_site(origin.addr)).await;
    let client = gw.reqwest(&["jelly.test"], false);
    let url = gw.url("jelly.test", "/Items/short/Images/Primary");
    let (_, _, body) = fetch(&client, &url).await;
    origin.stop();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-cache"], "STALE");
    let age: u64 = response.headers()["age"].to_str().unwrap().parse().unwrap();
    assert!(age >= 2, "an honest Age: {age}");
    assert_eq!(response.bytes().await.unwrap().to_vec(), body);
    let uncached = client
        .get(gw.url("jelly.test", "/System/Info/Public"))
        .send()
        .await
        .unwrap();
    assert_eq!(uncached.status(), 502, "what was never cached still fails");
}

#[tokio::test]
async fn the_disk_tier_outlives_a_restart_and_purge_forgets() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}[log]\naccess = \"off\"\n\n{}",
        server_block(dir.path()),
        cache_site(origin.addr)
    );
    let url = "/Items/abc/Images/Primary?tag=keep";
    let mut gw = TestGateway::start_text(tempfile::tempdir().unwrap(), &text).await;
    let (_, label, _) = fetch(
        &gw.reqwest(&["jelly.test"], false),
        &gw.url("jelly.test", url),
    )
    .await;
    assert_eq!(label.as_deref(), Some("MISS"));
    gw.cache_stored(1, true).await;
    gw.begin_shutdown();
    gw.stopped().await;

    let gw = TestGateway::start_text(tempfile::tempdir().unwrap(), &text).await;
    let client = gw.reqwest(&["jelly.test"], false);
    let (_, label, _) = fetch(&client, &gw.url("jelly.test", url)).await;
    assert_eq!(label.as_deref(), Some("HIT"), "read back from disk");
    assert_eq!(origin.seen.hits("/items/abc/images/primary"), 1);

    let socket = drawbridge::admin::socket_path(&dir.path().join("state"));
    let purge = drawbridge::admin::Command::CachePurge {
        prefix: "jelly.test/Items/".into(),
    };
    let reply = drawbridge::admin::request(&socket, &purge).await.unwrap();
    // In memory (the hit read it back) and on disk: one response.
    assert_eq!(
        reply,
        drawbridge::admin::Reply::Purged(1),
        "counts responses, not copies"
    );
    let stored = gw.cache_stored_now().0;
    let (_, label, _) = fetch(&client, &gw.url("jelly.test", url)).await;
    assert_eq!(label.as_deref(), Some("MISS"), "purged");
    gw.cache_stored(stored + 1, false).await;
    // A path alone purges it on every site, in any letter case.
    let purge = drawbridge::admin::Command::CachePurge {
        prefix: "/items/ABC/".into(),
    };
    let reply = drawbridge::admin::request(&socket, &purge).await.unwrap();
    assert_eq!(reply, drawbridge::admin::Reply::Purged(1));
    let (_, label, _) = fetch(&client, &gw.url("jelly.test", url)).await;
    assert_eq!(label.as_deref(), Some("MISS"), "purged by its path");
}

/// Home's health is learnt on every way out, not only plain requests: with
/// Jellyfin down, a poster's cache miss says "down" (`upstream_up` 0 in
/// the metrics, `status` and the dashboard), as a household sees it.
#[tokio::test]
async fn a_cache_miss_to_a_home_that_is_down_says_home_is_down() {
    let origin = Origin::start().await;
    let gw = TestGateway::start(&cache_site(origin.addr)).await;
    let client = gw.reqwest(&["jelly.test"], false);
    let up = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("drawbridge_upstream_up{site=\"jelly.test\"} "))
            .map(str::to_string)
    };
    let (status, label, _) = fetch(&client, &gw.url("jelly.test", "/Items/a/Images/Primary")).await;
    assert_eq!((status, label.as_deref()), (200, Some("MISS")));
    let text = crate::support::scrape(gw.admin.unwrap()).await;
    assert_eq!(up(&text).as_deref(), Some("1"), "a miss that got home: up");
    origin.stop();
    let (status, label, _) = fetch(&client, &gw.url("jelly.test", "/Items/b/Images/Primary")).await;
    assert_eq!((status, label.as_deref()), (502, Some("MISS")));
    let text = crate::support::scrape(gw.admin.unwrap()).await;
    assert_eq!(
        up(&text).as_deref(),
        Some("0"),
        "a miss that found home down: down"
    );
}

#[tokio::test]
async fn a_failing_disk_does_not_stop_serving() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Where the cache folder should be, a file: every disk write fails.
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    std::fs::write(dir.path().join("state/cache"), "not a folder").unwrap();
    let gw = TestGateway::start_in(dir, &cache_site(origin.addr)).await;
    let client = gw.reqwest(&["jelly.test"], false);
    let url = gw.url("jelly.test", "/Items/abc/Images/Primary?tag=d");
    assert_eq!(fetch(&client, &url).await.0, 200);
    gw.cache_stored(1, false).await;
    let (status, label, body) = fetch(&client, &url).await;
    assert_eq!(
        (status, label.as_deref(), body.len()),
        (200, Some("HIT"), 2048),
        "served from memory"
    );
}

#[tokio::test]
async fn the_hit_ratio_is_logged_every_stats_interval() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}[log]\naccess = \"off\"\n\n[cache]\nstats_interval = \"300ms\"\n\n{}",
        server_block(dir.path()),
        site(
            "jelly.test",
            origin.addr,
            "cache_paths = [\"/private/**\"]\nhttps_redirect = false"
        )
    );
    let path = dir.path().join("drawbridge.toml");
    std::fs::write(&path, text).unwrap();
    let process = Process::start(&path);
    let client = reqwest::Client::builder()
        .resolve("jelly.test", process.http)
        .build()
        .unwrap();
    let url = format!(
        "http://jelly.test:{}/Items/abc/Images/Primary?tag=r",
        process.http.port()
    );
    let mut labels = Vec::new();
    for _ in 0..4 {
        labels.push(fetch(&client, &url).await.1);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        labels.iter().map(Option::as_deref).collect::<Vec<_>>(),
        [Some("MISS"), Some("HIT"), Some("HIT"), Some("HIT")]
    );
    assert!(
        process.wait_for_log("hits=3 misses=1", Duration::from_secs(3)),
        "{:#?}",
        process.log.lock().unwrap()
    );
    let log = process.log.lock().unwrap();
    let line = log.iter().find(|l| l.contains("hits=3 misses=1")).unwrap();
    assert!(line.contains("hit_ratio=\"75.0%\""), "{line}");
    // The three hits, 2 KiB each; what went home is not counted.
    assert!(line.contains("bytes_served=6144"), "{line}");
}

#[tokio::test]
async fn an_error_page_on_a_cache_route_says_it_was_a_miss() {
    let gw = TestGateway::start(&cache_site(crate::support::closed_addr().await)).await;
    let client = gw.reqwest(&["jelly.test"], false);
    let (status, label, _) = fetch(
        &client,
        &gw.url("jelly.test", "/Items/none/Images/Primary?tag=x"),
    )
    .await;
    assert_eq!((status, label.as_deref()), (502, Some("MISS")));
}
