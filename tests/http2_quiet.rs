//! A quiet HTTP/2 connection holds no buffers: drawbridge's h2 is patched to
//! give its read and write buffers and its stream tables back when polled
//! after a quiet spell with no stream open and nothing half-read, and to copy
//! the headers it keeps in the HPACK table out of the read buffer; the
//! connection's clocks wake it for that after `PARK_AFTER` (vendor/README.md).
//! What the client sent before the quiet must survive it: the headers it
//! indexed are still there to refer to, a frame cut by the quiet arrives
//! whole (the half-read buffer is kept), and after a quiet spell an upload's
//! 16 KiB frames, arriving in pieces, fill a read buffer made anew at 8 KiB.
//! Whether the memory is given back is measured in bench/, not here.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::support::h2::{frame, HEADERS, SETTINGS};
use crate::support::origin::{seen, Origin};
use crate::support::{site, TestGateway};

const DATA: u8 = 0x0;
const PING: u8 = 0x6;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;

/// Longer than drawbridge's 250 ms before a quiet connection's buffers go.
const QUIET: Duration = Duration::from_millis(700);

/// A literal header with incremental indexing and a new name (RFC 7541 6.2.1).
fn indexed_literal(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = vec![0x40, name.len() as u8];
    out.extend_from_slice(name);
    out.push(value.len() as u8);
    out.extend_from_slice(value);
    out
}

/// A literal header with incremental indexing whose name is static table
/// entry `index` (below 64).
fn indexed_value(index: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![0x40 | index, value.len() as u8];
    out.extend_from_slice(value);
    out
}

/// Reads the server's frames until stream `id` ends: the DATA of that
/// stream. The other frames (SETTINGS, WINDOW_UPDATE, PING answers) pass.
async fn answer<S: AsyncRead + Unpin>(stream: &mut S, pending: &mut Vec<u8>, id: u32) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let (kind, flags, on, payload) = next_frame(stream, pending).await;
        if on == id && kind == DATA {
            body.extend_from_slice(&payload);
        }
        if on == id && (kind == DATA || kind == HEADERS) && flags & END_STREAM != 0 {
            return body;
        }
    }
}

/// One whole frame from the server: kind, flags, stream, payload.
async fn next_frame<S: AsyncRead + Unpin>(
    stream: &mut S,
    pending: &mut Vec<u8>,
) -> (u8, u8, u32, Vec<u8>) {
    let mut buf = [0u8; 16384];
    loop {
        if pending.len() >= 9 {
            let len = u32::from_be_bytes([0, pending[0], pending[1], pending[2]]) as usize;
            if pending.len() >= 9 + len {
                let (kind, flags) = (pending[3], pending[4]);
                let id = u32::from_be_bytes([pending[5], pending[6], pending[7], pending[8]])
                    & 0x7fff_ffff;
                let payload = pending[9..9 + len].to_vec();
                pending.drain(..9 + len);
                return (kind, flags, id, payload);
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("a frame in time")
            .expect("readable");
        assert!(n > 0, "the connection closed");
        pending.extend_from_slice(&buf[..n]);
    }
}

/// A PING answered: the server has read and handled all sent before it.
async fn answered_all<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    pending: &mut Vec<u8>,
    n: u8,
) {
    let opaque = [n; 8];
    stream.write_all(&frame(PING, 0, 0, &opaque)).await.unwrap();
    loop {
        let (kind, flags, _, payload) = next_frame(stream, pending).await;
        if kind == PING && flags & ACK != 0 && payload == opaque {
            return;
        }
    }
}

async fn gateway() -> (Origin, TestGateway) {
    let origin = Origin::start().await;
    let config = site("jelly.test", origin.addr, "https_redirect = false");
    (origin, TestGateway::start(&config).await)
}

#[tokio::test]
async fn indexed_headers_and_split_frames_survive_the_quiet() {
    let (origin, gw) = gateway().await;
    let mut tls = gw.tls_connect(Some("jelly.test"), &[b"h2"]).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut pending = Vec::new();
    let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    preface.extend(frame(SETTINGS, 0, 0, &[]));
    tls.write_all(&preface).await.unwrap();

    // Stream 1: GET /echo, :path, :authority and x-probe indexed as a
    // browser indexes them (dynamic table after it: 62 x-probe, 63
    // :authority, 64 :path).
    let mut block = vec![0x82, 0x87];
    block.extend(indexed_value(4, b"/echo"));
    block.extend(indexed_value(1, b"jelly.test"));
    block.extend(indexed_literal(b"x-probe", b"first-of-its-name"));
    let headers = frame(HEADERS, END_HEADERS | END_STREAM, 1, &block);
    tls.write_all(&headers).await.unwrap();
    let echo: serde_json::Value =
        serde_json::from_slice(&answer(&mut tls, &mut pending, 1).await).unwrap();
    assert_eq!(seen(&echo, "x-probe"), ["first-of-its-name"]);
    answered_all(&mut tls, &mut pending, 1).await;
    tokio::time::sleep(QUIET).await;

    // Stream 3: the same three headers by their table indices alone, after
    // the quiet in which the read buffer they were decoded from went back.
    // Its first bytes, then a quiet spell, then the rest.
    let headers = frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        3,
        &[0x82, 0x87, 0xc0, 0xbf, 0xbe],
    );
    tls.write_all(&headers[..4]).await.unwrap();
    tokio::time::sleep(QUIET).await;
    tls.write_all(&headers[4..]).await.unwrap();
    let echo: serde_json::Value =
        serde_json::from_slice(&answer(&mut tls, &mut pending, 3).await).unwrap();
    assert_eq!(echo["target"], "/echo", "{echo}");
    assert_eq!(seen(&echo, "x-probe"), ["first-of-its-name"]);
    answered_all(&mut tls, &mut pending, 2).await;
    tokio::time::sleep(QUIET).await;

    // Stream 5: POST /upload with 40,000 bytes in DATA frames of up to
    // 16 KiB (more than a read buffer of 8 KiB), each written in pieces cut
    // inside the frame header and inside the payload, with a pause after
    // each piece so the server reads them apart.
    let mut block = vec![0x83, 0x87];
    block.extend(indexed_value(4, b"/upload"));
    block.push(0xc0); // :authority jelly.test, from the table (64 once /upload is in)
    tls.write_all(&frame(HEADERS, END_HEADERS, 5, &block))
        .await
        .unwrap();
    let body: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
    let chunks: Vec<&[u8]> = body.chunks(16_384).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let flags = if i + 1 == chunks.len() { END_STREAM } else { 0 };
        let bytes = frame(DATA, flags, 5, chunk);
        for piece in [&bytes[..4], &bytes[4..9 + 5000], &bytes[9 + 5000..]] {
            tls.write_all(piece).await.unwrap();
            tls.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
    let answered = answer(&mut tls, &mut pending, 5).await;
    assert_eq!(String::from_utf8_lossy(&answered), "40000");
    assert_eq!(
        origin
            .seen
            .upload_bytes
            .load(std::sync::atomic::Ordering::SeqCst),
        40_000
    );
}
