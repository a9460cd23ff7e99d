//! HTTP/3 through a real QUIC client (quinn with the `h3` crate, the stack
//! drawbridge serves with, as a client): the same pipeline as over TCP —
//! GET, Range, upload, 413 before home, the forwarded head — and the same
//! closed door: an unknown name has no certificate, another site's
//! `:authority` gets 421, an unknown one no answer; failed logins over
//! HTTP/3 ban the address, whose next QUIC connection is refused; every
//! answer over TLS on TCP names the HTTP/3 port in `Alt-Svc`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Buf, Bytes};
use http::Request;

use crate::support::h3::{connect, connect_to, H3};
use crate::support::origin::{seen, Origin};
use crate::support::tunnel::Home;
use crate::support::{client_config, site, TestGateway};

/// A Range request, a 512 KiB upload that reaches home (`uploaded` counts
/// what home received), and a 2 MiB one over the site's 1 MiB `max_body`:
/// 413 at the edge, nothing more reaching home.
async fn range_upload_and_the_body_limit(h3: &mut H3, uploaded: &AtomicU64) {
    let ranged = Request::get("https://jelly.test/videos/1/stream")
        .header("range", "bytes=100-199")
        .body(())
        .unwrap();
    let (response, body) = h3.send(ranged, None).await.unwrap();
    assert_eq!(response.status(), 206);
    assert_eq!(body.len(), 100);

    let upload = Request::post("https://jelly.test/upload").body(()).unwrap();
    let (response, _) = h3
        .send(upload, Some(Bytes::from(vec![7u8; 512 * 1024])))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(uploaded.load(Ordering::SeqCst), 512 * 1024);

    let too_big = Request::post("https://jelly.test/upload")
        .header("content-length", (2 * 1024 * 1024).to_string())
        .body(())
        .unwrap();
    let (response, _) = h3
        .send(too_big, Some(Bytes::from(vec![7u8; 2 * 1024 * 1024])))
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(
        uploaded.load(Ordering::SeqCst),
        512 * 1024,
        "nothing more went home"
    );
}

