//! Gathers an HTTP/2 connection's writes into full TLS records.
//!
//! The h2 crate flushes after every DATA frame it does not copy into its own
//! buffer (any body of 256 bytes or more), and tokio-rustls turns every write
//! into a TLS record sent with a `writev` of its own. So ten small answers on
//! one connection left as ten records, each one more system call here and
//! one more read and decryption for the client (nginx and HAProxy fill
//! records of up to 16 KiB). [`Coalesce`] appends writes to a buffer of at
//! most one record's plaintext, and puts a flush off until the connection's
//! task is polled again: it wakes the task itself, so answers other streams
//! queue meanwhile join the same record, and the first read of that poll
//! writes the buffer out (h2 reads first whenever its connection is polled).
//! A write of a whole record or more, with nothing buffered, goes straight
//! through: large streams are not copied.
//!
//! Only for HTTP/2: hyper's HTTP/1.1 server writes one answer per flush and
//! may not read again before the client does, so there is nothing to gather
//! and a put-off flush would wait for the client (a client that negotiated
//! `h2` is served HTTP/2 only, see `connection`). Owns the order of the
//! connection's outgoing bytes, nothing else: TLS, deadlines and parking are
//! in [`crate::connection`] and [`crate::socket::deadline`].

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::socket::deadline::Readiness;

/// The most plaintext one TLS record carries (RFC 8446 §5.1).
const RECORD: usize = 16 * 1024;

/// The buffer's first size; it grows up to `RECORD` when a batch needs it.
const FIRST_CAPACITY: usize = 4 * 1024;

/// A connection's IO whose writes are gathered into records when `on`.
#[derive(Debug)]
pub struct Coalesce<IO> {
    io: IO,
    on: bool,
    /// Bytes accepted but not yet written to `io`; no capacity when empty,
    /// so an idle connection keeps no buffer.
    pending: Vec<u8>,
    /// How much of `pending` `io` has taken.
    written: usize,
    /// A flush was reported done while `pending` held bytes, and the task was
    /// woken to write them at its next read: no second wake is needed until
    /// they have left (while the socket is full, its own wake comes instead).
    owed: bool,
}

impl<IO> Coalesce<IO> {
    /// Wraps `io`; with `on` false every call goes straight through.
    pub fn new(io: IO, on: bool) -> Coalesce<IO> {
        Coalesce {
            io,
            on,
            pending: Vec::new(),
            written: 0,
            owed: false,
        }
    }
}

impl<IO: AsyncWrite + Unpin> Coalesce<IO> {
    /// Writes what is pending to `io` and flushes it.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        if !self.pending.is_empty() {
            // Given back: an idle connection keeps no buffer.
            self.pending = Vec::new();
            self.written = 0;
            // Cleared here, not after the flush below: if that waits, bytes
            // written meanwhile still need a wake of their own.
            self.owed = false;
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for Coalesce<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.pending.is_empty() {
            // A full socket must not stop the read: the write's waker is
            // registered, and the task is woken when it can go on.
            if let Poll::Ready(Err(error)) = this.poll_write_out(cx) {
                return Poll::Ready(Err(error));
            }
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Coalesce<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if !self.on && self.pending.is_empty() {
            return Pin::new(&mut self.io).poll_write(cx, buf);
        }
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if !this.on {
            if !this.pending.is_empty() {
                ready!(this.poll_write_out(cx))?;
            }
            return Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        }
        if this.pending.len() >= RECORD {
            // A full record: out before anything more is taken.
            ready!(this.poll_write_out(cx))?;
        }
        let total: usize = bufs.iter().map(|buf| buf.len()).sum();
        if this.pending.is_empty() && total >= RECORD {
            return Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        }
        if this.pending.capacity() == 0 {
            // Most batches are a few answers, and a whole record's buffer
            // would cost every idle HTTP/2 connection memory (docs/performance.md).
            this.pending.reserve_exact(FIRST_CAPACITY);
        }
        let mut taken = 0;
        for buf in bufs {
            let n = buf.len().min(RECORD - this.pending.len());
            this.pending.extend_from_slice(&buf[..n]);
            taken += n;
            if n < buf.len() {
                break;
            }
        }
        Poll::Ready(Ok(taken))
    }

