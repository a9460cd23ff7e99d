//! Upstreams given by name (a home on dynamic DNS): the name is resolved in
//! the background, A and AAAA together, and again when the answer's TTL runs
//! out, clamped to `[server] dns_min_ttl` and `dns_max_ttl`. Requests never wait
//! for DNS: connections take the latest addresses from an `ArcSwap` (the
//! upstream then races them Happy-Eyeballs style, alternating IPv6 and IPv4,
//! and moves on from an address that refuses). A failed lookup keeps the last
//! good addresses, is logged once, and is retried with backoff. A change bumps
//! an epoch that tells the upstream to retire its idle pooled connections;
//! streams in flight finish.
//!
//! The refresh task holds the state weakly and ends once its upstream is gone
//! (a reload replaced it).

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;
use tokio::sync::Notify;

/// A lookup's result: the addresses and how long they may be kept.
pub type Resolved = Result<(Vec<IpAddr>, Duration), String>;

/// A lookup in progress.
pub type Resolving<'a> = Pin<Box<dyn Future<Output = Resolved> + Send + 'a>>;

/// How a name is looked up (hickory in production, a fake in unit tests).
pub trait Resolve: Send + Sync + std::fmt::Debug + 'static {
    /// The addresses of `name` and how long they may be kept.
    fn lookup(&self, name: &str) -> Resolving<'_>;
}

/// hickory's resolver: the system's name servers or `[server] resolvers`, with
/// its own cache off (drawbridge keeps the answer and its TTL itself).
pub struct HickoryLookup(TokioResolver);

impl std::fmt::Debug for HickoryLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HickoryLookup")
    }
}

impl HickoryLookup {
    /// A resolver asking `servers` (`[]`: the system's configuration).
    pub fn new(servers: &[SocketAddr]) -> Result<HickoryLookup, String> {
        let mut builder = if servers.is_empty() {
            TokioResolver::builder_tokio()
                .map_err(|e| format!("cannot read the system's DNS configuration: {e}"))?
        } else {
            let name_servers = servers
                .iter()
                .map(|addr| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = addr.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = addr.port();
                    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
                })
                .collect();
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(name_servers),
                TokioRuntimeProvider::default(),
            )
        };
        let options = builder.options_mut();
        options.cache_size = 0;
        options.ip_strategy = hickory_resolver::config::LookupIpStrategy::Ipv4AndIpv6;
        options.timeout = Duration::from_secs(3);
        options.attempts = 2;
        builder
            .build()
            .map(HickoryLookup)
            .map_err(|e| e.to_string())
    }
}

impl Resolve for HickoryLookup {
    fn lookup(&self, name: &str) -> Resolving<'_> {
        // A trailing dot: the configured name is absolute, no search domains.
        let fqdn = format!("{}.", name.trim_end_matches('.'));
        Box::pin(async move {
            let found = self
                .0
                .lookup_ip(fqdn.as_str())
                .await
                .map_err(|e| e.to_string())?;
            let ttl = found
                .as_lookup()
                .answers()
                .iter()
                .map(|r| r.ttl)
                .min()
                .unwrap_or(0);
            let ips: Vec<IpAddr> = found.iter().collect();
            if ips.is_empty() {
                return Err("no A or AAAA record".to_string());
            }
            Ok((ips, Duration::from_secs(u64::from(ttl))))
        })
    }
}

/// TTL bounds (`[server] dns_min_ttl`, `dns_max_ttl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtlBounds {
    /// Never re-resolve sooner than this.
    pub min: Duration,
    /// Never keep an answer longer than this, whatever its TTL.
    pub max: Duration,
}

/// The current addresses of one upstream.
#[derive(Debug)]
pub struct Addresses {
    current: ArcSwap<Vec<IpAddr>>,
    /// Bumped when the addresses change after the first answer.
    epoch: AtomicU64,
    first: Notify,
}

impl Addresses {
    /// Addresses known from the start (an IP literal upstream).
    pub fn fixed(ip: IpAddr) -> Arc<Addresses> {
        Arc::new(Addresses {
            current: ArcSwap::from_pointee(vec![ip]),
            epoch: AtomicU64::new(0),
            first: Notify::new(),
        })
    }

