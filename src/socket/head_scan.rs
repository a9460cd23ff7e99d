//! The raw bytes of an HTTP/1 request head as they arrive, before hyper parses
//! them: whether the head names both Content-Length and Transfer-Encoding
//! (hyper drops Content-Length in that case, so the pipeline could not tell),
//! and whether the bytes read so far end exactly with a body-less head (then
//! nothing of the connection is left in hyper's buffer once it is answered,
//! and the connection may be parked).

/// Watches the header names of an HTTP/1 request head as its bytes arrive.
#[derive(Debug, Default)]
pub struct HeadScan {
    /// The request (epoch) whose head is being scanned.
    epoch: u64,
    /// The request line has begun (empty lines before it are allowed).
    started: bool,
    /// The head has ended; nothing more until the next request.
    done: bool,
    /// The current line's first bytes, lower-cased.
    line: [u8; 18],
    len: usize,
    content_length: bool,
    transfer_encoding: bool,
}

/// What one read told about the head.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Scanned {
    /// The head names both Content-Length and Transfer-Encoding.
    pub ambiguous: bool,
    /// The read ended exactly with the end of a head that announces no body:
    /// once hyper has parsed it, none of the connection's bytes wait in its buffer.
    pub at_boundary: bool,
}

impl HeadScan {
    /// Feeds bytes read for the head of request `epoch`.
    pub fn feed(&mut self, epoch: u64, bytes: &[u8]) -> Scanned {
        if epoch != self.epoch {
            *self = HeadScan {
                epoch,
                ..HeadScan::default()
            };
        }
        let mut scanned = Scanned::default();
        let mut rest = bytes;
        while !rest.is_empty() {
            if self.done {
                // Bytes past the head's end: a body, or a pipelined request.
                scanned.at_boundary = false;
                return scanned;
            }
            let Some(newline) = memchr::memchr(b'\n', rest) else {
                self.line_part(rest);
                break;
            };
            self.line_part(&rest[..newline]);
            rest = &rest[newline + 1..];
            let blank = self.len == 0 || (self.len == 1 && self.line[0] == b'\r');
            self.len = 0;
            if blank && self.started {
                self.done = true;
                let framed = self.content_length || self.transfer_encoding;
                scanned.ambiguous = self.content_length && self.transfer_encoding;
                scanned.at_boundary = !framed && rest.is_empty();
            }
        }
        scanned
    }

    /// Bytes of the current line (no newline among them): only its first
    /// few are kept, enough to recognise the two framing header names.
    fn line_part(&mut self, part: &[u8]) {
        if part.iter().any(|&b| b != b'\r') {
            self.started = true;
        }
        let before = self.len;
        for (slot, b) in self.line.iter_mut().skip(before).zip(part) {
            *slot = b.to_ascii_lowercase();
        }
        self.len += part.len();
        let reached = |n: usize| before < n && self.len >= n;
        self.content_length |= reached(15) && &self.line[..15] == b"content-length:";
        self.transfer_encoding |= reached(18) && &self.line[..18] == b"transfer-encoding:";
    }
}

#[cfg(test)]
mod tests {
    use super::{HeadScan, Scanned};

    fn ambiguous(scan: &mut HeadScan, epoch: u64, bytes: &[u8]) -> bool {
        scan.feed(epoch, bytes).ambiguous
    }

    #[test]
    fn both_framing_headers_in_one_head_are_seen_across_reads() {
        let mut scan = HeadScan::default();
        assert!(!ambiguous(
            &mut scan,
            0,
            b"POST / HTTP/1.1\r\nHost: a\r\nConTent-LENGTH: 5\r\nTransfer-En"
        ));
        assert!(ambiguous(&mut scan, 0, b"coding: chunked\r\n\r\n0\r\n\r\n"));
    }