    fn is_write_vectored(&self) -> bool {
        // Slices are gathered here, so h2 need not copy DATA into its buffer.
        self.on || self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pending.is_empty() {
            return Pin::new(&mut this.io).poll_flush(cx);
        }
        if !this.on {
            return this.poll_write_out(cx);
        }
        if !this.owed {
            // Put off to the next poll, which reads first and so writes out.
            this.owed = true;
            cx.waker().wake_by_ref();
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

impl<IO: Readiness> Readiness for Coalesce<IO> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io.poll_read_ready(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Wake, Waker};

    use super::*;

    /// Records each write it takes and each flush; reads give `incoming`,
    /// then end of stream.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
        flushes: usize,
        incoming: Vec<u8>,
        /// How many flushes wait (a full socket) before they succeed.
        stalls: usize,
    }

    impl AsyncRead for Recorder {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let n = self.incoming.len().min(buf.remaining());
            buf.put_slice(&self.incoming[..n]);
            self.incoming.drain(..n);
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes.push(buf.to_vec());
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let joined: Vec<u8> = bufs.iter().flat_map(|buf| buf.iter().copied()).collect();
            let n = joined.len();
            self.writes.push(joined);
            Poll::Ready(Ok(n))
        }

        fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            if self.stalls > 0 {
                self.stalls -= 1;
                return Poll::Pending;
            }
            self.flushes += 1;
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Counts its wakes.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn write(io: &mut Coalesce<Recorder>, cx: &mut Context<'_>, bytes: &[u8]) -> usize {
        match Pin::new(io).poll_write(cx, bytes) {
            Poll::Ready(Ok(n)) => n,
            other => panic!("{other:?}"),
        }
    }

    fn flush(io: &mut Coalesce<Recorder>, cx: &mut Context<'_>) {
        assert!(matches!(Pin::new(io).poll_flush(cx), Poll::Ready(Ok(()))));
    }

    fn read(io: &mut Coalesce<Recorder>, cx: &mut Context<'_>) {
        let mut space = [0u8; 8];
        let mut buf = ReadBuf::new(&mut space);
        assert!(matches!(
            Pin::new(io).poll_read(cx, &mut buf),
            Poll::Ready(Ok(()))
        ));
    }

    #[test]
    fn small_writes_leave_as_one_write_at_the_next_read_and_the_task_is_woken_once() {
        let wakes = Arc::new(Wakes::default());
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut io = Coalesce::new(Recorder::default(), true);
        for answer in [&b"one"[..], b"two", b"three"] {
            assert_eq!(write(&mut io, &mut cx, answer), answer.len());
            flush(&mut io, &mut cx);
        }
        assert!(io.io.writes.is_empty(), "held until the next poll");
        assert_eq!(io.io.flushes, 0);
        assert_eq!(
            wakes.0.load(Ordering::Relaxed),
            1,
            "one wake for the put-off flush"
        );
        read(&mut io, &mut cx);
        assert_eq!(io.io.writes, [b"onetwothree".to_vec()]);
        assert_eq!(io.io.flushes, 1);
        assert_eq!(io.pending.capacity(), 0, "no buffer kept once written");
        // Nothing pending: a flush is the inner flush, at once, with no wake.
        flush(&mut io, &mut cx);
        assert_eq!(io.io.flushes, 2);
        assert_eq!(wakes.0.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn bytes_written_while_the_last_flush_waits_get_a_wake_of_their_own() {
        let wakes = Arc::new(Wakes::default());
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let recorder = Recorder {
            stalls: 1,
            ..Recorder::default()
        };
        let mut io = Coalesce::new(recorder, true);
        write(&mut io, &mut cx, b"one");
        flush(&mut io, &mut cx);
        // Written out at the read; the flush under it waits (socket full).
        read(&mut io, &mut cx);
        assert_eq!(io.io.writes, [b"one".to_vec()]);
        write(&mut io, &mut cx, b"two");
        flush(&mut io, &mut cx);
        assert_eq!(
            wakes.0.load(Ordering::Relaxed),
            2,
            "the second batch is not left asleep"
        );
        read(&mut io, &mut cx);
        assert_eq!(io.io.writes, [b"one".to_vec(), b"two".to_vec()]);
    }

    #[test]
    fn records_are_filled_to_the_limit_and_large_writes_go_straight_through() {
        let waker = Waker::from(Arc::new(Wakes::default()));
        let mut cx = Context::from_waker(&waker);
        let mut io = Coalesce::new(Recorder::default(), true);
        // A whole record with nothing pending: not copied.
        let big = vec![7u8; RECORD + 9];
        assert_eq!(write(&mut io, &mut cx, &big), big.len());
        assert_eq!(io.io.writes.len(), 1);
        assert_eq!(io.pending.capacity(), 0);
        // Behind pending bytes, a large write fills the record first.
        write(&mut io, &mut cx, &[1; 100]);
        assert_eq!(write(&mut io, &mut cx, &big), RECORD - 100);
        assert_eq!(
            io.io.writes.len(),
            1,
            "the full record waits for the next call"
        );
        let rest = &big[RECORD - 100..];
        assert_eq!(write(&mut io, &mut cx, rest), rest.len());
        assert_eq!(io.io.writes.len(), 2);
        assert_eq!(io.io.writes[1].len(), RECORD);
        assert!(io.io.writes[1][..100].iter().all(|&b| b == 1));
        // Shutdown writes out what is left.
        assert!(matches!(
            Pin::new(&mut io).poll_shutdown(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(io.io.writes[2], rest);
        let sent: usize = io.io.writes.iter().map(Vec::len).sum();
        assert_eq!(sent, 100 + 2 * big.len());
    }

    #[test]
    fn off_every_write_and_flush_goes_straight_through() {
        let wakes = Arc::new(Wakes::default());
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut io = Coalesce::new(Recorder::default(), false);
        write(&mut io, &mut cx, b"head");
        flush(&mut io, &mut cx);
        write(&mut io, &mut cx, b"body");
        assert_eq!(io.io.writes, [b"head".to_vec(), b"body".to_vec()]);
        assert_eq!(io.io.flushes, 1);
        assert_eq!(wakes.0.load(Ordering::Relaxed), 0);
    }
}
