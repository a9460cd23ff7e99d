//! Saying goodbye on a WebSocket drawbridge must cut (the shutdown grace is
//! over): a Close frame with status 1001 (Going Away) to each side, so the
//! Jellyfin app reconnects at once instead of waiting on a dead socket. A
//! frame can only be put between two others, so each direction's bytes are
//! followed (`Boundary`) and a side gets its Close only when the last frame
//! written to it is whole.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Close, 1001, as a server sends it (unmasked).
const CLOSE_FROM_SERVER: [u8; 4] = [0x88, 0x02, 0x03, 0xE9];

/// Where a stream of WebSocket frames stands.
#[derive(Debug, Default, Clone)]
pub struct Boundary {
    /// The start of a frame's header, while it is incomplete.
    header: Vec<u8>,
    /// Payload bytes of the current frame still to come.
    payload_left: u64,
}

impl Boundary {
    /// Follows `bytes` written after those already seen.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let n = usize::try_from(self.payload_left)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                self.payload_left -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            self.header.push(bytes[0]);
            bytes = &bytes[1..];
            if let Some((length, payload)) = parse_header(&self.header) {
                if self.header.len() == length {
                    self.payload_left = payload;
                    self.header.clear();
                }
            }
        }
    }

    /// Whether the next byte would start a frame.
    pub fn at_frame_start(&self) -> bool {
        self.header.is_empty() && self.payload_left == 0
    }
}

/// A frame header's length and its payload's, once enough of it is there
/// to tell (RFC 6455 §5.2).
fn parse_header(header: &[u8]) -> Option<(usize, u64)> {
    let second = *header.get(1)?;
    let masked = second & 0x80 != 0;
    let (extended, short) = match second & 0x7f {
        126 => (2, None),
        127 => (8, None),
        n => (0, Some(u64::from(n))),
    };
    let length = 2 + extended + if masked { 4 } else { 0 };
    let payload = match short {
        Some(n) => n,
        None => {
            let bytes = header.get(2..2 + extended)?;
            bytes.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b))
        }
    };
    Some((length, payload))
}

/// Close, 1001, as a client sends it (masked with `mask`).
fn close_from_client(mask: [u8; 4]) -> [u8; 8] {
    let [a, b, c, d] = mask;
    [0x88, 0x82, a, b, c, d, 0x03 ^ a, 0xE9 ^ b]
}

/// One side of a tunnel, following the frames written to it.
#[derive(Debug)]
pub struct Side<T> {
    io: T,
    written: Boundary,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Side<T> {
    /// Wraps one side's stream.
    pub fn new(io: T) -> Side<T> {
        Side {
            io,
            written: Boundary::default(),
        }
    }

    /// Sends Close 1001 if a frame may start now, then shuts the stream;
    /// `to_server` for the upstream side (clients mask their frames).
    pub async fn going_away(&mut self, to_server: bool) {
        if self.written.at_frame_start() {
            let sent = if to_server {
                use ring::rand::SecureRandom;
                let mut mask = [0u8; 4];
                let _ = ring::rand::SystemRandom::new().fill(&mut mask);
                self.io.write_all(&close_from_client(mask)).await
            } else {
                self.io.write_all(&CLOSE_FROM_SERVER).await
            };
            if sent.is_ok() {
                let _ = self.io.flush().await;
            }
        }
        let _ = self.io.shutdown().await;
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Side<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Side<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let written = std::task::ready!(Pin::new(&mut this.io).poll_write(cx, buf))?;
        this.written.feed(&buf[..written]);
        Poll::Ready(Ok(written))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::{close_from_client, Boundary, CLOSE_FROM_SERVER};

    #[test]
    fn frame_starts_are_found_across_any_split() {
        // A masked text frame of 5 bytes, a 300-byte binary frame (16-bit
        // length), then a ping.
        let mut stream = vec![0x81, 0x85, 1, 2, 3, 4];
        stream.extend_from_slice(b"hello");
        stream.extend_from_slice(&[0x82, 126, 0x01, 0x2C]);
        stream.extend(std::iter::repeat_n(7u8, 300));
        stream.extend_from_slice(&[0x89, 0x00]);
        let starts = [0, 11, 11 + 4 + 300];
        for chunk in [1, 2, 3, 7, 64, stream.len()] {
            let mut boundary = Boundary::default();
            let mut at = 0;
            for piece in stream.chunks(chunk) {
                boundary.feed(piece);
                at += piece.len();
                let expected = at == stream.len() || starts.contains(&at);
                assert_eq!(
                    boundary.at_frame_start(),
                    expected,
                    "chunk {chunk}, at {at}"
                );
            }
        }
    }

    #[test]
    fn close_frames_carry_1001() {
        assert_eq!(&CLOSE_FROM_SERVER[2..], &1001u16.to_be_bytes());
        let frame = close_from_client([9, 8, 7, 6]);
        assert_eq!([frame[6] ^ 9, frame[7] ^ 8], 1001u16.to_be_bytes());
        let mut boundary = Boundary::default();
        boundary.feed(&frame);
        assert!(boundary.at_frame_start(), "a whole frame");
    }
}
