//! A site's upstream: the fixed origin from the config, reached over a pooled
//! keep-alive HTTP/1.1 client. Owns connecting (bounded by `connect_timeout`),
//! waiting for response headers (bounded by `response_timeout`), the one retry
//! of a body-less idempotent request whose pooled connection turned out dead,
//! and turning failures into `ProxyError`s that name the upstream only in logs.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use http::uri::{self, Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::net::TcpStream;

use crate::body::BodyError;
use crate::config::{SiteConfig, UpstreamAddr};
use crate::dns::{self, Addresses, Current, Lookup, TtlBounds};
use crate::error::ProxyError;
use crate::pipeline::Body;

/// How long an idle pooled connection is kept: below Kestrel's 130 s keep-alive,
/// so drawbridge, not Jellyfin, closes it and a request never races the close.
const POOL_IDLE: Duration = Duration::from_secs(50);

/// How many idle connections the pool keeps. HTTP/1.1 carries one request
/// at a time, so a browser's burst of 100 poster requests over HTTP/2 needs
/// 100 upstream connections; a pool smaller than the bursts closes and reopens
/// connections on every burst (at 64, a third of the CPU of an HTTP/2 load went
/// to connect and close). Unused ones still close after `POOL_IDLE`.
const POOL_IDLE_MAX: usize = 256;

type Pool = Client<HttpConnector<Current>, Body>;

/// One site's upstream and its connection pool.
pub struct Upstream {
    /// The pool, and the address epoch it was made for.
    pool: ArcSwap<(u64, Pool)>,
    connector: HttpConnector<Current>,
    addresses: Arc<Addresses>,
    /// The host name to keep resolving; None for an IP address.
    name: Option<String>,
    authority: String,
    /// `authority` as the request URI carries it.
    uri_authority: Authority,
    addr: UpstreamAddr,
    connect_timeout: Duration,
    response_timeout: Duration,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("authority", &self.authority)
            .finish()
    }
}

impl Upstream {
    /// The upstream of `site`, with an empty pool.
    pub fn new(site: &SiteConfig) -> Upstream {
        let host = &site.upstream.host;
        let (addresses, name) = match host.parse::<IpAddr>() {
            Ok(ip) => (Addresses::fixed(ip), None),
            Err(_) => (Addresses::unresolved(), Some(host.clone())),
        };
        let mut connector =
            HttpConnector::new_with_resolver(Current::new(addresses.clone(), site.connect_timeout));
        connector.set_connect_timeout(Some(site.connect_timeout));
        connector.set_nodelay(true);
        connector.set_keepalive(Some(Duration::from_secs(60)));
        let authority = if host.contains(':') {
            format!("[{host}]:{}", site.upstream.port)
        } else {
            format!("{host}:{}", site.upstream.port)
        };
        Upstream {
            pool: ArcSwap::from_pointee((addresses.epoch(), pool(connector.clone()))),
            connector,
            addresses,
            name,
            uri_authority: authority
                .parse()
                .unwrap_or_else(|_| Authority::from_static("invalid")),
            authority,
            addr: site.upstream.clone(),
            connect_timeout: site.connect_timeout,
            response_timeout: site.response_timeout,
        }
    }

    /// `host:port`, for logs (never for pages).
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The upstream URI for a request target.
    pub fn uri(&self, path_and_query: Option<&PathAndQuery>) -> Uri {
        let mut parts = uri::Parts::default();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(self.uri_authority.clone());
        parts.path_and_query = Some(
            path_and_query
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        );
        Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"))
    }

    /// Sends `request` (its URI already pointing here) and returns the response
    /// head as soon as it arrives; the body streams on.
    pub async fn forward(&self, request: Request<Body>) -> Result<Response<Incoming>, ProxyError> {
        let replay = replayable(&request).then(|| {
            let mut copy = Request::new(());
            *copy.method_mut() = request.method().clone();
            *copy.uri_mut() = request.uri().clone();
            *copy.version_mut() = request.version();
            *copy.headers_mut() = request.headers().clone();
            copy
        });
        match self.send(request).await {
            Err(Failure::Client(error)) if replay.is_some() && stale_connection(&error) => {
                tracing::debug!(upstream = %self.authority, %error, "pooled connection was dead; retrying once on a fresh one");
                let again = replay
                    .expect("checked")
                    .map(|()| crate::pipeline::empty_body());
                self.send(again).await.map_err(|f| self.classify(f))
            }
            other => other.map_err(|f| self.classify(f)),
        }
    }

    /// Sends on the pool for the current addresses: when DNS moved the
    /// upstream, on a new pool (the old one closes as its last requests finish).
    fn request(&self, request: Request<Body>) -> ResponseFuture {
        let epoch = self.addresses.epoch();
        let current = self.pool.load();
        if current.0 == epoch {
            return current.1.request(request);
        }
        let fresh = pool(self.connector.clone());
        let sent = fresh.request(request);
        self.pool.store(Arc::new((epoch, fresh)));
        sent
    }

