//! The one retry a request may get: which requests are safe to send twice,
//! and which failures mean a pooled connection was dead before it answered.

use http::{Method, Request};

use super::head;

/// A copy of `request`'s head to send it again with an empty body, when it
/// is safe to send twice.
pub(super) fn replay_of<B: http_body::Body>(request: &Request<B>) -> Option<Request<()>> {
    replayable(request).then(|| {
        let head = head::copy_head(
            request.method(),
            request.uri(),
            request.version(),
            request.headers(),
        );
        Request::from_parts(head, ())
    })
}

/// Safe to send twice: idempotent (RFC 9110 §9.2.2) and without a body to replay.
fn replayable<B: http_body::Body>(request: &Request<B>) -> bool {
    matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::DELETE
    ) && request.body().is_end_stream()
}

/// The request went out on a connection that closed before answering.
pub(super) fn stale_connection(error: &hyper::Error) -> bool {
    error.is_incomplete_message() || error.is_canceled() || error.is_closed()
}
