//! Automatic certificates: for every site with `tls = "acme"`, a background
//! task keeps a valid certificate installed. At start it reuses the stored
//! certificate when it is valid and covers the site's names (so a restart never
//! orders again); it orders when there is none, renews once a third of the
//! life remains, tries each configured challenge type in turn, backs off after
//! failures, keeps the old certificate serving meanwhile, and warns loudly in
//! the last week before expiry.
//!
//! Owns ordering and scheduling; `tls` owns serving, `store` the files.

pub mod order;
pub mod schedule;
pub mod store;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use instant_acme::{Account, AccountCredentials, ExternalAccountKey, NewAccount};
use tokio::sync::{Notify, OnceCell};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{Acme, HostPattern, SiteConfig, TlsSource};
use crate::tls::challenges::Challenges;
use crate::tls::TlsStore;
use order::{obtain, OrderError, OrderPlan};
use store::Stored;

/// Keeps every ACME site's certificate valid.
pub struct AcmeManager {
    config: Acme,
    state_dir: PathBuf,
    tls: Arc<TlsStore>,
    challenges: Arc<Challenges>,
    account: OnceCell<Account>,
    tasks: Mutex<JoinSet<()>>,
    renew: Mutex<HashMap<String, Arc<Notify>>>,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for AcmeManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcmeManager")
            .field("directory", &self.config.directory)
            .finish()
    }
}

