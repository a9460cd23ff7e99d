//! What the agent does with each stream the edge opens: the stream's
//! `:authority` names a service of the agent's own config, and the request
//! goes to it over HTTP/1.1 as the edge sent it (its X-Forwarded-For and
//! X-Real-IP unchanged: the agent trusts only the edge, by its pinned key).
//! A service the config does not name is refused: the edge cannot reach
//! any other address at home, so an agent is never an open proxy.
//! WebSocket: an extended CONNECT (RFC 8441) becomes an HTTP/1.1 Upgrade.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::body::{full_body, Body};
use crate::tunnel::protocol::{Refusal, PING_SERVICE, REFUSED};
use crate::upstream::head::remove_hop_by_hop;

/// How long connecting to a service may take: a machine at home that is off
/// drops packets, and the edge should hear so before its client gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The services and the client that reaches them.
#[derive(Debug, Clone)]
pub struct Services {
    addrs: Arc<BTreeMap<String, String>>,
    client: Client<HttpConnector, Incoming>,
}

impl Services {
    /// `addrs`: service name → `host:port`.
    pub fn new(addrs: BTreeMap<String, String>) -> Services {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Services {
            addrs: Arc::new(addrs),
            client,
        }
    }

    /// Answers one stream from the edge.
    pub async fn handle(&self, request: Request<Incoming>) -> Response<Body> {
        let service = request
            .uri()
            .authority()
            .map(|a| a.host().to_string())
            .unwrap_or_default();
        if service == PING_SERVICE {
            let mut pong = Response::new(full_body(""));
            *pong.status_mut() = StatusCode::NO_CONTENT;
            return pong;
        }
        let Some(addr) = self.addrs.get(&service) else {
            tracing::warn!(
                service,
                "the edge asked for a service this agent does not expose"
            );
            return refused(Refusal::NotExposed);
        };
        let websocket = request.method() == Method::CONNECT
            && request
                .extensions()
                .get::<hyper::ext::Protocol>()
                .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"));
        if websocket {
            return self.websocket(request, addr).await;
        }
        let (mut parts, body) = request.into_parts();
        let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        parts.uri = match format!("http://{addr}{target}").parse() {
            Ok(uri) => uri,
            Err(_) => return refused(Refusal::BadTarget),
        };
        parts.version = http::Version::HTTP_11;
        match self.client.request(Request::from_parts(parts, body)).await {
            Ok(mut response) => {
                from_the_service(response.headers_mut());
                response.map(|body| body.map_err(Into::into).boxed())
            }
            Err(error) if error.is_connect() => {
                tracing::warn!(service, addr, error = %crate::error::causes(&error), "the local service did not answer");
                refused(Refusal::Unreachable)
            }
            Err(error) => {
                tracing::warn!(service, addr, error = %crate::error::causes(&error), "the local service broke off its answer");
                refused(Refusal::Failed)
            }
        }
    }

    /// An extended CONNECT for a WebSocket: an HTTP/1.1 Upgrade to the
    /// service; 200 and the bytes copied both ways when it switches.
    async fn websocket(&self, mut request: Request<Incoming>, addr: &str) -> Response<Body> {
        let edge_side = hyper::upgrade::on(&mut request);
        let (parts, _) = request.into_parts();
        let mut upgrade = Request::new(crate::body::empty_body());
        *upgrade.uri_mut() = parts
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .parse()
            .unwrap_or_default();
        *upgrade.headers_mut() = parts.headers;
        let headers = upgrade.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr));
        let stream = match connected.await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                tracing::warn!(addr, %error, "the local service did not answer a WebSocket");
                return refused(Refusal::Unreachable);
            }
            Err(_) => {
                tracing::warn!(addr, "the local service did not answer a WebSocket in time");
                return refused(Refusal::Unreachable);
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok((mut sender, connection)) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
        else {
            return refused(Refusal::Failed);
        };
        tokio::spawn(connection.with_upgrades());
        let Ok(mut response) = sender.send_request(upgrade).await else {
            return refused(Refusal::Failed);
        };
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            from_the_service(response.headers_mut());
            return response.map(|body| body.map_err(Into::into).boxed());
        }
        let service_side = hyper::upgrade::on(&mut response);
        let mut answer = Response::new(crate::body::empty_body());
        for name in [
            "sec-websocket-accept",
            "sec-websocket-protocol",
            "sec-websocket-extensions",
        ] {
            if let Some(value) = response.headers().get(name) {
                answer.headers_mut().insert(name, value.clone());
            }
        }
        tokio::spawn(async move {
            let (Ok(edge), Ok(service)) = tokio::join!(edge_side, service_side) else {
                return;
            };
            let mut edge = TokioIo::new(edge);
            let mut service = TokioIo::new(service);
            let _ = tokio::io::copy_bidirectional(&mut edge, &mut service).await;
        });
        answer
    }
}

/// A service's answer head as the edge gets it: hop-by-hop headers gone,
/// and no refusal mark — only the agent sets that (a service made to
/// reflect it would pass for the agent's refusal: a 502 for a good answer,
/// and the agent passed over).
fn from_the_service(headers: &mut http::HeaderMap) {
    remove_hop_by_hop(headers);
    headers.remove(REFUSED);
}

fn refused(refusal: Refusal) -> Response<Body> {
    let mut response = Response::new(full_body(refusal.word()));
    *response.status_mut() = refusal.status();
    refusal.mark(response.headers_mut());
    response
}
