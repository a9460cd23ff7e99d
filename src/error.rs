//! `ProxyError`: every way a request can fail, with the status it becomes and
//! who is to blame. This is the one place an error turns into a response.

use http::{header, Response, StatusCode};

use crate::body::{full_body, Body};

/// Who caused a failure: decides the log level and wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The client sent something wrong.
    Client,
    /// The upstream failed or is unreachable.
    Upstream,
}

/// Why a request got no connection to the upstream in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// Its client already keeps its whole share busy.
    Client,
    /// Every connection to the upstream is taken.
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
    /// The client may not use this site or path (allow/deny lists).
    #[error("forbidden by the access lists")]
    Forbidden,
    /// Past the gate only a signed-in household goes (`gate/`), and this
    /// request carries nothing Jellyfin accepts.
    #[error("not signed in: refused by the gate")]
    Unauthorized,
    /// The gate could not have Jellyfin's word on the credentials in time
    /// (home not answering, or too many checks under way).
    #[error("the gate could not check the credentials with Jellyfin")]
    GateUnsure,
    /// Over the rate limit; may try again after this long.
    #[error("rate limit reached")]
    TooManyRequests(std::time::Duration),
    /// No such file (ACME webroot).
    #[error("not found")]
    NotFound,
    /// A method the resource does not allow; `Allow` lists the ones it does.
    #[error("method not allowed")]
    MethodNotAllowed(&'static str),
    /// The request body passed the site's `max_body`.
    #[error("request body too large")]
    PayloadTooLarge,
    /// The request body paused too long or trickled below the minimum rate.
    #[error("request body too slow")]
    BodyTooSlow,
    /// The client went away or broke its own body mid-request.
    #[error("client gave up during the request body")]
    ClientGone,
    /// The edge has no room to hold the request's body before sending it
    /// home (`spool.rs`): the spool is full or cannot be written.
    #[error("no room to hold the request body at the edge: {0}")]
    SpoolFull(&'static str),
    /// Connecting to the upstream failed or timed out.
    #[error("cannot connect to upstream {addr}: {source}")]
    UpstreamConnect {
        /// The upstream, for the log.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The upstream broke the exchange before sending response headers.
    #[error("upstream {addr} failed: {source}")]
    UpstreamFailed {
        /// The upstream, for the log.
        addr: String,
        /// The cause.
        #[source]
        source: hyper::Error,
    },
    /// The upstream sent no response headers in time.
    #[error("upstream {addr} sent no response headers within {after:?}")]
    UpstreamTimeout {
        /// The upstream, for the log.
        addr: String,
        /// The response timeout.
        after: std::time::Duration,
    },
    /// No connection to the upstream could be had in time: its client keeps
    /// its whole share busy, or every connection under the cap is taken.
    #[error("no connection to upstream {addr} in time ({busy:?} at its cap)")]
    UpstreamBusy {
        /// The upstream, for the log.
        addr: String,
        /// Whose limit was reached.
        busy: Busy,
    },
    /// The tunnel to the upstream's agent failed: no connection up in time,
    /// or the agent refused the service.
    #[error("upstream {addr}: {why}")]
    UpstreamTunnel {
        /// The upstream, for the log.
        addr: String,
        /// What went wrong.
        why: String,
    },
    /// The upstream answered a WebSocket upgrade with something unusable.
    #[error("upstream {addr} failed the WebSocket upgrade: {why}")]
    UpstreamUpgrade {
        /// The upstream, for the log.
        addr: String,
        /// What went wrong.
        why: &'static str,
    },
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
            ProxyError::Forbidden => StatusCode::FORBIDDEN,
            ProxyError::Unauthorized => StatusCode::UNAUTHORIZED,
            ProxyError::GateUnsure => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BodyTooSlow => StatusCode::REQUEST_TIMEOUT,
            ProxyError::ClientGone => StatusCode::BAD_REQUEST,
            ProxyError::UpstreamConnect { .. }
            | ProxyError::UpstreamFailed { .. }
            | ProxyError::UpstreamTunnel { .. }
            | ProxyError::UpstreamUpgrade { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::UpstreamBusy { .. } | ProxyError::SpoolFull(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// Who caused it.
    pub fn blame(&self) -> Blame {
        match self {
            ProxyError::UpstreamConnect { .. }
            | ProxyError::UpstreamFailed { .. }
            | ProxyError::UpstreamTimeout { .. }
            | ProxyError::UpstreamTunnel { .. }
            | ProxyError::UpstreamUpgrade { .. }
            | ProxyError::UpstreamBusy {
                busy: Busy::Upstream,
                ..
            } => Blame::Upstream,
            _ => Blame::Client,
        }
    }

    /// Whether it says home did not answer (unreachable, silent, broken): a
    /// busy cap or a slow client is not home being down.
    pub fn home_unreachable(&self) -> bool {
        matches!(
            self,
            ProxyError::UpstreamConnect { .. }
                | ProxyError::UpstreamFailed { .. }
                | ProxyError::UpstreamTimeout { .. }
                | ProxyError::UpstreamTunnel { .. }
                | ProxyError::UpstreamUpgrade { .. }
        )
    }

    /// Whether the connection must close after the answer (the client's framing
    /// can no longer be trusted).
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            ProxyError::BadRequest(_)
                | ProxyError::UriTooLong
                | ProxyError::HeaderTooLarge
                | ProxyError::PayloadTooLarge
                | ProxyError::BodyTooSlow
                | ProxyError::ClientGone
        )
    }

    /// The short HTML page for this error. It never names the upstream.
    pub fn into_response(self) -> Response<Body> {
        let status = self.status();
        let mut response = page(status);
        if let ProxyError::UpstreamBusy { .. } | ProxyError::GateUnsure | ProxyError::SpoolFull(_) =
            &self
        {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from_static(BUSY_RETRY_AFTER),
            );
        }
        if let ProxyError::TooManyRequests(wait) = &self {
            // Whole seconds, rounded up (RFC 9110 §10.2.3).
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from(seconds.max(1)),
            );
        }
        if let ProxyError::MethodNotAllowed(allow) = &self {
            response
                .headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static(allow));
        }
        if self.closes_connection() {
            response.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
        }
        response
    }
}

