//! The forward step: the one way a request leaves drawbridge for a site's
//! upstream (the plain path and the edge cache alike). The client's head
//! becomes the upstream's (`head::upstream_head`, an origin-form
//! target), the request goes out under the connection cap, and the answer
//! comes back with hop-by-hop headers stripped, its body streaming. A WebSocket
//! upgrade leaves here too (`upgrade`). Under it, two transports: a direct
//! HTTP/1.1 connection, or a stream through the tunnel to an agent
//! (`tunnel.rs`); the pipeline, the cache and the WebSocket code cannot tell
//! them apart.

use std::net::IpAddr;
use std::time::Duration;

use http::{header, request, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::limit::Deadline;
use super::{Acquired, Failure, Hold, Transport, Upstream};
use crate::body::Body;
use crate::error::ProxyError;
use crate::upstream::head::{self, Visitor};

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
        head::remove_hop_by_hop(response.headers_mut());
        Ok(response.map(|body| body.map_err(Into::into).boxed()))
    }

    /// Turns a client's head into this upstream's: the forwarding rules and
    /// an origin-form target (also for WebSocket upgrades, which take a
    /// connection of their own).
    pub fn rewrite(&self, parts: &mut request::Parts, visitor: Visitor<'_>) {
        head::upstream_head(parts, visitor);
        parts.uri = self.uri(parts.uri.path_and_query());
    }

    /// Sends a WebSocket upgrade (`request`: the upstream's head, already
    /// an HTTP/1.1 Upgrade) for `client` on a connection of its own, under
    /// the cap, and returns the answer within `response_timeout`: 101 when
    /// the upstream switched (`hyper::upgrade::on` then gives its side), any
    /// other answer to pass on. Keep the `Hold` as long as the WebSocket.
    pub async fn upgrade(
        &self,
        request: Request<Body>,
        client: IpAddr,
        response_timeout: Duration,
    ) -> Result<(Response<Incoming>, Hold), ProxyError> {
        let sent = tokio::time::Instant::now();
        let upgraded = self.upgrade_held(request, client, response_timeout).await;
        self.record(&upgraded, sent.elapsed());
        upgraded
    }

    async fn upgrade_held(
        &self,
        request: Request<Body>,
        client: IpAddr,
        response_timeout: Duration,
    ) -> Result<(Response<Incoming>, Hold), ProxyError> {
        if let Some(silent) = self.silent_peer() {
            return Err(silent);
        }
        let deadline = Deadline::after(self.response_timeout, client);
        let busy = |busy| self.classify(Failure::Busy(busy));
        let share = self.limit.share(client, &deadline).await.map_err(busy)?;
        let permit = match self.acquire(None, &deadline).await.map_err(busy)? {
            Acquired::Permit(permit) => permit,
            // Not offered without an epoch; its place would do all the same.
            Acquired::Pooled(conn) => conn.permit,
        };
        let mut hold = Hold {
            _share: share,
            _permit: permit,
            _stream: None,
        };
        let addr = self.authority.clone();
        let failed = |why| ProxyError::UpstreamUpgrade {
            addr: addr.clone(),
            why,
        };
        let direct = match &self.transport {
            Transport::Direct(direct) => direct,
            Transport::Tunnel(tunnel) => {
                // Extended CONNECT (RFC 8441) to the agent, which makes it an
                // HTTP/1.1 Upgrade at home and answers 200 when it switched.
                let (mut parts, body) = request.into_parts();
                parts.method = Method::CONNECT;
                parts.headers.remove(header::CONNECTION);
                parts.headers.remove(header::UPGRADE);
                parts
                    .extensions
                    .insert(hyper::ext::Protocol::from_static("websocket"));
                let sent = self.exchange_tunneled(tunnel, Request::from_parts(parts, body));
                let (mut response, stream) =
                    match tokio::time::timeout(response_timeout, sent).await {
                        Ok(result) => result.map_err(|f| self.classify(f))?,
                        Err(_) => {
                            return Err(ProxyError::UpstreamTimeout {
                                addr,
                                after: response_timeout,
                            })
                        }
                    };
                hold._stream = Some(stream);
                if response.status() == StatusCode::OK {
                    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                }
                return Ok((response, hold));
            }
        };
        let stream = direct
            .dial_io(self.connect_timeout)
            .await
            .map_err(|source| ProxyError::UpstreamConnect {
                addr: addr.clone(),
                source,
            })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|_| failed("handshake failed"))?;
        tokio::spawn(connection.with_upgrades());
        let sent = sender.send_request(request);
        match tokio::time::timeout(response_timeout, sent).await {
            Ok(Ok(response)) => Ok((response, hold)),
            Ok(Err(_)) => Err(failed("connection closed before a response")),
            Err(_) => Err(ProxyError::UpstreamTimeout {
                addr,
                after: response_timeout,
            }),
        }
    }
}
