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
