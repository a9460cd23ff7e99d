//! When home fails: refused → 502 at once, silent → 504 at the response
//! timeout, neither page showing the upstream's address; a pooled connection
//! that died is retried once for a GET, never for a POST.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::origin::Origin;
use crate::support::{site, TestGateway};

#[tokio::test]
async fn refused_upstream_is_a_quick_502_without_the_address() {
    let closed = crate::support::closed_addr().await;
    let gw = TestGateway::start(&site("jelly.test", closed, "")).await;
    let client = gw.reqwest(&["jelly.test"], false);
    let started = tokio::time::Instant::now();
    let response = client
        .get(gw.url("jelly.test", "/web/index.html"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "within the connect timeout"
    );
    let body = response.text().await.unwrap();
    assert!(body.contains("502 Bad Gateway"));
    assert!(
        !body.contains("127.0.0.1") && !body.contains(&closed.port().to_string()),
        "no home address: {body}"
    );
}

#[tokio::test]
async fn silent_upstream_is_a_504_at_the_response_timeout() {
    let origin = Origin::start().await;
    let gw = TestGateway::start(&site(
        "jelly.test",
        origin.addr,
        "response_timeout = \"1s\"",
    ))
    .await;
    let client = gw.reqwest(&["jelly.test"], true);
    let started = tokio::time::Instant::now();
    let response = client
        .get(gw.url("jelly.test", "/hang"))
        .send()
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(response.status(), 504);
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(4),
        "{elapsed:?}"
    );
    let body = response.text().await.unwrap();
    assert!(
        !body.contains("127.0.0.1") && !body.contains(&origin.addr.port().to_string()),
        "{body}"
    );
    // A slow upstream does not hold other requests up.
    let fine = client
        .get(gw.url("jelly.test", "/System/Info/Public"))
        .send()
        .await
        .unwrap();
    assert_eq!(fine.status(), 200);
}

/// An origin that answers the first request on each connection with
/// keep-alive, then reads the next request and closes without a word — a
/// pooled connection that turns out dead.
async fn flaky_origin() -> (std::net::SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let posts = Arc::new(AtomicUsize::new(0));
    let (r, p) = (requests.clone(), posts.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let (r, p) = (r.clone(), p.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                for served in 0.. {
                    let Ok(n) = stream.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    r.fetch_add(1, Ordering::SeqCst);
                    if buf[..n].starts_with(b"POST") {
                        p.fetch_add(1, Ordering::SeqCst);
                    }
                    if served > 0 {
                        return; // dies with the request unanswered
                    }
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok").await;
                }
            });
        }
    });
    (addr, requests, posts)
}

#[tokio::test]
async fn a_dead_pooled_connection_is_retried_once_for_get_never_for_post() {
    let (addr, requests, posts) = flaky_origin().await;
    let gw = TestGateway::start(&site("jelly.test", addr, "")).await;
    let client = gw.reqwest(&["jelly.test"], false);
    let first = client.get(gw.url("jelly.test", "/a")).send().await.unwrap();
    assert_eq!(first.text().await.unwrap(), "ok");
    let second = client.get(gw.url("jelly.test", "/b")).send().await.unwrap();
    assert_eq!(second.status(), 200, "retried on a fresh connection");
    assert_eq!(
        requests.load(Ordering::SeqCst),
        3,
        "first, the lost one, the retry"
    );

    let post = client
        .post(gw.url("jelly.test", "/c"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(
        post.status(),
        502,
        "a POST that may have been seen is not sent again"
    );
    assert_eq!(
        posts.load(Ordering::SeqCst),
        1,
        "the origin saw the POST once"
    );
}

#[tokio::test]
async fn an_upstream_failing_mid_body_is_in_the_error_log() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = crate::support::config_file(
        dir.path(),
        &site("jelly.test", origin.addr, "https_redirect = false"),
    );
    let process = crate::support::Process::start(&path);
    let mut tcp = tokio::net::TcpStream::connect(process.http).await.unwrap();
    let (bytes, _) = crate::support::exchange(
        &mut tcp,
        b"GET /die HTTP/1.1\r\nHost: jelly.test\r\nConnection: close\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(crate::support::status_of(&bytes), 200, "the head went out");
    let logged = tokio::task::spawn_blocking(move || {
        process.wait_for_log("failed mid-body", Duration::from_secs(5))
    })
    .await
    .unwrap();
    assert!(logged, "a cut film leaves no trace in the error log");
}
