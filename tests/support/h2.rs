//! HTTP/2 written by hand: frames, an HPACK block for a GET, and reading the
//! server's frames until a GOAWAY or the end of the connection.

use std::time::Duration;

use tokio::io::AsyncReadExt;

pub const PROTOCOL_ERROR: u32 = 0x1;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const GOAWAY: u8 = 0x7;
pub const CONTINUATION: u8 = 0x9;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// GET / for jelly.test in HPACK: static-table method, scheme and path, and
/// :authority as a literal that is not indexed.
pub fn get_block() -> Vec<u8> {
    let mut block = vec![0x82, 0x87, 0x84, 0x01, 10];
    block.extend_from_slice(b"jelly.test");
    block
}

#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// GOAWAY with this error code.
    GoAway(u32),
    /// Closed without a GOAWAY.
    Closed,
    /// Still open after 5 s.
    Open,
}

/// Reads the server's frames until a GOAWAY, the end of the connection, or 5 s.
pub async fn goaway_or_close<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Ended {
    let mut received = Vec::new();
    let mut buf = [0u8; 16384];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Ended::Closed,
            Err(_) => return Ended::Open,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
        if let Some(code) = goaway_in(&received) {
            return Ended::GoAway(code);
        }
    }
}

/// The error code of the first GOAWAY among the whole frames of `received`.
pub fn goaway_in(received: &[u8]) -> Option<u32> {
    let mut at = 0;
    while received.len() >= at + 9 {
        let len =
            u32::from_be_bytes([0, received[at], received[at + 1], received[at + 2]]) as usize;
        if received.len() < at + 9 + len {
            return None;
        }
        if received[at + 3] == GOAWAY && len >= 8 {
            let code = &received[at + 9 + 4..at + 9 + 8];
            return Some(u32::from_be_bytes([code[0], code[1], code[2], code[3]]));
        }
        at += 9 + len;
    }
    None
}
