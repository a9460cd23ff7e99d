//! THE central file: `Gateway::handle` takes one request through its phases.
//!
//! ```text
//! connection (server, connection)  TLS picks the certificate by SNI; deadlines
//! request    handle → check        head checks → site from Host → method and
//!                                  canonical path → client address; framing →
//!                                  Host vs SNI → port-80 rules → filters' on_request
//! forward    forward               WebSocket tunnel | edge cache | the forward
//!                                  step to the site's fixed upstream
//! response   respond → handle      filters' on_response → access log at the body's end
//! ```
//!
//! Every `ProxyError` becomes a response in `error.rs`; an unknown host becomes
//! `Closed`: the connection ends with no response at all (nginx's `return 444`).

use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{header, HeaderValue, Method, Request, Response, Version};
use http_body_util::BodyExt;
use tokio::time::Instant;
use tracing::Instrument;

use crate::access_log::{AccessLog, Entry};
use crate::body::{empty_body, Body, BodyLimits, BoxError, ClientBody, GuardedBody, Tail};
use crate::cache::{self, Cache};
use crate::canonical;
use crate::client_ip::{self, Client};
use crate::config::Limits;
use crate::error::{answer, ProxyError, UpstreamFailure};
use crate::filter::{self, Exchange, Verdict};
use crate::forwarding::{self, Origin};
use crate::routes::{Routes, Site};
use crate::tls::challenges::Challenges;
use crate::{webroot, websocket};

mod conn;
mod head;
pub use conn::{Closed, Conn};
pub use head::check_head;
use head::raw_host;

/// What the phases know about the request besides the request itself.
#[derive(Debug, Clone, Copy)]
struct Scope<'a> {
    conn: &'a Conn,
    client: &'a Client,
    routes: &'a Routes,
    site: &'a Site,
    host: &'a str,
    ask: filter::Ask<'a>,
}

/// The request handler shared by every connection.
#[derive(Debug)]
pub struct Gateway {
    routes: ArcSwap<Routes>,
    limits: Limits,
    https_port: Option<u16>,
    access_log: Arc<AccessLog>,
    challenges: Arc<Challenges>,
    cache: Arc<Cache>,
}

impl Gateway {
    /// A gateway serving `routes`; redirects point at `https_port`; HTTP-01
    /// answers come from `challenges`.
    pub fn new(
        routes: Routes,
        limits: Limits,
        https_port: Option<u16>,
        access_log: Arc<AccessLog>,
        challenges: Arc<Challenges>,
        cache: Arc<Cache>,
    ) -> Gateway {
        Gateway {
            routes: ArcSwap::from_pointee(routes),
            limits,
            https_port,
            access_log,
            challenges,
            cache,
        }
    }

    /// The edge cache (purged through the admin socket).
    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    /// The current routes snapshot.
    pub fn routes(&self) -> Arc<Routes> {
        self.routes.load_full()
    }

    /// Replaces the routes snapshot; requests already running keep the old one.
    pub fn swap_routes(&self, routes: Routes) {
        self.routes.store(Arc::new(routes));
    }

    /// The access log (reopened on SIGUSR1).
    pub fn access_log(&self) -> &AccessLog {
        &self.access_log
    }

    /// Handles one request, or says the connection must close unanswered.
    pub async fn handle(
        &self,
        request: Request<ClientBody>,
        conn: &Conn,
    ) -> Result<Response<Body>, Closed> {
        let routes = self.routes.load_full();
        let host = match check_head(&request, &self.limits) {
            Ok(host) => host,
            Err(error) => return Ok(answer(error, request.version())),
        };
        let Some(site) = routes.site(&host).cloned() else {
            tracing::debug!(host, "no site for this host; closing without a response");
            return Err(Closed);
        };
        // From here on every rule, the log and the upstream read the
        // canonical path; a spelling drawbridge will not guess about, or a
        // method it never forwards, is answered before anything reads it.
        let mut request = request;
        let refused = if refused_method(&request) {
            Some(ProxyError::MethodNotAllowed(ALLOWED_METHODS))
        } else {
            canonical::apply(&mut request)
                .err()
                .map(ProxyError::BadRequest)
        };
        // One client address for everything that follows (log, headers, guard).
        let client =
            client_ip::identify(conn.client.ip(), request.headers(), &routes.trusted_proxies);
        // Debug level: at the default `info` a span per request (its fields
        // formatted, entered and left at every poll) cost a fifth of a small
        // request's CPU; the one request-time warning carries the same fields.
        let span = tracing::debug_span!("req", method = %request.method(), host, path = request.uri().path(), site = site.name, client.ip = %client.ip);
        let logged = site.access_log && self.access_log.enabled();
        let mut log = logged.then(|| Entry::start(&request, client.ip, &site.name));
        let version = request.version();
        let method = request.method().clone();
        let started = Instant::now();
        let path = request.uri().path().to_string();
        let ask = filter::Ask {
            client: client.ip,
            path: &path,
            now: started,
            connection: conn.id,
        };
        let response = match refused {
            Some(error) => answer(error, version),
            None => {
                let scope = Scope {
                    conn,
                    client: &client,
                    routes: &routes,
                    site: &site,
                    host: &host,
                    ask,
                };
                let served = async {
                    match self.check(&request, scope).await? {
                        Some(early) => Ok(early),
                        None => Ok(self.forward(request, scope).await),
                    }
                };
                served.instrument(span).await?
            }
        };
        let mut response = self.respond(response, &site, ask, conn.tls, version);
        if let Some(UpstreamFailure(error)) = response.extensions_mut().remove() {
            tracing::warn!(%error, %method, host, path, site = site.name, client.ip = %client.ip, "upstream failure");
        }
        if let Some(mut entry) = log.take() {
            entry.status = response.status().as_u16();
            let access_log = self.access_log.clone();
            response = response.map(|body| {
                Tail::new(body, move |bytes, complete| {
                    entry.bytes = bytes;
                    entry.complete = complete;
                    entry.duration = started.elapsed();
                    access_log.write(&entry);
                })
                .boxed()
            });
        }
        Ok(response)
    }

