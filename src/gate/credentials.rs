//! The credentials a request carries, found where Jellyfin looks for them:
//! the `Authorization` header with the `MediaBrowser` (or legacy `Emby`)
//! scheme and its `Token` parameter, `X-Emby-Authorization` alike, the
//! legacy `X-Emby-Token` and `X-MediaBrowser-Token` headers, and the `ApiKey`
//! and legacy `api_key` query parameters (names in any case, as ASP.NET
//! Core's query collection reads them).
//!
//! Which of them Jellyfin accepts is Jellyfin's to say (version 12 refuses
//! the legacy ones by default, and a legacy and a current one together may
//! be refused): the gate never guesses, it asks with exactly what the
//! request carries (`Credentials::key`, `check.rs`).

use http::{HeaderMap, HeaderName, HeaderValue, Uri};

pub use super::sent::Sent;
pub use super::token::token_of;

/// The credential headers, as Jellyfin reads them.
pub(super) const HEADERS: [&str; 4] = [
    "authorization",
    "x-emby-authorization",
    "x-emby-token",
    "x-mediabrowser-token",
];

/// The credential query parameters (compared without regard to case).
const PARAMS: [&str; 2] = ["apikey", "api_key"];

/// The credential material of one request, as it was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Credential headers with a token in them, in `HEADERS` order.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Credential query parameters, `name=value` as sent, in their order.
    pub params: Vec<String>,
}

/// What a request carries that the gate reads, found in one pass over its
/// headers: its credential headers and parameters as sent, the gate's
/// cookie, and whether a browser sent it (`Sec-Fetch-Mode`, which browsers
/// send with every request). Nothing is copied or parsed yet: this runs for
/// every request past the public routes, and most are recalled by their
/// connection (`Sent::is`) before a token is read.
#[derive(Debug)]
pub struct Carried<'a> {
    /// Its credential headers and parameters, as sent.
    pub sent: Sent<'a>,
    /// The gate's cookie's value.
    pub cookie: Option<&'a str>,
    /// A browser sent it.
    pub browser: bool,
}

/// A credential header as sent.
pub(super) type Entry<'a> = (&'a HeaderName, &'a HeaderValue);

/// A request's credentials as it carries them, and their key.
#[derive(Debug)]
pub struct Found<'a> {
    /// What the gate remembers them by (`Credentials::key_for`).
    pub key: String,
    pub(super) headers: &'a HeaderMap,
    pub(super) uri: &'a Uri,
}

impl Found<'_> {
    /// An owned copy, to ask Jellyfin with and to remember (only then: the
    /// request is read again).
    pub fn to_credentials(&self) -> Credentials {
        let mut headers = Vec::new();
        for (name, value) in self.headers {
            if tokened(name, value).is_some() {
                headers.push((name.clone(), value.clone()));
            }
        }
        headers.sort_by_key(|(name, _)| HEADERS.iter().position(|h| *h == name.as_str()));
        Credentials {
            headers,
            params: params_of(self.uri).map(ToString::to_string).collect(),
        }
    }
}

/// Whether a credential header carries a token — and the token, where the
/// value is `Authorization`-style: None when it carries none (an
/// `Authorization` header without `Token`, as a login sends).
pub(super) fn tokened<'a>(name: &HeaderName, value: &'a HeaderValue) -> Option<Option<&'a str>> {
    match name.as_str() {
        "authorization" | "x-emby-authorization" => token_of(value).map(Some),
        "x-emby-token" | "x-mediabrowser-token" if !value.is_empty() => Some(None),
        _ => None,
    }
}

/// The letter of a credential header in a key and in `Sent::bytes`.
pub(super) fn letter(name: &HeaderName) -> u8 {
    match name.as_str() {
        "authorization" => b'A',
        "x-emby-authorization" => b'X',
        "x-emby-token" => b'E',
        _ => b'M',
    }
}

/// The credential parameters of `uri`'s query, `name=value` as sent.
pub(super) fn params_of(uri: &Uri) -> impl Iterator<Item = &str> {
    uri.query().into_iter().flat_map(|query| {
        query.split('&').filter(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            !value.is_empty() && crate::canonical::param_is(name, &PARAMS)
        })
    })
}

impl<'a> Carried<'a> {
    /// What `headers` and `uri`'s query carry.
    pub fn of(headers: &'a HeaderMap, uri: &'a Uri) -> Carried<'a> {
        let mut carried = Carried {
            sent: Sent {
                first: None,
                more: Vec::new(),
                headers,
                uri,
            },
            cookie: None,
            browser: false,
        };
        for (name, value) in headers {
            match name.as_str() {
                "authorization"
                | "x-emby-authorization"
                | "x-emby-token"
                | "x-mediabrowser-token" => match carried.sent.first {
                    None => carried.sent.first = Some((name, value)),
                    Some(_) => carried.sent.more.push((name, value)),
                },
                "cookie" if carried.cookie.is_none() => carried.cookie = cookie_in(value),
                "sec-fetch-mode" => carried.browser = true,
                _ => {}
            }
        }
        carried
    }
}

