//! Filters: the policy steps a request and its response pass through, as a
//! closed enum dispatched by `match` (no trait objects). Each filter is a plain
//! struct with no I/O, so its behaviour is tested without sockets.
//!
//! Owns the `Filter` and `Verdict` types and the order filters run in; each
//! filter's logic lives in its own file.

pub mod headers;

use http::{HeaderMap, Request, Response};

use crate::pipeline::Body;
pub use headers::SecurityHeaders;

/// A filter's answer to a request.
#[derive(Debug)]
pub enum Verdict {
    /// Go on to the next filter, then the upstream.
    Continue,
    /// Answer now with this response; the upstream is not asked.
    Respond(Response<Body>),
}

/// One policy step.
#[derive(Debug)]
pub enum Filter {
    /// Adds, replaces and removes response headers (security headers).
    Headers(SecurityHeaders),
}

/// What `on_response` knows about the exchange.
#[derive(Debug, Clone, Copy)]
pub struct Exchange {
    /// The response goes out over TLS.
    pub tls: bool,
}

impl Filter {
    /// Looks at a request before it is forwarded.
    pub fn on_request<B>(&self, _request: &Request<B>) -> Verdict {
        match self {
            Filter::Headers(_) => Verdict::Continue,
        }
    }

    /// Adjusts response headers, upstream's and drawbridge's own alike.
    pub fn on_response(&self, headers: &mut HeaderMap, exchange: Exchange) {
        match self {
            Filter::Headers(policy) => policy.apply(headers, exchange.tls),
        }
    }
}
