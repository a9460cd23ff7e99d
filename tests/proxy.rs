//! Forwarding to the fixed upstream: the head the origin sees, security
//! headers on every response, body limits, login answers passed through.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::Value;

use crate::support::origin::{seen, Origin};
use crate::support::{exchange, site, status_of, TestGateway};

#[tokio::test]
async fn origin_sees_clean_forwarded_headers_over_h1_and_h2() {
    let (_origin, gw) = TestGateway::in_front_of_jellyfin("").await;
    for http2 in [false, true] {
        let client = gw.reqwest(&["jelly.test"], http2);
        let response = client
            .get(gw.url("jelly.test", "/echo?x=1"))
            .header("x-forwarded-for", "6.6.6.6")
            .header("x-real-ip", "6.6.6.6")
            .header("forwarded", "for=6.6.6.6")
            .header("cf-connecting-ip", "6.6.6.6")
            .header("x-kept", "yes")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let echo: Value = response.json().await.unwrap();
        assert_eq!(echo["version"], "HTTP/1.1", "h2 is translated to HTTP/1.1");
        assert_eq!(echo["target"], "/echo?x=1");
        assert_eq!(
            seen(&echo, "host"),
            [format!("jelly.test:{}", gw.https.port())],
            "Host as the client sent it"
        );
        assert_eq!(
            seen(&echo, "x-forwarded-for"),
            ["127.0.0.1"],
            "forged value dropped"
        );
        assert_eq!(seen(&echo, "x-real-ip"), ["127.0.0.1"]);
        assert_eq!(seen(&echo, "x-forwarded-proto"), ["https"]);
        assert_eq!(
            seen(&echo, "x-forwarded-host"),
            [format!("jelly.test:{}", gw.https.port())]
        );
        assert!(seen(&echo, "forwarded").is_empty() && seen(&echo, "cf-connecting-ip").is_empty());
        assert_eq!(seen(&echo, "x-kept"), ["yes"]);
    }
}

