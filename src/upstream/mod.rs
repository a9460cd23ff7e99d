//! A site's upstream: the fixed address from the config, reached over a pooled
//! keep-alive HTTP/1.1 client; `forward.rs` is the forward step every request
//! leaves by, `dial.rs` connects, `limit.rs` is the connection cap, `pool.rs`
//! the keep-alive pool. Owns waiting for a connection and for response
//! headers (bounded by `response_timeout`), the one retry
//! of a body-less idempotent request whose pooled connection turned out dead,
//! and turning failures into `ProxyError`s that name the upstream only in logs.

mod background;
mod dial;
mod exchange;
mod forward;
pub mod head;
mod lent;
mod limit;
mod pool;
mod retry;
mod tls;
mod tunnel;

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::uri::{self, PathAndQuery};
use http::{Request, Response, Uri};

use crate::body::Body;
use crate::body::BodyError;
use crate::config::{SiteConfig, UpstreamTarget};
use crate::error::ProxyError;
use crate::tunnel::hub::Hub;

use crate::error::Busy;
use crate::metrics::Health;
use dial::Direct;
pub use lent::UpstreamBody;
use limit::{ConnPermit, Deadline, Limit, Share};
use pool::{Pool, PooledConn};
use retry::{replay_of, stale_connection};

/// How a site's requests reach home: the one choice between the ways out,
/// matched once in `send` and once in `upgrade`.
#[derive(Debug)]
enum Transport {
    /// HTTP/1.1 over TCP, plain or TLS, to the site's addresses (`dial.rs`).
    Direct(Direct),
    /// An agent's service through the edge's tunnels (`tunnel.rs`).
    Tunnel(Tunnel),
}

/// An agent's service, reached through the edge's tunnels.
#[derive(Debug, Clone)]
struct Tunnel {
    hub: Arc<Hub>,
    agent: String,
    service: String,
}

/// One site's upstream and its connection pool.
pub struct Upstream {
    pool: Arc<Pool>,
    limit: Arc<Limit>,
    transport: Transport,
    authority: String,
    connect_timeout: Duration,
    response_timeout: Duration,
    /// Where every way out records whether home answered, and how fast.
    health: Health,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("authority", &self.authority)
            .finish()
    }
}

impl fmt::Display for Upstream {
    /// As the config spells it: `http://host:port`, `https://…` or
    /// `tunnel:AGENT/SERVICE`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.transport {
            Transport::Tunnel(tunnel) => write!(f, "tunnel:{}/{}", tunnel.agent, tunnel.service),
            Transport::Direct(Direct {
                through: Some(through),
                tls,
                ..
            }) => {
                let scheme = if tls.is_some() { "https" } else { "http" };
                write!(
                    f,
                    "wireguard:{}/{scheme}://{}",
                    through.peer, self.authority
                )
            }
            Transport::Direct(Direct { tls: Some(_), .. }) => {
                write!(f, "https://{}", self.authority)
            }
            Transport::Direct(_) => write!(f, "http://{}", self.authority),
        }
    }
}

impl Upstream {
    /// The upstream of `site`, with an empty pool; a tunnel target goes
    /// through `hub`; whether home answers is recorded in `health`.
    pub fn new(
        site: &SiteConfig,
        hub: &Arc<Hub>,
        wireguard: &Arc<crate::wireguard::Wireguard>,
        health: Health,
    ) -> Upstream {
        let transport = match &site.upstream {
            UpstreamTarget::Http(addr) => Transport::Direct(Direct::new(addr, None)),
            UpstreamTarget::Wireguard { peer, addr } => Transport::Direct(Direct::new(
                addr,
                Some(dial::Through {
                    wireguard: wireguard.clone(),
                    peer: peer.clone(),
                }),
            )),
            UpstreamTarget::Tunnel { agent, service } => Transport::Tunnel(Tunnel {
                hub: hub.clone(),
                agent: agent.clone(),
                service: service.clone(),
            }),
        };
        let authority = match &site.upstream {
            UpstreamTarget::Http(addr) | UpstreamTarget::Wireguard { addr, .. }
                if addr.host.contains(':') =>
            {
                format!("[{}]:{}", addr.host, addr.port)
            }
            UpstreamTarget::Http(addr) | UpstreamTarget::Wireguard { addr, .. } => {
                format!("{}:{}", addr.host, addr.port)
            }
            tunnel => tunnel.to_string(),
        };
        Upstream {
            pool: Arc::default(),
            limit: Limit::new(
                site.upstream_max_conns as usize,
                site.upstream_max_conns_per_client as usize,
            ),
            transport,
            authority,
            connect_timeout: site.connect_timeout,
            response_timeout: site.response_timeout,
            health,
        }
    }

