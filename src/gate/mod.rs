//! The side-door gate: with the `jellyfin` preset, only requests that belong
//! to a signed-in household reach Jellyfin beyond its public login routes.
//! Jellyfin serves its media, images, subtitles and attachments to anyone
//! who knows an item id (`routes.rs`); the gate closes those doors at the
//! edge without breaking any app:
//!
//! ```text
//! public route (routes.rs)             → through
//! /Users/Public                        → [] at the edge (no names for strangers)
//! credentials (credentials.rs)         → Jellyfin's word on them (check.rs),
//!                                        remembered (memory.rs): good → through
//! the gate's cookie (a browser whose   → its session's credentials, as above
//!   checked session it stands for)
//! a side door, from an address a       → through (image loaders and players
//!   checked session uses now             that carry no token)
//! anything else                        → 401 at the edge, nothing reaches home
//! ```
//!
//! A check Jellyfin refuses counts toward the address's ban like a failed
//! login (guessing tokens is guessing passwords); checks are bounded per
//! client and in all, so the gate cannot be used to flood home. A logout
//! passing through, or Jellyfin refusing a token the gate thought good,
//! ends what the gate remembered of it, cookie and grants included.
//! `report` lets everything through but counts and logs what it would have
//! refused; `off` is for sites that are not Jellyfin.

mod bounded;
pub mod check;
pub mod credentials;
pub mod memory;
pub mod recall;
pub mod routes;
pub mod sent;
pub mod token;

use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::body::{full_body, Body};
use crate::config::{GateMode, SiteConfig};
use crate::error::ProxyError;
use crate::filter::access::RouteClass;
use crate::filter::rate_limit::RateLimit;
use crate::guard::Guard;
use crate::metrics::GateCounts;
use crate::upstream::head::Visitor;
use crate::upstream::Upstream;
use credentials::Carried;
use memory::{Memory, Word};
pub use recall::Recall;
pub use routes::{Route, SideDoor};

/// The gate's cookie: host-only by its prefix, sent over TLS alone.
pub const COOKIE: &str = "__Host-drawbridge";

/// How long a request waits for a place among the checks under way.
pub(crate) const CHECK_WAIT: Duration = Duration::from_secs(5);

/// One site's gate.
#[derive(Debug)]
pub struct Gate {
    mode: GateMode,
    site: String,
    /// The site's own public paths, as configured (for `check`).
    own_public: Vec<String>,
    /// Jellyfin's public routes and the site's own, ready to match.
    public: RouteClass,
    memory: Arc<Memory>,
    config: crate::config::GateConfig,
    budget: RateLimit,
    checks: Arc<Semaphore>,
    guard: Arc<Guard>,
    /// Never banned for failed checks: the site's allow list, trusted proxies.
    exempt: Vec<ipnet::IpNet>,
    counts: GateCounts,
}

/// What the gate needs to know of the request's client.
#[derive(Debug, Clone, Copy)]
pub struct Who<'a> {
    /// The client as the upstream is told of it.
    pub visitor: Visitor<'a>,
    /// The connection's number (the ban closes the others).
    pub connection: u64,
    /// Now.
    pub now: Instant,
    /// The connection's recall of the last credentials it passed.
    pub recall: &'a Recall,
    /// The request's route, in the metrics' words (the gate sets it).
    pub route: &'static str,
}

/// The gate's word on a request.
#[derive(Debug)]
pub enum Admitted {
    /// Through, with what the answer's phase needs.
    Pass(Passed),
    /// Answered at the edge.
    Answer(Result<Response<Body>, ProxyError>),
}

/// What the gate remembers of a request it let through, for its answer.
#[derive(Debug, Default)]
pub struct Passed {
    /// The credentials' key the request passed on.
    key: Option<Arc<str>>,
    /// Their Jellyfin user, where Jellyfin named one.
    user: Option<Arc<str>>,
    /// A browser's request that carried no cookie for these credentials.
    set_cookie: bool,
    /// `POST /Sessions/Logout`.
    logout: bool,
    /// The request carried the credentials itself (not a cookie's or a
    /// grant's): Jellyfin refusing it says they went bad.
    carried: bool,
}

