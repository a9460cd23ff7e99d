//! THE central file: `Gateway::handle` takes one request through its phases.
//!
//! ```text
//! connection (server, connection)  ban/limits later; TLS picks the certificate by SNI
//! request    (here)                 head checks → site from Host → Host vs SNI → port 80 rules
//! forward    (upstream, later)      stream both ways
//! response   (here, later)          filters' on_response, access log
//! ```
//!
//! Every `ProxyError` becomes a response in `error.rs`; an unknown host becomes
//! `Closed`: the connection ends with no response at all (nginx's `return 444`).

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty};

use crate::config::{normalise_host, Limits};
use crate::error::ProxyError;
use crate::routes::{Routes, Site};
use crate::webroot;

/// Errors a response body may end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every response drawbridge sends.
pub type Body = BoxBody<Bytes, BoxError>;

/// What the pipeline knows about the connection a request came on.
#[derive(Debug, Clone)]
pub struct Conn {
    /// The TCP peer.
    pub client: SocketAddr,
    /// The TLS server name, when the request came over TLS.
    pub sni: Option<String>,
    /// Whether the listener is a TLS one.
    pub tls: bool,
}

/// The request gets no response: close the connection (nginx's 444).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection closed without a response")
    }
}

impl std::error::Error for Closed {}

/// The request handler shared by every connection.
#[derive(Debug)]
pub struct Gateway {
    routes: ArcSwap<Routes>,
    limits: Limits,
    https_port: Option<u16>,
}

impl Gateway {
    /// A gateway serving `routes`; redirects point at `https_port`.
    pub fn new(routes: Routes, limits: Limits, https_port: Option<u16>) -> Gateway {
        Gateway {
            routes: ArcSwap::from_pointee(routes),
            limits,
            https_port,
        }
    }

    /// Replaces the routes snapshot; requests already running keep the old one.
    pub fn swap_routes(&self, routes: Routes) {
        self.routes.store(Arc::new(routes));
    }

    /// Handles one request, or says the connection must close unanswered.
    pub async fn handle<B>(
        &self,
        request: Request<B>,
        conn: &Conn,
    ) -> Result<Response<Body>, Closed> {
        let routes = self.routes.load_full();
        let host = match check_head(&request, &self.limits) {
            Ok(host) => host,
            Err(error) => return Ok(answer(error, &request)),
        };
        let Some(site) = routes.site(&host) else {
            tracing::debug!(host, "no site for this host; closing without a response");
            return Err(Closed);
        };
        let span = tracing::info_span!("req", method = %request.method(), host, path = request.uri().path(), site = site.name);
        let _entered = span.enter();
        if conn.tls {
            // SNI was checked at the handshake; the request may still name another site.
            let same_site = conn
                .sni
                .as_deref()
                .and_then(|sni| routes.site(sni))
                .is_some_and(|sni_site| Arc::ptr_eq(sni_site, site));
            if !same_site {
                return Ok(answer(ProxyError::Misdirected, &request));
            }
        } else if let Some(response) = self.plain_http(&request, site, &host).await {
            return Ok(response);
        }
        // The upstream comes with the proxy core; until then every site is down.
        Ok(answer(ProxyError::UpstreamUnavailable, &request))
    }

    /// Port-80 rules: ACME webroot first, then the redirect to https.
    async fn plain_http<B>(
        &self,
        request: &Request<B>,
        site: &Site,
        host: &str,
    ) -> Option<Response<Body>> {
        let path = request.uri().path();
        if let Some(root) = &site.acme_webroot {
            if path.starts_with(webroot::CHALLENGE_PREFIX) {
                return Some(
                    webroot::serve(root, request.method(), path)
                        .await
                        .unwrap_or_else(|e| answer(e, request)),
                );
            }
        }
        if !site.https_redirect {
            return None;
        }
        let port = match self.https_port {
            Some(443) | None => String::new(),
            Some(port) => format!(":{port}"),
        };
        let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let location = format!("https://{host}{port}{target}");
        let mut response = Response::new(Empty::new().map_err(|never| match never {}).boxed());
        *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
        let location = HeaderValue::from_str(&location).ok()?;
        response.headers_mut().insert(header::LOCATION, location);
        Some(response)
    }
}