    /// Records what a way out to home learnt: an answer's head after
    /// `elapsed`, or home not answering (a busy cap or a slow client says
    /// nothing about home).
    fn record<T>(&self, result: &Result<T, ProxyError>, elapsed: Duration) {
        match result {
            Ok(_) => self.health.record(Some(elapsed)),
            Err(error) if error.home_unreachable() => self.health.record(None),
            Err(_) => {}
        }
    }

    /// Whether requests go through the tunnel (the agent then says which
    /// address Jellyfin sees).
    pub fn is_tunnel(&self) -> bool {
        matches!(self.transport, Transport::Tunnel(_))
    }

    /// The agent whose tunnel requests go through; None when direct.
    pub fn agent(&self) -> Option<&str> {
        match &self.transport {
            Transport::Tunnel(tunnel) => Some(&tunnel.agent),
            Transport::Direct(_) => None,
        }
    }

    /// How long home may take to send an answer's head.
    pub fn response_timeout(&self) -> Duration {
        self.response_timeout
    }

    /// `host:port`, for logs (never for pages).
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The request target to send upstream (origin form: the connection
    /// already says which server it is; the Host header is set separately).
    pub fn uri(&self, path_and_query: Option<&PathAndQuery>) -> Uri {
        let mut parts = uri::Parts::default();
        if let Transport::Tunnel(tunnel) = &self.transport {
            // HTTP/2 to the agent: its `:authority` names the service.
            parts.scheme = Some(uri::Scheme::HTTP);
            parts.authority = tunnel.service.parse().ok();
        }
        parts.path_and_query = Some(
            path_and_query
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        );
        Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"))
    }

    /// Sends `request` (already the upstream's head, see `forward`) for
    /// `client` and returns the response head as soon as it arrives; the
    /// body streams on. Waits up to `response_timeout` for a connection under
    /// the cap (503 beyond), then up to `response_timeout` for the head (504
    /// beyond).
    async fn send_rewritten(
        &self,
        request: Request<Body>,
        client: IpAddr,
    ) -> Result<Response<UpstreamBody>, ProxyError> {
        if let Some(silent) = self.silent_peer() {
            let silent = Err(silent);
            self.record(&silent, Duration::ZERO);
            return silent;
        }
        let deadline = Deadline::after(self.response_timeout, client);
        let share = self
            .limit
            .share(client, &deadline)
            .await
            .map_err(|busy| self.classify(Failure::Busy(busy)))?;
        let sent = tokio::time::Instant::now();
        let answered = self.forward_once_more(request, &deadline).await;
        self.record(&answered, sent.elapsed());
        let mut response = answered?;
        response.body_mut().hold(share);
        Ok(response)
    }

    /// `forward` under a share already held: one retry of a replayable
    /// request whose pooled connection turned out dead, or whose agent
    /// could not reach its service while another agent of the name is up.
    async fn forward_once_more(
        &self,
        request: Request<Body>,
        deadline: &Deadline,
    ) -> Result<Response<UpstreamBody>, ProxyError> {
        let replay = replay_of(&request);
        match self.send(request, deadline).await {
            // A pooled connection that was dead, or a tunnel link that died
            // under the stream (an agent's network changed, a link closed
            // past the key's limit): nothing was answered.
            Err(Failure::Exchange(error))
                if replay.is_some() && (stale_connection(&error) || self.is_tunnel()) =>
            {
                tracing::debug!(upstream = %self.authority, %error, "the connection died before answering; sending once more");
            }
            Err(Failure::ServiceDown { why, pin })
                if replay.is_some() && self.another_agent_up(&pin) =>
            {
                tracing::info!(upstream = %self.authority, why, "sending the request once more, to another agent");
            }
            other => return other.map_err(|f| self.classify(f)),
        }
        let again = replay.expect("checked").map(|()| crate::body::empty_body());
        self.send(again, deadline)
            .await
            .map_err(|f| self.classify(f))
    }

    /// A connection under the cap (waiting up to `deadline`), then one
    /// exchange on it within `response_timeout`.
    async fn send(
        &self,
        request: Request<Body>,
        deadline: &Deadline,
    ) -> Result<Response<UpstreamBody>, Failure> {
        let direct = match &self.transport {
            Transport::Tunnel(tunnel) => {
                return self.send_tunneled(tunnel, request, deadline).await
            }
            Transport::Direct(direct) => direct,
        };
        // Read before connecting: a connection made while DNS moves is
        // pooled under the older epoch and retired at the next checkout.
        let epoch = direct.addresses.epoch();
        let acquired = self
            .acquire(Some(epoch), deadline)
            .await
            .map_err(Failure::Busy)?;
        match tokio::time::timeout(
            self.response_timeout,
            self.exchange(direct, request, acquired, epoch),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(Failure::Timeout),
        }
    }

    /// A `wireguard:` upstream whose peer has gone silent: a 502 at once,
    /// rather than a request sent on a pooled connection into a tunnel
    /// nobody answers (a connect timeout or a response timeout later).
    fn silent_peer(&self) -> Option<ProxyError> {
        let Transport::Direct(direct) = &self.transport else {
            return None;
        };
        direct.silent().map(|source| ProxyError::UpstreamConnect {
            addr: self.authority.clone(),
            source,
        })
    }

    fn classify(&self, failure: Failure) -> ProxyError {
        let addr = self.authority.clone();
        match failure {
            Failure::Busy(busy) => ProxyError::UpstreamBusy { addr, busy },
            Failure::Timeout => ProxyError::UpstreamTimeout {
                addr,
                after: self.response_timeout,
            },
            Failure::Connect(source) => ProxyError::UpstreamConnect { addr, source },
            Failure::Tunnel(why) | Failure::ServiceDown { why, .. } => {
                ProxyError::UpstreamTunnel { addr, why }
            }
            Failure::Exchange(error) => match body_error(&error) {
                Some(BodyError::TooLarge { .. }) => ProxyError::PayloadTooLarge,
                Some(BodyError::TooSlow) => ProxyError::BodyTooSlow,
                Some(BodyError::Client(_)) => ProxyError::ClientGone,
                None => ProxyError::UpstreamFailed {
                    addr,
                    source: error,
                },
            },
        }
    }
}

/// A connection's place under the cap and its client's share, held by a
/// WebSocket for as long as it is open.
#[derive(Debug)]
pub struct Hold {
    _share: Share,
    _permit: ConnPermit,
    /// Through the tunnel: the stream's place on its link.
    _stream: Option<crate::tunnel::hub::StreamHold>,
}

/// What a request got to go out on.
enum Acquired {
    /// An idle pooled connection.
    Pooled(PooledConn),
    /// The place for a new one.
    Permit(ConnPermit),
}

enum Failure {
    /// No turn under the cap before the deadline.
    Busy(Busy),
    /// No connection could be made.
    Connect(io::Error),
    /// The connection broke the exchange (or the request body failed).
    Exchange(hyper::Error),
    Timeout,
    /// The tunnel had no connection up, or the agent refused.
    Tunnel(String),
    /// The agent whose key has `pin` could not connect to its service:
    /// nothing reached it, so another agent may be asked.
    ServiceDown {
        /// Why, for the log.
        why: String,
        /// The agent's key's pin.
        pin: String,
    },
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
