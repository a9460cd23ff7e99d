//! What a site's upstream runs in the background: re-resolving its name,
//! closing idle pooled connections on time, and saying once which address
//! Jellyfin's Known proxies must list.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{pool, Direct, Transport, Upstream};
use crate::dns::{self, Resolve, TtlBounds};

impl Upstream {
    /// Starts re-resolving the upstream's name (nothing for an IP address),
    /// counting each change of address in `changes`.
    pub fn start_dns(
        &self,
        lookup: Arc<dyn Resolve>,
        bounds: TtlBounds,
        shutdown: CancellationToken,
        changes: prometheus_client::metrics::counter::Counter,
    ) {
        if let Transport::Direct(Direct {
            name: Some(name),
            addresses,
            ..
        }) = &self.transport
        {
            tokio::spawn(dns::refresh(
                name.clone(),
                Arc::downgrade(addresses),
                lookup,
                bounds,
                shutdown,
                changes,
            ));
        }
    }

    /// Starts closing idle pooled connections on time (see `pool::sweep`).
    pub fn start_pool_sweep(&self, shutdown: CancellationToken) {
        tokio::spawn(pool::sweep(Arc::downgrade(&self.pool), shutdown));
    }

    /// Logs, once, the address drawbridge reaches the upstream from: Jellyfin
    /// ignores X-Forwarded-For unless that address is one of its Known proxies.
    pub async fn announce_known_proxy(&self, site: &str) {
        // Until it answers (the task ends with the process): Jellyfin at
        // home may come up long after drawbridge. Every 2 s for the first
        // minute, then every 10 s.
        let Transport::Direct(direct) = &self.transport else {
            // Through the tunnel, the agent says it (`agent/`).
            return;
        };
        let started = tokio::time::Instant::now();
        for attempt in 0u32.. {
            match direct.dial(self.connect_timeout).await {
                Ok(stream) => {
                    if let Ok(local) = stream.local_addr() {
                        tracing::info!(
                            site,
                            "drawbridge reaches the upstream from {ip}: add {ip} to Jellyfin's Known proxies \
                             (Dashboard → Networking), or Jellyfin will ignore X-Forwarded-For and see every client as {ip}",
                            ip = local.ip()
                        );
                    }
                    return;
                }
                Err(error) => {
                    if attempt == 0 {
                        tracing::warn!(site, %error, "upstream not reachable yet; will say which address to add to Jellyfin's Known proxies once it is");
                    }
                    let wait = if started.elapsed() < Duration::from_secs(60) {
                        Duration::from_secs(2)
                    } else {
                        Duration::from_secs(10)
                    };
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}
