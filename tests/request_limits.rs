//! Head size limits: 414 for a long target, 431 for a long header line, too
//! many headers, or a head over the total bound.

use std::time::Duration;

use crate::support::{exchange, status_of, TestGateway};

const SITE: &str = "[[site]]\nhost = \"jelly.test\"\nupstream = \"http://127.0.0.1:9\"\ntls = \"internal\"\nhttps_redirect = false\n";

async fn status_for(gw: &TestGateway, request: String) -> u16 {
    let mut tcp = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    let (bytes, _) = exchange(&mut tcp, request.as_bytes(), Duration::from_secs(3)).await;
    status_of(&bytes)
}

#[tokio::test]
async fn oversized_heads_are_refused() {
    let gw = TestGateway::start(SITE).await;
    let long_target = format!(
        "GET /{} HTTP/1.1\r\nHost: jelly.test\r\n\r\n",
        "a".repeat(9 * 1024)
    );
    assert_eq!(status_for(&gw, long_target).await, 414);
    let long_line = format!(
        "GET / HTTP/1.1\r\nHost: jelly.test\r\nX-Long: {}\r\n\r\n",
        "b".repeat(9 * 1024)
    );
    assert_eq!(status_for(&gw, long_line).await, 431);
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    assert_eq!(
        status_for(
            &gw,
            format!("GET / HTTP/1.1\r\nHost: jelly.test\r\n{many}\r\n")
        )
        .await,
        431
    );
    let big_head: String = (0..6)
        .map(|i| format!("X-B{i}: {}\r\n", "c".repeat(7 * 1024)))
        .collect();
    assert_eq!(
        status_for(
            &gw,
            format!("GET / HTTP/1.1\r\nHost: jelly.test\r\n{big_head}\r\n")
        )
        .await,
        431
    );
    // Within the bounds the request reaches the site.
    let fine = format!(
        "GET / HTTP/1.1\r\nHost: jelly.test\r\nX-Ok: {}\r\nConnection: close\r\n\r\n",
        "d".repeat(4 * 1024)
    );
    assert_eq!(status_for(&gw, fine).await, 502);
}

/// `max_headers` holds over HTTP/2 (and HTTP/3, in the same check) as over
/// HTTP/1.1: 20 fields past the limit get 431 and never reach home;
/// cookie crumbs count as the one field home receives.
#[tokio::test]
async fn max_headers_holds_for_http2_as_for_http1() {
    let origin = crate::support::origin::Origin::start().await;
    let gw = TestGateway::start(&format!(
        "[limits]\nmax_headers = 30\n\n{}",
        crate::support::site("jelly.test", origin.addr, "")
    ))
    .await;
    let client = gw.reqwest(&["jelly.test"], true);
    let url = format!("https://jelly.test:{}/echo", gw.https.port());
    let with = |n: usize, name: &'static str| {
        let mut request = client.get(&url);
        for i in 0..n {
            request = request.header(name, format!("v{i}"));
        }
        request
    };
    let over = with(50, "x-extra").send().await.unwrap();
    assert_eq!(over.version(), reqwest::Version::HTTP_2);
    assert_eq!(over.status(), 431);
    assert_eq!(origin.seen.hits("/echo"), 0, "nothing reached home");
    let within = with(20, "x-extra").send().await.unwrap();
    assert_eq!(within.status(), 200);
    let crumbs = with(50, "cookie").send().await.unwrap();
    assert_eq!(crumbs.status(), 200, "fifty cookie crumbs are one field");
}
