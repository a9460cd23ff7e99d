//! The request phase after the head: framing, Host against SNI, port-80
//! rules, the filters' `on_request`, `OPTIONS *`; and the methods refused
//! before any of it.

use http::{header, HeaderValue, Method, Request, Response};

use super::head::check_framing;
use super::{Closed, Gateway, Scope};
use crate::body::{empty_body, Body, ClientBody};
use crate::client_ip;
use crate::error::{answer, ProxyError};
use crate::filter::Verdict;
use crate::{webroot, websocket};

impl Gateway {
    /// The rest of the request phase: framing, Host against SNI, port-80
    /// rules, the filters' `on_request`, `OPTIONS *`. An answer ends the
    /// request here; `Closed` when a filter wants the connection closed.
    pub(super) async fn check(
        &self,
        request: &Request<ClientBody>,
        scope: Scope<'_>,
    ) -> Result<Option<Response<Body>>, Closed> {
        let Scope {
            conn,
            client,
            routes,
            site,
            host,
            subject,
        } = scope;
        let version = request.version();
        if conn.state.take_ambiguous_framing() {
            let error = ProxyError::BadRequest("both Content-Length and Transfer-Encoding");
            return Ok(Some(answer(error, version)));
        }
        if let Err(error) = check_framing(request.headers()) {
            return Ok(Some(answer(error, version)));
        }
        if conn.tls {
            // SNI was checked at the handshake; the request may still name another site.
            let same_site = conn
                .sni
                .as_deref()
                .and_then(|sni| routes.site(sni))
                .is_some_and(|s| std::sync::Arc::ptr_eq(s, site));
            if !same_site {
                return Ok(Some(answer(ProxyError::Misdirected, version)));
            }
        } else {
            let port80 = webroot::Port80 {
                challenges: &self.challenges,
                webroot: site.acme_webroot.as_deref(),
                https_redirect: site.https_redirect,
                https_port: self.https_port,
            };
            if let Some(answered) = port80.answer(request, host).await {
                return Ok(Some(answered.unwrap_or_else(|e| answer(e, version))));
            }
        }
        for filter in &site.filters {
            match filter.on_request(subject) {
                Verdict::Continue => {}
                Verdict::Refuse(error) => return Ok(Some(answer(error, version))),
                // Behind a trusted proxy the connection carries other
                // clients' requests too: refuse this one alone.
                Verdict::Close if client.ip != client_ip::normalise(conn.client.ip()) => {
                    return Ok(Some(answer(ProxyError::Forbidden, version)))
                }
                Verdict::Close => return Err(Closed),
            }
        }
        if request.uri().path() == "*" {
            // `OPTIONS *` asks about drawbridge itself, not a resource.
            let mut response = Response::new(empty_body());
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(ALLOWED_METHODS));
            return Ok(Some(response));
        }
        Ok(None)
    }
}

/// The methods drawbridge forwards (`OPTIONS *` answers with them).
pub(super) const ALLOWED_METHODS: &str = "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS";

/// Methods never forwarded: TRACE and TRACK would echo the client's cookies
/// and tokens back (cross-site tracing), and a CONNECT that is not a
/// WebSocket would make drawbridge a tunnel to anywhere.
pub(super) fn refused_method<B>(request: &Request<B>) -> bool {
    let method = request.method();
    // Kestrel compares method names without regard to case.
    method.as_str().eq_ignore_ascii_case("TRACE")
        || method.as_str().eq_ignore_ascii_case("TRACK")
        || (*method == Method::CONNECT && websocket::opening(request).is_none())
}
