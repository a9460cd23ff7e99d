//! The canonical path: the one spelling of a request's path that every rule
//! reads and the upstream receives, so drawbridge and the upstream can never
//! disagree about which route a request is.
//!
//! Jellyfin's server (Kestrel) decodes every percent-escape but `%2F`, then
//! removes `.` and `..` segments (RFC 3986 §5.2.4), then routes without regard
//! to case. drawbridge does the same once per request, refuses what it will
//! not guess about, and forwards the result:
//!
//! - decoded: every escape; re-encoded (upper-case hex) only the bytes that
//!   cannot stand raw in a path (`%`, `?`, `#`, space, non-ASCII, …), so each
//!   decoded path has exactly one spelling;
//! - removed: `.` and `..` segments, and empty segments (`//` is `/`, as
//!   nginx's `merge_slashes`); a trailing `/` is kept;
//! - refused (400): an encoded `/` or `\` (`%2F`, `%5C`), a raw `\`, `;`
//!   (path parameters, the `..;/` trick), NUL and control characters, a `..`
//!   that climbs above the root, a malformed escape, escapes that do not
//!   decode to UTF-8 (overlong forms such as `%C0%AE` among them), and a
//!   path that does not start with `/`.
//!
//! Not owned here: the query (forwarded as sent) and `OPTIONS *`, which the
//! pipeline answers itself. The reasoning per spelling is in
//! `docs/threat-model.md`.

use std::borrow::Cow;

use http::uri::PathAndQuery;
use http::{Method, Request, Uri};

mod query;

pub use query::param_is;

/// Why a path is refused.
pub type BadSpelling = &'static str;

/// Puts the canonical path into `request`'s target (the query kept as
/// sent), or says why the target is refused. `*` is left for `OPTIONS`.
pub fn apply<B>(request: &mut Request<B>) -> Result<(), BadSpelling> {
    let uri = request.uri();
    if uri.path() == "*" {
        return if request.method() == Method::OPTIONS {
            Ok(())
        } else {
            Err("the target * is for OPTIONS only")
        };
    }
    let Cow::Owned(canonical) = path(uri.path())? else {
        return Ok(());
    };
    let target = match uri.query() {
        Some(query) => format!("{canonical}?{query}"),
        None => canonical,
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query =
        Some(PathAndQuery::try_from(target).map_err(|_| "the path cannot be respelled")?);
    *request.uri_mut() = Uri::from_parts(parts).map_err(|_| "the path cannot be respelled")?;
    Ok(())
}

/// The canonical spelling of `path` (a request target's path, query
/// excluded), borrowed when `path` already is canonical.
pub fn path(path: &str) -> Result<Cow<'_, str>, BadSpelling> {
    if !path.starts_with('/') {
        return Err("the path does not start with /");
    }
    if is_canonical(path.as_bytes()) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode(path.as_bytes())?;
    let decoded = std::str::from_utf8(&decoded).map_err(|_| "the path is not UTF-8")?;
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in decoded[1..].split('/') {
        trailing_slash = false;
        match segment {
            "" | "." => trailing_slash = true,
            ".." => {
                if segments.pop().is_none() {
                    return Err("the path climbs above the root");
                }
                trailing_slash = true;
            }
            _ => segments.push(segment),
        }
    }
    let mut canonical = String::with_capacity(path.len());
    for segment in &segments {
        canonical.push('/');
        encode_into(segment, &mut canonical);
    }
    if trailing_slash || segments.is_empty() {
        canonical.push('/');
    }
    Ok(if canonical == path {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(canonical)
    })
}

/// Whether `path` is already canonical: every byte may stand raw, and no
/// segment is empty, `.` or `..` (the path starts with `/`; a last empty
/// segment is the trailing slash of `/` or `/web/`). Most requests take only
/// this one pass.
fn is_canonical(path: &[u8]) -> bool {
    // The current segment's length, and whether it is all dots so far.
    let (mut length, mut dots) = (0usize, true);
    for &b in &path[1..] {
        if !RAW[usize::from(b)] {
            return false;
        }
        if b == b'/' {
            if length == 0 || (dots && length <= 2) {
                return false;
            }
            (length, dots) = (0, true);
        } else {
            length += 1;
            dots &= b == b'.';
        }
    }
    !(dots && (1..=2).contains(&length))
}

/// `stays_raw` for every byte, looked up once per byte of every request.
const RAW: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = stays_raw(b as u8);
        b += 1;
    }
    table
};

/// Bytes that stand raw in a canonical path: RFC 3986's unreserved
/// characters, its sub-delimiters but `;`, `:`, `@` and `/`.
const fn stays_raw(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b'='
                | b':'
                | b'@'
                | b'/'
        )
}

