//! The second transport under the forward step: an agent's service through
//! the edge's tunnels (`tunnel/hub.rs`). Each request is an HTTP/2 stream
//! on one of the agent's connections, holding a place under the site's cap
//! like a pooled connection would; the agent's own refusals (a service it
//! does not expose, one that does not answer) become drawbridge's 502.

use http::{Request, Response, StatusCode, Version};

use super::lent::UpstreamBody;
use super::limit::Deadline;
use super::{Acquired, Failure, Transport, Tunnel, Upstream};
use crate::body::Body;
use crate::tunnel::hub::{HubError, StreamHold};
use crate::tunnel::protocol::Refusal;

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
        let (response, stream) = self.exchange_tunneled(tunnel, request).await?;
        Ok(response.map(|body| UpstreamBody::tunneled(body, permit, stream)))
    }

    /// Sends `request` to the agent and checks its answer's head. An agent
    /// that could not reach its service (nothing was sent there) is passed
    /// over for the service a while, and the failure names it, so that
    /// `forward_once_more` may send a request safe to send twice to another.
    pub(super) async fn exchange_tunneled(
        &self,
        tunnel: &Tunnel,
        request: Request<Body>,
    ) -> Result<(Response<hyper::body::Incoming>, StreamHold), Failure> {
        let (response, pin, stream) = self.tunnel_once(tunnel, request).await?;
        let Err(refused) = refusal(tunnel, &response) else {
            return Ok((response, stream));
        };
        if !refused.service_down {
            return Err(Failure::Tunnel(refused.why));
        }
        tunnel.hub.service_down(&pin, &tunnel.service);
        Err(Failure::ServiceDown {
            why: refused.why,
            pin,
        })
    }

    /// Whether another agent than the one whose key has `pin` can take this
    /// site's next request (never, without a tunnel).
    pub(super) fn another_agent_up(&self, pin: &str) -> bool {
        match &self.transport {
            Transport::Tunnel(tunnel) => tunnel.hub.another_up(&tunnel.agent, &tunnel.service, pin),
            Transport::Direct(_) => false,
        }
    }

    /// One stream to the agent: its answer's head within `response_timeout`,
    /// the pin of the agent that gave it, and the stream's place on its link.
    async fn tunnel_once(
        &self,
        tunnel: &Tunnel,
        mut request: Request<Body>,
    ) -> Result<(Response<hyper::body::Incoming>, String, StreamHold), Failure> {
        *request.version_mut() = Version::HTTP_2;
        let sent = tunnel.hub.send(&tunnel.agent, &tunnel.service, request);
        match tokio::time::timeout(self.response_timeout, sent).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(HubError::Exchange { source, .. })) => Err(Failure::Exchange(source)),
            Ok(Err(error)) => Err(Failure::Tunnel(error.to_string())),
            Err(_) => Err(Failure::Timeout),
        }
    }
}

/// An agent's own refusal: why, for the log, and whether it was that its
/// service did not answer.
struct Declined {
    why: String,
    service_down: bool,
}

/// The agent's refusal, if `response` is one (`protocol::Refusal`).
fn refusal(tunnel: &Tunnel, response: &Response<hyper::body::Incoming>) -> Result<(), Declined> {
    let Some(refusal) = Refusal::read(response.headers()) else {
        return Ok(());
    };
    let service_down = refusal == Ok(Refusal::Unreachable);
    let why = match refusal {
        Ok(Refusal::NotExposed) => format!(
            "agent `{}` does not expose service `{}` (add it to the agent's [services])",
            tunnel.agent, tunnel.service
        ),
        Ok(Refusal::Unreachable | Refusal::Failed) => format!(
            "agent `{}` cannot reach its service `{}`",
            tunnel.agent, tunnel.service
        ),
        Ok(Refusal::BadTarget) => format!("agent `{}` refused the request's target", tunnel.agent),
        Err(word) if response.status() == StatusCode::BAD_GATEWAY => {
            format!(
                "agent `{}` cannot reach its service `{}` ({word})",
                tunnel.agent, tunnel.service
            )
        }
        Err(word) => format!("agent `{}` refused: {word}", tunnel.agent),
    };
    Err(Declined { why, service_down })
}
