//! HTTP/2 abuse: the Rapid Reset flood (CVE-2023-44487) — streams opened and
//! cancelled at once, faster than they can be served — ends with GOAWAY
//! ENHANCE_YOUR_CALM, as does MadeYouReset (CVE-2025-8671: streams the client
//! makes the server reset), and a CONTINUATION flood (a header block that
//! never ends) ends the connection; none of them reaches Jellyfin.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::support::origin::Origin;
use crate::support::{site, TestGateway};

const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const ENHANCE_YOUR_CALM: u32 = 0xb;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// GET / for jelly.test in HPACK: static-table method, scheme and path, and
/// :authority as a literal that is not indexed.
fn get_block() -> Vec<u8> {
    let mut block = vec![0x82, 0x87, 0x84, 0x01, 10];
    block.extend_from_slice(b"jelly.test");
    block
}

#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// GOAWAY with this error code.
    GoAway(u32),
    /// Closed without a GOAWAY.
    Closed,
    /// Still open after 5 s.
    Open,
}

/// Reads the server's frames until a GOAWAY, the end of the connection, or 5 s.
async fn goaway_or_close<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Ended {
    let mut received = Vec::new();
    let mut buf = [0u8; 16384];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Ended::Closed,
            Err(_) => return Ended::Open,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
        let mut at = 0;
        while received.len() >= at + 9 {
            let len =
                u32::from_be_bytes([0, received[at], received[at + 1], received[at + 2]]) as usize;
            if received.len() < at + 9 + len {
                break;
            }
            if received[at + 3] == GOAWAY && len >= 8 {
                let code = &received[at + 9 + 4..at + 9 + 8];
                return Ended::GoAway(u32::from_be_bytes([code[0], code[1], code[2], code[3]]));
            }
            at += 9 + len;
        }
    }
}

/// An h2 connection to a gateway in front of a fake Jellyfin, with the
/// client preface and SETTINGS already in `flood`.
async fn attacker() -> (Origin, TestGateway, TlsStream<TcpStream>, Vec<u8>) {
    let origin = Origin::start().await;
    let gw = TestGateway::start(&site("jelly.test", origin.addr, "")).await;
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