/// `error` and every cause behind it, each said once (`a: b: c`): a cause
/// whose text the line already carries is not repeated. For log lines and
/// the command line, where one `Display` would hide the cause that matters
/// (`client error (Connect)` without `dns error: …`).
pub fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = String::new();
    let mut next = Some(error);
    while let Some(cause) = next {
        let line = cause.to_string();
        if !text.contains(&line) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&line);
        }
        next = cause.source();
    }
    text
}

/// An upstream failure behind a response, for the pipeline to log once with
/// the request it failed (the page never shows the upstream's address).
#[derive(Debug, Clone)]
pub struct UpstreamFailure(pub String);

/// Turns an error into its page, as sent over `version`. Upstream failures
/// ride along as an `UpstreamFailure` extension; refusals of the client are
/// logged here at debug level.
pub fn answer(error: ProxyError, version: http::Version) -> Response<Body> {
    let failure = match error.blame() {
        Blame::Upstream => Some(UpstreamFailure(causes(&error))),
        Blame::Client => {
            tracing::debug!(%error, "request refused");
            None
        }
    };
    let mut response = error.into_response();
    if let Some(failure) = failure {
        response.extensions_mut().insert(failure);
    }
    if matches!(version, http::Version::HTTP_2 | http::Version::HTTP_3) {
        // Connection-specific headers are forbidden in HTTP/2 and HTTP/3.
        response.headers_mut().remove(header::CONNECTION);
    }
    response
}

/// Seconds a client is asked to wait after a 503 for want of upstream
/// connections: long enough for a stream or a burst to end.
const BUSY_RETRY_AFTER: &str = "5";

/// A minimal HTML page for `status`.
pub fn page(status: StatusCode) -> Response<Body> {
    let reason = status.canonical_reason().unwrap_or("Error");
    let html = format!(
        "<!DOCTYPE html>\n<html><head><title>{code} {reason}</title></head>\
         <body><h1>{code} {reason}</h1></body></html>\n",
        code = status.as_u16()
    );
    let mut response = Response::new(full_body(html));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}
