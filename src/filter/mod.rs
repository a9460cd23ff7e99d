//! Filters: the policy steps a request and its response pass through, as a
//! closed enum dispatched by `match` (no trait objects). Each filter is a plain
//! struct; the time is passed in, so their behaviour is tested without sockets
//! or sleeps.
//!
//! Order on a request: access lists, then the login guard (bans and the rate
//! limit on auth routes). On a response, in reverse: the login guard counts
//! failed logins, then the security headers are set.

pub mod access;
pub mod headers;
pub mod rate_limit;

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, StatusCode};
use tokio::time::Instant;

use crate::config::{Refuse, SiteConfig};
use crate::error::ProxyError;
use crate::guard::keys::ClientKey;
use crate::guard::Guard;
use access::{AccessRules, RouteClass};
pub use headers::SecurityHeaders;
use rate_limit::RateLimit;

/// A filter's answer to a request.
#[derive(Debug)]
pub enum Verdict {
    /// Go on to the next filter, then the upstream.
    Continue,
    /// Answer now with this error; the upstream is not asked.
    Refuse(ProxyError),
    /// Close the connection without an answer.
    Close,
}

/// What a filter sees of a request.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// The client's address (see `client_ip`).
    pub client: IpAddr,
    /// The request path.
    pub path: &'a str,
    /// Now.
    pub now: Instant,
    /// The connection's number (see `guard::Admission`).
    pub connection: u64,
}

/// What `on_response` knows about the exchange.
#[derive(Debug, Clone, Copy)]
pub struct Exchange<'a> {
    /// The request as `on_request` saw it.
    pub subject: Subject<'a>,
    /// The response goes out over TLS.
    pub tls: bool,
    /// The response status.
    pub status: StatusCode,
}

/// Allow and deny lists.
#[derive(Debug)]
pub struct Access {
    rules: AccessRules,
    refuse: Refuse,
    /// Counts what the lists refuse (`Events::refused_by_list`).
    guard: Arc<Guard>,
}

/// Bans and the rate limit on a site's auth routes.
#[derive(Debug)]
pub struct Login {
    site: String,
    auth: RouteClass,
    limit: Option<RateLimit>,
    guard: Arc<Guard>,
    failure_statuses: Vec<u16>,
    /// Never banned here: the site's allow list, trusted proxies.
    exempt: Vec<ipnet::IpNet>,
}

/// One policy step.
#[derive(Debug)]
pub enum Filter {
    /// Allow and deny lists per site and path.
    Access(Access),
    /// Bans, and the login rate limit.
    Login(Login),
    /// Adds, replaces and removes response headers (security headers).
    Headers(SecurityHeaders),
}

/// The filters of `site`, in request order.
pub fn for_site(
    site: &SiteConfig,
    guard: &Arc<Guard>,
    failure_statuses: &[u16],
    trusted: &[ipnet::IpNet],
    table_size: usize,
) -> Vec<Filter> {
    let rules = AccessRules::new(site.access.clone(), site.paths.clone());
    let mut exempt = rules.site_allow().to_vec();
    exempt.extend_from_slice(trusted);
    vec![
        Filter::Access(Access {
            rules,
            refuse: site.refuse,
            guard: guard.clone(),
        }),
        Filter::Login(Login {
            site: site.name(),
            auth: RouteClass::new(&site.auth_paths),
            limit: site
                .login_rate
                .map(|rate| RateLimit::new(rate, site.login_burst, table_size)),
            guard: guard.clone(),
            failure_statuses: failure_statuses.to_vec(),
            exempt,
        }),
        Filter::Headers(SecurityHeaders::for_site(site)),
    ]
}

/// Whether `path` is one of the auth routes the login guard of `filters`
/// watches.
pub fn is_auth_route(filters: &[Filter], path: &str) -> bool {
    filters.iter().any(|filter| match filter {
        Filter::Login(login) => login.auth.matches(path),
        _ => false,
    })
}

/// Counts home's answer to a login whose client left before it came, as
/// `on_response` would have (the login guard alone: no answer is sent).
pub fn count_unsent(filters: &[Filter], exchange: Exchange<'_>) {
    for filter in filters {
        if let Filter::Login(_) = filter {
            filter.on_response(&mut HeaderMap::new(), exchange);
        }
    }
}

impl Filter {
    /// Looks at a request before it is forwarded.
    pub fn on_request(&self, subject: Subject<'_>) -> Verdict {
        match self {
            Filter::Access(access) => {
                if access.rules.allows(subject.client, subject.path) {
                    Verdict::Continue
                } else {
                    access
                        .guard
                        .events
                        .refused_by_list
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    match access.refuse {
                        Refuse::Forbidden => Verdict::Refuse(ProxyError::Forbidden),
                        Refuse::Close => Verdict::Close,
                    }
                }
            }
            Filter::Login(login) => {
                let key = ClientKey::of(subject.client);
                // Clients behind a trusted proxy were not checked at accept.
                if login.guard.bans.is_banned(key, subject.now) {
                    return Verdict::Close;
                }
                match &login.limit {
                    Some(limit) if login.auth.matches(subject.path) => {
                        match limit.check(key, subject.now) {
                            Ok(()) => Verdict::Continue,
                            Err(wait) => {
                                login
                                    .guard
                                    .events
                                    .login_rate_limited
                                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                Verdict::Refuse(ProxyError::TooManyRequests(wait))
                            }
                        }
                    }
                    _ => Verdict::Continue,
                }
            }
            Filter::Headers(_) => Verdict::Continue,
        }
    }

    /// Looks at the response: counts failed logins, sets headers (on
    /// upstream answers and drawbridge's own pages alike).
    pub fn on_response(&self, headers: &mut HeaderMap, exchange: Exchange<'_>) {
        match self {
            Filter::Access(_) => {}
            Filter::Login(login) => {
                let failed = login.failure_statuses.contains(&exchange.status.as_u16());
                if failed && login.auth.matches(exchange.subject.path) {
                    let exempt = ClientKey::of(exchange.subject.client).in_any(&login.exempt);
                    let subject = exchange.subject;
                    login.guard.failed_login(
                        subject.client,
                        &login.site,
                        &format!("failed login at {}", subject.path),
                        exempt,
                        subject.now,
                        subject.connection,
                    );
                }
            }
            Filter::Headers(policy) => policy.apply(headers, exchange.tls),
        }
    }
}
