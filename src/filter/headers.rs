//! Security headers: the `jellyfin` preset (the reference guide's
//! Permissions-Policy as one valid value, a Content-Security-Policy that lets the
//! web client, Chromecast's `cast_sender.js` and YouTube trailers work,
//! nosniff, Referrer-Policy, frame options, HSTS for public certificates), then
//! the site's own `headers` and `remove_headers`. Applied to every response,
//! drawbridge's error pages included ("always" in nginx's terms); a header of
//! the same name from the upstream is replaced, never duplicated.

use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;

use crate::config::{Preset, SiteConfig, TlsSource};

/// The guide's Permissions-Policy: every browser feature the web client does
/// not use is off. Autoplay, fullscreen and picture-in-picture stay allowed.
pub const PERMISSIONS_POLICY: &str = "accelerometer=(), ambient-light-sensor=(), battery=(), \
bluetooth=(), camera=(), clipboard-read=(), display-capture=(), document-domain=(), \
encrypted-media=(), gamepad=(), geolocation=(), gyroscope=(), hid=(), idle-detection=(), \
interest-cohort=(), keyboard-map=(), local-fonts=(), magnetometer=(), microphone=(), \
payment=(), publickey-credentials-get=(), serial=(), sync-xhr=(), usb=(), \
xr-spatial-tracking=()";

/// A CSP the Jellyfin web client works under: its inline styles and scripts,
/// blob workers, images from anywhere over https (artwork providers),
/// `https://www.gstatic.com` for Chromecast's sender and
/// `https://www.youtube.com` for trailers. Framing only by the same origin.
pub const CONTENT_SECURITY_POLICY: &str = "default-src https: data: blob:; \
img-src 'self' https://* data: blob:; style-src 'self' 'unsafe-inline'; \
script-src 'self' 'unsafe-inline' https://www.gstatic.com https://www.youtube.com blob:; \
worker-src 'self' blob:; connect-src 'self'; object-src 'none'; font-src 'self' data:; \
frame-ancestors 'self'; base-uri 'self'";

/// HSTS for sites with a public certificate: two years, this host only
/// (`includeSubDomains` could break other services of the user's domain).
pub const HSTS: &str = "max-age=63072000";

/// The header policy of one site.
#[derive(Debug, Clone, Default)]
pub struct SecurityHeaders {
    set: Vec<(HeaderName, HeaderValue)>,
    /// Set only on responses over TLS.
    tls_only: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl SecurityHeaders {
    /// The policy for `site`: preset first, then the site's own headers.
    pub fn for_site(site: &SiteConfig) -> SecurityHeaders {
        let mut policy = SecurityHeaders::default();
        if site.preset == Preset::Jellyfin {
            let fixed = [
                ("permissions-policy", PERMISSIONS_POLICY),
                ("content-security-policy", CONTENT_SECURITY_POLICY),
                ("x-content-type-options", "nosniff"),
                ("referrer-policy", "no-referrer"),
                ("x-frame-options", "SAMEORIGIN"),
            ];
            for (name, value) in fixed {
                policy.set(
                    HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                );
            }
            if site.tls != TlsSource::Internal {
                // A local-CA certificate is not trusted everywhere; pinning
                // browsers to https for it would lock them out.
                policy.tls_only.push((
                    http::header::STRICT_TRANSPORT_SECURITY,
                    HeaderValue::from_static(HSTS),
                ));
            }
        }
        for (name, value) in &site.headers {
            policy.tls_only.retain(|(n, _)| n != name);
            policy.set(name.clone(), value.clone());
        }
        policy.remove = site.remove_headers.clone();
        policy
    }

    fn set(&mut self, name: HeaderName, value: HeaderValue) {
        self.set.retain(|(n, _)| *n != name);
        self.set.push((name, value));
    }

    /// Applies the policy to response `headers`.
    pub fn apply(&self, headers: &mut HeaderMap, tls: bool) {
        // One growth of the map instead of several.
        headers.reserve(self.set.len() + if tls { self.tls_only.len() } else { 0 });
        for (name, value) in &self.set {
            // insert() replaces every value the upstream sent under this name.
            headers.insert(name.clone(), value.clone());
        }
        if tls {
            for (name, value) in &self.tls_only {
                headers.insert(name.clone(), value.clone());
            }
        }
        for name in &self.remove {
            headers.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{SecurityHeaders, HSTS};
    use crate::config::Config;
    use http::HeaderMap;
    use std::path::Path;

    fn policy(site_extra: &str, tls: &str) -> SecurityHeaders {
        let text = format!(
            "[[site]]\nhost = \"a.test\"\nupstream = \"http://127.0.0.1:1\"\n{tls}\n{site_extra}\n"
        );
        let config = Config::parse(Path::new("t.toml"), &text).unwrap();
        SecurityHeaders::for_site(&config.sites[0])
    }

    #[test]
    fn preset_replaces_upstream_values_and_adds_hsts_only_for_public_tls() {
        let mut headers = HeaderMap::new();
        headers.append("x-frame-options", "ALLOWALL".parse().unwrap());
        headers.append("x-frame-options", "DENY".parse().unwrap());
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let ca = rcgen::generate_simple_self_signed(vec!["a.test".to_string()]).unwrap();
        std::fs::write(&cert, ca.cert.pem()).unwrap();
        std::fs::write(&key, ca.signing_key.serialize_pem()).unwrap();
        let files = format!(
            "tls = {{ cert = \"{}\", key = \"{}\" }}",
            cert.display(),
            key.display()
        );
        policy("", &files).apply(&mut headers, true);
        let frames: Vec<_> = headers.get_all("x-frame-options").iter().collect();
        assert_eq!(frames, ["SAMEORIGIN"]);
        assert_eq!(headers["strict-transport-security"], HSTS);
        assert_eq!(headers["x-content-type-options"], "nosniff");
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("https://www.gstatic.com") && csp.contains("https://www.youtube.com"));
        assert!(!headers["permissions-policy"]
            .to_str()
            .unwrap()
            .contains('\n'));

        let mut plain = HeaderMap::new();
        policy("", &files).apply(&mut plain, false);
        assert!(
            plain.get("strict-transport-security").is_none(),
            "no HSTS over plain HTTP"
        );
        let mut internal = HeaderMap::new();
        policy("", "tls = \"internal\"").apply(&mut internal, true);
        assert!(
            internal.get("strict-transport-security").is_none(),
            "no HSTS for local-CA sites"
        );
    }

    #[test]
    fn site_headers_add_replace_and_remove() {
        let extra = "headers = { \"Content-Security-Policy\" = \"default-src 'self'\", \"X-Extra\" = \"1\" }\nremove_headers = [\"X-Frame-Options\", \"Server\"]";
        let mut headers = HeaderMap::new();
        headers.insert("server", "Kestrel".parse().unwrap());
        policy(extra, "tls = \"internal\"").apply(&mut headers, true);
        assert_eq!(headers["content-security-policy"], "default-src 'self'");
        assert_eq!(headers["x-extra"], "1");
        assert!(headers.get("x-frame-options").is_none());
        assert!(headers.get("server").is_none());
        let mut bare = HeaderMap::new();
        policy("preset = \"none\"", "tls = \"internal\"").apply(&mut bare, true);
        assert!(bare.is_empty(), "preset none adds nothing: {bare:?}");
    }
}
