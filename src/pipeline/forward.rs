//! The forward phase: a WebSocket relay, the edge cache, or the forward
//! step to the site's upstream (`upstream/forward.rs`).

use http::{header, Method, Request, Response};

use super::head::raw_host;
use super::{Gateway, Scope};
use crate::access_log::Line;
use crate::body::{Body, BodyLimits, ClientBody};
use crate::cache;
use crate::error::{answer, ProxyError};
use crate::upstream::head::Visitor;
use crate::websocket;

impl Gateway {
    /// The forward phase: a WebSocket relay, the edge cache, or the
    /// upstream through the forward step (`upstream/forward.rs`).
    pub(super) async fn forward(
        &self,
        request: Request<ClientBody>,
        scope: Scope<'_>,
    ) -> Response<Body> {
        let Scope {
            conn,
            client,
            site,
            host,
            ..
        } = scope;
        let version = request.version();
        let raw_host = raw_host(&request).to_string();
        let visitor = Visitor {
            client,
            tls: conn.tls,
            host: &raw_host,
        };
        if let Some(upgrade) = websocket::opening(&request) {
            let relay = websocket::Relay {
                hold: conn.state.request_started(),
                kill: conn.kill.clone(),
                drain: conn.drain.clone(),
                tasks: conn.tasks.clone(),
                response_timeout: site.response_timeout,
                open: site.metrics.websockets.clone(),
            };
            let upgraded = websocket::relay(request, upgrade, &site.upstream, visitor, relay);
            return Box::pin(upgraded)
                .await
                .unwrap_or_else(|e| answer(e, version));
        }
        let method = request.method().clone();
        if matches!(method, Method::GET | Method::HEAD) {
            if let Some(visibility) = site.cache.class(request.uri().path()) {
                let (head, _) = request.into_parts();
                let lookup = cache::Lookup {
                    key: cache::key(host, &head.uri),
                    visibility,
                    method,
                    head,
                    visitor,
                    upstream: &site.upstream,
                };
                // Boxed, like the WebSocket relay: the cache's future is
                // twice the forward's, and every request's task would carry it.
                return Box::pin(self.cache.serve(lookup))
                    .await
                    .unwrap_or_else(|e| self.cache.label(answer(e, version), "MISS"));
            }
        }
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        // A login outlives its client (`login.rs`): its own access-log line.
        let login = crate::filter::is_auth_route(&site.filters, scope.subject.path);
        let line = (login && site.access_log && self.access_log.enabled())
            .then(|| Line::start(&request, client.ip, &site.name));
        let (parts, body) = request.into_parts();
        let limits = BodyLimits {
            max: site.max_body,
            timeout: self.limits.body_timeout,
            min_rate: self.limits.body_min_rate,
        };
        let Ok(body) = limits.guard(body, declared, site.metrics.received.clone()) else {
            return answer(ProxyError::PayloadTooLarge, version);
        };
        let (parts, body) = match self.read_whole(parts, body).await {
            Ok(read) => read,
            Err(error) => return answer(error, version),
        };
        if login {
            return self
                .forward_login((parts, body), scope, raw_host.clone(), line)
                .await;
        }
        site.upstream
            .forward(parts, body, visitor)
            .await
            .unwrap_or_else(|error| answer(error, version))
    }

    /// A request's body read whole at the edge (`spool.rs`) before it takes
    /// a connection home, and sent with its length: a stalled or trickling
    /// upload holds nothing at home.
    async fn read_whole(
        &self,
        mut parts: http::request::Parts,
        body: Body,
    ) -> Result<(http::request::Parts, Body), ProxyError> {
        use http_body::Body as _;
        if body.is_end_stream() {
            return Ok((parts, body));
        }
        let buffered = self.spool.read(body).await?;
        parts.headers.remove(header::TRANSFER_ENCODING);
        // The body is here: home has nothing to agree to.
        parts.headers.remove(header::EXPECT);
        parts.headers.insert(
            header::CONTENT_LENGTH,
            http::HeaderValue::from(buffered.len),
        );
        Ok((parts, buffered.into_body()))
    }
}
