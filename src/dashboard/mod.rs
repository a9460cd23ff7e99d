//! The dashboard on the admin listener: one page, its script and its style,
//! compiled into the binary (no build step, nothing fetched). The page asks
//! `POST /api` for the status every two seconds and draws it; the unban
//! button is `bans_remove` through the same API. The page carries the
//! listener's CSRF value, which the script sends with every command.
//!
//! Headers: drawbridge's own preset where it fits a page with no inline
//! code (Permissions-Policy, nosniff, no referrer) and a Content-Security-
//! Policy stricter than the site preset's: this origin's script and style
//! only, no framing.

use http::{header, HeaderValue, Response};

use crate::body::{full_body, Body};
use crate::filter::headers::PERMISSIONS_POLICY;

const PAGE: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("dashboard.js");
const STYLE: &str = include_str!("dashboard.css");

/// The dashboard's page itself, allowing nothing from elsewhere.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; \
form-action 'none'; frame-ancestors 'none'";

/// The file at `path` (`/`, `/dashboard.js`, `/dashboard.css`), with the
/// page's CSRF value put in; `None` for any other path.
pub fn asset(path: &str, csrf: &str) -> Option<Response<Body>> {
    let (text, kind) = match path {
        "/" => (PAGE.replace("{{csrf}}", csrf), "text/html; charset=utf-8"),
        "/dashboard.js" => (SCRIPT.to_string(), "text/javascript; charset=utf-8"),
        "/dashboard.css" => (STYLE.to_string(), "text/css; charset=utf-8"),
        _ => return None,
    };
    let mut response = Response::new(full_body(text));
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, kind),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers.insert(
        "permissions-policy",
        HeaderValue::from_static(PERMISSIONS_POLICY),
    );
    Some(response)
}
