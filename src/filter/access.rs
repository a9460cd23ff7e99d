//! Who may use a site, and stricter rules under path prefixes: allow lists
//! (when not empty, only they may come in) and deny lists of CIDR ranges,
//! IPv4 and IPv6. The longest matching path rule decides for its prefix, then
//! the site's lists. Also which paths are a site's auth routes.

use std::net::IpAddr;

use crate::client_ip::normalise;
use crate::config::{AccessList, PathRule};

/// A site's access rules.
#[derive(Debug, Clone, Default)]
pub struct AccessRules {
    site: AccessList,
    /// Longest prefix first.
    paths: Vec<PathRule>,
}

impl AccessRules {
    /// The rules of a site.
    pub fn new(site: AccessList, mut paths: Vec<PathRule>) -> AccessRules {
        paths.sort_by_key(|rule| std::cmp::Reverse(rule.prefix.len()));
        AccessRules { site, paths }
    }

    /// Whether `client` may request `path`.
    pub fn allows(&self, client: IpAddr, path: &str) -> bool {
        let client = normalise(client);
        if let Some(rule) = self.paths.iter().find(|r| under_prefix(path, &r.prefix)) {
            if !permits(&rule.access, client) {
                return false;
            }
        }
        permits(&self.site, client)
    }

    /// The site's allow list (never banned).
    pub fn site_allow(&self) -> &[ipnet::IpNet] {
        &self.site.allow
    }
}

