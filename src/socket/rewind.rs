//! A TCP stream with bytes already read put back in front (what the PROXY
//! header reader read past the header), and optionally read ahead: TLS asks
//! its socket for one record (16 KiB) a read, so a connection that carries a
//! film (an agent's tunnel connection) would make a system call per record;
//! with [`Rewind::read_ahead`] one read takes what the socket has, up to the
//! buffer's size, and the records are handed out from memory.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A TCP stream with bytes already read put back in front, and, once
/// [`Rewind::read_ahead`] is called, reads gathered into a buffer of its own.
#[derive(Debug)]
pub struct Rewind {
    prefix: Bytes,
    inner: TcpStream,
    /// Empty until `read_ahead`; then the buffer socket reads fill, of which
    /// `ahead[at..filled]` is not yet handed out.
    ahead: Vec<u8>,
    at: usize,
    filled: usize,
    /// The connection's state, which may ask for read-ahead later (a
    /// client's connection that became an agent's tunnel).
    state: Option<std::sync::Arc<crate::socket::deadline::ConnState>>,
}

impl Rewind {
    /// A stream with nothing put back.
    pub fn new(inner: TcpStream) -> Rewind {
        Rewind {
            prefix: Bytes::new(),
            inner,
            ahead: Vec::new(),
            at: 0,
            filled: 0,
            state: None,
        }
    }

    /// Reads ahead once `state` asks for it (`ConnState::read_ahead`).
    pub fn follow(&mut self, state: std::sync::Arc<crate::socket::deadline::ConnState>) {
        self.state = Some(state);
    }

    /// A stream with `prefix` put back in front.
    pub fn with_prefix(inner: TcpStream, prefix: Bytes) -> Rewind {
        let mut rewind = Rewind::new(inner);
        rewind.prefix = prefix;
        rewind
    }

    /// From now on a read asks the socket for up to `size` bytes at once and
    /// hands them out from memory (`size` bytes held for the connection's
    /// life: only for the few connections that carry streams).
    pub fn read_ahead(&mut self, size: usize) {
        self.ahead = vec![0; size];
    }
}

impl crate::socket::deadline::Readiness for Rewind {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() || self.at < self.filled {
            return Poll::Ready(Ok(()));
        }
        self.inner.poll_read_ready(cx)
    }
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        if self.ahead.is_empty() {
            match self.state.as_ref().map(|s| s.wants_read_ahead()) {
                Some(size) if size > 0 => self.read_ahead(size),
                _ => return Pin::new(&mut self.inner).poll_read(cx, buf),
            }
        }
        let this = &mut *self;
        if this.at == this.filled {
            let mut fill = ReadBuf::new(&mut this.ahead);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut fill))?;
            this.at = 0;
            this.filled = fill.filled().len();
        }
        let n = (this.filled - this.at).min(buf.remaining());
        buf.put_slice(&this.ahead[this.at..this.at + n]);
        this.at += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// The put-back bytes come first, then the socket's, in order and whole,
    /// whatever the reader's buffer size against the read-ahead's; the end of
    /// the stream is an end, not an error.
    #[tokio::test]
    async fn put_back_bytes_then_read_ahead_keep_the_order_to_the_end() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sent: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let writer = {
            let addr = listener.local_addr().unwrap();
            let sent = sent.clone();
            tokio::spawn(async move {
                let mut socket = TcpStream::connect(addr).await.unwrap();
                for chunk in sent.chunks(7_000) {
                    socket.write_all(chunk).await.unwrap();
                }
            })
        };
        let (socket, _) = listener.accept().await.unwrap();
        let mut rewind = Rewind::with_prefix(socket, Bytes::from_static(b"PUT-BACK"));
        rewind.read_ahead(4096);
        let mut got = Vec::new();
        let mut buf = [0u8; 1000];
        loop {
            let n = rewind.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            // A reader whose buffer is larger than the read-ahead's as well.
            let mut big = vec![0u8; 10_000];
            let n = rewind.read(&mut big).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&big[..n]);
        }
        writer.await.unwrap();
        assert_eq!(&got[..8], b"PUT-BACK");
        assert!(
            got[8..] == sent[..],
            "{} bytes of {}",
            got.len() - 8,
            sent.len()
        );
    }
}