    /// The rest of the request phase: framing, Host against SNI, port-80
    /// rules, the filters' `on_request`, `OPTIONS *`. An answer ends the
    /// request here; `Closed` when a filter wants the connection closed.
    async fn check(
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
            ask,
        } = scope;
        let version = request.version();
        if conn.state.take_ambiguous_framing() {
            let error = ProxyError::BadRequest("both Content-Length and Transfer-Encoding");
            return Ok(Some(answer(error, version)));
        }
        if let Err(error) = forwarding::check_framing(request.headers()) {
            return Ok(Some(answer(error, version)));
        }
        if conn.tls {
            // SNI was checked at the handshake; the request may still name another site.
            let same_site = conn
                .sni
                .as_deref()
                .and_then(|sni| routes.site(sni))
                .is_some_and(|s| std::ptr::eq(s.as_ref(), site));
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
            match filter.on_request(ask) {
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

    /// The forward phase: a WebSocket tunnel, the edge cache, or the
    /// upstream through the forward step (`upstream/forward.rs`).
    async fn forward(&self, request: Request<ClientBody>, scope: Scope<'_>) -> Response<Body> {
        let Scope {
            conn,
            client,
            site,
            host,
            ..
        } = scope;
        let version = request.version();
        let raw_host = raw_host(&request).to_string();
        let origin = Origin {
            client,
            tls: conn.tls,
            host: &raw_host,
        };
        if let Some(upgrade) = websocket::ask(&request) {
            let tunnel = websocket::Tunnel {
                hold: conn.state.request_started(),
                kill: conn.kill.clone(),
                drain: conn.drain.clone(),
                tasks: conn.tasks.clone(),
                response_timeout: site.response_timeout,
            };
            let upgraded = websocket::tunnel(request, upgrade, &site.upstream, origin, tunnel);
            return Box::pin(upgraded)
                .await
                .unwrap_or_else(|e| answer(e, version));
        }
        let method = request.method().clone();
        if matches!(method, Method::GET | Method::HEAD) {
            if let Some(visibility) = site.cache.class(request.uri().path()) {
                let (head, _) = request.into_parts();
                let ask = cache::Ask {
                    key: cache::key(host, &head.uri),
                    visibility,
                    method,
                    head,
                    origin,
                    upstream: &site.upstream,
                };
                // Boxed, like the WebSocket tunnel: the cache's future is
                // twice the forward's, and every request's task would carry it.
                return Box::pin(self.cache.serve(ask))
                    .await
                    .unwrap_or_else(|e| self.cache.label(answer(e, version), "MISS"));
            }
        }
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|length| length > site.max_body) {
            return answer(ProxyError::PayloadTooLarge, version);
        }
        let (parts, body) = request.into_parts();
        let limits = BodyLimits {
            max: site.max_body,
            timeout: self.limits.body_timeout,
            min_rate: self.limits.body_min_rate,
        };
        // No body (a GET, or HTTP/2 headers that end the stream): nothing to
        // guard, and no clock to start.
        let body = if http_body::Body::is_end_stream(&body) {
            empty_body()
        } else {
            GuardedBody::new(body, limits)
                .map_err(BoxError::from)
                .boxed()
        };
        site.upstream
            .forward(parts, body, origin)
            .await
            .unwrap_or_else(|error| answer(error, version))
    }

    /// The response phase: the filters' `on_response` (failed logins
    /// counted, security headers set) on every answer, drawbridge's own
    /// pages included.
    fn respond(
        &self,
        mut response: Response<Body>,
        site: &Site,
        ask: filter::Ask<'_>,
        tls: bool,
        version: Version,
    ) -> Response<Body> {
        let exchange = Exchange {
            ask,
            tls,
            status: response.status(),
        };
        for filter in site.filters.iter().rev() {
            filter.on_response(response.headers_mut(), exchange);
        }
        if version == Version::HTTP_2 {
            // Connection-specific headers are forbidden in HTTP/2.
            response.headers_mut().remove(header::CONNECTION);
        }
        response
    }
}

/// The methods drawbridge forwards (`OPTIONS *` answers with them).
const ALLOWED_METHODS: &str = "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS";

/// Methods never forwarded: TRACE and TRACK would echo the client's cookies
/// and tokens back (cross-site tracing), and a CONNECT that is not a
/// WebSocket would make drawbridge a tunnel to anywhere.
fn refused_method<B>(request: &Request<B>) -> bool {
    let method = request.method();
    // Kestrel compares method names without regard to case.
    method.as_str().eq_ignore_ascii_case("TRACE")
        || method.as_str().eq_ignore_ascii_case("TRACK")
        || (*method == Method::CONNECT && websocket::ask(request).is_none())
}