    /// Starts re-resolving the upstream's name (nothing for an IP address).
    pub fn start_dns(
        &self,
        lookup: Arc<dyn Lookup>,
        bounds: TtlBounds,
        shutdown: CancellationToken,
    ) {
        if let Some(name) = &self.name {
            tokio::spawn(dns::refresh(
                name.clone(),
                Arc::downgrade(&self.addresses),
                lookup,
                bounds,
                shutdown,
            ));
        }
    }

    /// Logs, once, the address drawbridge reaches the upstream from: Jellyfin
    /// ignores X-Forwarded-For unless that address is one of its Known proxies.
    pub async fn announce_known_proxy(&self, site: &str) {
        for attempt in 0..10u32 {
            match self.open().await {
                Ok(stream) => {
                    if let Ok(local) = stream.local_addr() {
                        tracing::info!(
                            site,
                            "drawbridge reaches the upstream from {ip}: add {ip} to Jellyfin's Known proxies \
                             (Dashboard → Networking), or Jellyfin will ignore X-Forwarded-For and see every visitor as {ip}",
                            ip = local.ip()
                        );
                    }
                    return;
                }
                Err(error) => {
                    if attempt == 0 {
                        tracing::warn!(site, %error, "upstream not reachable yet; will say which address to add to Jellyfin's Known proxies once it is");
                    }
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
            }
        }
    }

    async fn send(&self, request: Request<Body>) -> Result<Response<Incoming>, Failure> {
        match tokio::time::timeout(self.response_timeout, self.request(request)).await {
            Ok(result) => result.map_err(Failure::Client),
            Err(_) => Err(Failure::Timeout),
        }
    }

    fn classify(&self, failure: Failure) -> ProxyError {
        let addr = self.authority.clone();
        let error = match failure {
            Failure::Timeout => {
                return ProxyError::UpstreamTimeout {
                    addr,
                    after: self.response_timeout,
                }
            }
            Failure::Client(error) => error,
        };
        match body_error(&error) {
            Some(BodyError::TooLarge { .. }) => ProxyError::PayloadTooLarge,
            Some(BodyError::TooSlow) => ProxyError::BodyTooSlow,
            Some(BodyError::Client(_)) => ProxyError::ClientGone,
            None if error.is_connect() => ProxyError::UpstreamConnect {
                addr,
                source: error,
            },
            None => ProxyError::UpstreamFailed {
                addr,
                source: error,
            },
        }
    }

    /// A fresh TCP connection to the upstream (for WebSocket upgrades, which
    /// take the connection out of any pool).
    pub async fn open(&self) -> Result<TcpStream, ProxyError> {
        let addr = self.authority.clone();
        let fail = |source: std::io::Error| ProxyError::UpstreamIo {
            addr: addr.clone(),
            source,
        };
        let ips = {
            let mut resolve = self.connector_resolver();
            let name = "upstream"
                .parse()
                .map_err(|_| fail(std::io::ErrorKind::InvalidInput.into()))?;
            tower_service::Service::call(&mut resolve, name)
                .await
                .map_err(fail)?
        };
        let mut last = std::io::Error::from(std::io::ErrorKind::NotFound);
        for ip in ips {
            let target = SocketAddr::new(ip.ip(), self.addr.port);
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(target)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Ok(Err(error)) => last = error,
                Err(_) => last = std::io::ErrorKind::TimedOut.into(),
            }
        }
        Err(fail(last))
    }

    fn connector_resolver(&self) -> Current {
        Current::new(self.addresses.clone(), self.connect_timeout)
    }
}

/// A pool over `connector`.
fn pool(connector: HttpConnector<Current>) -> Pool {
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE)
        .pool_max_idle_per_host(POOL_IDLE_MAX)
        // drawbridge sets Host itself: the client's, not the upstream's.
        .set_host(false)
        .build(connector)
}

enum Failure {
    Client(hyper_util::client::legacy::Error),
    Timeout,
}

/// Safe to send twice: idempotent (RFC 9110 §9.2.2) and without a body to replay.
fn replayable<B: http_body::Body>(request: &Request<B>) -> bool {
    matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::DELETE
    ) && request.body().is_end_stream()
}

/// The request went out on a connection that closed before answering.
fn stale_connection(error: &hyper_util::client::legacy::Error) -> bool {
    if error.is_connect() {
        return false;
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(hyper) = cause.downcast_ref::<hyper::Error>() {
            return hyper.is_incomplete_message() || hyper.is_canceled() || hyper.is_closed();
        }
        source = cause.source();
    }
    false
}

/// The request body's own failure, if that is what ended the exchange.
fn body_error<'e>(error: &'e (dyn std::error::Error + 'static)) -> Option<&'e BodyError> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if let Some(body) = cause.downcast_ref::<BodyError>() {
            return Some(body);
        }
        source = cause.source();
    }
    None
}
