//! Sites chosen by Host: the closed door for unknown names (zero bytes), 421
//! when Host and SNI name different sites, 400 for Host trouble hyper accepts.

use std::time::Duration;

use crate::support::{exchange, status_of, TestGateway};

const SITES: &str = r#"
[[site]]
host = "jelly.test"
upstream = "http://127.0.0.1:9"
tls = "internal"

[[site]]
host = "music.test"
upstream = "http://127.0.0.1:9"
tls = "internal"
https_redirect = false
"#;

const WAIT: Duration = Duration::from_secs(3);

#[tokio::test]
async fn unknown_host_over_tls_gets_zero_bytes() {
    let gw = TestGateway::start(SITES).await;
    let mut tls = gw
        .tls_connect(Some("jelly.test"), &[b"http/1.1"])
        .await
        .unwrap();
    let (bytes, closed) =
        exchange(&mut tls, b"GET / HTTP/1.1\r\nHost: evil.test\r\n\r\n", WAIT).await;
    assert!(
        bytes.is_empty(),
        "no response bytes: {:?}",
        String::from_utf8_lossy(&bytes)
    );
    assert!(closed, "connection closed");
}

#[tokio::test]
async fn unknown_host_over_plain_http_gets_zero_bytes() {
    let gw = TestGateway::start(SITES).await;
    let mut tcp = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    let (bytes, closed) = exchange(
        &mut tcp,
        b"GET / HTTP/1.1\r\nHost: 203.0.113.7\r\n\r\n",
        WAIT,
    )
    .await;
    assert!(
        bytes.is_empty() && closed,
        "got {:?}",
        String::from_utf8_lossy(&bytes)
    );
}

#[tokio::test]
async fn unknown_authority_over_h2_is_refused_without_serving() {
    let gw = TestGateway::start(SITES).await;
    let tls = gw.tls_connect(Some("jelly.test"), &[b"h2"]).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    let driver = tokio::spawn(conn);
    let request = http::Request::get("https://evil.test/")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let result = sender.send_request(request).await;
    assert!(
        result.is_err(),
        "no response for an unknown :authority: {:?}",
        result.map(|r| r.status())
    );
    let ended = tokio::time::timeout(WAIT, driver).await;
    assert!(
        ended.is_ok(),
        "the whole connection is closed, not just the stream"
    );
}

#[tokio::test]
async fn host_naming_another_site_than_sni_gets_421() {
    let gw = TestGateway::start(SITES).await;
    let mut tls = gw
        .tls_connect(Some("jelly.test"), &[b"http/1.1"])
        .await
        .unwrap();
    let (bytes, _) = exchange(
        &mut tls,
        b"GET / HTTP/1.1\r\nHost: music.test\r\nConnection: close\r\n\r\n",
        WAIT,
    )
    .await;
    assert_eq!(status_of(&bytes), 421);

    let client = gw.reqwest(&["jelly.test"], true);
    let same = client.get(gw.url("jelly.test", "/")).send().await.unwrap();
    assert_eq!(same.version(), reqwest::Version::HTTP_2);
    assert_eq!(
        same.status(),
        502,
        "a known site reaches the (absent) upstream"
    );
}

#[tokio::test]
async fn missing_duplicate_and_disagreeing_hosts_get_400_and_close() {
    let gw = TestGateway::start(SITES).await;
    let cases: [&[u8]; 4] = [
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: music.test\r\nHost: music.test\r\n\r\n",
        b"GET http://jelly.test/ HTTP/1.1\r\nHost: music.test\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: music.test@evil.test\r\n\r\n",
    ];
    for case in cases {
        let mut tcp = tokio::net::TcpStream::connect(gw.http).await.unwrap();
        let (bytes, closed) = exchange(&mut tcp, case, WAIT).await;
        assert_eq!(
            status_of(&bytes),
            400,
            "for {:?}",
            String::from_utf8_lossy(case)
        );
        assert!(
            closed,
            "connection closed after 400 for {:?}",
            String::from_utf8_lossy(case)
        );
    }
    // The same request, well-formed, is served (site opted out of the redirect).
    let mut tcp = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    let (bytes, _) = exchange(
        &mut tcp,
        b"GET http://music.test/ HTTP/1.1\r\nHost: music.test\r\nConnection: close\r\n\r\n",
        WAIT,
    )
    .await;
    assert_eq!(status_of(&bytes), 502);
}
