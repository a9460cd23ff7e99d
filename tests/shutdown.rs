//! Shutdown: no new connections, requests in flight finish, and whatever is
//! still running when `shutdown_grace` is over is closed.

use std::time::Duration;

use crate::support::origin::Origin;
use crate::support::{site, TestGateway};

#[tokio::test]
async fn in_flight_stream_finishes_while_new_connections_are_refused() {
    let origin = Origin::start().await;
    let mut gw = TestGateway::start(&site("jelly.test", origin.addr, "")).await;
    let client = gw.reqwest(&["jelly.test"], false);
    let mut response = client
        .get(gw.url("jelly.test", "/trickle"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.chunk().await.unwrap().unwrap(), "first\n");
    gw.begin_shutdown();
    let mut refused = false;
    for _ in 0..400 {
        if tokio::net::TcpStream::connect(gw.https).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(refused, "no new connections once shutdown began");
    origin.seen.trickle.notify_one();
    assert_eq!(response.chunk().await.unwrap().unwrap(), "second\n");
    assert!(
        response.chunk().await.unwrap().is_none(),
        "the stream ended whole"
    );
    tokio::time::timeout(Duration::from_secs(5), gw.stopped())
        .await
        .expect("stopped once drained");
}

#[tokio::test]
async fn streams_past_the_grace_are_cut() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let rest = site("jelly.test", origin.addr, "");
    let mut gw =
        TestGateway::start_with_server_extra(dir, "shutdown_grace = \"1s\"\n", &rest).await;
    let client = gw.reqwest(&["jelly.test"], true);
    let mut response = client
        .get(gw.url("jelly.test", "/trickle"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.chunk().await.unwrap().unwrap(), "first\n");
    let started = tokio::time::Instant::now();
    gw.begin_shutdown();
    let rest = tokio::time::timeout(Duration::from_secs(5), response.chunk())
        .await
        .expect("cut, not hanging");
    assert!(
        rest.is_err(),
        "the unfinished stream is cut, not completed: {rest:?}"
    );
    tokio::time::timeout(Duration::from_secs(5), gw.stopped())
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(4),
        "{elapsed:?}"
    );
}
