//! Request smuggling and malformed HTTP/1.1 (reference: HTTP Garden,
//! Http11Probe, smuggler): each case gets one 4xx answer and a closed
//! connection; the origin sees nothing of it, and a smuggled request behind it
//! is never answered.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::support::{exchange, TestGateway};

const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: jelly.test\r\n\r\n";

fn cases() -> Vec<(&'static str, Vec<u8>)> {
    let post = |headers: &str, body: &str| {
        format!("POST /upload HTTP/1.1\r\nHost: jelly.test\r\n{headers}\r\n{body}{SMUGGLED}")
            .into_bytes()
    };
    vec![
        ("CL.TE", post("Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n")),
        ("TE.CL", post("Transfer-Encoding: chunked\r\nContent-Length: 6\r\n", "0\r\n\r\n")),
        ("two different Content-Length", post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!")),
        ("Content-Length list", post("Content-Length: 5, 5\r\n", "hello")),
        ("Content-Length +5", post("Content-Length: +5\r\n", "hello")),
        ("Content-Length -1", post("Content-Length: -1\r\n", "")),
        ("Transfer-Encoding xchunked", post("Transfer-Encoding: xchunked\r\n", "0\r\n\r\n")),
        ("Transfer-Encoding chunked, gzip", post("Transfer-Encoding: chunked, gzip\r\n", "0\r\n\r\n")),
        ("Transfer-Encoding identity", post("Transfer-Encoding: identity\r\n", "")),
        ("Transfer-Encoding twice", post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n")),
        ("space before colon", post("Transfer-Encoding : chunked\r\n", "0\r\n\r\n")),
        ("obs-fold", post("X-A: a\r\n b\r\nContent-Length: 0\r\n", "")),
        ("obs-folded Transfer-Encoding", post("Transfer-Encoding:\r\n chunked\r\n", "0\r\n\r\n")),
        ("bare CR in a value", post("X-A: a\rb\r\nContent-Length: 0\r\n", "")),
        ("NUL in a value", post("X-A: a\0b\r\nContent-Length: 0\r\n", "")),
        ("control byte in a value", post("X-A: a\x01b\r\nContent-Length: 0\r\n", "")),
        ("space in a header name", post("X A: b\r\nContent-Length: 0\r\n", "")),
        (
            "Transfer-Encoding in HTTP/1.0",
            format!("POST /upload HTTP/1.0\r\nHost: jelly.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}").into_bytes(),
        ),
    ]
}

#[tokio::test]
async fn malformed_framing_is_refused_and_never_forwarded() {
    let (origin, gw) = TestGateway::in_front_of_jellyfin("https_redirect = false").await;
    let mut wrong = Vec::new();
    for (name, bytes) in cases() {
        let mut tcp = tokio::net::TcpStream::connect(gw.http).await.unwrap();
        let (answer, closed) = exchange(&mut tcp, &bytes, Duration::from_secs(3)).await;
        let text = String::from_utf8_lossy(&answer);
        let responses = text.matches("HTTP/1.1 ").count();
        let status: u16 = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        if responses != 1 || !(400..500).contains(&status) || !closed {
            wrong.push(format!(
                "{name}: {responses} responses, status {status}, closed {closed}"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "cases answered wrongly:\n{}",
        wrong.join("\n")
    );
    assert_eq!(origin.seen.total(), 0, "the origin saw none of it");
}

/// RFC 9110 §8.6 lets a recipient take identical duplicates as one; hyper
/// does, so the framing is unambiguous and the next pipelined request is real.
#[tokio::test]
async fn identical_content_lengths_count_once() {
    let (origin, gw) = TestGateway::in_front_of_jellyfin("https_redirect = false").await;
    let mut tcp = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    let request = "POST /upload HTTP/1.1\r\nHost: jelly.test\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello";
    let (answer, _) = exchange(&mut tcp, request.as_bytes(), Duration::from_secs(1)).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.starts_with("HTTP/1.1 200") && text.ends_with("\r\n5"),
        "one 5-byte body: {text:?}"
    );
    assert_eq!(origin.seen.uploads_completed.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_bad_chunk_is_never_completed_upstream() {
    let (origin, gw) = TestGateway::in_front_of_jellyfin("https_redirect = false").await;
    for chunk_size in ["0x5", "+5", "Z", "5 5"] {
        let mut tcp = tokio::net::TcpStream::connect(gw.http).await.unwrap();
        let request = format!("POST /upload HTTP/1.1\r\nHost: jelly.test\r\nTransfer-Encoding: chunked\r\n\r\n{chunk_size}\r\nhello\r\n0\r\n\r\n{SMUGGLED}");
        let (answer, closed) = exchange(&mut tcp, request.as_bytes(), Duration::from_secs(3)).await;
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.matches("HTTP/1.1 ").count() <= 1,
            "{chunk_size}: never two responses: {text:?}"
        );
        assert!(!text.contains("HTTP/1.1 200"), "{chunk_size}: {text:?}");
        assert!(closed, "{chunk_size}");
    }
    assert_eq!(
        origin.seen.uploads_completed.load(Ordering::SeqCst),
        0,
        "no upload completed"
    );
    assert_eq!(origin.seen.hits("/smuggled"), 0);
}

#[tokio::test]
async fn connect_and_foreign_absolute_targets_are_refused() {
    let (origin, gw) = TestGateway::in_front_of_jellyfin("https_redirect = false").await;
    for request in [
        "CONNECT evil.test:443 HTTP/1.1\r\nHost: jelly.test\r\n\r\n",
        "CONNECT jelly.test:80 HTTP/1.1\r\nHost: jelly.test:80\r\n\r\n",
        "GET http://evil.test/ HTTP/1.1\r\nHost: jelly.test\r\n\r\n",
    ] {
        let mut tcp = tokio::net::TcpStream::connect(gw.http).await.unwrap();
        let (answer, _) = exchange(&mut tcp, request.as_bytes(), Duration::from_secs(3)).await;
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 4"), "{request:?} → {text:?}");
    }
    assert_eq!(
        origin.seen.total(),
        0,
        "no open proxy: nothing reached any upstream"
    );
}