impl Gate {
    /// The gate of `site`, remembering in `memory` (the process's).
    pub fn new(
        site: &SiteConfig,
        config: &crate::config::GateConfig,
        memory: Arc<Memory>,
        guard: Arc<Guard>,
        exempt: Vec<ipnet::IpNet>,
        counts: GateCounts,
    ) -> Gate {
        Gate {
            mode: site.gate,
            site: site.name(),
            own_public: site.gate_public.clone(),
            public: routes::public_class(&site.gate_public),
            memory,
            config: config.clone(),
            budget: RateLimit::new(
                config.checks_per_client,
                config.check_burst,
                config.max_remembered as usize,
            ),
            checks: Arc::new(Semaphore::new(config.max_checks as usize)),
            guard,
            exempt,
            counts,
        }
    }

    /// Whether the gate is on at all.
    pub fn mode(&self) -> GateMode {
        self.mode
    }

    /// Requests refused so far (in `report` mode: that would have been).
    pub fn refused(&self) -> u64 {
        let (enforced, reported) = self.counts.refusals();
        enforced + reported
    }

    /// The public routes in force: Jellyfin's and the site's own.
    pub fn public(&self) -> Vec<String> {
        routes::PUBLIC
            .iter()
            .map(ToString::to_string)
            .chain(self.own_public.iter().cloned())
            .collect()
    }

    /// The gate's word on `request` (its canonical path in place), through
    /// `upstream` when Jellyfin must be asked.
    pub async fn admit<B>(
        &self,
        request: &Request<B>,
        who: Who<'_>,
        upstream: &Upstream,
    ) -> Admitted {
        if self.mode == GateMode::Off {
            return Admitted::Pass(Passed::default());
        }
        let path = request.uri().path();
        let route = routes::route(path, &self.public);
        let who = Who {
            route: route.word(),
            ..who
        };
        match route {
            Route::Public => return Admitted::Pass(Passed::default()),
            Route::UsersPublic => return self.refuse(route, who, users_public()),
            Route::Side(_) | Route::Api => {}
        }
        let logout = request.method() == Method::POST && routes::matches("/Sessions/Logout", path);
        let carried = Carried::of(request.headers(), request.uri());
        // What the connection recalls passes as it was (no token read, no
        // look-up); else the credentials' word: remembered (and the grant
        // moved on) in one look-up, then recalled; else asked.
        let ip = who.visitor.client.ip;
        let forgotten = self.memory.forgotten();
        let sent = &carried.sent;
        if let Some((key, user)) = who.recall.of(&self.site, sent, ip, who.now, forgotten) {
            return self.good(key, user, &carried, who, logout);
        }
        if let Some(found) = sent.found(&self.site) {
            let grant = (!self.config.address_grant.is_zero())
                .then(|| (ip, who.now + self.config.address_grant));
            let key: Arc<str> = Arc::from(found.key.as_str());
            let word = match self.memory.word_granting(&key, who.now, grant) {
                Some((word, until)) => {
                    if let Word::Good(user) = &word {
                        let user = user.clone();
                        who.recall
                            .keep(&self.site, sent, (&key, user), ip, until, forgotten);
                    }
                    Ok(word)
                }
                None => {
                    let owned = || Arc::new(found.to_credentials());
                    let asked = self.word(&key, owned, who, upstream).await;
                    if let (Ok(Word::Good(_)), Some((ip, until))) = (&asked, grant) {
                        self.memory.grant(ip, &key, until);
                    }
                    asked
                }
            };
            return match word {
                Ok(Word::Good(user)) => self.good(key, user, &carried, who, logout),
                Ok(Word::Bad) => self.refuse(route, who, Err(ProxyError::Unauthorized)),
                Err(error) => Admitted::Answer(Err(error)),
            };
        }
        // No credentials: a browser session by its cookie, then, on a side
        // door, the address a checked session uses now.
        let session = carried
            .cookie
            .and_then(|id| self.memory.session(id, who.now, self.config.session_idle));
        let granted = match route {
            Route::Side(_) => self.memory.granted(who.visitor.client.ip, who.now),
            _ => None,
        };
        for key in session.into_iter().chain(granted) {
            let Some(credentials) = self.memory.credentials(&key) else {
                continue;
            };
            let remembered = || credentials.clone();
            if let Ok(Word::Good(user)) = self.word(&key, remembered, who, upstream).await {
                return Admitted::Pass(Passed {
                    user,
                    key: Some(Arc::from(key)),
                    set_cookie: false,
                    logout,
                    carried: false,
                });
            }
        }
        self.refuse(route, who, Err(ProxyError::Unauthorized))
    }

