//! One HTTP/3 connection served: each request stream's head and body
//! handed to `Gateway::handle` as an `http::Request` (version HTTP/3), the
//! answer's head, body and trailers sent back as they come. A request the
//! pipeline closes the door on (an unknown `:authority`) ends the whole
//! connection without an answer, as on TCP.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use h3::server::RequestStream;
use http::{Request, Response, Version};
use http_body::{Body as HttpBody, Frame};
use http_body_util::BodyExt;

use crate::body::{Body, BoxError, ClientBody};
use crate::connection::Shared;
use crate::pipeline::Conn;

type RecvHalf = RequestStream<h3_quinn::RecvStream, Bytes>;
type SendHalf = RequestStream<h3_quinn::SendStream<Bytes>, Bytes>;

/// The largest request head (QPACK-decoded field section), as HTTP/2's.
const MAX_FIELD_SECTION: u64 = 16 * 1024;

/// Serves `connection` until the client leaves, the door is closed, a ban
/// or the end of the shutdown grace kills it, or shutdown drains it.
pub(super) async fn serve(connection: quinn::Connection, conn: Conn, shared: &Arc<Shared>) {
    let quic = connection.clone();
    let built = h3::server::builder()
        .max_field_section_size(MAX_FIELD_SECTION)
        .build::<_, Bytes>(h3_quinn::Connection::new(connection))
        .await;
    let mut h3 = match built {
        Ok(h3) => h3,
        Err(error) => {
            tracing::debug!(%error, "HTTP/3 did not start on this connection");
            return;
        }
    };
    let kill = conn.kill.clone();
    let drain = conn.drain.clone();
    let close_door = kill.child_token();
    let conn = Arc::new(conn);
    let mut draining = false;
    loop {
        let accepted = tokio::select! {
            accepted = h3.accept() => accepted,
            () = close_door.cancelled() => {
                quic.close(h3::error::Code::H3_REQUEST_REJECTED.value().try_into().unwrap_or_default(), b"");
                return;
            }
            () = drain.cancelled(), if !draining => {
                draining = true;
                let _ = h3.shutdown(0).await;
                continue;
            }
        };
        let resolver = match accepted {
            Ok(Some(resolver)) => resolver,
            Ok(None) => return,
            Err(error) => {
                tracing::debug!(%error, "HTTP/3 connection ended");
                return;
            }
        };
        let gateway = shared.gateway.clone();
        let conn = conn.clone();
        let close_door = close_door.clone();
        let header_timeout = shared.limits.header_timeout;
        tokio::spawn(async move {
            let resolved = tokio::time::timeout(header_timeout, resolver.resolve_request()).await;
            let (head, stream) = match resolved {
                Ok(Ok(pair)) => pair,
                Ok(Err(error)) => {
                    tracing::debug!(%error, "HTTP/3 request head refused");
                    return;
                }
                Err(_) => {
                    tracing::debug!("HTTP/3 request head not received in time");
                    return;
                }
            };
            let (send, recv) = stream.split();
            let _in_flight = conn.state.request_started();
            let body = ClientBody::stream(StreamBody { recv, done: false }.boxed());
            let mut request = Request::from_parts(head.into_parts().0, body);
            *request.version_mut() = Version::HTTP_3;
            match gateway.handle(request, &conn).await {
                Ok(response) => respond(send, response).await,
                Err(_closed) => close_door.cancel(),
            }
        });
    }
}

/// Sends `response` on `send`: head, then body frames and trailers as the
/// body yields them; a body that fails resets the stream (never a clean end
/// that would look complete).
async fn respond(mut send: SendHalf, response: Response<Body>) {
    let (head, mut body) = response.into_parts();
    if let Err(error) = send.send_response(Response::from_parts(head, ())).await {
        tracing::debug!(%error, "HTTP/3 answer head not sent");
        return;
    }
    loop {
        match body.frame().await {
            None => break,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    if send.send_data(data).await.is_err() {
                        return;
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        if send.send_trailers(trailers).await.is_err() {
                            return;
                        }
                    }
                }
            },
            Some(Err(error)) => {
                tracing::debug!(%error, "answer body failed; HTTP/3 stream reset");
                send.stop_stream(h3::error::Code::H3_INTERNAL_ERROR);
                return;
            }
        }
    }
    let _ = send.finish().await;
}

/// A request stream's body as an `http_body::Body`: data frames, then the
/// trailers if any.
struct StreamBody {
    recv: RecvHalf,
    done: bool,
}

impl HttpBody for StreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match this.recv.poll_recv_data(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(error)) => return Poll::Ready(Some(Err(error.into()))),
            Poll::Ready(Ok(Some(mut data))) => {
                let bytes = data.copy_to_bytes(data.remaining());
                return Poll::Ready(Some(Ok(Frame::data(bytes))));
            }
            Poll::Ready(Ok(None)) => {}
        }
        match this.recv.poll_recv_trailers(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(result) => {
                this.done = true;
                match result {
                    Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
                    Ok(None) => Poll::Ready(None),
                    Err(error) => Poll::Ready(Some(Err(error.into()))),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}
