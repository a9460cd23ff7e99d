//! The admin listener (`[server] admin_listen`, 127.0.0.1:9180 by default):
//! `GET /metrics` in the OpenMetrics text format, for Prometheus; `POST /api`,
//! the admin socket's commands over HTTP (`admin::Command` in, `Reply` out);
//! `GET /`, the dashboard (`dashboard/`). Loopback unless the config names
//! another address, and then only with `admin_token` (`Authorization:
//! Bearer …`) for the metrics and the API. Without a token, a request must
//! name the listener's own address as its Host (a DNS-rebinding page names
//! its own), and a command must come from the dashboard page itself: its
//! Origin and a per-process value only that page can read. A port already
//! taken is a warning, not a refusal to start: the sites matter more.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{header, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admin::Sources;
use crate::body::{full_body, Body};

/// Binds `addr`; None (with a warning) when it cannot be had.
pub async fn bind(addr: SocketAddr) -> Option<TcpListener> {
    match TcpListener::bind(addr).await {
        Ok(listener) => {
            if let Ok(local) = listener.local_addr() {
                tracing::info!(admin = %local, "admin listener open: dashboard at http://{local}/, metrics at /metrics");
            }
            Some(listener)
        }
        Err(error) => {
            tracing::warn!(%addr, %error, "cannot open the admin listener; metrics are off");
            None
        }
    }
}