/// Turns an error into its page, logging it once.
fn answer<B>(error: ProxyError, request: &Request<B>) -> Response<Body> {
    tracing::debug!(%error, method = %request.method(), path = request.uri().path(), "request refused");
    let mut response = error.into_response();
    if request.version() == Version::HTTP_2 {
        // Connection-specific headers are forbidden in HTTP/2.
        response.headers_mut().remove(header::CONNECTION);
    }
    response
}

/// Checks what hyper lets through but a proxy must not (RFC 9112 §3.2, §3.2.2):
/// sizes of the target and header lines, exactly one Host, and an absolute-form
/// target or `:authority` that agrees with it. Returns the normalised host.
pub fn check_head<B>(request: &Request<B>, limits: &Limits) -> Result<String, ProxyError> {
    let uri = request.uri();
    let target_len = uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    if target_len > limits.max_request_line {
        return Err(ProxyError::UriTooLong);
    }
    for (name, value) in request.headers() {
        if name.as_str().len() + value.len() + 2 > limits.max_header_line {
            return Err(ProxyError::HeaderTooLarge);
        }
    }
    let mut hosts = request.headers().get_all(header::HOST).iter();
    let header_host = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::BadRequest("more than one Host header"));
    }
    let header_host = match header_host {
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(normalise_host)
                .ok_or(ProxyError::BadRequest("malformed Host header"))?,
        ),
        None => None,
    };
    let target_host = match uri.authority() {
        Some(authority) => Some(
            normalise_host(authority.as_str())
                .ok_or(ProxyError::BadRequest("malformed request target authority"))?,
        ),
        None => None,
    };
    match (header_host, target_host) {
        (Some(h), Some(t)) if h != t => Err(ProxyError::BadRequest(
            "request target and Host name different hosts",
        )),
        (Some(h), _) => Ok(h),
        // HTTP/2 carries the host in :authority alone (RFC 9113 §8.3.1).
        (None, Some(t)) if request.version() == Version::HTTP_2 => Ok(t),
        (None, _) => Err(ProxyError::BadRequest("missing Host header")),
    }
}

#[cfg(test)]
mod tests {
    use super::check_head;
    use crate::config::Limits;
    use crate::error::ProxyError;
    use http::{Request, Version};

    fn req(uri: &str, hosts: &[&str], version: Version) -> Request<()> {
        let mut builder = Request::builder().uri(uri).version(version);
        for h in hosts {
            builder = builder.header("host", *h);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn host_rules() {
        let l = Limits::default();
        let ok = |r| check_head(&r, &l).map_err(|e: ProxyError| e.to_string());
        assert_eq!(
            ok(req("/", &["A.test:8443"], Version::HTTP_11)),
            Ok("a.test".into())
        );
        assert!(ok(req("/", &[], Version::HTTP_11))
            .unwrap_err()
            .contains("missing Host"));
        assert!(ok(req("/", &["a.test", "b.test"], Version::HTTP_11))
            .unwrap_err()
            .contains("more than one"));
        assert!(ok(req("http://b.test/", &["a.test"], Version::HTTP_11))
            .unwrap_err()
            .contains("different hosts"));
        assert_eq!(
            ok(req("http://a.test/x", &["a.test"], Version::HTTP_11)),
            Ok("a.test".into())
        );
        assert_eq!(
            ok(req("https://a.test/x", &[], Version::HTTP_2)),
            Ok("a.test".into())
        );
        assert!(ok(req("https://a.test/x", &["b.test"], Version::HTTP_2)).is_err());
        assert!(ok(req("/", &["bad host"], Version::HTTP_11)).is_err());
    }

    #[test]
    fn size_limits() {
        let l = Limits::default();
        let long = format!("/{}", "a".repeat(9000));
        let r = req(&long, &["a.test"], Version::HTTP_11);
        assert!(matches!(check_head(&r, &l), Err(ProxyError::UriTooLong)));
        let mut r = req("/", &["a.test"], Version::HTTP_11);
        r.headers_mut()
            .insert("x-big", "b".repeat(9000).parse().unwrap());
        assert!(matches!(
            check_head(&r, &l),
            Err(ProxyError::HeaderTooLarge)
        ));
    }
}