/// Whether `text` starts with `prefix` (lower-case), ignoring ASCII case,
/// without allocating: this runs on every request.
pub fn starts_with_ignore_case(text: &str, prefix: &str) -> bool {
    text.len() >= prefix.len()
        && text.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// Whether `path` is under a rule's `prefix`: it starts with it, or it is
/// the prefix without its trailing `/` (the upstream's router takes `/System`
/// and `/System/` for one route).
fn under_prefix(path: &str, prefix: &str) -> bool {
    starts_with_ignore_case(path, prefix)
        || prefix
            .strip_suffix('/')
            .is_some_and(|bare| path.eq_ignore_ascii_case(bare))
}

fn permits(list: &AccessList, client: IpAddr) -> bool {
    if list.deny.iter().any(|n| n.contains(&client)) {
        return false;
    }
    list.allow.is_empty() || list.allow.iter().any(|n| n.contains(&client))
}

/// Path patterns of a route class: segments compared without regard to case,
/// `*` for any one segment, a final `**` for anything below.
#[derive(Debug, Clone, Default)]
pub struct RouteClass {
    patterns: Vec<Vec<String>>,
    /// The patterns' first segments, when none is a wildcard: a path whose
    /// first segment is none of them is not in the class, found with a few
    /// comparisons (most requests are in no class).
    firsts: Option<Vec<String>>,
}

impl RouteClass {
    /// A class from patterns like `/Users/*/Authenticate`.
    pub fn new(patterns: &[String]) -> RouteClass {
        let split = |p: &String| {
            p.trim_matches('/')
                .split('/')
                .map(str::to_ascii_lowercase)
                .collect()
        };
        let patterns: Vec<Vec<String>> = patterns.iter().map(split).collect();
        let wild = patterns
            .iter()
            .any(|p| p.first().is_none_or(|f| f == "*" || f == "**"));
        let firsts = (!wild).then(|| {
            let mut firsts: Vec<String> = patterns.iter().map(|p| p[0].clone()).collect();
            firsts.sort();
            firsts.dedup();
            firsts
        });
        RouteClass { patterns, firsts }
    }

    /// Whether `path` is in the class. The path is split once, into a list
    /// on the stack (the patterns are lower case and compared without a
    /// copy): this runs for every request, two or three times with the
    /// Jellyfin preset (cache routes, auth routes).
    pub fn matches(&self, path: &str) -> bool {
        const MOST: usize = 16;
        if let Some(firsts) = &self.firsts {
            let first = path_segments(path).next().unwrap_or("");
            if !firsts.iter().any(|f| first.eq_ignore_ascii_case(f)) {
                return false;
            }
        }
        let mut segments = [""; MOST];
        let mut count = 0;
        for segment in path_segments(path) {
            if count == MOST {
                let long: Vec<&str> = path_segments(path).collect();
                return self.patterns.iter().any(|pattern| fits(pattern, &long));
            }
            segments[count] = segment;
            count += 1;
        }
        let segments = &segments[..count];
        self.patterns.iter().any(|pattern| fits(pattern, segments))
    }

    /// Whether the class has no pattern.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

/// The segments of `path` between its leading and trailing slashes, as
/// `path.trim_matches('/').split('/')` gives them, found by byte (the path
/// is split for every request, by several classes and the gate).
pub fn path_segments(path: &str) -> impl Iterator<Item = &str> {
    let bytes = path.as_bytes();
    let start = bytes.iter().position(|&b| b != b'/').unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|&b| b != b'/')
        .map_or(start, |at| at + 1);
    let mut rest = Some(&path[start..end]);
    std::iter::from_fn(move || {
        let now = rest?;
        match now.as_bytes().iter().position(|&b| b == b'/') {
            Some(at) => {
                rest = Some(&now[at + 1..]);
                Some(&now[..at])
            }
            None => {
                rest = None;
                Some(now)
            }
        }
    })
}

/// Whether `segments` fit `pattern`: `*` any one segment, a final `**` one
/// or more.
fn fits(pattern: &[String], segments: &[&str]) -> bool {
    let mut i = 0;
    for part in pattern {
        if part == "**" {
            return i < segments.len();
        }
        match segments.get(i) {
            Some(segment) if part == "*" || segment.eq_ignore_ascii_case(part) => i += 1,
            _ => return false,
        }
    }
    i == segments.len()
}

#[cfg(test)]
mod tests {
    use super::{path_segments, AccessRules, RouteClass};
    use crate::config::{AccessList, PathRule, JELLYFIN_AUTH_PATHS};

    /// The byte split gives what `trim_matches('/').split('/')` gives, for
    /// every shape of slashes.
    #[test]
    fn path_segments_are_the_trimmed_split() {
        for path in [
            "",
            "/",
            "//",
            "a",
            "/a",
            "a/",
            "/a/b",
            "/a/b/",
            "//a//b//",
            "/Items/1/Images/Primary",
            "/é/ü/",
            "/a/%2F/b",
        ] {
            let expected: Vec<&str> = path.trim_matches('/').split('/').collect();
            let got: Vec<&str> = path_segments(path).collect();
            assert_eq!(got, expected, "{path:?}");
        }
    }

    fn nets(list: &[&str]) -> Vec<ipnet::IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn site_and_path_rules() {
        let rules = AccessRules::new(
            AccessList {
                allow: Vec::new(),
                deny: nets(&["198.51.100.0/24"]),
            },
            vec![PathRule {
                prefix: "/system/".into(),
                access: AccessList {
                    allow: nets(&["10.8.0.0/24", "2001:db8::/32"]),
                    deny: Vec::new(),
                },
            }],
        );
        let ip = |s: &str| s.parse().unwrap();
        assert!(rules.allows(ip("203.0.113.5"), "/web/index.html"));
        assert!(
            !rules.allows(ip("198.51.100.7"), "/web/index.html"),
            "denied by the site"
        );
        assert!(
            !rules.allows(ip("203.0.113.5"), "/System/Info"),
            "path rule, any case"
        );
        assert!(rules.allows(ip("10.8.0.4"), "/system/info"));
        assert!(
            !rules.allows(ip("203.0.113.5"), "/System"),
            "the prefix without its slash"
        );
        assert!(rules.allows(ip("203.0.113.5"), "/Systems"));
        assert!(
            rules.allows(ip("::ffff:10.8.0.4"), "/system/info"),
            "IPv4-mapped IPv6 counts as IPv4"
        );
        assert!(rules.allows(ip("2001:db8::5"), "/system/info"));
    }

    #[test]
    fn jellyfin_auth_routes_in_any_case() {
        let class = RouteClass::new(
            &JELLYFIN_AUTH_PATHS
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        );
        for path in [
            "/Users/AuthenticateByName",
            "/users/authenticatebyname",
            "/Users/abc123/Authenticate",
            "/QuickConnect/Initiate",
            "/Users/ForgotPassword/Pin",
            "/Users/AuthenticateWithQuickConnect",
        ] {
            assert!(class.matches(path), "{path}");
        }
        for path in [
            "/Users/abc/Items",
            "/Users",
            "/QuickConnect",
            "/web/index.html",
            "/Users/AuthenticateByName/extra",
        ] {
            assert!(!class.matches(path), "{path}");
        }
    }

    #[test]
    fn wildcards_and_case_match_segment_by_segment() {
        // The segment-list reading of a pattern, as an oracle.
        fn oracle(pattern: &str, path: &str) -> bool {
            let split = |p: &str| -> Vec<String> {
                p.trim_matches('/')
                    .split('/')
                    .map(str::to_ascii_lowercase)
                    .collect()
            };
            let (pattern, segments) = (split(pattern), split(path));
            let mut i = 0;
            for part in &pattern {
                if part == "**" {
                    return i < segments.len();
                }
                match segments.get(i) {
                    Some(seg) if part == "*" || part == seg => i += 1,
                    _ => return false,
                }
            }
            i == segments.len()
        }
        let patterns = ["/Items/*/Images/**", "/web/**", "/*", "/", "/a/*/c", "/**"];
        let paths = [
            "/",
            "",
            "//",
            "/web",
            "/web/",
            "/WEB/index.html",
            "/web/a/b",
            "/Items/1/Images",
            "/items/1/images/Primary",
            "/Items/1/Images/Primary/0",
            "/a/b/c",
            "/a//c",
            "/A/x/C/",
            "/a/b/c/d",
            "/x",
        ];
        for pattern in patterns {
            let class = RouteClass::new(&[pattern.to_string()]);
            for path in paths {
                assert_eq!(
                    class.matches(path),
                    oracle(pattern, path),
                    "{pattern} against {path:?}"
                );
            }
        }
    }
}
