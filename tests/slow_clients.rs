//! Slow clients are cut at their deadline while others are served: a head sent
//! a byte a second (slowloris), and a TLS handshake that never starts.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{exchange, status_of, TestGateway};

const CONFIG: &str = r#"
[limits]
header_timeout = "2s"
handshake_timeout = "1s"
keepalive_timeout = "3s"

[[site]]
host = "jelly.test"
upstream = "http://127.0.0.1:9"
tls = "internal"
"#;

#[tokio::test]
async fn slowloris_head_is_cut_at_the_deadline_while_others_are_served() {
    let gw = TestGateway::start(CONFIG).await;
    let mut slow = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    let started = tokio::time::Instant::now();
    let request = b"GET / HTTP/1.1\r\nHost: jelly.test\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut cut_after = None;
    for (i, byte) in request.iter().enumerate() {
        if slow.write_all(&[*byte]).await.is_err() {
            cut_after = Some(started.elapsed());
            break;
        }
        if i == 2 {
            // Meanwhile another client is served normally.
            let mut other = tokio::net::TcpStream::connect(gw.http).await.unwrap();
            let (bytes, _) = exchange(
                &mut other,
                b"GET / HTTP/1.1\r\nHost: jelly.test\r\nConnection: close\r\n\r\n",
                Duration::from_secs(2),
            )
            .await;
            assert_eq!(status_of(&bytes), 308);
        }
        let mut probe = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(1000), slow.read(&mut probe)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                cut_after = Some(started.elapsed());
                break;
            }
            Ok(Ok(n)) => panic!(
                "no response expected for an unfinished head, got {:?}",
                &probe[..n]
            ),
            Err(_) => {}
        }
    }
    let cut_after = cut_after.expect("the slow client was never cut off");
    assert!(
        cut_after >= Duration::from_millis(1500),
        "not before the 2 s deadline: {cut_after:?}"
    );
    assert!(
        cut_after <= Duration::from_secs(5),
        "promptly after the deadline: {cut_after:?}"
    );
}

#[tokio::test]
async fn stalled_tls_handshake_is_closed() {
    let gw = TestGateway::start(CONFIG).await;
    let mut tcp = tokio::net::TcpStream::connect(gw.https).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(4), tcp.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "closed by the 1 s handshake deadline: {read:?}"
    );
}

#[tokio::test]
async fn idle_keepalive_outlives_the_head_deadline_then_closes() {
    let gw = TestGateway::start(CONFIG).await;
    let mut tcp = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    let (bytes, closed) = exchange(
        &mut tcp,
        b"GET / HTTP/1.1\r\nHost: jelly.test\r\n\r\n",
        Duration::from_millis(2500),
    )
    .await;
    assert_eq!(status_of(&bytes), 308);
    assert!(
        !closed,
        "still open after 2.5 s idle: longer than the 2 s head deadline"
    );
    let (bytes, _) = exchange(
        &mut tcp,
        b"GET /again HTTP/1.1\r\nHost: jelly.test\r\n\r\n",
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(
        status_of(&bytes),
        308,
        "the kept-alive connection serves a second request"
    );
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "closed by the 3 s keep-alive timeout: {read:?}"
    );
}

#[tokio::test]
async fn slow_request_body_is_cut_and_never_completed_upstream() {
    let origin = crate::support::origin::Origin::start().await;
    let config = format!(
        "[limits]\nbody_timeout = \"1s\"\nbody_min_rate = \"100KiB\"\n\n{}",
        crate::support::site("jelly.test", origin.addr, "https_redirect = false")
    );
    let gw = TestGateway::start(&config).await;
    let mut tcp = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    let started = tokio::time::Instant::now();
    let (bytes, closed) = exchange(
        &mut tcp,
        b"POST /upload HTTP/1.1\r\nHost: jelly.test\r\nContent-Length: 100000\r\n\r\nonly a little",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        status_of(&bytes),
        408,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    assert!(closed);
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(
        origin
            .seen
            .uploads_completed
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}
