//! The `Token` of an `Authorization`-style header value: Jellyfin's own
//! scheme (`MediaBrowser`, or the legacy `Emby`) and its comma-separated
//! parameters, `Token="…"` among them. Read on every request that carries
//! credentials, so in one pass over the bytes.

use http::HeaderValue;

/// The `Token` of an `Authorization`-style value with Jellyfin's scheme
/// (`MediaBrowser`, or the legacy `Emby`): the first `Token="…"` with a
/// value among its comma-separated parameters (the name as written, the
/// value unquoted).
pub fn token_of(value: &HeaderValue) -> Option<&str> {
    static TOKEN: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new("Token"));
    let rest = trim_blank(value.as_bytes());
    let space = rest.iter().position(|b| *b == b' ')?;
    let scheme = &rest[..space];
    // As every app writes it, then in any case.
    let jellyfin = |name: &[u8]| scheme == name || scheme.eq_ignore_ascii_case(name);
    if !jellyfin(b"MediaBrowser") && !jellyfin(b"Emby") {
        return None;
    }
    // `Token` where a parameter starts (after the scheme or a comma — in a
    // quoted value too: a device name may be any bytes, so only the token
    // itself must be text), then `=`, then its value, quoted or up to the
    // next comma. Found by memmem: this runs for every request with
    // credentials, and most carry one `Token`, last.
    let params = &rest[space + 1..];
    let mut from = 0;
    while let Some(found) = TOKEN.find(&params[from..]) {
        let at = from + found;
        from = at + 5;
        let before = params[..at]
            .iter()
            .rev()
            .find(|b| !matches!(b, b' ' | b'\t'));
        if !matches!(before, None | Some(b',')) {
            continue;
        }
        let Some(after) = trim_blank(&params[at + 5..]).strip_prefix(b"=") else {
            continue;
        };
        let after = trim_blank(after);
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

/// `bytes` without the spaces and tabs it starts with.
fn trim_blank(bytes: &[u8]) -> &[u8] {
    let blanks = bytes
        .iter()
        .take_while(|b| matches!(b, b' ' | b'\t'))
        .count();
    &bytes[blanks..]
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
        assert_eq!(
            token_of(&HeaderValue::from_static(
                "\t MediaBrowser  Client=\"c\",\tToken=\"\", Token=\"t3\""
            )),
            Some("t3"),
            "blanks anywhere a parameter starts; the first token with a value"
        );
        assert_eq!(
            token_of(&HeaderValue::from_static(r#"MediaBrowser TokenToken="t""#)),
            None
        );
    }
}
