//! A pooled connection lent to one exchange, and the answer's body that
//! gives it back: read to its end, the connection returns to the pool;
//! dropped half read, it goes with the body. A tunnel stream's body holds
//! its place under the cap and on its link the same way.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;

use super::limit::{ConnPermit, Share};
use super::pool::{Pool, PooledConn};

/// A connection lent to one exchange.
#[derive(Debug)]
pub(super) struct Lease {
    pub(super) conn: PooledConn,
    pub(super) epoch: u64,
    pub(super) pool: Arc<Pool>,
}

/// An upstream answer's body. Read to its end, it gives its connection back
/// to the pool.
#[derive(Debug)]
pub struct UpstreamBody {
    inner: Incoming,
    lease: Option<Lease>,
    /// The client's share of the upstream's connections, given back with
    /// the connection.
    share: Option<Share>,
    /// A tunnel stream's place under the cap (no pooled connection).
    permit: Option<ConnPermit>,
    /// A tunnel stream's place on its link (a draining link waits for it).
    stream: Option<crate::tunnel::hub::StreamHold>,
}

impl UpstreamBody {
    pub(super) fn new(inner: Incoming, lease: Lease) -> UpstreamBody {
        UpstreamBody {
            inner,
            lease: Some(lease),
            share: None,
            permit: None,
            stream: None,
        }
    }

    /// The body of an answer through a tunnel stream that holds `permit`
    /// and `stream`.
    pub(super) fn tunneled(
        inner: Incoming,
        permit: ConnPermit,
        stream: crate::tunnel::hub::StreamHold,
    ) -> UpstreamBody {
        UpstreamBody {
            inner,
            lease: None,
            share: None,
            permit: Some(permit),
            stream: Some(stream),
        }
    }

    /// Keeps `share` until the body has been read or dropped.
    pub(super) fn hold(&mut self, share: Share) {
        self.share = Some(share);
    }

    fn give_back(&mut self) {
        if let Some(Lease { conn, epoch, pool }) = self.lease.take() {
            pool.checkin(conn, epoch);
        }
        self.share = None;
        self.permit = None;
        self.stream = None;
    }
}

impl HttpBody for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &frame {
            None => self.give_back(),
            // The connection is mid-message: it cannot carry another.
            Some(Err(error)) => {
                tracing::warn!(%error, "the upstream failed mid-body; the client's response is cut short");
                self.lease = None;
                self.share = None;
                self.permit = None;
            }
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // hyper stops reading a body once it says it has ended, without
        // asking for the end: that counts as read to the end.
        if self.inner.is_end_stream() {
            self.give_back();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use http_body::Body as _;
    use http_body_util::BodyExt;

    use super::super::pool::tests::{connect, fake_upstream, get, OK};
    use super::super::pool::Pool;

    #[tokio::test]
    async fn a_body_read_to_its_end_gives_its_connection_back_for_the_next_request() {
        let addr = fake_upstream(OK, None).await;
        let pool = Arc::new(Pool::default());
        let body = get(connect(addr).await, &pool, 0).await;
        assert_eq!(pool.idle(), 0, "lent while the body is read");
        let read = body.collect().await.unwrap().to_bytes();
        assert_eq!(read, Bytes::from_static(b"ok"));
        assert_eq!(pool.idle(), 1);
        let again = pool.checkout(0).expect("the same connection, ready");
        let body = get(again, &pool, 0).await;
        assert_eq!(body.collect().await.unwrap().to_bytes(), "ok");
        assert_eq!(pool.idle(), 1, "still one connection");
    }

    #[tokio::test]
    async fn a_body_dropped_after_its_last_frame_counts_as_read() {
        // hyper stops polling a body that says it has ended.
        let addr = fake_upstream(OK, None).await;
        let pool = Arc::new(Pool::default());
        let mut body = get(connect(addr).await, &pool, 0).await;
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "ok");
        assert!(body.is_end_stream());
        drop(body);
        assert_eq!(pool.idle(), 1);
    }

    #[tokio::test]
    async fn a_body_dropped_half_read_takes_its_connection_with_it() {
        let addr = fake_upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok", None).await;
        let pool = Arc::new(Pool::default());
        let mut body = get(connect(addr).await, &pool, 0).await;
        let _ = body.frame().await;
        drop(body);
        assert_eq!(pool.idle(), 0, "mid-message: cannot carry another request");
    }
}