/// Every escape decoded, with the refusals that need the raw text: an
/// encoded `/` or `\`, a malformed escape; then the decoded bytes' own
/// refusals (control characters, `\`, `;`).
fn decode(path: &[u8]) -> Result<Vec<u8>, BadSpelling> {
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        let byte = match path[i] {
            b'%' => {
                let hex = |at: usize| path.get(at).and_then(|&b| (b as char).to_digit(16));
                let (Some(high), Some(low)) = (hex(i + 1), hex(i + 2)) else {
                    return Err("the path has a malformed escape");
                };
                i += 3;
                let byte = (high * 16 + low) as u8;
                if byte == b'/' || byte == b'\\' {
                    return Err("the path has an encoded slash or backslash");
                }
                byte
            }
            other => {
                i += 1;
                other
            }
        };
        if byte < 0x20 || byte == 0x7f {
            return Err("the path has a control character");
        }
        if byte == b'\\' {
            return Err("the path has a backslash");
        }
        if byte == b';' {
            return Err("the path has a path parameter (;)");
        }
        out.push(byte);
    }
    Ok(out)
}

/// Appends `segment` (decoded text), escaping what cannot stand raw.
fn encode_into(segment: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in segment.as_bytes() {
        if RAW[usize::from(b)] {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xf)] as char);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{apply, path};
    use http::{Method, Request};

    #[test]
    fn targets_keep_their_query_and_authority() {
        let mut request = Request::get("https://a.test/x/../Items/%41?api_key=%2F..&b=1")
            .body(())
            .unwrap();
        apply(&mut request).unwrap();
        assert_eq!(
            request.uri().to_string(),
            "https://a.test/Items/A?api_key=%2F..&b=1"
        );
        let mut star = Request::options("*").body(()).unwrap();
        assert!(apply(&mut star).is_ok());
        assert_eq!(star.uri(), "*");
        let mut star = Request::get("*").body(()).unwrap();
        assert!(apply(&mut star).is_err());
        let mut star = Request::builder()
            .method(Method::POST)
            .uri("*")
            .body(())
            .unwrap();
        assert!(apply(&mut star).is_err());
    }

    #[test]
    fn canonical_paths_are_borrowed_unchanged() {
        for p in [
            "/",
            "/web/",
            "/web/index.html",
            "/Users/AuthenticateByName",
            "/Items/abc/Images/Primary",
            "/a/b.c/..d/.e/f..",
            "/a:b@c!$&'()*+,=~_-",
        ] {
            let got = path(p).unwrap();
            assert!(matches!(got, std::borrow::Cow::Borrowed(_)), "{p}");
            assert_eq!(got, p);
        }
    }

    #[test]
    fn the_one_pass_check_agrees_with_the_segment_reading() {
        // The segment-by-segment reading of "already canonical", as an oracle.
        fn oracle(path: &str) -> bool {
            let segments: Vec<&str> = path[1..].split('/').collect();
            path.bytes().all(super::stays_raw)
                && segments.iter().enumerate().all(|(i, s)| match *s {
                    "" => i == segments.len() - 1,
                    "." | ".." => false,
                    _ => true,
                })
        }
        let parts = ["", ".", "..", "...", "a", ".a", "a.", "%41", ";", "é"];
        for a in parts {
            for b in parts {
                for c in parts {
                    for path in [
                        format!("/{a}/{b}/{c}"),
                        format!("/{a}/{b}"),
                        format!("/{a}"),
                    ] {
                        assert_eq!(
                            super::is_canonical(path.as_bytes()),
                            oracle(&path),
                            "{path:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn spellings_become_the_canonical_path() {
        for (spelled, canonical) in [
            ("/%73ecret/x", "/secret/x"),
            ("/Users/%41uthenticateByName", "/Users/AuthenticateByName"),
            ("/Users/%61uthenticatebyname", "/Users/authenticatebyname"),
            ("/./secret/x", "/secret/x"),
            ("/x/../secret/x", "/secret/x"),
            ("/x/%2e%2E/secret/x", "/secret/x"),
            ("/x/.%2e/secret", "/secret"),
            ("/secret/.", "/secret/"),
            ("/secret/x/..", "/secret/"),
            ("/a/b/../..", "/"),
            ("//secret//x", "/secret/x"),
            ("/secret//", "/secret/"),
            ("//", "/"),
            ("/a%20b", "/a%20b"),
            ("/a%3fb%23c%25d", "/a%3Fb%23c%25d"),
            ("/a b", "/a%20b"),
            ("/caf%C3%A9", "/caf%C3%A9"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/caf\u{e9}", "/caf%C3%A9"),
            ("/a%7E%2D", "/a~-"),
            ("/a\"b", "/a%22b"),
        ] {
            assert_eq!(path(spelled).unwrap(), canonical, "{spelled}");
            // Canonical is a fixed point.
            assert_eq!(path(canonical).unwrap(), canonical, "{canonical}");
        }
    }

    #[test]
    fn ambiguous_spellings_are_refused() {
        for refused in [
            "/secret%2Fx",
            "/secret%2fx",
            "/secret%5Cx",
            "/secret\\x",
            "/secret;x",
            "/..;/secret",
            "/secret%3Bx",
            "/a%00b",
            "/a%0Ab",
            "/a%7Fb",
            "/..",
            "/../secret",
            "/a/../../secret",
            "/%2e%2e/secret",
            "/a%",
            "/a%4",
            "/a%zz",
            "/a%u0041",
            "/%C0%AE%C0%AE/secret",
            "/%C0%AF",
            "/%E0%80%AE",
            "/%80",
            "/%C3",
            "*",
            "secret",
            "",
        ] {
            assert!(path(refused).is_err(), "{refused:?}");
        }
    }
}
