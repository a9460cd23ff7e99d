//! THE central file: `Gateway::handle` takes one request through its phases.
//!
//! ```text
//! connection (server, connection)  TLS picks the certificate by SNI; deadlines
//! request    handle (here)         head checks (head.rs) → site from Host →
//!                                  method and canonical path → client address
//!            check (request.rs)    framing → Host vs SNI → port-80 rules →
//!                                  filters' on_request → OPTIONS *
//!            gate (gate.rs)        only a signed-in household past Jellyfin's
//!                                  login page (`gate/`)
//! forward    forward (forward.rs)  WebSocket relay | edge cache | the forward
//!                                  step to the site's upstream
//! response   respond (here)        filters' on_response → access log at the
//!                                  body's end (access_log.rs)
//! ```
//!
//! Every `ProxyError` becomes a response in `error.rs`; an unknown host becomes
//! `Closed`: the connection ends with no response at all (nginx's `return 444`).

use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{header, HeaderValue, Request, Response, Version};
use tokio::time::Instant;
use tracing::Instrument;

use crate::access_log::{AccessLog, Line};
use crate::body::{Body, ClientBody};
use crate::cache::Cache;
use crate::canonical;
use crate::client_ip::{self, Client};
use crate::config::Limits;
use crate::error::{answer, ProxyError, UpstreamFailure};
use crate::filter::{self, Exchange};
use crate::metrics::streams;
use crate::routes::{Routes, Site};
use crate::tls::challenges::Challenges;
use request::{refused_method, ALLOWED_METHODS};

mod conn;
mod forward;
mod gate;
mod head;
mod login;
mod request;
pub use conn::{Closed, Conn};
pub use head::check_head;

/// What the phases know about the request besides the request itself.
#[derive(Debug, Clone, Copy)]
struct Scope<'a> {
    conn: &'a Conn,
    client: &'a Client,
    routes: &'a Routes,
    site: &'a Arc<Site>,
    host: &'a str,
    subject: filter::Subject<'a>,
}

/// What a gateway is made of.
#[derive(Debug)]
pub struct GatewayParts {
    /// The first routes snapshot.
    pub routes: Routes,
    /// Protocol limits.
    pub limits: Limits,
    /// Where redirects to https point.
    pub https_port: Option<u16>,
    /// The access log.
    pub access_log: Arc<AccessLog>,
    /// HTTP-01 answers.
    pub challenges: Arc<Challenges>,
    /// The edge cache.
    pub cache: Arc<Cache>,
    /// `Alt-Svc` for answers over TLS on TCP, when HTTP/3 is served.
    pub alt_svc: Option<HeaderValue>,
    /// Where hosts no site serves are counted.
    pub unknown: Arc<crate::tls::failures::UnknownNames>,
    /// Where request bodies are read whole before they go home.
    pub spool: Arc<crate::spool::Spool>,
}

/// The request handler shared by every connection.
#[derive(Debug)]
pub struct Gateway {
    routes: ArcSwap<Routes>,
    limits: Limits,
    https_port: Option<u16>,
    access_log: Arc<AccessLog>,
    /// `Alt-Svc` for answers over TLS on TCP, when HTTP/3 is served.
    alt_svc: Option<HeaderValue>,
    challenges: Arc<Challenges>,
    cache: Arc<Cache>,
    /// Hosts asked for that no site serves (summed up once a minute).
    unknown: Arc<crate::tls::failures::UnknownNames>,
    spool: Arc<crate::spool::Spool>,
}

impl Gateway {
    /// A gateway serving `parts.routes`.
    pub fn new(parts: GatewayParts) -> Gateway {
        Gateway {
            routes: ArcSwap::from_pointee(parts.routes),
            limits: parts.limits,
            https_port: parts.https_port,
            access_log: parts.access_log,
            challenges: parts.challenges,
            cache: parts.cache,
            alt_svc: parts.alt_svc,
            unknown: parts.unknown,
            spool: parts.spool,
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
            self.unknown.asked(Some(&host));
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
        // Debug level: a span at `info` is costly on every request
        // (docs/performance.md); the one request-time warning carries its fields.
        let span = tracing::debug_span!("req", method = %request.method(), host, path = request.uri().path(), site = site.name, client.ip = %client.ip);
        let logged = site.access_log && self.access_log.enabled();
        let log = logged.then(|| Line::start(&request, client.ip, &site.name));
        let version = request.version();
        let method = request.method().clone();
        let started = Instant::now();
        let path = request.uri().path().to_string();
        let subject = filter::Subject {
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
                    subject,
                };
                let served = async {
                    if let Some(early) = self.check(&request, scope).await? {
                        return Ok(early);
                    }
                    Ok(self.gate_then_forward(request, scope).await)
                };
                served.instrument(span).await?
            }
        };
        let mut response = self.respond(response, &site, subject, conn.tls, version);
        if let Some(UpstreamFailure(error)) = response.extensions_mut().remove() {
            tracing::warn!(%error, %method, host, path, site = site.name, client.ip = %client.ip, "upstream failure");
        }
        site.metrics
            .answered(&method, response.status(), started.elapsed());
        let sending = site.metrics.sending();
        // A film or a song: listed on the dashboard while it goes.
        let stream = response.extensions_mut().remove::<streams::Stream>();
        let watched = stream.map(|stream| {
            site.metrics.streams.watch(streams::StreamStatus {
                site: site.name.clone(),
                client: client.ip,
                path: path.clone(),
                user: stream.user.map(|u| u.to_string()),
                protocol: format!("{version:?}"),
                via: site
                    .upstream
                    .agent()
                    .map_or_else(|| "direct".to_string(), |agent| format!("agent {agent}")),
                since: crate::timestamp::unix_now(),
                bytes: 0,
            })
        });
        Ok(self
            .access_log
            .follow(log, sending, watched, response, started))
    }

    /// The response phase: the filters' `on_response` (failed logins
    /// counted, security headers set) on every answer, drawbridge's own
    /// pages included.
    fn respond(
        &self,
        mut response: Response<Body>,
        site: &Site,
        subject: filter::Subject<'_>,
        tls: bool,
        version: Version,
    ) -> Response<Body> {
        let exchange = Exchange {
            subject,
            tls,
            status: response.status(),
        };
        for filter in site.filters.iter().rev() {
            filter.on_response(response.headers_mut(), exchange);
        }
        if let (true, Version::HTTP_11 | Version::HTTP_2, Some(alt_svc)) =
            (tls, version, &self.alt_svc)
        {
            // Where HTTP/3 is, on every answer over TLS (drawbridge's own too).
            response
                .headers_mut()
                .insert(header::ALT_SVC, alt_svc.clone());
        }
        if matches!(version, Version::HTTP_2 | Version::HTTP_3) {
            // Connection-specific headers are forbidden in HTTP/2 and HTTP/3.
            response.headers_mut().remove(header::CONNECTION);
        }
        response
    }
}
