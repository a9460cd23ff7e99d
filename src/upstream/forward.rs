//! The forward step: the one way a request leaves drawbridge for a site's
//! upstream (the plain path and the edge cache alike). The client's head
//! becomes the upstream's (`forwarding::upstream_head`, an origin-form
//! target), the request goes out under the connection cap, and the answer
//! comes back with hop-by-hop headers stripped, its body streaming. Another
//! transport to home plugs in here, under the pipeline and the cache.

use http::{request, Request, Response};
use http_body_util::BodyExt;

use super::Upstream;
use crate::body::Body;
use crate::error::ProxyError;
use crate::forwarding::{self, Visitor};

impl Upstream {
    /// Forwards a client's request (`parts` as the client sent them, after
    /// the pipeline's checks) with `body`, for the client in `visitor`.
    pub async fn forward(
        &self,
        mut parts: request::Parts,
        body: Body,
        visitor: Visitor<'_>,
    ) -> Result<Response<Body>, ProxyError> {
        self.rewrite(&mut parts, visitor);
        let mut response = self
            .send_rewritten(Request::from_parts(parts, body), visitor.client.ip)
            .await?;
        forwarding::remove_hop_by_hop(response.headers_mut());
        Ok(response.map(|body| body.map_err(Into::into).boxed()))
    }

    /// Turns a client's head into this upstream's: the forwarding rules and
    /// an origin-form target (also for WebSocket upgrades, which take a
    /// connection of their own).
    pub fn rewrite(&self, parts: &mut request::Parts, visitor: Visitor<'_>) {
        forwarding::upstream_head(parts, visitor);
        parts.uri = self.uri(parts.uri.path_and_query());
    }
}
