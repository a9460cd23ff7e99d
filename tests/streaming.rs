//! Bodies flow as they arrive: a trickle shows its first bytes at once, Range
//! and conditional answers pass through byte for byte, a whole video arrives
//! intact, and a body the upstream cuts is cut for the client too.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::origin::{video_byte, VIDEO_LEN};
use crate::support::{exchange, status_of, TestGateway};

fn expected(start: usize, end: usize) -> Vec<u8> {
    (start..=end).map(video_byte).collect()
}

#[tokio::test]
async fn first_chunk_arrives_before_the_second_is_sent() {
    let (origin, gw) = TestGateway::in_front_of_jellyfin("").await;
    for http2 in [false, true] {
        let client = gw.reqwest(&["jelly.test"], http2);
        let mut response = client
            .get(gw.url("jelly.test", "/trickle"))
            .send()
            .await
            .unwrap();
        let first = tokio::time::timeout(Duration::from_secs(5), response.chunk())
            .await
            .expect("first chunk arrives while the origin holds the second");
        assert_eq!(first.unwrap().unwrap(), "first\n");
        origin.seen.trickle.notify_one();
        let second = response.chunk().await.unwrap().unwrap();
        assert_eq!(second, "second\n");
        // HTTP/2 may end the stream with an empty DATA frame.
        while let Some(rest) = response.chunk().await.unwrap() {
            assert!(rest.is_empty(), "nothing after the second chunk: {rest:?}");
        }
    }
}

#[tokio::test]
async fn ranges_pass_through_byte_for_byte() {
    let (_origin, gw) = TestGateway::in_front_of_jellyfin("").await;
    let last = VIDEO_LEN - 1;
    for http2 in [false, true] {
        let client = gw.reqwest(&["jelly.test"], http2);
        let url = gw.url("jelly.test", "/Videos/abc/stream?Static=true");
        for (range, start, end) in [
            ("bytes=0-99", 0, 99),
            ("bytes=1000-1999", 1000, 1999),
            ("bytes=-500", VIDEO_LEN - 500, last),
            ("bytes=4194000-", 4_194_000, last),
        ] {
            let response = client
                .get(&url)
                .header("range", range)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 206, "{range}");
            assert_eq!(
                response.headers()["content-range"],
                format!("bytes {start}-{end}/{VIDEO_LEN}")
            );
            assert_eq!(response.headers()["accept-ranges"], "bytes");
            assert_eq!(
                response.bytes().await.unwrap().as_ref(),
                expected(start, end).as_slice(),
                "{range}"
            );
        }
        let unsatisfiable = client
            .get(&url)
            .header("range", "bytes=99999999-")
            .send()
            .await
            .unwrap();
        assert_eq!(unsatisfiable.status(), 416);
        let stale = client
            .get(&url)
            .header("range", "bytes=0-9")
            .header("if-range", "\"old\"")
            .send()
            .await
            .unwrap();
        assert_eq!(stale.status(), 200, "If-Range mismatch gets the whole file");
        assert_eq!(stale.headers()["content-length"], VIDEO_LEN.to_string());
        let head = client.head(&url).send().await.unwrap();
        assert_eq!(head.status(), 200);
        assert_eq!(head.headers()["content-length"], VIDEO_LEN.to_string());
        let whole = client
            .get(&url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(whole.len(), VIDEO_LEN);
        assert!(
            whole.as_ref() == expected(0, last).as_slice(),
            "whole video intact"
        );
    }
}

#[tokio::test]
async fn conditional_image_gets_304() {
    let (_origin, gw) = TestGateway::in_front_of_jellyfin("").await;
    let client = gw.reqwest(&["jelly.test"], true);
    let url = gw.url("jelly.test", "/Items/1/Images/Primary?tag=abc");
    let first = client.get(&url).send().await.unwrap();
    assert_eq!(
        first.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    let etag = first.headers()["etag"].clone();
    let again = client
        .get(&url)
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
}

#[tokio::test]
async fn a_body_the_upstream_cuts_is_cut_for_the_client() {
    let (_origin, gw) = TestGateway::in_front_of_jellyfin("").await;
    for http2 in [false, true] {
        let client = gw.reqwest(&["jelly.test"], http2);
        let response = client
            .get(gw.url("jelly.test", "/die"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(
            response.bytes().await.is_err(),
            "never completed as if whole (http2: {http2})"
        );
    }
}

#[tokio::test]
async fn expect_100_continue_then_body() {
    let (_origin, gw) = TestGateway::in_front_of_jellyfin("").await;
    let mut tls = gw
        .tls_connect(Some("jelly.test"), &[b"http/1.1"])
        .await
        .unwrap();
    tls.write_all(b"POST /upload HTTP/1.1\r\nHost: jelly.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(3), tls.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 100 Continue"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    let (bytes, _) = exchange(&mut tls, b"hello", Duration::from_secs(2)).await;
    assert_eq!(status_of(&bytes), 200);
    assert!(bytes.ends_with(b"5"), "the origin got the 5 bytes");
}