#[tokio::test]
async fn hop_by_hop_headers_and_h2_cookie_crumbs() {
    let (_origin, gw) = TestGateway::in_front_of_jellyfin("").await;
    let mut tls = gw
        .tls_connect(Some("jelly.test"), &[b"http/1.1"])
        .await
        .unwrap();
    let request = b"GET /echo HTTP/1.1\r\nHost: jelly.test\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nTE: gzip, trailers\r\nProxy-Authorization: Basic eA==\r\nUpgrade: h2c\r\n\r\n";
    let (bytes, _) = exchange(&mut tls, request, Duration::from_secs(3)).await;
    let text = String::from_utf8_lossy(&bytes);
    let echo: Value = serde_json::from_str(&text[text.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    for gone in [
        "x-secret",
        "keep-alive",
        "proxy-authorization",
        "upgrade",
        "connection",
    ] {
        assert!(seen(&echo, gone).is_empty(), "{gone} reached the origin");
    }
    // Of TE, only `trailers` goes on (trailers.rs: they come back).
    assert_eq!(seen(&echo, "te"), ["trailers"]);

    let tls = gw.tls_connect(Some("jelly.test"), &[b"h2"]).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let request = http::Request::get(format!("https://jelly.test:{}/echo", gw.https.port()))
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    use http_body_util::BodyExt;
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let echo: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(seen(&echo, "cookie"), ["a=1; b=2"]);
}

#[tokio::test]
async fn security_headers_on_upstream_answers_and_on_drawbridges_own_pages() {
    let origin = Origin::start().await;
    let closed = crate::support::closed_addr().await;
    let config = format!(
        "{}{}",
        site("jelly.test", origin.addr, ""),
        site("down.test", closed, "")
    );
    let gw = TestGateway::start(&config).await;
    let client = gw.reqwest(&["jelly.test", "down.test"], true);
    for (host, path, status) in [
        ("jelly.test", "/echo", 200),
        ("jelly.test", "/status/404", 404),
        ("down.test", "/", 502),
    ] {
        let response = client.get(gw.url(host, path)).send().await.unwrap();
        assert_eq!(response.status(), status, "{host}{path}");
        let h = response.headers();
        assert!(
            h["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("https://www.gstatic.com"),
            "{path}"
        );
        assert!(h["permissions-policy"]
            .to_str()
            .unwrap()
            .contains("camera=()"));
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["referrer-policy"], "no-referrer");
        let frames: Vec<_> = h.get_all("x-frame-options").iter().collect();
        assert_eq!(
            frames,
            ["SAMEORIGIN"],
            "the upstream's value is replaced, not duplicated"
        );
        assert!(
            h.get("strict-transport-security").is_none(),
            "no HSTS for a local-CA site"
        );
    }
}

#[tokio::test]
async fn site_header_overrides_and_bare_preset() {
    let origin = Origin::start().await;
    let config = format!(
        "{}{}",
        site("jelly.test", origin.addr, "headers = { \"Content-Security-Policy\" = \"default-src 'self'\" }\nremove_headers = [\"Server\"]"),
        site("bare.test", origin.addr, "preset = \"none\"")
    );
    let gw = TestGateway::start(&config).await;
    let client = gw.reqwest(&["jelly.test", "bare.test"], false);
    let custom = client
        .get(gw.url("jelly.test", "/echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        custom.headers()["content-security-policy"],
        "default-src 'self'"
    );
    assert!(custom.headers().get("server").is_none());
    let bare = client
        .get(gw.url("bare.test", "/echo"))
        .send()
        .await
        .unwrap();
    assert!(bare.headers().get("content-security-policy").is_none());
    assert_eq!(
        bare.headers()["x-frame-options"],
        "ALLOWALL",
        "the upstream's own header untouched"
    );
    assert_eq!(bare.headers()["server"], "Kestrel");
}

#[tokio::test]
async fn bodies_over_the_limit_never_reach_the_origin() {
    let (origin, gw) = TestGateway::in_front_of_jellyfin("max_body = \"1KiB\"").await;
    let mut tls = gw
        .tls_connect(Some("jelly.test"), &[b"http/1.1"])
        .await
        .unwrap();
    let (bytes, closed) = exchange(
        &mut tls,
        b"POST /upload HTTP/1.1\r\nHost: jelly.test\r\nContent-Length: 4096\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(status_of(&bytes), 413);
    assert!(closed);
    assert_eq!(
        origin.seen.hits("/upload"),
        0,
        "413 before anything reached the origin"
    );

    let client = gw.reqwest(&["jelly.test"], false);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..8).map(|_| Ok(vec![b'u'; 512])).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let response = client
        .post(gw.url("jelly.test", "/upload"))
        .body(body)
        .send()
        .await;
    if let Ok(response) = response {
        assert_eq!(response.status(), 413);
    }
    assert_eq!(
        origin.seen.uploads_completed.load(Ordering::SeqCst),
        0,
        "the chunked upload was aborted"
    );
    assert!(origin.seen.upload_bytes.load(Ordering::SeqCst) <= 1024);

    let fits = client
        .post(gw.url("jelly.test", "/upload"))
        .body(vec![b'u'; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(fits.status(), 200);
    assert_eq!(fits.text().await.unwrap(), "1000");
}

#[tokio::test]
async fn login_answers_pass_through() {
    let (_origin, gw) = TestGateway::in_front_of_jellyfin("").await;
    let client = gw.reqwest(&["jelly.test"], true);
    let wrong = client
        .post(gw.url("jelly.test", "/Users/authenticatebyname"))
        .body(r#"{"Username":"a","Pw":"wrong"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(wrong.text().await.unwrap(), "Error processing request.");
    let right = client
        .post(gw.url("jelly.test", "/Users/AuthenticateByName"))
        .body(r#"{"Username":"a","Pw":"right"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    let info = client
        .get(gw.url("jelly.test", "/System/Info/Public"))
        .send()
        .await
        .unwrap();
    assert!(info.text().await.unwrap().contains("ServerName"));
}

#[tokio::test]
async fn hop_by_hop_headers_from_the_upstream_stop_here() {
    let (_origin, gw) = TestGateway::in_front_of_jellyfin("").await;
    let mut tls = gw
        .tls_connect(Some("jelly.test"), &[b"http/1.1"])
        .await
        .unwrap();
    let (bytes, _) = exchange(
        &mut tls,
        b"GET /hop HTTP/1.1\r\nHost: jelly.test\r\nConnection: close\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    let text = String::from_utf8_lossy(&bytes).to_ascii_lowercase();
    assert_eq!(status_of(&bytes), 200);
    assert!(text.contains("x-kept: 1"), "{text}");
    assert!(
        !text.contains("x-hop") && !text.contains("keep-alive"),
        "{text}"
    );
}
