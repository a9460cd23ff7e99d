//! What the cache takes part in: which routes of a site are cache routes
//! (never media or HLS), whether a request's credentials make it bypass, and
//! the key of a request (tokens left out, parameters sorted).

use http::{HeaderMap, Uri};

use crate::canonical::param_is;
use crate::config::SiteConfig;
use crate::filter::access::{starts_with_ignore_case, RouteClass};

/// Query parameters that carry credentials: never part of a key.
pub const TOKEN_PARAMS: [&str; 3] = ["api_key", "apikey", "x-emby-token"];

/// Request headers that carry credentials.
pub const CREDENTIAL_HEADERS: [&str; 5] = [
    "authorization",
    "cookie",
    "x-emby-token",
    "x-mediabrowser-token",
    "x-emby-authorization",
];

/// Whether a cache route's answers are the same for everyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    /// Credentials in the request do not matter (Jellyfin's images, web files).
    Public,
    /// A request with credentials bypasses the cache.
    Private,
}

/// Which of a site's routes are cached.
#[derive(Debug, Default)]
pub struct CacheRules {
    private: RouteClass,
    public: RouteClass,
}

impl CacheRules {
    /// The rules of `site`.
    pub fn new(site: &SiteConfig) -> CacheRules {
        CacheRules {
            private: RouteClass::new(&site.cache_paths),
            public: RouteClass::new(&site.cache_public_paths),
        }
    }

    /// Whether `path` is a cache route, and of which kind. Media and HLS never are.
    pub fn class(&self, path: &str) -> Option<Visibility> {
        if self.public.is_empty() && self.private.is_empty() {
            return None;
        }
        let ends = |ext: &str| {
            path.len() >= ext.len()
                && path.as_bytes()[path.len() - ext.len()..].eq_ignore_ascii_case(ext.as_bytes())
        };
        let media =
            starts_with_ignore_case(path, "/videos/") || starts_with_ignore_case(path, "/audio/");
        if media || [".m3u8", ".ts", ".m4s"].iter().any(|ext| ends(ext)) {
            return None;
        }
        if self.public.matches(path) {
            Some(Visibility::Public)
        } else if self.private.matches(path) {
            Some(Visibility::Private)
        } else {
            None
        }
    }
}

/// The cache key of a request: host, path, and the query without tokens, its
/// parameters sorted (so `?b=1&a=2` and `?a=2&b=1&api_key=x` share one entry).
pub fn key(host: &str, uri: &Uri) -> String {
    let mut params: Vec<&str> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| {
            let name = p.split('=').next().unwrap_or("");
            !param_is(name, &TOKEN_PARAMS)
        })
        .collect();
    params.sort_unstable();
    let query = if params.is_empty() {
        String::new()
    } else {
        format!("?{}", params.join("&"))
    };
    format!("{host}{}{query}", uri.path())
}

/// Whether the request carries credentials (headers or token parameters).
pub fn has_credentials(headers: &HeaderMap, uri: &Uri) -> bool {
    CREDENTIAL_HEADERS.iter().any(|h| headers.contains_key(*h))
        || uri.query().is_some_and(|q| {
            q.split('&')
                .any(|p| param_is(p.split('=').next().unwrap_or(""), &TOKEN_PARAMS))
        })
}

#[cfg(test)]
mod tests {
    use super::{has_credentials, key, CacheRules, Visibility};
    use crate::config::Config;
    use http::{HeaderMap, Uri};
    use std::path::Path;

    #[test]
    fn keys_leave_tokens_out_and_sort_parameters() {
        let k = |u: &str| key("jelly.test", &u.parse::<Uri>().unwrap());
        assert_eq!(
            k("/Items/1/Images/Primary?tag=abc&quality=90&api_key=s3cret"),
            "jelly.test/Items/1/Images/Primary?quality=90&tag=abc"
        );
        assert_eq!(
            k("/Items/1/Images/Primary?ApiKey=x&quality=90&tag=abc"),
            k("/Items/1/Images/Primary?tag=abc&quality=90")
        );
        assert_ne!(
            k("/Items/1/Images/Primary?tag=abc"),
            k("/Items/1/Images/Primary?tag=abd")
        );
        assert_eq!(k("/web/index.html"), "jelly.test/web/index.html");
        assert_eq!(
            k("/Items/1/Images/Primary?%61pi_key=s3cret&tag=abc"),
            "jelly.test/Items/1/Images/Primary?tag=abc"
        );
    }

    #[test]
    fn jellyfin_routes_and_never_media() {
        let config = Config::parse(Path::new("t.toml"), "[[site]]\nhost = \"a.test\"\nupstream = \"http://127.0.0.1:1\"\ncache_paths = [\"/private/**\"]\n").unwrap();
        let rules = CacheRules::new(&config.sites[0]);
        assert_eq!(
            rules.class("/Items/abc/Images/Primary"),
            Some(Visibility::Public)
        );
        assert_eq!(rules.class("/web/main.bundle.js"), Some(Visibility::Public));
        assert_eq!(rules.class("/private/x"), Some(Visibility::Private));
        for never in [
            "/Videos/abc/stream",
            "/Audio/x/universal",
            "/Videos/x/master.m3u8",
            "/web/seg.ts",
            "/Users/x/Items",
        ] {
            assert_eq!(rules.class(never), None, "{never}");
        }
    }

    #[test]
    fn credentials_are_seen_in_headers_and_query() {
        let uri = |u: &str| u.parse::<Uri>().unwrap();
        let mut headers = HeaderMap::new();
        assert!(!has_credentials(&headers, &uri("/a?tag=1")));
        assert!(has_credentials(&headers, &uri("/a?api_key=1")));
        assert!(has_credentials(&headers, &uri("/a?api%5Fkey=1")));
        headers.insert("authorization", "MediaBrowser Token=\"x\"".parse().unwrap());
        assert!(has_credentials(&headers, &uri("/a")));
    }
}
