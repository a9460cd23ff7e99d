//! `ProxyError`: every way a request can fail, with the status it becomes and
//! who is to blame. This is the one place an error turns into a response.

use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::pipeline::Body;

/// Who caused a failure: decides the log level and wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The client sent something wrong.
    Client,
    /// The upstream failed or is unreachable.
    Upstream,
}

/// A request that cannot be served normally.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The request is malformed (missing or duplicate Host, disagreeing targets…).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The request target is longer than `max_request_line`.
    #[error("request target too long")]
    UriTooLong,
    /// A header line is longer than `max_header_line`.
    #[error("header line too long")]
    HeaderTooLarge,
    /// The Host names a different site than the TLS SNI did.
    #[error("host names another site than the TLS server name")]
    Misdirected,
    /// No such file (ACME webroot).
    #[error("not found")]
    NotFound,
    /// A method the resource does not allow (ACME webroot takes GET and HEAD).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// No upstream could be reached.
    #[error("upstream unavailable")]
    UpstreamUnavailable,
}

impl ProxyError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::UriTooLong => StatusCode::URI_TOO_LONG,
            ProxyError::HeaderTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            ProxyError::NotFound => StatusCode::NOT_FOUND,
            ProxyError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
        }
    }

    /// Who caused it.
    pub fn blame(&self) -> Blame {
        match self {
            ProxyError::UpstreamUnavailable => Blame::Upstream,
            _ => Blame::Client,
        }
    }

    /// Whether the connection must close after the answer (the client's framing
    /// can no longer be trusted).
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            ProxyError::BadRequest(_) | ProxyError::UriTooLong | ProxyError::HeaderTooLarge
        )
    }

    /// The short HTML page for this error. It never names the upstream.
    pub fn into_response(self) -> Response<Body> {
        let status = self.status();
        let mut response = page(status);
        if self.closes_connection() {
            response.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
        }
        response
    }
}

/// A minimal HTML page for `status`.
pub fn page(status: StatusCode) -> Response<Body> {
    let reason = status.canonical_reason().unwrap_or("Error");
    let html = format!(
        "<!DOCTYPE html>\n<html><head><title>{code} {reason}</title></head>\
         <body><h1>{code} {reason}</h1></body></html>\n",
        code = status.as_u16()
    );
    let mut response = Response::new(
        Full::new(Bytes::from(html))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}
