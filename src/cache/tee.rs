//! The tee that fills the cache from a streaming body: frames pass on to the
//! client as they come, and a copy is kept only while it stays within the
//! object cap; the copy is handed over only if the body ended complete.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame, SizeHint};

use crate::body::Body;

/// Passes a body on frame by frame and keeps a copy up to `max` bytes; calls
/// `done` once: with the whole body if it ended complete and within `max`, else
/// with None (too large, cut short, client gone).
pub struct Tee<F: FnOnce(Option<Bytes>)> {
    inner: Body,
    copy: Option<BytesMut>,
    max: u64,
    ended: bool,
    done: Option<F>,
}

impl<F: FnOnce(Option<Bytes>)> Tee<F> {
    /// Wraps `inner`; `done` runs once, at the end or when dropped.
    pub fn new(inner: Body, max: u64, done: F) -> Self {
        Tee {
            inner,
            copy: Some(BytesMut::new()),
            max,
            ended: false,
            done: Some(done),
        }
    }
}

impl<F: FnOnce(Option<Bytes>) + Unpin> HttpBody for Tee<F> {
    type Data = Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let max = self.max;
                    let over = self
                        .copy
                        .as_ref()
                        .is_some_and(|c| (c.len() + data.len()) as u64 > max);
                    if over {
                        // Too large to keep: stream on, store nothing.
                        self.copy = None;
                    } else if let Some(copy) = self.copy.as_mut() {
                        copy.extend_from_slice(data);
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => self.copy = None,
            Poll::Ready(None) => self.ended = true,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<F: FnOnce(Option<Bytes>)> Drop for Tee<F> {
    fn drop(&mut self) {
        let complete = self.ended || self.inner.is_end_stream();
        let whole = if complete {
            self.copy.take().map(BytesMut::freeze)
        } else {
            None
        };
        if let Some(done) = self.done.take() {
            done(whole);
        }
    }
}