    /// Addresses to be found by a refresh task.
    pub fn unresolved() -> Arc<Addresses> {
        Arc::new(Addresses {
            current: ArcSwap::from_pointee(Vec::new()),
            epoch: AtomicU64::new(0),
            first: Notify::new(),
        })
    }

    /// The latest addresses.
    pub fn get(&self) -> Arc<Vec<IpAddr>> {
        self.current.load_full()
    }

    /// The latest addresses; until the first answer arrives, waits for it,
    /// at most `first_wait`.
    pub async fn resolved(&self, first_wait: Duration) -> io::Result<Arc<Vec<IpAddr>>> {
        let deadline = tokio::time::Instant::now() + first_wait;
        loop {
            let waiting = self.first.notified();
            let ips = self.get();
            if !ips.is_empty() {
                return Ok(ips);
            }
            if tokio::time::timeout_at(deadline, waiting).await.is_err() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "the upstream name has not resolved yet",
                ));
            }
        }
    }

    /// Changes every time the addresses change.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    fn publish(&self, ips: Vec<IpAddr>) -> bool {
        let old = self.current.load();
        if **old == ips {
            return false;
        }
        let first = old.is_empty();
        self.current.store(Arc::new(ips));
        if first {
            self.first.notify_waiters();
        } else {
            self.epoch.fetch_add(1, Ordering::AcqRel);
        }
        true
    }
}