#[tokio::test]
async fn requests_over_http3_reach_home_as_over_tcp() {
    let (origin, gw) = TestGateway::in_front_of_jellyfin("max_body = \"1MiB\"").await;
    let mut h3 = connect(&gw, "127.0.0.1", "jelly.test").await.unwrap();

    let (response, body) = h3.get("jelly.test", "/echo").await.unwrap();
    assert_eq!(response.status(), 200);
    let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let headers = echo["headers"].as_array().unwrap();
    let header = |name: &str| {
        headers
            .iter()
            .find(|h| h[0] == name)
            .map(|h| h[1].as_str().unwrap().to_string())
    };
    assert_eq!(header("host").as_deref(), Some("jelly.test"), "{echo}");
    assert_eq!(header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(header("x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(echo["version"], "HTTP/1.1", "home is spoken to in HTTP/1.1");
    assert!(
        response.headers().contains_key("content-security-policy")
            || response.headers().contains_key("x-content-type-options"),
        "the security headers: {:?}",
        response.headers()
    );
    assert!(!response.headers().contains_key("alt-svc"));

    range_upload_and_the_body_limit(&mut h3, &origin.seen.upload_bytes).await;

    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("drawbridge_connections_serving{protocol=\"http3\"} 1\n"),
        "{metrics}"
    );

    // Every answer over TLS on TCP says where HTTP/3 is.
    let tcp = gw
        .reqwest(&["jelly.test"], false)
        .get(gw.url("jelly.test", "/echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        tcp.headers()["alt-svc"].to_str().unwrap(),
        format!("h3=\":{}\"; ma=86400", gw.quic.unwrap().port())
    );
}

/// An HTTP/3 client of a site whose home is behind the tunnel: the same
/// forwarded head, Range and upload, and the body limit before anything
/// enters the tunnel — the pipeline does not know the transport.
#[tokio::test]
async fn http3_clients_reach_home_through_the_tunnel() {
    let home = Home::start("max_body = \"1MiB\"", 1).await;
    let opened = home
        .edge
        .log
        .lock()
        .unwrap()
        .iter()
        .find_map(|line| line.split("quic=").nth(1).map(str::to_string))
        .expect("the edge opens HTTP/3");
    let quic: SocketAddr = opened.trim().parse().unwrap();
    let ca = home.ca_pem();
    let mut h3 = connect_to(&ca, quic, "127.0.0.1", "jelly.test")
        .await
        .unwrap();

    let (response, body) = h3.get("jelly.test", "/echo").await.unwrap();
    assert_eq!(response.status(), 200);
    let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(seen(&echo, "x-forwarded-for"), ["127.0.0.1"], "{echo}");
    assert_eq!(seen(&echo, "host"), ["jelly.test"], "{echo}");

    range_upload_and_the_body_limit(&mut h3, &home.origin.seen.upload_bytes).await;
}

#[tokio::test]
async fn the_closed_door_holds_over_http3() {
    let origin = Origin::start().await;
    let gw = TestGateway::start(&format!(
        "[guard]\n{}\n{}{}",
        crate::support::BAN_LOOPBACK,
        site("jelly.test", origin.addr, "login_rate = \"off\""),
        site("other.test", origin.addr, "")
    ))
    .await;
    // An unknown name: no certificate, no connection.
    let refused = connect(&gw, "127.0.0.1", "unknown.test").await;
    assert!(refused.is_err(), "a handshake for an unknown name");

    let mut h3 = connect(&gw, "127.0.0.1", "jelly.test").await.unwrap();
    let (response, _) = h3.get("other.test", "/echo").await.unwrap();
    assert_eq!(
        response.status(),
        421,
        "TLS for one site, :authority for another"
    );
    let unknown = h3.get("nobody.test", "/echo").await;
    assert!(
        unknown.is_err(),
        "an unknown :authority gets no answer: {unknown:?}"
    );
    assert_eq!(origin.seen.hits("/echo"), 0, "nothing reached home");

    // Failed logins over HTTP/3 count toward a ban like any other; the
    // banned address's next QUIC connection is refused.
    let mut h3 = connect(&gw, "127.0.0.66", "jelly.test").await.unwrap();
    for _ in 0..3 {
        let login = Request::post("https://jelly.test/Users/AuthenticateByName")
            .body(())
            .unwrap();
        let (response, _) = h3
            .send(
                login,
                Some(Bytes::from_static(br#"{"Username":"a","Pw":"wrong"}"#)),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
    }
    let again = connect(&gw, "127.0.0.66", "jelly.test").await;
    assert!(
        again.is_err(),
        "a banned address is refused at its first packet"
    );
    let other = connect(&gw, "127.0.0.67", "jelly.test").await;
    assert!(other.is_ok(), "others are served meanwhile");
}

/// A phone that changes networks keeps its film: the client's address
/// (its UDP port here) changes in the middle of a download, and the
/// download goes on to its last byte over the same connection.
#[tokio::test]
async fn a_download_survives_the_client_changing_address() {
    let (_origin, gw) = TestGateway::in_front_of_jellyfin("").await;
    let mut h3 = connect(&gw, "127.0.0.1", "jelly.test").await.unwrap();
    let before = h3.endpoint.local_addr().unwrap();
    let request = Request::get("https://jelly.test/bulk/16").body(()).unwrap();
    let mut stream = h3.send.send_request(request).await.unwrap();
    stream.finish().await.unwrap();
    let response = stream.recv_response().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut got = 0usize;
    let mut moved = false;
    while let Some(mut chunk) = stream.recv_data().await.unwrap() {
        got += chunk.remaining();
        chunk.advance(chunk.remaining());
        if !moved && got > 2 * 1024 * 1024 {
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            h3.endpoint.rebind(socket).unwrap();
            moved = true;
        }
    }
    assert!(moved);
    assert_ne!(
        h3.endpoint.local_addr().unwrap(),
        before,
        "the address changed"
    );
    assert_eq!(got, 16 * 1024 * 1024, "every byte arrived after the move");
    // And the connection still serves new requests from the new address.
    let (response, _) = h3.get("jelly.test", "/echo").await.unwrap();
    assert_eq!(response.status(), 200);
}

/// Malformed and unsolicited packets at the QUIC port are dropped: a
/// client connecting meanwhile is served.
#[tokio::test]
async fn garbage_packets_are_dropped_and_clients_are_served() {
    let (_origin, gw) = TestGateway::in_front_of_jellyfin("").await;
    let quic = gw.quic.unwrap();
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for size in [1usize, 20, 1200, 1350, 1500] {
        for _ in 0..200 {
            let packet: Vec<u8> = (0..size)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            socket.send_to(&packet, quic).await.unwrap();
        }
    }
    // A long-header Initial with a version nobody speaks, and a short
    // header for a connection that does not exist.
    let mut initial = vec![0xc0, 0x0a, 0x0a, 0x0a, 0x0a, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0];
    initial.resize(1200, 0);
    socket.send_to(&initial, quic).await.unwrap();
    socket.send_to(&[0x40; 64], quic).await.unwrap();
    let mut h3 = connect(&gw, "127.0.0.1", "jelly.test").await.unwrap();
    let (response, _) = h3.get("jelly.test", "/echo").await.unwrap();
    assert_eq!(response.status(), 200);
}

/// A real browser over HTTP/3: headless Chromium with QUIC forced to the
/// gateway loads the Jellyfin web page, and the page's own navigation
/// timing says it came over `h3`.
#[tokio::test]
async fn chromium_loads_the_web_client_over_http3() {
    use base64::Engine as _;
    let origin = Origin::start().await;
    let gw = TestGateway::start(&site("localhost", origin.addr, "")).await;
    let quic = gw.quic.unwrap();
    // Chromium checks the certificate against a pin of its key (the local
    // CA is not in its store): the leaf the gateway shows for `localhost`.
    let tls = gw
        .tls_connect(Some("localhost"), &[b"http/1.1"])
        .await
        .unwrap();
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).unwrap();
    let spki = ring::digest::digest(&ring::digest::SHA256, cert.public_key().raw);
    let pin = base64::engine::general_purpose::STANDARD.encode(spki.as_ref());
    let flags = vec![
        "--enable-quic".to_string(),
        format!("--origin-to-force-quic-on=localhost:{}", quic.port()),
        "--host-resolver-rules=MAP localhost 127.0.0.1".to_string(),
        format!("--ignore-certificate-errors-spki-list={pin}"),
    ];
    let url = format!("https://localhost:{}/web/index.html", quic.port());
    let Some(mut browser) = crate::dashboard::Browser::open_with(&url, &flags).await else {
        panic!("chromium is not installed (.ci/run installs Debian's)");
    };
    assert!(
        browser
            .until("document.body !== null && document.body.innerText.includes('jellyfin web')")
            .await,
        "the page loaded: {}",
        browser.eval("document.documentElement.outerHTML").await
    );
    let protocol = browser
        .eval("performance.getEntriesByType('navigation')[0].nextHopProtocol")
        .await;
    assert_eq!(protocol, serde_json::json!("h3"));
}

/// Another implementation as the client: ngtcp2's `gtlsclient` (nghttp3 on
/// GnuTLS, Debian's `ngtcp2-client`) downloads 1 MiB and a small answer,
/// with drawbridge's status and headers as it prints them.
#[tokio::test]
async fn ngtcp2s_client_is_served_over_http3() {
    let origin = Origin::start().await;
    let gw = TestGateway::start(&site("localhost", origin.addr, "")).await;
    let port = gw.quic.unwrap().port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let run = |path: &'static str| {
        let port = port.clone();
        let download = dir.path().to_path_buf();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new("gtlsclient")
                .args(["--exit-on-all-streams-close", "--download"])
                .arg(&download)
                .args([
                    "127.0.0.1",
                    &port,
                    &format!("https://localhost:{port}{path}"),
                ])
                .output()
        })
    };
    let Ok(out) = run("/bulk/1").await.unwrap() else {
        panic!("gtlsclient is not installed (.ci/run installs ngtcp2-client)");
    };
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("[:status: 200]"), "{said}");
    let file = dir.path().join("1");
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 1 << 20);
    let out = run("/System/Info/Public").await.unwrap().unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("[:status: 200]"), "{said}");
    assert!(said.contains("[x-content-type-options: nosniff]"), "{said}");
    let info = std::fs::read_to_string(dir.path().join("Public")).unwrap();
    assert!(info.contains("Jellyfin Server"), "{info}");
}

