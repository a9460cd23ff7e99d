//! The protocol ALPN agreed is the protocol spoken (RFC 7301): after `h2`
//! an HTTP/1.1 request or a bad preface ends the connection (h2spec 3.5/2:
//! GOAWAY PROTOCOL_ERROR or a close; hyper's h2 closes), after `http/1.1` (or no ALPN, or on plain HTTP) an HTTP/2 preface
//! is not switched to; an unknown `:authority` ends an HTTP/2 connection
//! with GOAWAY, not a bare close.

use std::time::Duration;

use crate::support::h2::{frame, get_block, goaway_in, PROTOCOL_ERROR, SETTINGS};
use crate::support::{exchange, TestGateway};

const WAIT: Duration = Duration::from_secs(5);
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[tokio::test]
async fn after_h2_an_http1_request_or_a_bad_preface_ends_the_connection() {
    let (origin, gw) = TestGateway::in_front_of_jellyfin("").await;
    for opening in [
        &b"GET /echo HTTP/1.1\r\nHost: jelly.test\r\n\r\n"[..],
        &b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"[..],
    ] {
        let mut tls = gw.tls_connect(Some("jelly.test"), &[b"h2"]).await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (received, closed) = exchange(&mut tls, opening, WAIT).await;
        let opening = String::from_utf8_lossy(opening);
        assert!(
            !received.starts_with(b"HTTP/"),
            "{opening:?} was answered as HTTP/1.1: {:?}",
            String::from_utf8_lossy(&received)
        );
        // h2spec 3.5/2: GOAWAY PROTOCOL_ERROR, or the connection closed.
        assert!(
            matches!(goaway_in(&received), Some(PROTOCOL_ERROR) | None),
            "{opening:?}: {:?}",
            goaway_in(&received)
        );
        assert!(closed, "{opening:?}: the connection stays open");
        assert!(
            !String::from_utf8_lossy(&received).contains("HTTP/1.1"),
            "{opening:?}"
        );
    }
    assert_eq!(origin.seen.total(), 0, "nothing reached the origin");
}

#[tokio::test]
async fn without_h2_an_http2_preface_is_not_switched_to() {
    let (origin, gw) = TestGateway::in_front_of_jellyfin("https_redirect = false").await;
    let mut preface = PREFACE.to_vec();
    preface.extend(frame(SETTINGS, 0, 0, &[]));
    preface.extend(frame(0x1, 0x4 | 0x1, 1, &get_block()));
    for alpn in [&[&b"http/1.1"[..]][..], &[]] {
        let mut tls = gw.tls_connect(Some("jelly.test"), alpn).await.unwrap();
        let (received, _) = exchange(&mut tls, &preface, WAIT).await;
        let text = String::from_utf8_lossy(&received);
        assert!(
            text.starts_with("HTTP/1.1 4") || text.starts_with("HTTP/1.1 5") || received.is_empty(),
            "ALPN {alpn:?}: an HTTP/2 preface was served as HTTP/2: {text:?}"
        );
    }
    // Plain HTTP: no h2c by prior knowledge either.
    let mut tcp = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    let (received, _) = exchange(&mut tcp, &preface, WAIT).await;
    let text = String::from_utf8_lossy(&received);
    assert!(
        text.starts_with("HTTP/1.1 4") || text.starts_with("HTTP/1.1 5") || received.is_empty(),
        "plain HTTP switched to HTTP/2: {text:?}"
    );
    assert_eq!(origin.seen.total(), 0, "nothing reached the origin");
    // HTTP/1.1 still works after http/1.1 and with no ALPN.
    for alpn in [&[&b"http/1.1"[..]][..], &[]] {
        let mut tls = gw.tls_connect(Some("jelly.test"), alpn).await.unwrap();
        let (received, _) = exchange(
            &mut tls,
            b"GET /echo HTTP/1.1\r\nHost: jelly.test\r\nConnection: close\r\n\r\n",
            WAIT,
        )
        .await;
        assert!(received.starts_with(b"HTTP/1.1 200"), "ALPN {alpn:?}");
    }
}

#[tokio::test]
async fn an_unknown_authority_on_h2_ends_the_connection_with_goaway() {
    let (origin, gw) = TestGateway::in_front_of_jellyfin("").await;
    let mut tls = gw.tls_connect(Some("jelly.test"), &[b"h2"]).await.unwrap();
    let mut request = PREFACE.to_vec();
    request.extend(frame(SETTINGS, 0, 0, &[]));
    // GET / with :authority evil.test.
    let mut block = vec![0x82, 0x87, 0x84, 0x01, 9];
    block.extend_from_slice(b"evil.test");
    request.extend(frame(0x1, 0x4 | 0x1, 1, &block));
    let (received, closed) = exchange(&mut tls, &request, WAIT).await;
    assert!(goaway_in(&received).is_some(), "no GOAWAY before the close");
    assert!(closed, "the connection stays open");
    assert_eq!(origin.seen.total(), 0);
}