/// Serves the admin listener until `shutdown`.
pub async fn serve(listener: TcpListener, sources: Sources, shutdown: CancellationToken) {
    let Ok(local) = listener.local_addr() else {
        return;
    };
    let door = Arc::new(Door::new(local, sources.token.clone()));
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        let sources = sources.clone();
        let door = door.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let sources = sources.clone();
                let door = door.clone();
                async move { Ok::<_, Infallible>(answer(request, &sources, &door).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Who may use the listener, and how a request proves it.
#[derive(Debug)]
struct Door {
    /// The names a browser may use for this listener (`127.0.0.1:9180`,
    /// `localhost:9180`): any other Host is a DNS-rebinding page.
    hosts: Vec<String>,
    token: Option<String>,
    /// Asked of every `POST /api` without the bearer token: a value only
    /// the dashboard page (same origin) can read.
    csrf: String,
}

impl Door {
    fn new(local: SocketAddr, token: Option<String>) -> Door {
        let mut random = [0u8; 16];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random);
        Door {
            hosts: vec![local.to_string(), format!("localhost:{}", local.port())],
            token,
            csrf: random.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }

    /// Whether `request` carries the bearer token (true when none is set).
    fn bearer(&self, request: &Request<Incoming>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        // Compared in constant time: both sides through one HMAC, the tags by ring.
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"drawbridge admin token");
        let expected = ring::hmac::sign(&key, token.as_bytes());
        given.is_some_and(|given| {
            ring::hmac::verify(&key, given.as_bytes(), expected.as_ref()).is_ok()
        })
    }

    /// A browser's request from this listener's own page: its Host is the
    /// listener's, its Origin (when sent) the same, and it carries the page's
    /// CSRF value. A page of another site can do none of the three.
    fn same_origin(&self, request: &Request<Incoming>) -> bool {
        let headers = request.headers();
        let text = |name| {
            headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        let host = text(header::HOST).unwrap_or_default();
        let origin_ok =
            text(header::ORIGIN).is_none_or(|origin| origin == format!("http://{host}"));
        self.hosts.iter().any(|h| h == host)
            && origin_ok
            && text(HeaderName::from_static("x-drawbridge-csrf")) == Some(self.csrf.as_str())
    }
}

fn status(code: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(full_body(text));
    *response.status_mut() = code;
    response
}

async fn answer(request: Request<Incoming>, sources: &Sources, door: &Door) -> Response<Body> {
    let path = request.uri().path().to_string();
    // An absolute-form target (`GET http://evil.example/metrics`) names its
    // own authority, which wins over Host (RFC 9112 §3.2.2): no browser
    // sends one to a server, and answering it would make the Host check
    // below a check of the wrong field.
    if request.uri().authority().is_some() {
        return status(
            StatusCode::BAD_REQUEST,
            "absolute-form request targets are not served here\n",
        );
    }
    // Without a token the listener is loopback-only, and a Host that is not
    // its own is a page that rebound its DNS name to 127.0.0.1.
    if door.token.is_none() {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok());
        if !host.is_some_and(|host| door.hosts.iter().any(|h| h == host)) {
            return status(
                StatusCode::MISDIRECTED_REQUEST,
                "use this listener's own address\n",
            );
        }
    }
    match (request.method().clone(), path.as_str()) {
        (Method::GET, "/metrics") if door.bearer(&request) => {
            let mut response = Response::new(full_body(scrape(sources)));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        (Method::GET, "/metrics") | (Method::POST, "/api") if !door.bearer(&request) => {
            status(StatusCode::UNAUTHORIZED, "a bearer token is needed\n")
        }
        (Method::POST, "/api") => {
            // A bearer token is no cookie: a request that carries it was not
            // made by another site's page. Without one, the page's own marks.
            if door.token.is_none() && !door.same_origin(&request) {
                return status(StatusCode::FORBIDDEN, "not from this listener's own page\n");
            }
            api(request, sources).await
        }
        (Method::GET, page) => match crate::dashboard::asset(page, &door.csrf) {
            Some(response) => response,
            None => status(StatusCode::NOT_FOUND, "see / or /metrics\n"),
        },
        _ => status(StatusCode::METHOD_NOT_ALLOWED, "GET, or POST /api\n"),
    }
}

/// `POST /api`: one `admin::Command` as JSON in, its `admin::Reply` out —
/// the admin socket's protocol over HTTP.
async fn api(request: Request<Incoming>, sources: &Sources) -> Response<Body> {
    use http_body_util::BodyExt;
    let body = http_body_util::Limited::new(request.into_body(), 4096);
    let Ok(bytes) = body.collect().await.map(|b| b.to_bytes()) else {
        return status(
            StatusCode::PAYLOAD_TOO_LARGE,
            "one command is a few bytes\n",
        );
    };
    let reply = match serde_json::from_slice::<crate::admin::Command>(&bytes) {
        Ok(command) => crate::admin::execute(command, sources).await,
        Err(error) => {
            crate::admin::Reply::Error(format!("not a command drawbridge knows ({error})"))
        }
    };
    let mut response = Response::new(full_body(serde_json::to_string(&reply).unwrap_or_default()));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The metrics text, the gauges read from their sources first.
fn scrape(sources: &Sources) -> String {
    let process = &sources.process;
    let metrics = &process.metrics;
    metrics
        .connections
        .set(process.guard.open_connections() as i64);
    metrics
        .bans
        .set(process.guard.bans.list(tokio::time::Instant::now()).len() as i64);
    let counts = process.gateway.cache().counts();
    for (counter, now) in metrics.cache.iter().zip(counts) {
        counter.inc_by(now.saturating_sub(counter.get()));
    }
    let mut agents: Vec<(String, usize)> = Vec::new();
    for agent in process.edge.hub.status() {
        match agents.iter_mut().find(|(name, _)| *name == agent.name) {
            Some((_, count)) => *count += agent.connections.len(),
            None => agents.push((agent.name, agent.connections.len())),
        }
    }
    metrics.set_tunnels(&agents);
    metrics.set_wireguard(&process.wireguard.status(), process.wireguard.refused());
    metrics.set_handshake_failures(process.handshake_failures.totals());
    metrics.set_certificate_expiries(&process.certificates.expiries());
    metrics.set_guard_events(&process.guard.events.totals());
    metrics.set_quic_retries(process.quic.retries());
    let (issued, failed) = process.certificates.orders();
    metrics.set_acme_orders(issued, failed);
    let (memory, disk) = process.gateway.cache().stored_bytes();
    metrics.set_cache_bytes(memory, disk);
    metrics.encode()
}
