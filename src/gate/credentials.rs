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

/// The credential headers, as Jellyfin reads them.
const HEADERS: [&str; 4] = [
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

impl Credentials {
    /// The credentials in `headers` and `uri`'s query, if any carries a
    /// token (an `Authorization` header without `Token`, as a login sends,
    /// is none).
    pub fn of(headers: &HeaderMap, uri: &Uri) -> Option<Credentials> {
        let mut found = Credentials {
            headers: Vec::new(),
            params: Vec::new(),
        };
        for name in HEADERS {
            for value in headers.get_all(name) {
                let tokened = match name {
                    "authorization" | "x-emby-authorization" => token_of(value).is_some(),
                    _ => !value.is_empty(),
                };
                if tokened {
                    found
                        .headers
                        .push((HeaderName::from_static(name), value.clone()));
                }
            }
        }
        if let Some(query) = uri.query() {
            for pair in query.split('&') {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                if !value.is_empty() && crate::canonical::param_is(name, &PARAMS) {
                    found.params.push(pair.to_string());
                }
            }
        }
        (!found.headers.is_empty() || !found.params.is_empty()).then_some(found)
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

    /// What the gate remembers the credentials by: everything that could
    /// change Jellyfin's answer, as sent.
    pub fn key(&self) -> String {
        let mut key = String::with_capacity(96);
        for (name, value) in &self.headers {
            key.push_str(name.as_str());
            key.push(':');
            key.push_str(&String::from_utf8_lossy(value.as_bytes()));
            key.push('\n');
        }
        for param in &self.params {
            key.push('?');
            key.push_str(param);
            key.push('\n');
        }
        key
    }
}

/// The `Token` of an `Authorization`-style value with Jellyfin's scheme
/// (`MediaBrowser`, or the legacy `Emby`): `Token="…"` among its
/// comma-separated parameters (the name as written, the value unquoted).
pub fn token_of(value: &HeaderValue) -> Option<&str> {
    let text = value.to_str().ok()?;
    let (scheme, params) = text.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("MediaBrowser") && !scheme.eq_ignore_ascii_case("Emby") {
        return None;
    }
    params.split(',').find_map(|param| {
        let (name, value) = param.trim().split_once('=')?;
        let value = value.trim().trim_matches('"');
        (name.trim() == "Token" && !value.is_empty()).then_some(value)
    })
}

#[cfg(test)]
mod tests {
    use super::{token_of, Credentials};
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
    fn tokens_are_found_where_jellyfin_looks() {
        let h = HeaderValue::from_static(
            r#"MediaBrowser Client="Jellyfin Web", Device="Firefox", DeviceId="x", Version="10.11", Token="abc123""#,
        );
        assert_eq!(token_of(&h), Some("abc123"));
        assert_eq!(
            token_of(&HeaderValue::from_static(r#"Emby Token="t""#)),
            Some("t")
        );
        assert_eq!(
            token_of(&HeaderValue::from_static(
                r#"MediaBrowser Client="a", Device="b""#
            )),
            None
        );
        assert_eq!(
            token_of(&HeaderValue::from_static(r#"Bearer Token="t""#)),
            None
        );
        assert_eq!(
            token_of(&HeaderValue::from_static(r#"MediaBrowser token="t""#)),
            None,
            "names as written"
        );
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
