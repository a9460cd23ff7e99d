//! The request head as the client sent it: the checks hyper leaves to a
//! proxy (sizes, exactly one Host, a target that agrees with it) and the raw
//! Host to forward.

use http::{header, HeaderMap, HeaderValue, Request, Version};

use crate::config::{normalise_host, Limits};
use crate::error::ProxyError;

/// The Host as the client sent it: the header, or HTTP/2's `:authority`.
pub(super) fn raw_host<B>(request: &Request<B>) -> &str {
    request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
        .unwrap_or_default()
}

/// Checks what hyper lets through but a proxy must not (RFC 9112 §3.2, §3.2.2):
/// sizes of the target and header lines, exactly one Host, and an absolute-form
/// target or `:authority` that agrees with it. Returns the normalised host.
pub fn check_head<B>(request: &Request<B>, limits: &Limits) -> Result<String, ProxyError> {
    let uri = request.uri();
    let target_len = uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    if target_len > limits.max_request_line {
        return Err(ProxyError::UriTooLong);
    }
    for (name, value) in request.headers() {
        if name.as_str().len() + value.len() + 2 > limits.max_header_line {
            return Err(ProxyError::HeaderTooLarge);
        }
    }
    // `max_headers` for every protocol (hyper's HTTP/1.1 parser counts its
    // own; HTTP/2 and HTTP/3 are counted here), as the upstream will get
    // them: HTTP/2's cookie crumbs are joined into one field.
    let crumbs = request.headers().get_all(header::COOKIE).iter().count();
    if request.headers().len() - crumbs.saturating_sub(1) > limits.max_headers {
        return Err(ProxyError::HeaderTooLarge);
    }
    let mut hosts = request.headers().get_all(header::HOST).iter();
    let header_host = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::BadRequest("more than one Host header"));
    }
    let header_host = match header_host {
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(normalise_host)
                .ok_or(ProxyError::BadRequest("malformed Host header"))?,
        ),
        None => None,
    };
    let target_host = match uri.authority() {
        Some(authority) => Some(
            normalise_host(authority.as_str())
                .ok_or(ProxyError::BadRequest("malformed request target authority"))?,
        ),
        None => None,
    };
    match (header_host, target_host) {
        (Some(h), Some(t)) if h != t => Err(ProxyError::BadRequest(
            "request target and Host name different hosts",
        )),
        (Some(h), _) => Ok(h),
        // HTTP/2 and HTTP/3 carry the host in :authority alone (RFC 9113
        // §8.3.1, RFC 9114 §4.3.1).
        (None, Some(t)) if matches!(request.version(), Version::HTTP_2 | Version::HTTP_3) => Ok(t),
        (None, _) => Err(ProxyError::BadRequest("missing Host header")),
    }
}

