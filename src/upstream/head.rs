//! The upstream's head: a request's head as the upstream sees it and an
//! answer's as the client does — hop-by-hop headers removed both ways
//! (RFC 9110 §7.6.1), HTTP/2 translated to clean HTTP/1.1, and the
//! forwarded headers set from what drawbridge knows, never from what the
//! client claims. (The framing checks that stop request smuggling come
//! first, with the rest of the request head's checks: `pipeline/head.rs`.)

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{request, Version};

use crate::client_ip::Client;

/// Headers that describe one connection, never forwarded. Not `Trailer`:
/// it is end to end (RFC 9110 §6.6.2), and an answer's trailers reach an
/// HTTP/1.1 client only under it; a request's is dropped in
/// `upstream_head`, with the request's trailers (`body.rs`).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Client-IP and scheme claims that only a trusted proxy may make.
const CLAIMS: [HeaderName; 3] = [
    HeaderName::from_static("x-forwarded-port"),
    header::FORWARDED,
    HeaderName::from_static("cf-connecting-ip"),
];

/// Removes hop-by-hop headers and every header the Connection header names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|option| option.trim().to_ascii_lowercase())
        .filter(|option| !option.is_empty())
        .collect();
    for name in named {
        headers.remove(name.as_str());
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Whether the request's TE lists `trailers` (any case, any parameters).
fn accepts_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|coding| {
            let name = coding.split(';').next().unwrap_or_default();
            name.trim().eq_ignore_ascii_case("trailers")
        })
}

/// What the upstream is told about the client.
#[derive(Debug, Clone, Copy)]
pub struct Visitor<'a> {
    /// The client, as `client_ip::identify` decided.
    pub client: &'a Client,
    /// The request came over TLS.
    pub tls: bool,
    /// The Host as the client sent it (or HTTP/2's `:authority`).
    pub host: &'a str,
}

/// Turns a client's request head into the HTTP/1.1 head sent upstream.
pub fn upstream_head(parts: &mut request::Parts, visitor: Visitor<'_>) {
    let headers = &mut parts.headers;
    let trailers_wanted = accepts_trailers(headers);
    remove_hop_by_hop(headers);
    // A request's trailers are not forwarded (fields there would pass the
    // rewrites below), so neither is their announcement.
    headers.remove(header::TRAILER);
    if trailers_wanted {
        // The one TE a proxy passes on (RFC 9110 §10.1.4): the client takes
        // trailers, and drawbridge carries them back over every version.
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    // The body is read on demand; hyper answers `100 Continue` to the client
    // when the upstream side starts reading it.
    headers.remove(header::EXPECT);
    if matches!(parts.version, Version::HTTP_2 | Version::HTTP_3) {
        // RFC 9113 §8.2.3, RFC 9114 §4.2.1: HTTP/1.1 wants the cookie
        // crumbs in one field.
        let crumbs: Vec<&str> = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if crumbs.len() > 1 {
            if let Ok(joined) = HeaderValue::from_str(&crumbs.join("; ")) {
                headers.insert(header::COOKIE, joined);
            }
        }
    }
    parts.version = Version::HTTP_11;
    let host = HeaderValue::from_str(visitor.host).ok();
    if let Some(host) = &host {
        headers.insert(header::HOST, host.clone());
    }
    let trusted = visitor.client.via_trusted_proxy;
    let (claimed_proto, claimed_host) = if trusted {
        (
            headers.get(X_FORWARDED_PROTO).cloned(),
            headers.get(X_FORWARDED_HOST).cloned(),
        )
    } else {
        (None, None)
    };
    // Claims drawbridge does not make itself are dropped; the four it makes
    // replace whatever the client sent.
    for claim in CLAIMS {
        headers.remove(claim);
    }
    let insert = |headers: &mut HeaderMap, name: HeaderName, value: Option<HeaderValue>| {
        match value {
            Some(value) => drop(headers.insert(name, value)),
            // Never leave the client's own claim in place.
            None => drop(headers.remove(name)),
        }
    };
    insert(
        headers,
        X_FORWARDED_FOR,
        HeaderValue::from_str(&visitor.client.forwarded_for).ok(),
    );
    insert(
        headers,
        X_REAL_IP,
        HeaderValue::from_str(visitor.client.ip_text()).ok(),
    );
    let proto = if visitor.tls { "https" } else { "http" };
    match claimed_proto {
        Some(value) => drop(headers.insert(X_FORWARDED_PROTO, value)),
        None => drop(headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto))),
    }
    match claimed_host {
        Some(value) => drop(headers.insert(X_FORWARDED_HOST, value)),
        None => insert(headers, X_FORWARDED_HOST, host),
    }
}

/// A copy of a request's head, without body or extensions (`Parts` holds
/// extensions and is not `Clone`): for a request sent once more, or the
/// cache's own request home.
pub fn copy_head(
    method: &http::Method,
    uri: &http::Uri,
    version: Version,
    headers: &HeaderMap,
) -> request::Parts {
    let mut copy = http::Request::new(()).into_parts().0;
    copy.method = method.clone();
    copy.uri = uri.clone();
    copy.version = version;
    copy.headers = headers.clone();
    copy
}

#[cfg(test)]
mod tests {
    use super::{remove_hop_by_hop, upstream_head, Visitor};
    use crate::client_ip::Client;
    use http::{HeaderMap, HeaderValue, Request, Version};