/// Keeps `addresses` of `name` fresh until the upstream is dropped or `shutdown`.
/// Each change of the answer after the first is counted in `changes`.
pub async fn refresh(
    name: String,
    addresses: Weak<Addresses>,
    lookup: Arc<dyn Resolve>,
    bounds: TtlBounds,
    shutdown: tokio_util::sync::CancellationToken,
    changes: prometheus_client::metrics::counter::Counter,
) {
    let mut failures = 0u32;
    loop {
        let wait = match lookup.lookup(&name).await {
            Ok((mut ips, ttl)) => {
                let Some(addresses) = addresses.upgrade() else {
                    return;
                };
                ips.sort_unstable();
                ips.dedup();
                if failures > 0 {
                    tracing::info!(upstream = %name, "DNS answers again");
                }
                failures = 0;
                let epoch = addresses.epoch();
                if addresses.publish(ips.clone()) {
                    if addresses.epoch() != epoch {
                        changes.inc();
                    }
                    tracing::info!(upstream = %name, addresses = ?ips, ttl_secs = ttl.as_secs(), "upstream address");
                }
                ttl.clamp(bounds.min, bounds.max)
            }
            Err(error) => {
                if addresses.strong_count() == 0 {
                    return;
                }
                failures += 1;
                if failures == 1 {
                    // Once, not per request: the last good addresses keep serving.
                    tracing::warn!(upstream = %name, %error, "cannot resolve the upstream; keeping its last known addresses and retrying");
                }
                (bounds.min * 2u32.saturating_pow(failures.min(8))).min(bounds.max)
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{refresh, Addresses, Resolve, Resolved, Resolving, TtlBounds};
    use std::net::IpAddr;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// Answers from a script, one entry per lookup; the last repeats.
    #[derive(Debug)]
    struct Script(Mutex<Vec<Resolved>>);

    impl Resolve for Script {
        fn lookup(&self, _: &str) -> Resolving<'_> {
            let mut script = self.0.lock().unwrap();
            let next = if script.len() > 1 {
                script.remove(0)
            } else {
                script[0].clone()
            };
            Box::pin(async move { next })
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn bounds() -> TtlBounds {
        TtlBounds {
            min: Duration::from_secs(5),
            max: Duration::from_secs(300),
        }
    }

    /// Addresses kept fresh from `script` by a running `refresh` task.
    fn watch(script: Script) -> (Arc<Addresses>, tokio::task::JoinHandle<()>) {
        watch_counting(script, Default::default())
    }

    fn watch_counting(
        script: Script,
        changes: prometheus_client::metrics::counter::Counter,
    ) -> (Arc<Addresses>, tokio::task::JoinHandle<()>) {
        let addresses = Addresses::unresolved();
        let task = tokio::spawn(refresh(
            "home.test".into(),
            Arc::downgrade(&addresses),
            Arc::new(script),
            bounds(),
            Default::default(),
            changes,
        ));
        (addresses, task)
    }

    #[tokio::test(start_paused = true)]
    async fn switches_after_the_ttl_not_before() {
        let script = Script(Mutex::new(vec![
            Ok((vec![ip("192.0.2.1")], Duration::from_secs(60))),
            Ok((vec![ip("192.0.2.2")], Duration::from_secs(60))),
        ]));
        let changes = prometheus_client::metrics::counter::Counter::default();
        let (addresses, task) = watch_counting(script, changes.clone());
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(*addresses.get(), [ip("192.0.2.1")]);
        assert_eq!(changes.get(), 0, "the first answer is not a change");
        tokio::time::sleep(Duration::from_secs(58)).await;
        assert_eq!(*addresses.get(), [ip("192.0.2.1")], "not before the TTL");
        assert_eq!(addresses.epoch(), 0);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(*addresses.get(), [ip("192.0.2.2")], "after the TTL");
        assert_eq!(
            addresses.epoch(),
            1,
            "pooled connections to the old address are retired"
        );
        assert_eq!(changes.get(), 1, "drawbridge_upstream_dns_changes_total");
        drop(addresses);
        tokio::time::sleep(Duration::from_secs(301)).await;
        assert!(task.is_finished(), "the task ends with its upstream");
    }

    #[tokio::test(start_paused = true)]
    async fn ttls_are_clamped_and_failures_keep_the_last_answer() {
        let script = Script(Mutex::new(vec![
            Ok((vec![ip("192.0.2.1")], Duration::from_secs(0))),
            Err("SERVFAIL".into()),
            Ok((
                vec![ip("2001:db8::1"), ip("192.0.2.3")],
                Duration::from_secs(86_400),
            )),
            Ok((vec![ip("192.0.2.4")], Duration::from_secs(60))),
        ]));
        let (addresses, _task) = watch(script);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(*addresses.get(), [ip("192.0.2.1")]);
        // TTL 0 is raised to the 5 s minimum; the failure then keeps 192.0.2.1.
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(
            *addresses.get(),
            [ip("192.0.2.1")],
            "a failed lookup keeps the last good answer"
        );
        // The retry after backoff (10 s) brings both families.
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(*addresses.get(), [ip("192.0.2.3"), ip("2001:db8::1")]);
        // A day's TTL is cut to the 300 s maximum.
        tokio::time::sleep(Duration::from_secs(299)).await;
        assert_eq!(*addresses.get(), [ip("192.0.2.3"), ip("2001:db8::1")]);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(*addresses.get(), [ip("192.0.2.4")]);
    }

    /// Log lines written while the test runs on this thread.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_resolver_is_logged_once_then_its_recovery() {
        let capture = Capture::default();
        let writer = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _log = tracing::subscriber::set_default(subscriber);
        let script = Script(Mutex::new(vec![
            Ok((vec![ip("192.0.2.1")], Duration::from_secs(5))),
            Err("SERVFAIL".into()),
            Err("SERVFAIL".into()),
            Err("SERVFAIL".into()),
            Err("SERVFAIL".into()),
            Ok((vec![ip("192.0.2.1")], Duration::from_secs(60))),
        ]));
        let (addresses, _task) = watch(script);
        // Four failures with backoff (10, 20, 40, 80 s), then an answer.
        tokio::time::sleep(Duration::from_secs(200)).await;
        let log = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            log.matches("cannot resolve the upstream").count(),
            1,
            "once, not per failure: {log}"
        );
        assert_eq!(log.matches("DNS answers again").count(), 1, "{log}");
        assert_eq!(*addresses.get(), [ip("192.0.2.1")]);
    }
}
