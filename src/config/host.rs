//! Host names as a site names them: exact names and `*.example.com` wildcards,
//! and the normalisation every incoming Host, `:authority` and SNI goes through.

use std::fmt;
use std::net::IpAddr;

/// A name a site answers to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// One exact name, lower-case, without a trailing dot.
    Exact(String),
    /// `*.suffix`: any single label followed by `.suffix` (as TLS wildcards match).
    Wildcard(String),
}

impl HostPattern {
    /// Parses a configured host, saying what would be valid when it is not.
    pub fn parse(text: &str) -> Result<Self, String> {
        let name = text.trim_end_matches('.').to_ascii_lowercase();
        if name.parse::<IpAddr>().is_ok() || name.starts_with('[') {
            return Err(format!(
                "`{text}` is an IP address; a site needs a name, since TLS clients send no \
                 server name for an address (use `localhost` or a DNS name)"
            ));
        }
        if let Some((scheme, rest)) = name.split_once("://") {
            let bare = rest.split(['/', ':']).next().unwrap_or(rest);
            return Err(format!(
                "`{text}` is a URL; a host is the name alone: write \"{bare}\" (without {scheme}://)"
            ));
        }
        if name.contains(':') {
            return Err(format!(
                "`{text}` has a port; a host is a name only (ports belong in [server] listeners)"
            ));
        }
        if let Some(suffix) = name.strip_prefix("*.") {
            check_name(suffix, text)?;
            if !suffix.contains('.') {
                return Err(format!(
                    "`{text}` is too broad; a wildcard needs at least two labels after `*.`"
                ));
            }
            return Ok(HostPattern::Wildcard(suffix.to_string()));
        }
        check_name(&name, text)?;
        Ok(HostPattern::Exact(name))
    }

    /// Whether `host` (already normalised) is one this pattern names.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(name) => name == host,
            HostPattern::Wildcard(suffix) => host
                .strip_suffix(suffix.as_str())
                .and_then(|label| label.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty() && !label.contains('.')),
        }
    }

    /// Whether the name is local (localhost, `.local`, `.lan`, `.home.arpa`,
    /// `.internal`, `.test`, or a single label): those get certificates from the
    /// local CA by default, since no public CA will sign them.
    pub fn is_local(&self) -> bool {
        let name = match self {
            HostPattern::Exact(name) | HostPattern::Wildcard(name) => name,
        };
        !name.contains('.')
            || [
                ".localhost",
                ".local",
                ".lan",
                ".home.arpa",
                ".internal",
                ".test",
            ]
            .iter()
            .any(|suffix| name.ends_with(suffix))
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(name) => f.write_str(name),
            HostPattern::Wildcard(suffix) => write!(f, "*.{suffix}"),
        }
    }
}

fn check_name(name: &str, original: &str) -> Result<(), String> {
    let valid_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(valid_label) {
        return Err(format!(
            "`{original}` is not a valid host name; use letters, digits and hyphens in \
             dot-separated labels, or `*.example.com` for a wildcard"
        ));
    }
    Ok(())
}

/// Normalises a Host header value, `:authority` or SNI for lookup: lower-case,
/// port and trailing dot removed. Returns `None` for a value no site could have.
pub fn normalise(value: &str) -> Option<String> {
    let host = if let Some(rest) = value.strip_prefix('[') {
        // An IPv6 literal: keep the brackets' content; no site is named by one.
        let end = rest.find(']')?;
        return Some(rest[..end].to_ascii_lowercase());
    } else {
        match value.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            Some(_) => return None,
            None => value,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || host.bytes().any(|b| b <= b' ' || b == b'@' || b == b'/') {
        return None;
    }
    Some(host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::{normalise, HostPattern};

    #[test]
    fn exact_and_wildcard_matching() {
        let exact = HostPattern::parse("Jelly.Example.com.").unwrap();
        assert!(exact.matches("jelly.example.com"));
        assert!(!exact.matches("x.jelly.example.com"));
        let wild = HostPattern::parse("*.example.com").unwrap();
        assert!(wild.matches("jelly.example.com"));
        assert!(!wild.matches("example.com"));
        assert!(!wild.matches("a.b.example.com"));
        assert!(!wild.matches("badexample.com"));
    }

    #[test]
    fn invalid_hosts_are_explained() {
        assert!(HostPattern::parse("127.0.0.1")
            .unwrap_err()
            .contains("IP address"));
        assert!(HostPattern::parse("a.com:443")
            .unwrap_err()
            .contains("port"));
        assert!(HostPattern::parse("*.com")
            .unwrap_err()
            .contains("too broad"));
        assert!(HostPattern::parse("bad_name.com")
            .unwrap_err()
            .contains("valid host"));
        assert!(HostPattern::parse("-a.com").is_err());
    }

    #[test]
    fn local_names() {
        assert!(HostPattern::parse("localhost").unwrap().is_local());
        assert!(HostPattern::parse("jelly.lan").unwrap().is_local());
        assert!(!HostPattern::parse("jelly.example.com").unwrap().is_local());
    }

    #[test]
    fn normalising_incoming_hosts() {
        assert_eq!(
            normalise("Jelly.Example.COM:8443").as_deref(),
            Some("jelly.example.com")
        );
        assert_eq!(
            normalise("jelly.example.com.").as_deref(),
            Some("jelly.example.com")
        );
        assert_eq!(normalise("[::1]:8443").as_deref(), Some("::1"));
        assert_eq!(normalise("user@evil.com"), None);
        assert_eq!(normalise("a.com:https"), None);
        assert_eq!(normalise(""), None);
    }
}
