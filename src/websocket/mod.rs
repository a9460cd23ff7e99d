//! WebSocket through drawbridge: an HTTP/1.1 `Upgrade: websocket` or an
//! HTTP/2 extended CONNECT (RFC 8441) from the client becomes an HTTP/1.1
//! Upgrade to the upstream on a fresh connection; once both sides have switched,
//! bytes are copied both ways until either closes. The tunnel holds its
//! connection's in-flight mark, so no idle or head deadline applies to it, and
//! it does not depend on the routes snapshot, so a reload never cuts it. When
//! shutdown begins, each side gets Close 1001 (`going_away`): a socket never
//! ends by itself, and the app reconnects to the restarted drawbridge at once.

mod going_away;

use std::time::Duration;

use base64::Engine as _;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;

use crate::body::{empty_body, Body, ClientBody};
use crate::error::ProxyError;
use crate::socket::deadline::InFlight;
use crate::upstream::head::{self, Visitor};
use crate::upstream::Upstream;

/// How the client asked for a WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// HTTP/1.1 `GET` with `Upgrade: websocket`.
    Upgrade,
    /// HTTP/2 `CONNECT` with `:protocol = websocket`.
    ExtendedConnect,
}

const FORWARDED_WS_HEADERS: [&str; 3] = [
    "sec-websocket-protocol",
    "sec-websocket-extensions",
    "sec-websocket-version",
];

/// Whether `request` asks for a WebSocket, and how.
pub fn opening<B>(request: &Request<B>) -> Option<Opening> {
    if request.version() == Version::HTTP_2 {
        let protocol = request.extensions().get::<hyper::ext::Protocol>()?;
        return (request.method() == Method::CONNECT
            && protocol.as_str().eq_ignore_ascii_case("websocket"))
        .then_some(Opening::ExtendedConnect);
    }
    let has_token = |name: header::HeaderName, token: &str| {
        request
            .headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    (request.method() == Method::GET
        && has_token(header::UPGRADE, "websocket")
        && has_token(header::CONNECTION, "upgrade"))
    .then_some(Opening::Upgrade)
}

/// What a tunnel keeps while it runs.
#[derive(Debug)]
pub struct Relay {
    /// Marks the client connection busy, so no deadline cuts it.
    pub hold: InFlight,
    /// Ends the tunnel at once (a ban, or the shutdown grace is over).
    pub kill: CancellationToken,
    /// Shutdown began: the tunnel says Going Away to both sides and ends.
    pub drain: CancellationToken,
    /// Where the tunnel runs (shutdown waits for it).
    pub tasks: tokio_util::task::TaskTracker,
    /// How long the upstream may take to answer the upgrade.
    pub response_timeout: Duration,
    /// The site's count of open WebSockets, one higher while this one is.
    pub open: prometheus_client::metrics::gauge::Gauge,
}

/// Opens the WebSocket upstream and, if it switches protocols, answers the
/// client so that it switches too and starts copying.
pub async fn relay(
    mut request: Request<ClientBody>,
    opening: Opening,
    upstream: &Upstream,
    visitor: Visitor<'_>,
    relay: Relay,
) -> Result<Response<Body>, ProxyError> {
    let Relay {
        hold,
        kill,
        drain,
        tasks,
        response_timeout,
        open,
    } = relay;
    let client_side = hyper::upgrade::on(&mut request);
    let (mut parts, _) = request.into_parts();
    let kept: Vec<(&str, HeaderValue)> = FORWARDED_WS_HEADERS
        .iter()
        .filter_map(|name| parts.headers.get(*name).map(|v| (*name, v.clone())))
        .collect();
    let key = match opening {
        Opening::Upgrade => parts.headers.get("sec-websocket-key").cloned(),
        // RFC 8441 has no key; the upstream's HTTP/1.1 handshake needs one.
        Opening::ExtendedConnect => None,
    }
    .unwrap_or_else(fresh_key);
    upstream.rewrite(&mut parts, visitor);
    parts.method = Method::GET;
    let headers = &mut parts.headers;
    headers.remove(header::CONTENT_LENGTH);
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert("sec-websocket-key", key);
    headers.insert("sec-websocket-version", HeaderValue::from_static("13"));
    for (name, value) in kept {
        headers.insert(name, value);
    }

    let addr = upstream.authority().to_string();
    let failed = |why| ProxyError::UpstreamUpgrade {
        addr: addr.clone(),
        why,
    };
    let request = Request::from_parts(parts, empty_body());
    let (mut response, place) = upstream
        .upgrade(request, visitor.client.ip, response_timeout)
        .await?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        // Refused (401 without a token, 404…): the client gets that answer.
        head::remove_hop_by_hop(response.headers_mut());
        return Ok(response.map(|body| body.map_err(Into::into).boxed()));
    }
    let upstream_side = hyper::upgrade::on(&mut response);
    let mut answer = Response::new(empty_body());
    for name in ["sec-websocket-protocol", "sec-websocket-extensions"] {
        if let Some(value) = response.headers().get(name) {
            answer.headers_mut().insert(name, value.clone());
        }
    }
    match opening {
        Opening::Upgrade => {
            *answer.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let accept = response
                .headers()
                .get("sec-websocket-accept")
                .cloned()
                .ok_or_else(|| failed("no Sec-WebSocket-Accept"))?;
            let headers = answer.headers_mut();
            headers.insert("sec-websocket-accept", accept);
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        }
        Opening::ExtendedConnect => *answer.status_mut() = StatusCode::OK,
    }
    tasks.spawn(async move {
        let _hold = (hold, place);
        let (client, upstream) = match tokio::try_join!(client_side, upstream_side) {
            Ok(pair) => pair,
            Err(error) => {
                tracing::debug!(%error, "WebSocket upgrade did not complete");
                return;
            }
        };
        let _open = crate::metrics::Live::new(&open);
        let mut client = going_away::Side::new(TokioIo::new(client));
        let mut upstream = going_away::Side::new(TokioIo::new(upstream));
        let cut = tokio::select! {
            copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                match copied {
                    Ok((up, down)) => tracing::debug!(up, down, "WebSocket closed"),
                    Err(error) => tracing::debug!(%error, "WebSocket ended"),
                }
                false
            }
            () = kill.cancelled() => true,
            // A WebSocket never finishes by itself: at shutdown the app is
            // told to reconnect (to the restarted drawbridge) at once.
            () = drain.cancelled() => true,
        };
        if cut {
            tracing::debug!("WebSocket closed by shutdown (1001 Going Away)");
            let goodbyes = async {
                client.going_away(false).await;
                upstream.going_away(true).await;
            };
            let _ = tokio::time::timeout(GOODBYE_TIME, goodbyes).await;
        }
    });
    Ok(answer)
}

/// How long the Close frames may take to leave at shutdown.
const GOODBYE_TIME: Duration = Duration::from_secs(1);

/// A random `Sec-WebSocket-Key`: 16 bytes, base64 (RFC 6455 §4.1).
fn fresh_key() -> HeaderValue {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    // The system RNG does not fail on Linux; a zero key would still be valid.
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    HeaderValue::from_str(&encoded).expect("base64 is a valid header value")
}