/// A flood of QUIC handshakes from sources that never answer (as forged
/// ones cannot): past 64 under way, new unvalidated sources are sent a
/// Retry first (counted in `drawbridge_quic_retries_total`), and a real
/// client — which answers its Retry — is served meanwhile.
#[tokio::test]
async fn a_handshake_flood_turns_retry_on_and_clients_are_still_served() {
    let (_origin, gw) = TestGateway::in_front_of_jellyfin("").await;
    let quic = gw.quic.unwrap();
    // A relay that carries the flood's packets to drawbridge and drops
    // every answer: each handshake stays half-open, as from a forged source.
    let relay = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let relay_addr = relay.local_addr().unwrap();
    let forward = relay.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = forward.recv_from(&mut buf).await {
            if from != quic {
                let _ = forward.send_to(&buf[..n], quic).await;
            }
        }
    });
    let tls = client_config(gw.ca_pem.as_deref().unwrap(), &[b"h3"]);
    let crypto = Arc::new(quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap());
    let mut flood = Vec::new();
    for _ in 0..100 {
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        endpoint.set_default_client_config(quinn::ClientConfig::new(crypto.clone()));
        let connecting = endpoint.connect(relay_addr, "jelly.test").unwrap();
        flood.push((endpoint, tokio::spawn(connecting)));
    }
    let admin = gw.admin.unwrap();
    let retries = || async move {
        let text = crate::support::scrape(admin).await;
        text.lines()
            .find_map(|l| l.strip_prefix("drawbridge_quic_retries_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let mut engaged = false;
    for _ in 0..200 {
        if retries().await > 0 {
            engaged = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(engaged, "Retry engaged under the flood");
    let mut h3 = connect(&gw, "127.0.0.1", "jelly.test").await.unwrap();
    let (response, _) = h3.get("jelly.test", "/echo").await.unwrap();
    assert_eq!(response.status(), 200, "a real client is served meanwhile");
    for (endpoint, connecting) in flood {
        connecting.abort();
        endpoint.close(0u32.into(), b"");
    }
}

/// What aioquic's client (tests/support/h3client.py) got for `requests`.
async fn aioquic(gw: &TestGateway, sni: &str, requests: serde_json::Value) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, gw.ca_pem.as_deref().unwrap()).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/h3client.py");
    let port = gw.quic.unwrap().port().to_string();
    let sni = sni.to_string();
    let out = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = std::process::Command::new("python3")
            .args([script, "127.0.0.1", &port, &sni])
            .arg(&ca)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("python3 is installed");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(requests.to_string().as_bytes()).unwrap();
        drop(stdin);
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !said.contains("No module named 'aioquic'"),
        "aioquic is installed (.ci/run installs it from PyPI)"
    );
    assert!(out.status.success(), "h3client.py: {said}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {said}"))
}