    #[test]
    fn one_of_them_or_both_in_a_body_is_fine() {
        let mut scan = HeadScan::default();
        let request = b"POST / HTTP/1.1\r\nContent-Length: 50\r\n\r\ntransfer-encoding: chunked\r\ncontent-length: 1\r\n\r\n";
        assert!(
            !ambiguous(&mut scan, 0, request),
            "after the blank line it is body"
        );
        let mut scan = HeadScan::default();
        assert!(!ambiguous(
            &mut scan,
            0,
            b"GET / HTTP/1.1\r\nX-Note: content-length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
        // The next request on the connection is scanned afresh.
        assert!(ambiguous(
            &mut scan,
            1,
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
        ));
    }

    /// The scan byte by byte, as it was first written: the line-wise scan
    /// must agree with it however the bytes are split into reads.
    fn byte_by_byte(reads: &[&[u8]]) -> Vec<Scanned> {
        let (mut started, mut done, mut cl, mut te) = (false, false, false, false);
        let (mut line, mut len) = ([0u8; 18], 0usize);
        let mut out = Vec::new();
        for bytes in reads {
            let mut scanned = Scanned::default();
            for (i, &b) in bytes.iter().enumerate() {
                if done {
                    scanned.at_boundary = false;
                    break;
                }
                if b == b'\n' {
                    let blank = len == 0 || (len == 1 && line[0] == b'\r');
                    len = 0;
                    if blank && started {
                        done = true;
                        scanned.ambiguous = cl && te;
                        scanned.at_boundary = !(cl || te) && i + 1 == bytes.len();
                    }
                    continue;
                }
                started |= b != b'\r';
                if len < 18 {
                    line[len] = b.to_ascii_lowercase();
                }
                len += 1;
                cl |= len == 15 && &line[..15] == b"content-length:";
                te |= len == 18 && &line[..18] == b"transfer-encoding:";
            }
            out.push(scanned);
        }
        out
    }

    #[test]
    fn every_split_of_a_head_scans_as_one_byte_at_a_time_would() {
        let heads: [&[u8]; 6] = [
            b"GET / HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n",
            b"\r\n\r\nPOST /x HTTP/1.1\r\nCONTENT-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nhello",
            b"POST / HTTP/1.1\nTransfer-Encoding: chunked\n\n0\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-Content-Length: 1\r\ncontent-lengthy: 2\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\r\n\r\n",
            b"GET /a-very-long-target-that-goes-on HTTP/1.1\r\nTransfer-Encoding:chunked\r\n\r\n",
        ];
        for head in heads {
            for first in 0..=head.len() {
                for second in first..=head.len() {
                    let reads = [&head[..first], &head[first..second], &head[second..]];
                    let mut scan = HeadScan::default();
                    let lined: Vec<Scanned> = reads.iter().map(|r| scan.feed(0, r)).collect();
                    assert_eq!(
                        lined,
                        byte_by_byte(&reads),
                        "{:?} split at {first}, {second}",
                        String::from_utf8_lossy(head)
                    );
                }
            }
        }
    }

    #[test]
    fn a_boundary_only_where_a_bodyless_head_ends_the_read() {
        let boundary = Scanned {
            ambiguous: false,
            at_boundary: true,
        };
        let mut scan = HeadScan::default();
        assert_eq!(scan.feed(0, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), boundary);
        // Split across reads: only the read that ends the head says so.
        let mut scan = HeadScan::default();
        assert!(!scan.feed(0, b"GET / HTTP/1.1\r\nHo").at_boundary);
        assert_eq!(scan.feed(0, b"st: a\r\n\r\n"), boundary);
        // A pipelined request behind it: hyper holds those bytes.
        let mut scan = HeadScan::default();
        assert!(
            !scan
                .feed(0, b"GET / HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n")
                .at_boundary
        );
        // A head announcing a body: its bytes follow.
        let mut scan = HeadScan::default();
        assert!(
            !scan
                .feed(0, b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
                .at_boundary
        );
        let mut scan = HeadScan::default();
        assert!(
            !scan
                .feed(0, b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
                .at_boundary
        );
        // Empty lines before a request line are not a head.
        let mut scan = HeadScan::default();
        assert!(!scan.feed(0, b"\r\n").at_boundary);
        assert!(!scan.feed(0, b"\r\nGET").at_boundary);
        // Bytes after the head's end, in a later read of the same request.
        let mut scan = HeadScan::default();
        assert!(scan.feed(0, b"GET / HTTP/1.1\r\n\r\n").at_boundary);
        assert!(!scan.feed(0, b"G").at_boundary);
    }
}
