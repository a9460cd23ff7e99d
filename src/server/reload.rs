//! Reloading a running server's config (SIGHUP): certificates first, all or
//! nothing, then the routes snapshot swapped whole; what cannot change
//! without a restart is refused with the running config kept.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::ServerError;
use crate::acme::AcmeManager;
use crate::config::Config;
use crate::connection::Shared;
use crate::dns::Resolve;
use crate::routes::Routes;

/// Reloads the config of a running server (SIGHUP).
#[derive(Debug, Clone)]
pub struct Reloader {
    /// The process's context, borrowed: the gateway whose routes are
    /// swapped, the certificates, the guard, tunnels, gate memory, metrics.
    pub(super) process: Arc<Shared>,
    pub(super) acme: Arc<AcmeManager>,
    pub(super) lookup: Option<Arc<dyn Resolve>>,
    pub(super) background: CancellationToken,
    pub(super) started_with: Config,
}

impl Reloader {
    /// Installs `config`'s certificates and routes; on error the running config
    /// stays whole. Listener and limit changes need a restart.
    pub async fn reload(&self, config: Config) -> Result<(), ServerError> {
        let old = &self.started_with;
        if config.server.http != old.server.http
            || config.server.https != old.server.https
            || config.server.proxy_protocol != old.server.proxy_protocol
        {
            return Err(ServerError::NeedsRestart("[server] http/https listeners"));
        }
        if config.limits != old.limits {
            return Err(ServerError::NeedsRestart("[limits]"));
        }
        if config.log != old.log {
            return Err(ServerError::NeedsRestart("[log]"));
        }
        if config.server.resolvers != old.server.resolvers
            || config.server.dns_ttl != old.server.dns_ttl
        {
            return Err(ServerError::NeedsRestart(
                "[server] resolvers/dns_min_ttl/dns_max_ttl",
            ));
        }
        if config.cache != old.cache {
            return Err(ServerError::NeedsRestart("[cache]"));
        }
        if config.guard != old.guard {
            return Err(ServerError::NeedsRestart("[guard]"));
        }
        if config.acme != old.acme {
            return Err(ServerError::NeedsRestart("[acme]"));
        }
        if config.server.state_dir != old.server.state_dir {
            return Err(ServerError::NeedsRestart("[server] state_dir"));
        }
        if config.server.quic != old.server.quic {
            return Err(ServerError::NeedsRestart("[server] quic"));
        }
        if config.wireguard != old.wireguard {
            return Err(ServerError::NeedsRestart("[wireguard]"));
        }
        if config.server.user != old.server.user {
            return Err(ServerError::NeedsRestart("[server] user"));
        }
        if config.server.admin_listen != old.server.admin_listen
            || config.server.admin_token != old.server.admin_token
        {
            return Err(ServerError::NeedsRestart(
                "[server] admin_listen or admin_token",
            ));
        }
        let process = &self.process;
        let tls = process.certificates.clone();
        let for_tls = config.clone();
        tokio::task::spawn_blocking(move || tls.install(&for_tls))
            .await
            .expect("certificate preparation does not panic")?;
        let named = config.sites.iter().any(|s| s.upstream.needs_dns());
        if named && self.lookup.is_none() {
            return Err(ServerError::NeedsRestart(
                "an upstream given by host name (DNS was not started)",
            ));
        }
        process.wireguard.apply(&config).await;
        let routes = Routes::build(&config, &process.for_routes());
        process.edge.set_open(uses_the_tunnel(&config));
        routes.start_background(
            self.lookup.as_ref(),
            config.server.dns_ttl,
            &self.background,
            Some(&process.gateway.routes()),
        );
        process.gateway.swap_routes(routes);
        self.acme.apply(&config.sites);
        Ok(())
    }

    /// Orders a new ACME certificate for `site` (its first host) now.
    /// Returns false when no ACME site has that name.
    pub fn renew_now(&self, site: &str) -> bool {
        self.acme.renew_now(site)
    }

    /// Reopens the access log file (SIGUSR1, after logrotate).
    pub fn reopen_logs(&self) -> std::io::Result<()> {
        self.process.gateway.access_log().reopen()
    }
}

/// Whether a site of `config` goes through the tunnel: the tunnel's door is
/// there only then.
pub fn uses_the_tunnel(config: &Config) -> bool {
    config
        .sites
        .iter()
        .any(|site| matches!(site.upstream, crate::config::UpstreamTarget::Tunnel { .. }))
}