/// aioquic (PyPI), a third QUIC and HTTP/3 implementation, as the client:
/// the forwarded head, Range, an upload, 413 before home; and the closed
/// door — no certificate for an unknown name, 421 for another site's
/// `:authority`, no answer for an unknown one.
#[tokio::test]
async fn aioquics_client_is_served_and_finds_the_door_closed() {
    let origin = Origin::start().await;
    let gw = TestGateway::start(&format!(
        "{}{}",
        site("jelly.test", origin.addr, "max_body = \"1MiB\""),
        site("other.test", origin.addr, "")
    ))
    .await;
    let got = aioquic(
        &gw,
        "jelly.test",
        serde_json::json!([
            {"authority": "jelly.test", "path": "/echo"},
            {"authority": "jelly.test", "path": "/videos/1/stream",
             "headers": [["range", "bytes=100-199"]]},
            {"method": "POST", "authority": "jelly.test", "path": "/upload",
             "body_len": 512 * 1024},
            {"method": "POST", "authority": "jelly.test", "path": "/upload",
             "headers": [["content-length", (2 << 20).to_string()]], "body_len": 2 << 20},
            {"authority": "other.test", "path": "/echo"},
            {"authority": "nobody.test", "path": "/echo"},
        ]),
    )
    .await;
    assert_eq!(got["handshake"], "ok", "{got}");
    let answers = got["answers"].as_array().unwrap();

    let echo: serde_json::Value = serde_json::from_str(answers[0]["body"].as_str().unwrap())
        .unwrap_or_else(|e| panic!("{e}: {got}"));
    assert_eq!(answers[0]["status"], 200);
    let seen = |name| crate::support::origin::seen(&echo, name);
    assert_eq!(seen("host"), ["jelly.test"]);
    assert_eq!(seen("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(seen("x-forwarded-proto"), ["https"]);
    let headers = answers[0]["headers"].as_array().unwrap();
    assert!(
        headers.iter().any(|h| h[0] == "x-content-type-options"),
        "the security headers: {headers:?}"
    );

    assert_eq!(answers[1]["status"], 206, "{}", answers[1]);
    assert_eq!(answers[1]["body_len"], 100);
    let range = answers[1]["headers"].as_array().unwrap();
    assert!(range
        .iter()
        .any(|h| h[0] == "content-range" && h[1].as_str().unwrap().starts_with("bytes 100-199/")));

    assert_eq!(answers[2]["status"], 200, "{}", answers[2]);
    assert_eq!(answers[3]["status"], 413, "{}", answers[3]);
    assert_eq!(
        origin.seen.upload_bytes.load(Ordering::SeqCst),
        512 * 1024,
        "the upload arrived whole, the one over max_body never left the edge"
    );

    assert_eq!(answers[4]["status"], 421, "{}", answers[4]);
    assert!(
        answers[5].get("error").is_some(),
        "an unknown :authority gets no answer: {}",
        answers[5]
    );
    assert_eq!(origin.seen.hits("/echo"), 1, "only the first reached home");

    let refused = aioquic(
        &gw,
        "unknown.test",
        serde_json::json!([{"authority": "unknown.test", "path": "/echo"}]),
    )
    .await;
    assert_ne!(refused["handshake"], "ok", "{refused}");
    assert!(refused["answers"].as_array().unwrap().is_empty());
}

/// Rapid Reset over HTTP/3 (CVE-2023-44487's pattern): a client opens
/// request streams and cancels each at once, 5,000 of them, as fast as
/// QUIC's stream credit lets it. QUIC's credit comes back only when
/// drawbridge is done with a stream, so the flood never holds more than
/// the stream limit (100) at once: all 5,000 go through — the server
/// released every one, nothing piles up — while almost none reaches home,
/// another client is served during the flood, and the flood's own
/// connection still answers afterwards.
#[tokio::test]
async fn a_stream_reset_flood_stays_at_the_door_and_others_are_served() {
    let (origin, gw) = TestGateway::in_front_of_jellyfin("").await;
    let mut flood = connect(&gw, "127.0.0.1", "jelly.test").await.unwrap();
    let mut other = connect(&gw, "127.0.0.2", "jelly.test").await.unwrap();
    let before = crate::support::tunnel::rss_kib(std::process::id());
    let flooding = async {
        let mut sent = 0;
        for _ in 0..5000 {
            let request = Request::get("https://jelly.test/echo").body(()).unwrap();
            let mut stream = flood.send.send_request(request).await.unwrap();
            stream.stop_stream(h3::error::Code::H3_REQUEST_CANCELLED);
            stream.stop_sending(h3::error::Code::H3_REQUEST_CANCELLED);
            sent += 1;
        }
        sent
    };
    let served = async {
        let mut statuses = Vec::new();
        for _ in 0..5 {
            let (response, _) = other
                .get("jelly.test", "/System/Info/Public")
                .await
                .unwrap();
            statuses.push(response.status());
        }
        statuses
    };
    let (sent, statuses) = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        futures_util::future::join(flooding, served),
    )
    .await
    .expect("the flood was not stalled: every cancelled stream was released");
    let grown = crate::support::tunnel::rss_kib(std::process::id()).saturating_sub(before);
    eprintln!(
        "{sent} cancelled requests; {} reached home; resident grew {grown} KiB",
        origin.seen.hits("/echo")
    );
    assert_eq!(sent, 5000);
    assert!(
        statuses.iter().all(|s| *s == 200),
        "served meanwhile: {statuses:?}"
    );
    assert!(
        origin.seen.hits("/echo") <= 100,
        "the flood stays at the door: {} of {sent} reached home",
        origin.seen.hits("/echo")
    );
    let (response, _) = flood.get("jelly.test", "/echo").await.unwrap();
    assert_eq!(
        response.status(),
        200,
        "the flood's connection still answers"
    );
}
