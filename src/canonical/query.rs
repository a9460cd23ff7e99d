//! Query parameter names as the upstream reads them (escapes decoded, case
//! ignored): how the cache key, the access log and the gate find a token
//! parameter in any spelling. The query itself is forwarded as sent.

/// Whether a query parameter's `name` is one of `names` (lower-case) as
/// the upstream reads it: escapes decoded (`api%5Fkey` is `api_key`), case
/// ignored. Token parameters are found this way by the cache key and the
/// access log.
pub fn param_is(name: &str, names: &[&str]) -> bool {
    if !name.contains('%') {
        return names.iter().any(|n| n.eq_ignore_ascii_case(name));
    }
    let decoded = decode_query_name(name.as_bytes());
    names
        .iter()
        .any(|n| n.as_bytes().eq_ignore_ascii_case(&decoded))
}

/// A query parameter name with its escapes decoded; a malformed escape is
/// kept as written, as ASP.NET Core does.
fn decode_query_name(name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len());
    let mut i = 0;
    while i < name.len() {
        let hex = |at: usize| name.get(at).and_then(|&b| (b as char).to_digit(16));
        match (name[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (other, _, _) => {
                out.push(other);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn token_parameters_are_found_in_any_spelling() {
        let names = ["api_key", "apikey"];
        for name in [
            "api_key",
            "API_KEY",
            "api%5Fkey",
            "%61pi_key",
            "ApiKey",
            "%41piKey",
        ] {
            assert!(super::param_is(name, &names), "{name}");
        }
        for name in ["api_keys", "api%5F", "tag", "api%zzkey"] {
            assert!(!super::param_is(name, &names), "{name}");
        }
    }
}