    /// Through on the good credentials of `key`, which the request
    /// carried: a browser gets the cookie once per session it stands for.
    fn good(
        &self,
        key: Arc<str>,
        user: Option<Arc<str>>,
        carried: &Carried<'_>,
        who: Who<'_>,
        logout: bool,
    ) -> Admitted {
        let set_cookie = carried.browser
            && who.visitor.tls
            && carried
                .cookie
                .and_then(|id| self.memory.session(id, who.now, self.config.session_idle))
                .is_none_or(|k| *k != *key);
        Admitted::Pass(Passed {
            user,
            set_cookie,
            key: Some(key),
            logout,
            carried: true,
        })
    }

    /// Refuses at `route` with `answer` — or, in `report` mode, lets it
    /// through, counted and logged.
    fn refuse(
        &self,
        route: Route,
        who: Who<'_>,
        answer: Result<Response<Body>, ProxyError>,
    ) -> Admitted {
        if route != Route::UsersPublic {
            self.counts
                .refused(route.index(), self.mode == GateMode::Report);
        }
        match self.mode {
            GateMode::Report => {
                tracing::info!(site = self.site, route = route.word(), client.ip = %who.visitor.client.ip, "gate (report): would have refused this request");
                Admitted::Pass(Passed::default())
            }
            _ => Admitted::Answer(answer),
        }
    }

    /// The answer's phase: a browser gets the cookie for its checked
    /// session; a logout that went through, or Jellyfin refusing credentials
    /// the gate had let through, ends what the gate remembered of them.
    /// Returns the Jellyfin user the request passed for, where known (a
    /// stream is listed with it: `metrics::streams`).
    pub fn on_response(
        &self,
        ticket: Passed,
        response: &mut Response<Body>,
        now: Instant,
    ) -> Option<Arc<str>> {
        let key = ticket.key?;
        let status = response.status();
        if (ticket.logout && status.is_success())
            || (ticket.carried && status == StatusCode::UNAUTHORIZED)
        {
            self.memory.forget(&key);
            return None;
        }
        if ticket.set_cookie && status.as_u16() < 400 {
            let id = random_id();
            let cookie = format!("{COOKIE}={id}; Path=/; Secure; HttpOnly; SameSite=Lax");
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().append(header::SET_COOKIE, value);
                self.memory.open_session(id, &key, now);
            }
        }
        ticket.user
    }
}

/// `/Users/Public` answered at the edge: no users to show (apps then ask
/// for a name), none named to strangers.
fn users_public() -> Result<Response<Body>, ProxyError> {
    let mut response = Response::new(full_body("[]"));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("2"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// 32 random bytes, base64url: a session's cookie value.
fn random_id() -> String {
    use base64::Engine as _;
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The gate's memory of a process, for `Routes::build`.
pub fn memory(config: &crate::config::GateConfig) -> Arc<Memory> {
    Memory::new(config.max_remembered as usize)
}
