//! A tunnel link's socket as the edge holds it: bytes counted each way for
//! `tunnel list`, and a switch that kills it from outside hyper's task.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes through one connection, both ways.
#[derive(Debug, Default)]
pub(super) struct ByteCounts {
    pub(super) read: AtomicU64,
    pub(super) written: AtomicU64,
}

/// The switch that ends a link's socket from outside hyper's task: once
/// thrown, every read and write fails, and the reader waiting is woken.
#[derive(Debug, Default)]
pub(super) struct Kill {
    thrown: std::sync::atomic::AtomicBool,
    reader: atomic_waker::AtomicWaker,
    writer: atomic_waker::AtomicWaker,
}

impl Kill {
    pub(super) fn now(&self) {
        self.thrown.store(true, Ordering::Release);
        self.reader.wake();
        self.writer.wake();
    }

    fn check(&self, waker: &atomic_waker::AtomicWaker, cx: &Context<'_>) -> std::io::Result<()> {
        waker.register(cx.waker());
        if self.thrown.load(Ordering::Acquire) {
            return Err(std::io::ErrorKind::ConnectionAborted.into());
        }
        Ok(())
    }
}

/// An agent connection's IO, counting bytes for `tunnel list`, killed by
/// its `Kill`.
pub(super) struct Counted<IO> {
    pub(super) inner: IO,
    pub(super) bytes: Arc<ByteCounts>,
    pub(super) kill: Arc<Kill>,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Counted<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.kill.check(&self.kill.reader, cx)?;
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        self.bytes.read.fetch_add(read as u64, Ordering::Relaxed);
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Counted<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.kill.check(&self.kill.writer, cx)?;
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.bytes.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.kill.check(&self.kill.writer, cx)?;
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled {
            self.bytes.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