    fn head(version: Version, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut builder = Request::get("/x").version(version);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn client(trusted: bool) -> Client {
        let peer = "203.0.113.9";
        Client {
            ip: if trusted { "198.51.100.1" } else { peer }.parse().unwrap(),
            forwarded_for: if trusted {
                format!("198.51.100.1, 10.0.0.2, {peer}")
            } else {
                peer.to_string()
            },
            via_trusted_proxy: trusted,
        }
    }

    fn visitor(client: &Client) -> Visitor<'_> {
        Visitor {
            client,
            tls: true,
            host: "jelly.test",
        }
    }

    #[test]
    fn forged_claims_from_untrusted_peers_are_dropped() {
        let mut parts = head(
            Version::HTTP_11,
            &[
                ("x-forwarded-for", "1.2.3.4"),
                ("x-real-ip", "1.2.3.4"),
                ("forwarded", "for=1.2.3.4"),
                ("x-forwarded-proto", "http"),
            ],
        );
        parts
            .headers
            .append("x-forwarded-for", "5.6.7.8".parse().unwrap());
        parts
            .headers
            .append("x-forwarded-host", "evil.test".parse().unwrap());
        upstream_head(&mut parts, visitor(&client(false)));
        let all = |name: &str| -> Vec<&str> {
            let values = parts.headers.get_all(name).iter();
            values.map(|v| v.to_str().unwrap()).collect()
        };
        assert_eq!(all("x-forwarded-for"), ["203.0.113.9"]);
        assert_eq!(all("x-real-ip"), ["203.0.113.9"]);
        assert_eq!(all("x-forwarded-proto"), ["https"]);
        assert_eq!(all("x-forwarded-host"), ["jelly.test"]);
        assert!(parts.headers.get("forwarded").is_none());

        // A Host that is no header value: no X-Forwarded-Host, not the forged one.
        let mut parts = head(Version::HTTP_11, &[("x-forwarded-host", "evil.test")]);
        let untrusted = client(false);
        let mut o = visitor(&untrusted);
        o.host = "jelly\u{7f}.test";
        upstream_head(&mut parts, o);
        assert!(parts.headers.get("x-forwarded-host").is_none());
    }

    #[test]
    fn trusted_peers_chain_is_extended() {
        let mut parts = head(
            Version::HTTP_11,
            &[
                ("x-forwarded-for", "198.51.100.1, 10.0.0.2"),
                ("x-forwarded-proto", "https"),
            ],
        );
        let trusted = client(true);
        let mut o = visitor(&trusted);
        o.tls = false;
        upstream_head(&mut parts, o);
        assert_eq!(
            parts.headers["x-forwarded-for"],
            "198.51.100.1, 10.0.0.2, 203.0.113.9"
        );
        assert_eq!(parts.headers["x-real-ip"], "198.51.100.1");
        assert_eq!(
            parts.headers["x-forwarded-proto"], "https",
            "a trusted proxy's scheme is kept"
        );
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut parts = head(
            Version::HTTP_11,
            &[
                ("connection", "keep-alive, X-Secret"),
                ("x-secret", "1"),
                ("connection", " ,x-other ,connection, not a name"),
                ("x-other", "2"),
                ("keep-alive", "timeout=5"),
                ("proxy-connection", "keep-alive"),
                ("trailer", "x-checksum"),
                ("te", "trailers"),
                ("proxy-authorization", "x"),
                ("upgrade", "h2c"),
                ("expect", "100-continue"),
                ("x-kept", "1"),
            ],
        );
        upstream_head(&mut parts, visitor(&client(false)));
        for gone in [
            "connection",
            "x-secret",
            "x-other",
            "keep-alive",
            "proxy-connection",
            "trailer",
            "proxy-authorization",
            "upgrade",
            "expect",
        ] {
            assert!(parts.headers.get(gone).is_none(), "{gone} forwarded");
        }
        assert_eq!(parts.headers["x-kept"], "1");
        assert_eq!(parts.headers["te"], "trailers", "the client takes trailers");
    }

    #[test]
    fn te_goes_on_as_trailers_alone_and_only_when_the_client_listed_it() {
        for (sent, forwarded) in [
            (&["gzip, Trailers;q=1"][..], Some("trailers")),
            (&["deflate", "trailers"][..], Some("trailers")),
            (&["gzip, deflate"][..], None),
            (&["trailersx"][..], None),
            (&[][..], None),
        ] {
            let pairs: Vec<(&str, &str)> = sent.iter().map(|v| ("te", *v)).collect();
            let mut parts = head(Version::HTTP_11, &pairs);
            upstream_head(&mut parts, visitor(&client(false)));
            let got: Vec<_> = parts.headers.get_all("te").iter().collect();
            assert_eq!(got, forwarded.into_iter().collect::<Vec<_>>(), "{sent:?}");
        }
    }

    #[test]
    fn an_answers_trailer_announcement_stays_for_its_trailers() {
        let mut headers = HeaderMap::new();
        headers.insert("trailer", HeaderValue::from_static("x-checksum"));
        headers.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        remove_hop_by_hop(&mut headers);
        assert_eq!(headers["trailer"], "x-checksum");
        assert!(headers.get("transfer-encoding").is_none());
    }

    #[test]
    fn h2_cookies_are_joined_and_version_is_1_1() {
        let mut parts = head(Version::HTTP_2, &[("cookie", "a=1"), ("cookie", "b=2")]);
        upstream_head(&mut parts, visitor(&client(false)));
        assert_eq!(parts.version, Version::HTTP_11);
        let cookies: Vec<_> = parts.headers.get_all("cookie").iter().collect();
        assert_eq!(cookies, ["a=1; b=2"]);
        assert_eq!(parts.headers["host"], "jelly.test");
    }
}
