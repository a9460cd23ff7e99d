//! The running server: binds listeners once, accepts connections with a span
//! each, swaps the routes snapshot and certificates on reload, and drains on
//! shutdown. Listeners are never rebound: a reload changes sites, not sockets.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access_log::AccessLog;
use crate::acme::AcmeManager;
use crate::cache::Cache;
use crate::config::Config;
use crate::connection::{self, ListenerKind, Shared};
use crate::dns::{HickoryLookup, Resolve};
use crate::guard::Guard;
use crate::metrics::Metrics;
use crate::pipeline::{Gateway, GatewayParts};
use crate::routes::Routes;
use crate::tls::challenges::Challenges;
use crate::tls::{TlsError, TlsStore};
use crate::tunnel::edge::Edge;

mod accept;
mod bind;
mod reload;

use accept::accept_loop;

use bind::{bind_all, bind_hint};
pub use reload::Reloader;

/// Why the server could not start or reload.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}{}", bind_hint(*addr, source))]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Certificates could not be prepared.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The access log file could not be opened.
    #[error("cannot open the access log: {0}")]
    AccessLog(#[source] std::io::Error),
    /// The system's DNS configuration could not be read.
    #[error("DNS: {0}")]
    Dns(String),
    /// The stored bans cannot be read.
    #[error(transparent)]
    Bans(#[from] crate::guard::ban::BansFileError),
    /// The tunnel's key or register cannot be had.
    #[error(transparent)]
    Tunnel(#[from] crate::tunnel::edge::EdgeError),
    /// A reload changed something that needs a restart.
    #[error("{0} changed; restart drawbridge to apply it (the running config is kept)")]
    NeedsRestart(&'static str),
}

/// A bound, ready server.
#[derive(Debug)]
pub struct Server {
    /// The admin listener (`/metrics`), when configured and bound.
    admin: Option<TcpListener>,
    /// The admin socket (`state_dir/admin.sock`), once opened.
    admin_socket: Option<tokio::net::UnixListener>,
    /// Plain-HTTP listeners, each with whether it expects PROXY headers.
    http: Vec<(TcpListener, bool)>,
    /// TLS listeners, likewise.
    https: Vec<(TcpListener, bool)>,
    /// HTTP/3 endpoints (UDP).
    quic: Vec<quinn::Endpoint>,
    /// The process's context (`connection::Shared`).
    shared: Arc<Shared>,
    acme: Arc<AcmeManager>,
    /// Stops background tasks (ACME, DNS) when the server stops.
    background: CancellationToken,
    lookup: Option<Arc<dyn Resolve>>,
    started_with: Config,
}

impl Server {
    /// Binds every listener and prepares certificates and routes.
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        let challenges = Arc::new(Challenges::default());
        let tls = {
            let config = config.clone();
            let challenges = challenges.clone();
            tokio::task::spawn_blocking(move || TlsStore::new(&config, challenges))
                .await
                .expect("certificate preparation does not panic")?
        };
        let http = bind_all(&config.server.http, &config.server.proxy_protocol)?;
        let https = bind_all(&config.server.https, &config.server.proxy_protocol)?;
        let https_port = https
            .first()
            .and_then(|l| l.0.local_addr().ok())
            .map(|a| a.port());
        let quic = crate::http3::bind(&config.server.quic, tls.quic_config()?, &config.limits)
            .map_err(|(addr, source)| ServerError::Bind { addr, source })?;
        // Every answer over TLS says where HTTP/3 is (the first endpoint's port).
        let alt_svc = quic
            .first()
            .and_then(|e| e.local_addr().ok())
            .and_then(|a| {
                http::HeaderValue::from_str(&format!("h3=\":{}\"; ma=86400", a.port())).ok()
            });
        let access_log = AccessLog::open(&config.log).map_err(ServerError::AccessLog)?;
        let kill = CancellationToken::new();
        let guard = Guard::new(&config.guard, &config.server.state_dir, kill.clone())?;
        let edge = Arc::new(Edge::open(&config.server.state_dir)?);
        let gate_memory = crate::gate::memory(&config.gate);
        let wireguard = crate::wireguard::Wireguard::new(&config);
        wireguard.apply(&config).await;
        edge.set_open(reload::uses_the_tunnel(&config));
        let metrics = Arc::new(Metrics::new());
        let admin = match config.server.admin_listen {
            Some(addr) => crate::admin_listener::bind(addr).await,
            None => None,
        };
        let handshake_failures = Arc::new(crate::tls::failures::HandshakeFailures::default());
        let gateway = Arc::new(Gateway::new(GatewayParts {
            routes: Routes::build(
                &config,
                &crate::routes::Process {
                    guard: &guard,
                    hub: &edge.hub,
                    wireguard: &wireguard,
                    metrics: &metrics,
                    gate: &gate_memory,
                },
            ),
            limits: config.limits.clone(),
            https_port,
            access_log: Arc::new(access_log),
            challenges: challenges.clone(),
            cache: Cache::new(&config.cache, &config.server.state_dir),
            alt_svc,
            unknown: handshake_failures.names.clone(),
            spool: crate::spool::Spool::new(
                &config.server.state_dir,
                config.limits.body_memory,
                config.limits.body_spool,
            ),
        }));
        let shared = Arc::new(Shared {
            gateway,
            tls: tls.server_config()?,
            certificates: tls.clone(),
            limits: config.limits.clone(),
            http: connection::HttpBuilders::new(&config.limits),
            kill,
            guard: guard.clone(),
            handshake_failures,
            quic: Arc::default(),
            tasks: TaskTracker::new(),
            edge,
            wireguard,
            metrics,
            gate: gate_memory,
        });
        let background = CancellationToken::new();
        let acme = AcmeManager::new(&config, tls.clone(), challenges, background.clone());
        let named = config.sites.iter().any(|s| s.upstream.needs_dns());
        let lookup = if named {
            let lookup = HickoryLookup::new(&config.server.resolvers).map_err(ServerError::Dns)?;
            Some(Arc::new(lookup) as Arc<dyn Resolve>)
        } else {
            None
        };
        Ok(Server {
            admin,
            admin_socket: None,
            http,
            https,
            quic,
            shared,
            acme,
            background,
            lookup,
            started_with: config,
        })
    }

    /// The bound plain-HTTP addresses (useful when a port was 0).
    pub fn http_addrs(&self) -> Vec<SocketAddr> {
        self.http
            .iter()
            .filter_map(|l| l.0.local_addr().ok())
            .collect()
    }

    /// The bound TLS addresses.
    pub fn https_addrs(&self) -> Vec<SocketAddr> {
        self.https
            .iter()
            .filter_map(|l| l.0.local_addr().ok())
            .collect()
    }

    /// The bound HTTP/3 (UDP) addresses.
    pub fn quic_addrs(&self) -> Vec<SocketAddr> {
        self.quic
            .iter()
            .filter_map(|e| e.local_addr().ok())
            .collect()
    }

    /// The local CA certificate, when a site uses `tls = "internal"`.
    pub fn ca_cert_path(&self) -> Option<std::path::PathBuf> {
        self.shared.certificates.ca_cert_path()
    }

    /// A handle that reloads this server's config while it runs.
    pub fn reloader(&self) -> Reloader {
        Reloader {
            process: self.shared.clone(),
            acme: self.acme.clone(),
            lookup: self.lookup.clone(),
            background: self.background.clone(),
            started_with: self.started_with.clone(),
        }
    }

    /// The admin listener's address, when it is open.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Each site's certificate expiry (first name, Unix seconds), for the
    /// sites that have one yet.
    pub fn certificate_expiries(&self) -> Vec<(String, u64)> {
        self.shared.certificates.expiries()
    }

    /// The edge cache.
    pub fn cache(&self) -> Arc<Cache> {
        self.shared.gateway.cache().clone()
    }

    /// The guard (bans, connection limits), for the admin socket.
    pub fn guard(&self) -> Arc<Guard> {
        self.shared.guard.clone()
    }

    /// Opens the admin socket now, as the user that will serve (after the
    /// privileges are dropped) and before readiness is told: a command run
    /// the moment `systemctl start` returns must find it, or it edits the
    /// stored bans behind the running process's back. `run` opens it
    /// otherwise.
    pub fn open_admin_socket(&mut self) {
        let path = crate::admin::socket_path(&self.started_with.server.state_dir);
        self.admin_socket = crate::admin::bind(&path);
    }

    /// Serves until `shutdown`, then stops accepting and lets in-flight
    /// requests finish for up to `[server] shutdown_grace`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let tracker = self.shared.tasks.clone();
        let sources = crate::admin::Sources {
            process: self.shared.clone(),
            token: self.started_with.server.admin_token.clone(),
        };
        if let Some(listener) = self.admin.take() {
            tokio::spawn(crate::admin_listener::serve(
                listener,
                sources.clone(),
                self.background.clone(),
            ));
        }
        let drain = CancellationToken::new();
        self.acme.apply(&self.started_with.sites);
        if self.admin_socket.is_none() {
            self.open_admin_socket();
        }
        if let Some(listener) = self.admin_socket.take() {
            tokio::spawn(crate::admin::serve(
                listener,
                crate::admin::socket_path(&self.started_with.server.state_dir),
                sources.clone(),
                self.background.clone(),
            ));
        }
        tokio::spawn(crate::admin::keep_history(
            self.shared.clone(),
            self.background.clone(),
        ));
        let failures = self.shared.handshake_failures.clone();
        let stop = self.background.clone();
        tokio::spawn(async move { failures.report(stop).await });
        tokio::spawn(self.shared.gateway.cache().clone().report(
            self.started_with.cache.stats_interval,
            self.background.clone(),
        ));
        self.shared.gateway.routes().start_background(
            self.lookup.as_ref(),
            self.started_with.server.dns_ttl,
            &self.background,
            None,
        );
        if self.started_with.guard.nftables {
            let ports = crate::guard::nftables::Ports {
                tcp: self
                    .http
                    .iter()
                    .chain(&self.https)
                    .filter_map(|(l, _)| l.local_addr().ok())
                    .map(|a| a.port())
                    .collect(),
                udp: self
                    .quic
                    .iter()
                    .filter_map(|e| e.local_addr().ok())
                    .map(|a| a.port())
                    .collect(),
            };
            // In the tracker: shutdown waits for the table's removal.
            tracker.spawn(crate::guard::nftables::mirror(
                self.shared.guard.bans.watch(),
                self.shared.edge.hub.homes(),
                ports,
                self.background.clone(),
            ));
        }
        let watch = self.shared.certificates.clone().run(
            self.started_with.server.cert_watch_interval,
            shutdown.clone(),
        );
        tracker.spawn(watch);
        let listeners = self
            .http
            .into_iter()
            .map(|(l, proxy_protocol)| {
                (
                    l,
                    ListenerKind {
                        tls: false,
                        proxy_protocol,
                    },
                )
            })
            .chain(self.https.into_iter().map(|(l, proxy_protocol)| {
                (
                    l,
                    ListenerKind {
                        tls: true,
                        proxy_protocol,
                    },
                )
            }));
        let accepting = TaskTracker::new();
        for (listener, kind) in listeners {
            accepting.spawn(accept_loop(
                listener,
                kind,
                self.shared.clone(),
                tracker.clone(),
                shutdown.clone(),
                drain.clone(),
            ));
        }
        for endpoint in std::mem::take(&mut self.quic) {
            accepting.spawn(crate::http3::accept_loop(
                endpoint,
                self.shared.clone(),
                tracker.clone(),
                shutdown.clone(),
                drain.clone(),
            ));
        }
        accepting.close();
        shutdown.cancelled().await;
        self.background.cancel();
        accepting.wait().await;
        tracing::info!("shutting down: no new connections; in-flight requests may finish");
        drain.cancel();
        tracker.close();
        let grace = self.started_with.server.shutdown_grace;
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!(grace = ?grace, "shutdown grace over; closing the remaining connections");
            self.shared.kill.cancel();
            tracker.wait().await;
        }
        // The bans on disk as they are now: a write that failed earlier
        // (disk full, read-only) gets one more try.
        let guard = self.shared.guard.clone();
        if let Ok(Err(error)) = tokio::task::spawn_blocking(move || guard.bans.flush()).await {
            tracing::error!(%error, "the bans could not be stored at shutdown: bans issued or lifted since the last good write are lost");
        }
    }
}