/// The key of `headers` and `params` for `site`: short, for it is hashed at
/// every request — a letter for where each token went, another for its
/// scheme, then the token.
pub(super) fn key_of(site: &str, headers: &[(Entry<'_>, Option<&str>)], params: &[&str]) -> String {
    let room: usize = headers
        .iter()
        .map(|((_, value), token)| token.map_or(value.len(), str::len) + 3)
        .chain(params.iter().map(|p| p.len() + 2))
        .sum();
    let mut key = String::with_capacity(site.len() + 1 + room);
    key.push_str(site);
    key.push('\n');
    for ((name, value), token) in headers {
        key.push(char::from(letter(name)));
        match token {
            // The scheme and the token: not the client's name, device or
            // version around it.
            Some(token) => {
                let scheme = value.as_bytes().trim_ascii_start();
                let legacy = scheme
                    .first()
                    .is_some_and(|b| b.eq_ignore_ascii_case(&b'e'));
                key.push(if legacy { 'e' } else { 'm' });
                key.push_str(token);
            }
            None => key.push_str(&String::from_utf8_lossy(value.as_bytes())),
        }
        key.push('\n');
    }
    for param in params {
        key.push('?');
        key.push_str(param);
        key.push('\n');
    }
    key
}

/// The gate's cookie's value in one `Cookie` header, if there.
fn cookie_in(value: &HeaderValue) -> Option<&str> {
    value.to_str().ok()?.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        (name == super::COOKIE && !value.is_empty()).then_some(value)
    })
}

impl Credentials {
    /// The credentials in `headers` and `uri`'s query, if any carries a
    /// token (an `Authorization` header without `Token`, as a login sends,
    /// is none).
    pub fn of(headers: &HeaderMap, uri: &Uri) -> Option<Credentials> {
        Carried::of(headers, uri)
            .sent
            .found("")
            .map(|found| found.to_credentials())
    }

    /// What the gate remembers the credentials by, for the site `site`:
    /// where each token was sent, its scheme and the token itself.
    pub fn key_for(&self, site: &str) -> String {
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers {
            headers.append(name.clone(), value.clone());
        }
        let query = self.params.join("&");
        let uri: Uri = format!("/?{query}").parse().unwrap_or_default();
        Carried::of(&headers, &uri)
            .sent
            .found(site)
            .map(|found| found.key)
            .unwrap_or_default()
    }

    /// `key_for` without a site.
    pub fn key(&self) -> String {
        self.key_for("")
    }

    /// The tokens in them, however spelt: a logout of one ends every
    /// spelling of it.
    pub fn tokens(&self) -> Vec<&str> {
        let headers = self
            .headers
            .iter()
            .filter_map(|(name, value)| match name.as_str() {
                "authorization" | "x-emby-authorization" => token_of(value),
                _ => value.to_str().ok(),
            });
        let params = self
            .params
            .iter()
            .filter_map(|pair| pair.split_once('=').map(|(_, value)| value));
        headers.chain(params).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Credentials;
    use http::{HeaderMap, HeaderValue, Uri};

    fn of(headers: &[(&str, &str)], uri: &str) -> Option<Credentials> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        Credentials::of(&map, &uri.parse::<Uri>().unwrap())
    }

    #[test]
    fn credentials_are_found_where_jellyfin_looks() {
        // A login carries the header without a token: no credentials.
        assert_eq!(
            of(&[("authorization", r#"MediaBrowser Client="a""#)], "/x"),
            None
        );
        assert_eq!(of(&[], "/Videos/1/stream?static=true"), None);
        let found = of(&[("x-emby-token", "t1")], "/x?ApiKey=t2&API_KEY=t3&apikey=").unwrap();
        assert_eq!(found.headers.len(), 1);
        assert_eq!(found.params, ["ApiKey=t2", "API_KEY=t3"]);
        // An escaped name is the same name to ASP.NET Core.
        let escaped = of(&[], "/x?api%5Fkey=t4").unwrap();
        assert_eq!(escaped.params, ["api%5Fkey=t4"]);
    }

    #[test]
    fn the_cookie_and_a_browser_are_found_among_other_headers() {
        let mut headers = HeaderMap::new();
        headers.append("cookie", "a=1".parse().unwrap());
        headers.append("cookie", "b=2; __Host-drawbridge=abc".parse().unwrap());
        headers.append("sec-fetch-mode", "cors".parse().unwrap());
        let uri = "/x".parse::<Uri>().unwrap();
        let carried = super::Carried::of(&headers, &uri);
        assert_eq!(carried.cookie, Some("abc"), "in a later crumb too");
        assert!(carried.browser);
        assert!(carried.sent.found("a.test").is_none());
        let mut other = HeaderMap::new();
        other.append("cookie", "drawbridge=abc".parse().unwrap());
        let carried = super::Carried::of(&other, &uri);
        assert_eq!(carried.cookie, None, "only the host-only name");
        assert!(!carried.browser);
    }

    #[test]
    fn the_key_is_where_the_token_went_and_the_token() {
        let web = of(
            &[(
                "authorization",
                r#"MediaBrowser Client="Web", Device="a", Token="t""#,
            )],
            "/x",
        )
        .unwrap();
        let app = of(
            &[(
                "authorization",
                r#"mediabrowser Device="b", Token="t", Version="2""#,
            )],
            "/x",
        )
        .unwrap();
        assert_eq!(web.key(), app.key(), "the client's name is no part of it");
        let legacy = of(&[("authorization", r#"Emby Token="t""#)], "/x").unwrap();
        assert_ne!(web.key(), legacy.key(), "the scheme is");
        assert_ne!(web.key_for("a.test"), web.key_for("b.test"), "and the site");
    }

    #[test]
    fn the_key_changes_with_anything_jellyfin_reads() {
        let a = of(&[], "/Videos/1/stream?ApiKey=t").unwrap().key();
        let b = of(&[], "/Videos/2/stream.mp4?static=true&ApiKey=t")
            .unwrap()
            .key();
        assert_eq!(a, b, "the path and other parameters are no part of it");
        let legacy = of(&[], "/Videos/1/stream?api_key=t").unwrap().key();
        assert_ne!(a, legacy, "a legacy spelling is asked about on its own");
        let both = of(&[("x-emby-token", "t")], "/x?ApiKey=t").unwrap().key();
        assert_ne!(a, both);
    }
}
