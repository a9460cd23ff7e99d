//! The second transport under the forward step: an agent's service through
//! the edge's tunnels (`tunnel/hub.rs`). Each request is an HTTP/2 stream
//! on one of the agent's connections, holding a place under the site's cap
//! like a pooled connection would; the agent's own refusals (a service it
//! does not expose, one that does not answer) become drawbridge's 502.

use http::{Request, Response, StatusCode, Version};

use super::limit::Deadline;
use super::pool::UpstreamBody;
use super::{Acquired, Failure, Tunnel, Upstream};
use crate::agent::REFUSED;
use crate::body::Body;
use crate::tunnel::hub::HubError;

impl Upstream {
    /// One exchange through the tunnel, under the cap (waiting up to
    /// `deadline`), the head within `response_timeout`.
    pub(super) async fn send_tunneled(
        &self,
        tunnel: &Tunnel,
        request: Request<Body>,
        deadline: &Deadline,
    ) -> Result<Response<UpstreamBody>, Failure> {
        let permit = match self.acquire(None, deadline).await.map_err(Failure::Busy)? {
            Acquired::Permit(permit) => permit,
            Acquired::Pooled(conn) => conn.permit,
        };
        let response = self.exchange_tunneled(tunnel, request).await?;
        Ok(response.map(|body| UpstreamBody::tunneled(body, permit)))
    }

    /// Sends `request` to the agent and checks its answer's head.
    pub(super) async fn exchange_tunneled(
        &self,
        tunnel: &Tunnel,
        mut request: Request<Body>,
    ) -> Result<Response<hyper::body::Incoming>, Failure> {
        *request.version_mut() = Version::HTTP_2;
        let sent = tunnel.hub.send(&tunnel.agent, request);
        let response = match tokio::time::timeout(self.response_timeout, sent).await {
            Ok(Ok(response)) => response,
            Ok(Err(HubError::Exchange { source, .. })) => return Err(Failure::Exchange(source)),
            Ok(Err(error)) => return Err(Failure::Tunnel(error.to_string())),
            Err(_) => return Err(Failure::Timeout),
        };
        if let Some(why) = response.headers().get(REFUSED) {
            let why = match why.as_bytes() {
                b"not-exposed" => format!(
                    "agent `{}` does not expose service `{}` (add it to the agent's [services])",
                    tunnel.agent, tunnel.service
                ),
                _ if response.status() == StatusCode::BAD_GATEWAY => format!(
                    "agent `{}` cannot reach its service `{}`",
                    tunnel.agent, tunnel.service
                ),
                other => format!(
                    "agent `{}` refused: {}",
                    tunnel.agent,
                    String::from_utf8_lossy(other)
                ),
            };
            return Err(Failure::Tunnel(why));
        }
        Ok(response)
    }
}
