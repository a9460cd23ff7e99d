//! The routes snapshot: the immutable, swappable view of the sites that the
//! pipeline reads. Built from a validated `Config`; replaced whole on reload, so a
//! request sees one config from start to end.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::cache::CacheRules;
use crate::client_ip::TrustedProxies;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, HostPattern, Preset, SiteConfig};
use crate::dns::{Resolve, TtlBounds};
use crate::filter::{self, Filter};
use crate::gate::Gate;
use crate::guard::Guard;
use crate::metrics::{Metrics, SiteMetrics};
use crate::tunnel::hub::Hub;
use crate::upstream::Upstream;

/// One site as the pipeline uses it.
#[derive(Debug)]
pub struct Site {
    /// Display name (its first host).
    pub name: String,
    /// Where requests go, with its connection pool.
    pub upstream: Upstream,
    /// Plain-HTTP requests are redirected to https.
    pub https_redirect: bool,
    /// Folder for `/.well-known/acme-challenge/` on port 80.
    pub acme_webroot: Option<PathBuf>,
    /// Filters, in the order `on_request` runs them.
    pub filters: Vec<Filter>,
    /// Largest request body.
    pub max_body: u64,
    /// Requests go to the access log.
    pub access_log: bool,
    /// How long the upstream may take to send response headers.
    pub response_timeout: Duration,
    /// The `jellyfin` preset applies (its Known proxies matter).
    pub jellyfin: bool,
    /// Which routes the edge cache serves.
    pub cache: CacheRules,
    /// Its request counters.
    pub metrics: SiteMetrics,
    /// Who gets past Jellyfin's login page (`gate/`).
    pub gate: Gate,
}

/// Sites by host name, and who may speak for clients.
#[derive(Debug, Default)]
pub struct Routes {
    sites: Vec<Arc<Site>>,
    exact: HashMap<String, Arc<Site>>,
    wildcard: HashMap<String, Arc<Site>>,
    /// Peers whose forwarded-for claims are kept.
    pub trusted_proxies: TrustedProxies,
}

impl Routes {
    /// Every site, in config order.
    pub fn sites(&self) -> &[Arc<Site>] {
        &self.sites
    }

    /// Builds the snapshot for `config` from the process's shared state.
    pub fn build(config: &Config, process: &Process<'_>) -> Routes {
        let mut routes = Routes {
            trusted_proxies: config.server.trusted_proxies.clone(),
            ..Routes::default()
        };
        for site in &config.sites {
            let shared = Arc::new(Site::new(site, config, process));
            routes.sites.push(shared.clone());
            for host in &site.hosts {
                match host {
                    HostPattern::Exact(name) => routes.exact.insert(name.clone(), shared.clone()),
                    HostPattern::Wildcard(suffix) => {
                        routes.wildcard.insert(suffix.clone(), shared.clone())
                    }
                };
            }
        }
        routes
    }

    /// Starts what the sites need in the background: re-resolving upstream
    /// names, closing idle upstream connections on time, and telling the user
    /// which address to add to Jellyfin's Known proxies — once per site and
    /// upstream, not again at a reload that left them as they were
    /// (`previous`). The DNS and pool tasks end when these routes are
    /// replaced and dropped.
    pub fn start_background(
        &self,
        lookup: Option<&Arc<dyn Resolve>>,
        bounds: TtlBounds,
        shutdown: &CancellationToken,
        previous: Option<&Routes>,
    ) {
        for site in &self.sites {
            site.upstream.start_pool_sweep(shutdown.clone());
            if let Some(lookup) = lookup {
                site.upstream.start_dns(
                    lookup.clone(),
                    bounds,
                    shutdown.clone(),
                    site.metrics.dns_changes.clone(),
                );
            }
            let told = previous.is_some_and(|previous| {
                previous.sites.iter().any(|p| {
                    p.jellyfin
                        && p.name == site.name
                        && p.upstream.authority() == site.upstream.authority()
                })
            });
            if site.jellyfin && !told && !site.upstream.is_tunnel() {
                let site = site.clone();
                let stop = shutdown.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        () = site.upstream.announce_known_proxy(&site.name) => {}
                        () = stop.cancelled() => {}
                    }
                });
            }
        }
    }

    /// The site serving `host` (normalised), exact names before wildcards.
    pub fn site(&self, host: &str) -> Option<&Arc<Site>> {
        self.exact.get(host).or_else(|| {
            let (_, parent) = host.split_once('.')?;
            self.wildcard.get(parent)
        })
    }
}

