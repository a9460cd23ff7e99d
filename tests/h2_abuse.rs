//! HTTP/2 abuse: the Rapid Reset flood (CVE-2023-44487) — streams opened and
//! cancelled at once, faster than they can be served — ends with GOAWAY
//! ENHANCE_YOUR_CALM, as does MadeYouReset (CVE-2025-8671: streams the client
//! makes the server reset), and a CONTINUATION flood (a header block that
//! never ends) ends the connection; none of them reaches Jellyfin.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::support::h2::{
    frame, get_block, goaway_or_close, Ended, CONTINUATION, ENHANCE_YOUR_CALM, HEADERS, RST_STREAM,
    SETTINGS,
};
use crate::support::origin::Origin;
use crate::support::TestGateway;

/// An h2 connection to a gateway in front of a fake Jellyfin, with the
/// client preface and SETTINGS already in `flood`.
async fn attacker() -> (Origin, TestGateway, TlsStream<TcpStream>, Vec<u8>) {
    let (origin, gw) = TestGateway::in_front_of_jellyfin("").await;
    let tls = gw.tls_connect(Some("jelly.test"), &[b"h2"]).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut flood = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    flood.extend(frame(SETTINGS, 0, 0, &[]));
    (origin, gw, tls, flood)
}

/// The flood is told to calm down, stays at the door, and everyone else is
/// still served.
async fn calmed(origin: &Origin, gw: &TestGateway, ended: Ended, allowed_upstream: usize) {
    assert_eq!(
        ended,
        Ended::GoAway(ENHANCE_YOUR_CALM),
        "the flood is told to calm down"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        origin.seen.total() <= allowed_upstream,
        "the flood stays at the door: {} requests reached the upstream",
        origin.seen.total()
    );
    let status = gw
        .reqwest(&["jelly.test"], true)
        .get(gw.url("jelly.test", "/System/Info/Public"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200, "everyone else is still served");
}

#[tokio::test]
async fn continuation_flood_ends_the_connection_before_the_upstream() {
    let (origin, gw, mut tls, mut flood) = attacker().await;
    // A header block that never ends: HEADERS without END_HEADERS, then
    // CONTINUATION frames of 1 KiB headers each (x-a: 1000 × 'a', literal).
    flood.extend(frame(HEADERS, 0x1, 1, &get_block()));
    let mut header = vec![0x00, 3, b'x', b'-', b'a', 0x7f, 0xe9, 0x06];
    header.extend(std::iter::repeat_n(b'a', 1000));
    for _ in 0..64 {
        for _ in 0..16 {
            flood.extend(frame(CONTINUATION, 0, 1, &header));
        }
        // The server may close before taking all of it.
        if tls.write_all(&flood).await.is_err() {
            break;
        }
        flood.clear();
    }
    calmed(&origin, &gw, goaway_or_close(&mut tls).await, 0).await;
}

#[tokio::test]
async fn rapid_reset_flood_gets_goaway_and_never_reaches_the_upstream() {
    let (origin, gw, mut tls, mut flood) = attacker().await;
    // 1,000 streams, each opened and cancelled, in one write.
    for i in 0..1000u32 {
        let stream = 2 * i + 1;
        flood.extend(frame(HEADERS, 0x4 | 0x1, stream, &get_block()));
        flood.extend(frame(RST_STREAM, 0, stream, &0x8u32.to_be_bytes()));
    }
    let _ = tls.write_all(&flood).await;
    calmed(&origin, &gw, goaway_or_close(&mut tls).await, 24).await;
}

#[tokio::test]
async fn made_you_reset_flood_gets_goaway_and_never_reaches_the_upstream() {
    let (origin, gw, mut tls, mut flood) = attacker().await;
    // 2,000 malformed requests (no :path), each a stream error the server
    // must answer with a reset of its own. (A zero window increment, the other
    // classic trigger, already costs the whole connection: PROTOCOL_ERROR.)
    let mut malformed = vec![0x82, 0x87, 0x01, 10];
    malformed.extend_from_slice(b"jelly.test");
    for i in 0..2000u32 {
        flood.extend(frame(HEADERS, 0x4 | 0x1, 2 * i + 1, &malformed));
    }
    let _ = tls.write_all(&flood).await;
    calmed(&origin, &gw, goaway_or_close(&mut tls).await, 24).await;
}
