//! A quiet HTTP/1.1 keep-alive connection is parked between requests (its
//! hyper connection dropped, the socket and TLS session kept): whatever the
//! client sends next on the same connection is answered as before, and the
//! keep-alive timeout still closes it.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::support::origin::Origin;
use crate::support::{site, TestGateway};

/// Longer than drawbridge's 250 ms before a quiet connection is parked.
const QUIET: Duration = Duration::from_millis(700);

/// Reads one response with a Content-Length body: its status and body.
async fn response<S: AsyncRead + Unpin>(stream: &mut S, pending: &mut Vec<u8>) -> (u16, Vec<u8>) {
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("a response in time")
            .expect("readable");
        assert!(
            n > 0,
            "closed before a response; got {:?}",
            String::from_utf8_lossy(pending)
        );
        pending.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&pending[..head_end]).to_lowercase();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    while pending.len() < head_end + length {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed mid-body");
        pending.extend_from_slice(&buf[..n]);
    }
    let body = pending[head_end..head_end + length].to_vec();
    pending.drain(..head_end + length);
    (status, body)
}

/// Requests on one connection with quiet pauses between them.
async fn session<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) {
    let mut pending = Vec::new();
    let get = b"GET /echo HTTP/1.1\r\nHost: jelly.test\r\n\r\n";
    stream.write_all(get).await.unwrap();
    assert_eq!(response(stream, &mut pending).await.0, 200);

    // A head split by a pause longer than the parking delay.
    tokio::time::sleep(QUIET).await;
    stream.write_all(b"GET /echo HTTP/1.1\r\nHo").await.unwrap();
    tokio::time::sleep(QUIET).await;
    stream.write_all(b"st: jelly.test\r\n\r\n").await.unwrap();
    let (status, body) = response(stream, &mut pending).await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("\"target\":\"/echo\""));

    // A body after parking arrives whole.
    tokio::time::sleep(QUIET).await;
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: jelly.test\r\nContent-Length: 5\r\n\r\nhello")
        .await
        .unwrap();
    assert_eq!(response(stream, &mut pending).await, (200, b"5".to_vec()));

    // Two pipelined requests after parking: both answered, in order.
    tokio::time::sleep(QUIET).await;
    stream
        .write_all(b"GET /echo?n=1 HTTP/1.1\r\nHost: jelly.test\r\n\r\nGET /echo?n=2 HTTP/1.1\r\nHost: jelly.test\r\n\r\n")
        .await
        .unwrap();
    let (_, first) = response(stream, &mut pending).await;
    let (_, second) = response(stream, &mut pending).await;
    assert!(String::from_utf8_lossy(&first).contains("n=1"));
    assert!(String::from_utf8_lossy(&second).contains("n=2"));

    // Parked, the keep-alive timeout (2 s) still closes it.
    stream.write_all(get).await.unwrap();
    assert_eq!(response(stream, &mut pending).await.0, 200);
    let started = tokio::time::Instant::now();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "closed: {read:?}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(4),
        "at the keep-alive timeout: {waited:?}"
    );
}

async fn gateway() -> (Origin, TestGateway) {
    let origin = Origin::start().await;
    let config = format!(
        "[limits]\nkeepalive_timeout = \"2s\"\n\n{}",
        site("jelly.test", origin.addr, "https_redirect = false")
    );
    (origin, TestGateway::start(&config).await)
}

#[tokio::test]
async fn parked_tls_connection_answers_again_then_times_out() {
    let (origin, gw) = gateway().await;
    let mut tls = gw
        .tls_connect(Some("jelly.test"), &[b"http/1.1"])
        .await
        .unwrap();
    session(&mut tls).await;
    assert_eq!(origin.seen.hits("/echo"), 5);
}

#[tokio::test]
async fn parked_plain_connection_answers_again_then_times_out() {
    let (origin, gw) = gateway().await;
    let mut tcp = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    session(&mut tcp).await;
    assert_eq!(origin.seen.hits("/echo"), 5);
}
