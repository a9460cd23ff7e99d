//! The `Token` of an `Authorization`-style header value: Jellyfin's own
//! scheme (`MediaBrowser`, or the legacy `Emby`) and its comma-separated
//! parameters, `Token="…"` among them. Read on every request that carries
//! credentials, so in one pass over the bytes.

use http::HeaderValue;

/// The `Token` of an `Authorization`-style value with Jellyfin's scheme
/// (`MediaBrowser`, or the legacy `Emby`): `Token="…"` among its
/// comma-separated parameters (the name as written, the value unquoted).
pub fn token_of(value: &HeaderValue) -> Option<&str> {
    static TOKEN: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new("Token"));
    let bytes = value.as_bytes();
    let start = bytes.iter().position(|b| *b != b' ' && *b != b'\t')?;
    let rest = &bytes[start..];
    let space = memchr::memchr(b' ', rest)?;
    let scheme = &rest[..space];
    if !scheme.eq_ignore_ascii_case(b"MediaBrowser") && !scheme.eq_ignore_ascii_case(b"Emby") {
        return None;
    }
    // `Token` where a parameter starts (after the scheme or a comma), then
    // `=`, then its value, quoted or up to the next comma. Found by memmem:
    // this runs for every request with credentials. (A device name may be
    // any bytes, so only the token itself must be text.)
    let params = &rest[space + 1..];
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let mut from = 0;
    while let Some(found) = TOKEN.find(&params[from..]) {
        let at = from + found;
        from = at + 5;
        let before = params[..at].iter().rev().find(|b| !blank(b));
        if !matches!(before, None | Some(b',')) {
            continue;
        }
        let after = &params[at + 5..];
        let after = &after[after.iter().take_while(|b| blank(b)).count()..];
        let Some(after) = after.strip_prefix(b"=") else {
            continue;
        };
        let after = &after[after.iter().take_while(|b| blank(b)).count()..];
        let value = match after.strip_prefix(b"\"") {
            Some(quoted) => &quoted[..memchr::memchr(b'"', quoted).unwrap_or(quoted.len())],
            None => after[..memchr::memchr(b',', after).unwrap_or(after.len())].trim_ascii_end(),
        };
        if !value.is_empty() {
            return std::str::from_utf8(value).ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::token_of;
    use http::HeaderValue;

    #[test]
    fn the_token_is_read_as_jellyfin_reads_it() {
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
        assert_eq!(
            token_of(&HeaderValue::from_static(
                r#"MediaBrowser DeviceToken="d", Token = "t2""#
            )),
            Some("t2"),
            "a name ending in Token is not Token; spaces around ="
        );
        assert_eq!(
            token_of(&HeaderValue::from_static(
                r#"MediaBrowser Token=bare, Client="c""#
            )),
            Some("bare")
        );
    }
}