/// Why the ACME account could not be had.
#[derive(Debug, thiserror::Error)]
enum AccountError {
    #[error(transparent)]
    Acme(#[from] instant_acme::Error),
    #[error("account file: {0}")]
    Io(#[from] std::io::Error),
    #[error("account file: {0}")]
    Json(#[from] serde_json::Error),
    #[error("External Account Binding key is not base64url")]
    Eab,
}

impl AcmeManager {
    /// A manager for `config`'s ACME settings; nothing runs until `apply`.
    pub fn new(
        config: &crate::config::Config,
        tls: Arc<TlsStore>,
        challenges: Arc<Challenges>,
        shutdown: CancellationToken,
    ) -> Arc<AcmeManager> {
        Arc::new(AcmeManager {
            config: config.acme.clone(),
            state_dir: config.server.state_dir.clone(),
            tls,
            challenges,
            account: OnceCell::new(),
            tasks: Mutex::new(JoinSet::new()),
            renew: Mutex::new(HashMap::new()),
            shutdown,
        })
    }

    /// Starts one task per ACME site in `sites`, replacing the previous tasks
    /// (a reload). An order in progress is abandoned and started again.
    pub fn apply(self: &Arc<Self>, sites: &[SiteConfig]) {
        let mut tasks = self.tasks.lock().expect("acme tasks lock");
        tasks.abort_all();
        let mut renew = self.renew.lock().expect("acme renew lock");
        renew.clear();
        for site in sites.iter().filter(|s| s.tls == TlsSource::Acme) {
            let poke = Arc::new(Notify::new());
            renew.insert(site.name(), poke.clone());
            let manager = self.clone();
            let hosts = site.hosts.clone();
            let span = tracing::info_span!("acme", site = %site.name());
            tasks.spawn(tracing::Instrument::instrument(
                async move { manager.keep(hosts, poke).await },
                span,
            ));
        }
    }

    /// Orders a new certificate for `site` now, whatever the schedule says.
    /// Returns false when no ACME site has that name.
    pub fn renew_now(&self, site: &str) -> bool {
        match self.renew.lock().expect("acme renew lock").get(site) {
            Some(poke) => {
                poke.notify_one();
                true
            }
            None => false,
        }
    }

    async fn keep(self: Arc<Self>, hosts: Vec<HostPattern>, poke: Arc<Notify>) {
        let name = hosts[0].to_string();
        let dir = store::site_dir(&self.state_dir, &hosts);
        let mut current = match store::load(&dir) {
            Ok(stored) => stored.filter(|s| s.covers(&hosts)),
            Err(error) => {
                tracing::warn!(%error, "cannot read the stored certificate; ordering a new one");
                None
            }
        };
        if let Some(stored) = &current {
            // Served at once; the loop below decides whether it needs renewing.
            self.tls.install_acme(&hosts, stored.key.clone());
        }
        let mut failures = 0u32;
        loop {
            let now = SystemTime::now();
            // When an order is due, and when to look again without ordering
            // (the CA's ARI Retry-After, or at least daily: clocks jump).
            let (due, recheck) = match (&current, failures) {
                (_, n) if n > 0 => (schedule::jitter(schedule::backoff(n), nanos(now)), None),
                (None, _) => (Duration::ZERO, None),
                (Some(c), _) => {
                    let due = schedule::until(schedule::renew_at(c.not_before, c.not_after), now);
                    match self.renewal_info(c, now).await {
                        Some((window_pick, recheck)) => (due.min(window_pick), Some(recheck)),
                        None => (due, None),
                    }
                }
            };
            if let Some(c) = &current {
                let left = schedule::until(c.not_after, now);
                if left < schedule::WARN_BEFORE_EXPIRY {
                    tracing::warn!(
                        expires_in_hours = left.as_secs() / 3600,
                        "CERTIFICATE FOR {name} EXPIRES SOON and could not be renewed yet"
                    );
                }
                if failures == 0 {
                    tracing::info!(
                        "certificate valid until {}; renewal in {} days",
                        date(c.not_after),
                        due.as_secs() / 86_400
                    );
                }
            }
            let nap = due
                .min(recheck.unwrap_or(Duration::MAX))
                .min(Duration::from_secs(86_400));
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                () = poke.notified() => {}
                () = tokio::time::sleep(nap) => {
                    if nap < due {
                        continue;
                    }
                }
            }
            self.tls.order_started(&hosts);
            let ordered = self.order(&hosts, &name).await;
            self.tls.count_order(ordered.is_ok());
            self.tls
                .order_ended(&name, ordered.as_ref().err().map(String::as_str));
            if ordered.is_err() {
                // Handshakes for a site without a certificate are refused at
                // once until the next try (success installs one).
                self.tls.order_failed(&hosts);
            }
            match ordered {
                Ok(stored) => {
                    tracing::info!(
                        "got the certificate for {name}, valid until {}",
                        date(stored.not_after)
                    );
                    self.tls.install_acme(&hosts, stored.key.clone());
                    current = Some(stored);
                    failures = 0;
                    if let Err(error) = store::note_order(&dir, None) {
                        tracing::warn!(%error, "could not clear the last order error");
                    }
                }
                Err(message) => {
                    failures += 1;
                    let retry = schedule::backoff(failures);
                    let serving = if current.is_some() {
                        "the current certificate keeps serving"
                    } else {
                        "handshakes for it are refused until then"
                    };
                    tracing::error!("could not get a certificate for {name}: {message}; retrying in about {} min; {serving}", retry.as_secs() / 60);
                    let when = crate::timestamp::rfc3339(SystemTime::now());
                    if let Err(error) = store::note_order(&dir, Some((&when, &message))) {
                        tracing::warn!(%error, "could not note the order error for doctor");
                    }
                }
            }
        }
    }

    /// When the CA's ACME Renewal Information (RFC 9773) says to renew `current`,
    /// and when to ask again; None when the CA offers no ARI or cannot be asked.
    async fn renewal_info(
        &self,
        current: &Stored,
        now: SystemTime,
    ) -> Option<(Duration, Duration)> {
        let id = current.ari_id.as_ref()?;
        let account = self.account().await.ok()?;
        match account.renewal_info(id).await {
            Ok((info, retry_after)) => {
                let window = info.suggested_window;
                let pick = schedule::ari_pick(window.start.into(), window.end.into(), nanos(now));
                let recheck =
                    retry_after.clamp(Duration::from_secs(3600), Duration::from_secs(86_400));
                tracing::debug!(start = %window.start, end = %window.end, "ACME renewal window");
                Some((schedule::until(pick, now), recheck))
            }
            Err(instant_acme::Error::Unsupported(_)) => None,
            Err(error) => {
                tracing::debug!(%error, "ACME renewal information unavailable; renewing by the certificate's lifetime");
                None
            }
        }
    }

    /// One attempt: each challenge type in turn until one succeeds.
    async fn order(&self, hosts: &[HostPattern], name: &str) -> Result<Stored, String> {
        let account = self.account().await.map_err(|e| {
            format!(
                "ACME account at {}: {}{}",
                self.config.directory,
                crate::error::causes(&e),
                hint_for_connect()
            )
        })?;
        let wildcard = hosts.iter().any(|h| matches!(h, HostPattern::Wildcard(_)));
        let mut errors = Vec::new();
        for &challenge in &self.config.challenges {
            if wildcard && challenge != crate::config::Challenge::Dns01 {
                continue;
            }
            tracing::info!("ordering certificate for {name} via {}…", challenge.name());
            let plan = OrderPlan {
                hosts,
                challenge,
                challenges: &self.challenges,
                dns_hook: self.config.dns_hook.as_deref(),
            };
            match obtain(account, plan).await {
                Ok(issued) => {
                    let dir = store::site_dir(&self.state_dir, hosts);
                    store::save(&dir, &issued.chain_pem, &issued.key_pem).map_err(|e| {
                        format!("cannot store the certificate in {}: {e}", dir.display())
                    })?;
                    return store::load(&dir)
                        .map_err(|e| e.to_string())?
                        .ok_or_else(|| "the CA's certificate does not match its key".to_string());
                }
                Err(error) => {
                    tracing::warn!(
                        "{} failed for {name}: {}{}",
                        challenge.name(),
                        crate::error::causes(&error),
                        hint(&error)
                    );
                    errors.push(format!("{}: {error}", challenge.name()));
                }
            }
        }
        Err(errors.join(" | "))
    }

    async fn account(&self) -> Result<&Account, AccountError> {
        self.account
            .get_or_try_init(|| self.load_or_create_account())
            .await
    }

    async fn load_or_create_account(&self) -> Result<Account, AccountError> {
        let path = store::account_path(&self.state_dir, &self.config.directory);
        let builder = || match &self.config.ca_roots {
            Some(roots) => Account::builder_with_root(roots),
            None => Account::builder(),
        };
        if let Ok(json) = std::fs::read(&path) {
            let credentials: AccountCredentials = serde_json::from_slice(&json)?;
            return Ok(builder()?.from_credentials(credentials).await?);
        }
        let contact = self.config.email.as_ref().map(|e| format!("mailto:{e}"));
        let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
        let eab = match &self.config.eab {
            Some((kid, key)) => {
                use base64::Engine as _;
                let key = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(key.trim_end_matches('='))
                    .map_err(|_| AccountError::Eab)?;
                Some(ExternalAccountKey::new(kid.clone(), &key))
            }
            None => None,
        };
        let new = NewAccount {
            contact: &contacts,
            terms_of_service_agreed: true,
            only_return_existing: false,
        };
        let (account, credentials) = builder()?
            .create(&new, self.config.directory.clone(), eab.as_ref())
            .await?;
        store::save_account(&path, &serde_json::to_vec(&credentials)?)?;
        tracing::info!(path = %path.display(), "ACME account created");
        Ok(account)
    }
}

/// A hint for the usual causes of an order's failure.
fn hint(error: &OrderError) -> &'static str {
    let types = error.problem_types();
    let has = |t: &str| types.iter().any(|p| p.ends_with(t));
    if has("rateLimited") {
        " (hint: the CA's rate limit was hit; drawbridge retries later — try `staging = true` while testing)"
    } else if has("dns") {
        " (hint: the name does not resolve for the CA; check its DNS A/AAAA records)"
    } else if has("connection") || has("unauthorized") || has("incorrectResponse") {
        " (hint: the CA could not reach this server for the name: check that DNS points here and that ports 80 and 443 are open)"
    } else if has("caa") {
        " (hint: a CAA record forbids this CA for the name)"
    } else {
        ""
    }
}

fn hint_for_connect() -> &'static str {
    " (hint: the CA is unreachable or refused the account; drawbridge retries)"
}

fn nanos(now: SystemTime) -> u64 {
    now.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64 ^ d.as_secs())
}

fn date(at: SystemTime) -> String {
    let t = time::OffsetDateTime::from(at);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute()
    )
}