/// The process's state the routes are built from, beside the config: the
/// login filters and the gate share the guard, the tunnel's sites the hub,
/// every gate one memory; every site's counters live in the metrics.
#[derive(Debug, Clone, Copy)]
pub struct Process<'a> {
    /// Bans and connection limits.
    pub guard: &'a Arc<Guard>,
    /// The tunnel's links.
    pub hub: &'a Arc<Hub>,
    /// The router's own WireGuard.
    pub wireguard: &'a Arc<crate::wireguard::Wireguard>,
    /// The process's metrics.
    pub metrics: &'a Metrics,
    /// What the gates remember, across reloads.
    pub gate: &'a Arc<crate::gate::memory::Memory>,
}

impl Site {
    fn new(site: &SiteConfig, config: &Config, process: &Process<'_>) -> Site {
        let Process {
            guard,
            hub,
            wireguard,
            metrics,
            gate,
        } = *process;
        let trusted = &config.server.trusted_proxies;
        let trusted: Vec<ipnet::IpNet> = trusted
            .nets
            .iter()
            .chain(&trusted.cloudflare)
            .copied()
            .collect();
        let filters = filter::for_site(
            site,
            guard,
            &config.guard.failure_statuses,
            &trusted,
            config.guard.table_size as usize,
        );
        let mut exempt = site.access.allow.clone();
        exempt.extend_from_slice(&trusted);
        let gate_routes: Vec<&'static str> = crate::gate::Route::REFUSABLE
            .iter()
            .map(|route| route.word())
            .collect();
        let gate = Gate::new(
            site,
            &config.gate,
            gate.clone(),
            guard.clone(),
            exempt,
            metrics.gate(&site.name(), &gate_routes),
        );
        let metrics = metrics.site(&site.name());
        Site {
            name: site.name(),
            upstream: Upstream::new(site, hub, wireguard, metrics.health.clone()),
            metrics,
            gate,
            https_redirect: site.https_redirect,
            acme_webroot: site.acme_webroot.clone(),
            filters,
            max_body: site.max_body,
            access_log: site.access_log,
            response_timeout: site.response_timeout,
            jellyfin: site.preset == Preset::Jellyfin,
            cache: CacheRules::new(site),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Process, Routes};
    use crate::config::Config;
    use crate::guard::Guard;
    use std::path::Path;
    use std::sync::Arc;

    #[test]
    fn exact_names_win_over_wildcards() {
        let config = Config::parse(
            Path::new("t.toml"),
            r#"
            [[site]]
            hosts = ["*.home.lan"]
            upstream = "http://127.0.0.1:1"
            [[site]]
            host = "jelly.home.lan"
            upstream = "http://127.0.0.1:2"
            "#,
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let guard = Guard::new(&config.guard, dir.path(), Default::default()).unwrap();
        let hub = crate::tunnel::hub::Hub::new(crate::tunnel::register::Register::new(dir.path()));
        let process = Process {
            guard: &guard,
            hub: &hub,
            wireguard: &crate::wireguard::Wireguard::new(&config),
            metrics: &crate::metrics::Metrics::new(),
            gate: &crate::gate::memory(&config.gate),
        };
        let routes = Routes::build(&config, &process);
        assert_eq!(
            routes.site("jelly.home.lan").unwrap().upstream.authority(),
            "127.0.0.1:2"
        );
        assert_eq!(
            routes.site("music.home.lan").unwrap().upstream.authority(),
            "127.0.0.1:1"
        );
        assert!(routes.site("home.lan").is_none());
        assert!(routes.site("other.example").is_none());
        let a = routes.site("a.home.lan").unwrap();
        let b = routes.site("b.home.lan").unwrap();
        assert!(Arc::ptr_eq(a, b), "one site for all its names");
    }
}
