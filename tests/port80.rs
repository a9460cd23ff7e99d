//! Port 80: 308 to https keeping path and query; the ACME webroot, with no way
//! out of its folder.

use std::time::Duration;

use crate::support::{exchange, status_of, TestGateway};

const WAIT: Duration = Duration::from_secs(3);

#[tokio::test]
async fn redirect_keeps_path_query_and_port() {
    let gw = TestGateway::start(
        "[[site]]\nhost = \"jelly.test\"\nupstream = \"http://127.0.0.1:9\"\ntls = \"internal\"\n",
    )
    .await;
    let mut tcp = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    let (bytes, _) = exchange(&mut tcp, b"GET /web/index.html?api=1&b=%20x HTTP/1.1\r\nHost: Jelly.test:80\r\nConnection: close\r\n\r\n", WAIT).await;
    let text = String::from_utf8_lossy(&bytes);
    assert_eq!(status_of(&bytes), 308, "{text}");
    let expected = format!(
        "location: https://jelly.test:{}/web/index.html?api=1&b=%20x\r\n",
        gw.https.port()
    );
    assert!(text.to_ascii_lowercase().contains(&expected), "{text}");
}

#[tokio::test]
async fn webroot_serves_tokens_and_refuses_escapes() {
    let dir = tempfile::tempdir().unwrap();
    let webroot = dir.path().join("www");
    let challenges = webroot.join(".well-known/acme-challenge");
    std::fs::create_dir_all(&challenges).unwrap();
    std::fs::write(challenges.join("tok_EN-123"), "tok_EN-123.thumbprint").unwrap();
    std::fs::write(dir.path().join("secret"), "top secret").unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret"), challenges.join("escape")).unwrap();
    let site = format!(
        "[[site]]\nhost = \"jelly.test\"\nupstream = \"http://127.0.0.1:9\"\ntls = \"internal\"\nacme_webroot = \"{}\"\n",
        webroot.display()
    );
    let gw = TestGateway::start_in(dir, &site).await;
    let get = |path: &str| {
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: jelly.test\r\nConnection: close\r\n\r\n");
        let addr = gw.http;
        async move {
            let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            exchange(&mut tcp, request.as_bytes(), WAIT).await.0
        }
    };
    let ok = get("/.well-known/acme-challenge/tok_EN-123").await;
    assert_eq!(status_of(&ok), 200);
    assert!(String::from_utf8_lossy(&ok).ends_with("tok_EN-123.thumbprint"));
    // Dot segments leave the challenge folder before the webroot sees the
    // path (its canonical path is `/secret`, redirected like any other);
    // encoded slashes are refused outright.
    for (path, expected) in [
        ("/.well-known/acme-challenge/escape", 404),
        ("/.well-known/acme-challenge/../../secret", 308),
        ("/.well-known/acme-challenge/..%2F..%2Fsecret", 400),
        ("/.well-known/acme-challenge/%2e%2e/%2e%2e/secret", 308),
        ("/.well-known/acme-challenge/", 404),
    ] {
        let bytes = get(path).await;
        let text = String::from_utf8_lossy(&bytes);
        assert_eq!(status_of(&bytes), expected, "{path}: {text}");
        assert!(!text.contains("top secret"), "{path} leaked the file");
        if expected == 308 {
            assert!(
                text.contains("/secret\r\n"),
                "redirected to the canonical path: {text}"
            );
        }
    }
    // Outside the challenge prefix, port 80 still redirects.
    assert_eq!(status_of(&get("/.well-known/other").await), 308);
}
