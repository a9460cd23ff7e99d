//! Answers given before the request is over reach the client: a 413 while
//! curl is still uploading (the rest of the body is read and thrown away for
//! a while, as nginx does, never forwarded), and a refusal of one client
//! behind a trusted proxy that leaves the proxy's other requests on the same
//! connection alone.

use std::process::Command;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::support::origin::Origin;
use crate::support::raw::{tls, Proto};
use crate::support::{site, TestGateway};

#[tokio::test]
async fn curl_reads_the_413_while_still_uploading_over_h1_and_h2() {
    let (origin, gw) = TestGateway::in_front_of_jellyfin("").await;
    let upload = gw.dir.path().join("25MB");
    std::fs::write(&upload, vec![b'p'; 25 * 1000 * 1000]).unwrap();
    let ca = gw.dir.path().join("ca.pem");
    std::fs::write(&ca, gw.ca_pem.as_ref().unwrap()).unwrap();
    for protocol in ["--http1.1", "--http2"] {
        let (ca, upload, port) = (ca.clone(), upload.clone(), gw.https.port());
        let output = tokio::task::spawn_blocking(move || {
            Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", protocol])
                .arg("--cacert")
                .arg(&ca)
                .args(["--resolve", &format!("jelly.test:{port}:127.0.0.1")])
                // No `Expect: 100-continue`: the body goes out at once.
                .args(["-H", "Expect:", "--data-binary"])
                .arg(format!("@{}", upload.display()))
                .arg(format!("https://jelly.test:{port}/upload"))
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            "413",
            "{protocol}: curl did not read the answer (exit {:?})",
            output.status.code()
        );
    }
    assert_eq!(origin.seen.hits("/upload"), 0, "nothing reached the origin");
    assert_eq!(origin.seen.upload_bytes.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_banned_client_behind_a_trusted_proxy_is_refused_alone() {
    let origin = Origin::start().await;
    let gw = TestGateway::start_with_server_extra(
        tempfile::tempdir().unwrap(),
        "trusted_proxies = [\"127.0.0.1\"]\n",
        &site("jelly.test", origin.addr, "login_rate = \"off\""),
    )
    .await;
    let stream = tls(&gw, "127.0.0.1", "jelly.test", Proto::H2)
        .await
        .unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake::<_, _, Empty<Bytes>>(
        TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .unwrap();
    let connection = tokio::spawn(connection);
    let mut send = |method: &str, path: &str, client: &str| {
        let request = http::Request::builder()
            .method(method)
            .uri(format!("https://jelly.test{path}"))
            .header("x-forwarded-for", client)
            .body(Empty::new())
            .unwrap();
        let sent = sender.send_request(request);
        async move {
            let response = sent.await.expect("the proxy's connection was cut");
            let status = response.status().as_u16();
            response.into_body().collect().await.unwrap();
            status
        }
    };
    for _ in 0..3 {
        assert_eq!(
            send("POST", "/Users/AuthenticateByName", "8.8.8.8").await,
            401
        );
    }
    // 8.8.8.8 is banned now; 8.8.4.4 shares the proxy's connection.
    assert_eq!(send("GET", "/echo", "8.8.4.4").await, 200);
    assert_eq!(
        send("GET", "/echo", "8.8.8.8").await,
        403,
        "the banned client"
    );
    assert_eq!(
        send("GET", "/echo", "8.8.4.4").await,
        200,
        "the same connection still serves the others"
    );
    assert!(
        !connection.is_finished(),
        "the proxy's connection was closed"
    );
}