/// Refuses request framing that two parsers could read differently (RFC 9112
/// §6.1, §6.3): Content-Length with Transfer-Encoding, more than one
/// Content-Length, a transfer coding other than a lone `chunked`, control bytes
/// in header values. For HTTP/1.1, hyper has already answered most of these
/// with 400, and resolves two of them itself before we see the head: with both
/// CL and TE it drops CL (the raw head is watched for that in `head_scan.rs`),
/// and it folds identical duplicate CLs into one (RFC 9110 §8.6). This check is
/// the second line for whatever reaches the pipeline by any protocol.
pub fn check_framing(headers: &HeaderMap) -> Result<(), ProxyError> {
    let lengths = headers.get_all(header::CONTENT_LENGTH).iter().count();
    let codings: Vec<&HeaderValue> = headers.get_all(header::TRANSFER_ENCODING).iter().collect();
    if lengths > 0 && !codings.is_empty() {
        return Err(ProxyError::BadRequest(
            "both Content-Length and Transfer-Encoding",
        ));
    }
    if lengths > 1 {
        return Err(ProxyError::BadRequest("more than one Content-Length"));
    }
    if let Some(length) = headers.get(header::CONTENT_LENGTH) {
        if length.is_empty() || !length.as_bytes().iter().all(u8::is_ascii_digit) {
            return Err(ProxyError::BadRequest("malformed Content-Length"));
        }
    }
    match codings.as_slice() {
        [] => {}
        [only]
            if only
                .as_bytes()
                .trim_ascii()
                .eq_ignore_ascii_case(b"chunked") => {}
        _ => {
            return Err(ProxyError::BadRequest(
                "Transfer-Encoding other than chunked",
            ))
        }
    }
    let control = |b: &u8| (*b < 0x20 && *b != b'\t') || *b == 0x7f;
    if headers.values().any(|v| v.as_bytes().iter().any(control)) {
        return Err(ProxyError::BadRequest(
            "control character in a header value",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{check_framing, check_head};
    use crate::config::Limits;
    use crate::error::ProxyError;
    use http::{HeaderMap, Request, Version};

    fn req(uri: &str, hosts: &[&str], version: Version) -> Request<()> {
        let mut builder = Request::builder().uri(uri).version(version);
        for h in hosts {
            builder = builder.header("host", *h);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn host_rules() {
        let l = Limits::default();
        let ok = |r| check_head(&r, &l).map_err(|e: ProxyError| e.to_string());
        assert_eq!(
            ok(req("/", &["A.test:8443"], Version::HTTP_11)),
            Ok("a.test".into())
        );
        assert!(ok(req("/", &[], Version::HTTP_11))
            .unwrap_err()
            .contains("missing Host"));
        assert!(ok(req("/", &["a.test", "b.test"], Version::HTTP_11))
            .unwrap_err()
            .contains("more than one"));
        assert!(ok(req("http://b.test/", &["a.test"], Version::HTTP_11))
            .unwrap_err()
            .contains("different hosts"));
        assert_eq!(
            ok(req("http://a.test/x", &["a.test"], Version::HTTP_11)),
            Ok("a.test".into())
        );
        assert_eq!(
            ok(req("https://a.test/x", &[], Version::HTTP_2)),
            Ok("a.test".into())
        );
        assert!(ok(req("https://a.test/x", &["b.test"], Version::HTTP_2)).is_err());
        assert!(ok(req("/", &["bad host"], Version::HTTP_11)).is_err());
    }

    #[test]
    fn size_limits() {
        let l = Limits::default();
        let long = format!("/{}", "a".repeat(9000));
        let r = req(&long, &["a.test"], Version::HTTP_11);
        assert!(matches!(check_head(&r, &l), Err(ProxyError::UriTooLong)));
        let mut r = req("/", &["a.test"], Version::HTTP_11);
        r.headers_mut()
            .insert("x-big", "b".repeat(9000).parse().unwrap());
        assert!(matches!(
            check_head(&r, &l),
            Err(ProxyError::HeaderTooLarge)
        ));
    }

    #[test]
    fn max_headers_counts_every_protocol_with_cookie_crumbs_as_one() {
        let l = Limits {
            max_headers: 10,
            ..Limits::default()
        };
        for version in [Version::HTTP_2, Version::HTTP_3] {
            let mut r = req("https://a.test/", &[], version);
            for i in 0..10 {
                let name = http::HeaderName::try_from(format!("x-{i}")).unwrap();
                r.headers_mut().append(name, "1".parse().unwrap());
            }
            assert!(check_head(&r, &l).is_ok(), "ten fields are the limit");
            r.headers_mut().append("x-eleven", "1".parse().unwrap());
            assert!(matches!(
                check_head(&r, &l),
                Err(ProxyError::HeaderTooLarge)
            ));
            let mut r = req("https://a.test/", &[], version);
            for i in 0..30 {
                r.headers_mut()
                    .append("cookie", format!("c{i}=1").parse().unwrap());
            }
            assert!(check_head(&r, &l).is_ok(), "crumbs join into one cookie");
        }
    }

    #[test]
    fn smuggling_framings_are_refused() {
        fn map(pairs: &[(&'static str, &[u8])]) -> HeaderMap {
            let mut h = HeaderMap::new();
            for (n, v) in pairs {
                h.append(*n, http::HeaderValue::from_bytes(v).unwrap());
            }
            h
        }
        assert!(check_framing(&map(&[
            ("content-length", b"5"),
            ("transfer-encoding", b"chunked")
        ]))
        .is_err());
        assert!(
            check_framing(&map(&[("content-length", b"5"), ("content-length", b"5")])).is_err()
        );
        assert!(check_framing(&map(&[("transfer-encoding", b"chunked, gzip")])).is_err());
        assert!(check_framing(&map(&[("transfer-encoding", b"identity")])).is_err());
        assert!(check_framing(&map(&[
            ("transfer-encoding", b"chunked"),
            ("transfer-encoding", b"chunked")
        ]))
        .is_err());
        assert!(check_framing(&map(&[("content-length", b"+5")])).is_err());
        assert!(check_framing(&map(&[("transfer-encoding", b"Chunked")])).is_ok());
        assert!(check_framing(&map(&[("content-length", b"5"), ("x-a", b"tab\there")])).is_ok());
    }
}
