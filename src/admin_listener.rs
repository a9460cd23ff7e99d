//! The admin listener (`[server] admin_listen`, 127.0.0.1:9180 by default):
//! `GET /metrics` in the OpenMetrics text format, for Prometheus. Loopback
//! unless the config names another address, and then only with
//! `admin_token` (`Authorization: Bearer …`). A port already taken is a
//! warning, not a refusal to start: the sites matter more than the metrics.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::body::{full_body, Body};
use crate::cache::Cache;
use crate::guard::Guard;
use crate::metrics::Metrics;
use crate::tls::failures::HandshakeFailures;
use crate::tls::TlsStore;
use crate::tunnel::hub::Hub;

/// What the admin listener reads.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// Connections and bans.
    pub guard: Arc<Guard>,
    /// Cache outcomes.
    pub cache: Arc<Cache>,
    /// Tunnel connections.
    pub hub: Arc<Hub>,
    /// Failed TLS handshakes.
    pub handshake_failures: Arc<HandshakeFailures>,
    /// Certificates and their expiry.
    pub certificates: Arc<TlsStore>,
    /// The token asked for, if any.
    pub token: Option<String>,
}

/// Binds `addr`; None (with a warning) when it cannot be had.
pub async fn bind(addr: SocketAddr) -> Option<TcpListener> {
    match TcpListener::bind(addr).await {
        Ok(listener) => {
            if let Ok(local) = listener.local_addr() {
                tracing::info!(admin = %local, "admin listener open (GET /metrics)");
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
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        let sources = sources.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let sources = sources.clone();
                async move { Ok::<_, Infallible>(answer(&request, &sources)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer(request: &Request<Incoming>, sources: &Sources) -> Response<Body> {
    let status = |code: StatusCode, text: &'static str| {
        let mut response = Response::new(full_body(text));
        *response.status_mut() = code;
        response
    };
    if let Some(token) = &sources.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        // Compared in constant time: both sides through one HMAC, the tags by ring.
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"drawbridge admin token");
        let expected = ring::hmac::sign(&key, token.as_bytes());
        let right = given.is_some_and(|given| {
            ring::hmac::verify(&key, given.as_bytes(), expected.as_ref()).is_ok()
        });
        if !right {
            return status(StatusCode::UNAUTHORIZED, "a bearer token is needed\n");
        }
    }
    if request.method() != Method::GET {
        return status(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    if request.uri().path() != "/metrics" {
        return status(StatusCode::NOT_FOUND, "see /metrics\n");
    }
    let mut response = Response::new(full_body(scrape(sources)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

/// The metrics text, the gauges read from their sources first.
fn scrape(sources: &Sources) -> String {
    let metrics = &sources.metrics;
    metrics
        .connections
        .set(sources.guard.open_connections() as i64);
    metrics
        .bans
        .set(sources.guard.bans.list(tokio::time::Instant::now()).len() as i64);
    let counts = sources.cache.counts();
    for (counter, now) in metrics.cache.iter().zip(counts) {
        counter.inc_by(now.saturating_sub(counter.get()));
    }
    let mut agents: Vec<(String, usize)> = Vec::new();
    for agent in sources.hub.status() {
        match agents.iter_mut().find(|(name, _)| *name == agent.name) {
            Some((_, count)) => *count += agent.connections.len(),
            None => agents.push((agent.name, agent.connections.len())),
        }
    }
    metrics.set_tunnels(&agents);
    metrics.set_handshake_failures(sources.handshake_failures.totals());
    metrics.set_certificate_expiries(&sources.certificates.expiries());
    metrics.set_guard_events(&sources.guard.events.totals());
    let (issued, failed) = sources.certificates.orders();
    metrics.set_acme_orders(issued, failed);
    let (memory, disk) = sources.cache.stored_bytes();
    metrics.set_cache_bytes(memory, disk);
    metrics.encode()
}
