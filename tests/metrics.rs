//! Prometheus metrics on the admin listener: counted by bounded labels,
//! scraped by the real Prometheus server and read back through its API;
//! private by default (loopback), a token when the config says otherwise.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::origin::Origin;
use crate::support::{closed_addr, site, TestGateway};

#[tokio::test]
async fn prometheus_scrapes_the_requests_drawbridge_answered() {
    let (_origin, gw) = TestGateway::in_front_of_jellyfin("").await;
    let admin = gw.admin.expect("the admin listener is open");
    assert!(admin.ip().is_loopback());
    let client = gw.reqwest(&["jelly.test"], true);
    for _ in 0..5 {
        let response = client
            .get(gw.url("jelly.test", "/System/Info/Public"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let missing = client
        .get(gw.url("jelly.test", "/status/404"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    // Plain text on the TLS port: a failed handshake, counted by its reason.
    let mut plain = tokio::net::TcpStream::connect(gw.https).await.unwrap();
    let request = b"GET / HTTP/1.1\r\n\r\n";
    let _ = crate::support::exchange(&mut plain, request, Duration::from_secs(2)).await;
    let text = crate::support::scrape(admin).await;
    assert!(
        text.contains(r#"drawbridge_tls_handshake_failures_total{reason="not_tls"} 1"#),
        "{text}"
    );
    let expiry: u64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix(r#"drawbridge_certificate_expiry_timestamp_seconds{site="jelly.test"} "#)
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no certificate expiry in {text}"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        expiry > now + 86_400,
        "the local CA's leaf lasts weeks: {expiry}"
    );
    assert!(
        text.contains(
            r#"drawbridge_requests_total{site="jelly.test",method="get",status="2xx"} 5"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"drawbridge_requests_total{site="jelly.test",method="get",status="4xx"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains("drawbridge_response_time_seconds_bucket"),
        "{text}"
    );
    assert!(
        !text.contains("/System/Info") && !text.contains("127.0.0.1:"),
        "no paths or addresses in labels"
    );

    // The real Prometheus scrapes it and answers a query about it.
    let Ok(prometheus_bin) = which("prometheus") else {
        panic!("prometheus is not installed (.ci/run installs Debian's)");
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: drawbridge\n    static_configs:\n      - targets: ['{admin}']\n"),
    )
    .unwrap();
    let web = closed_addr().await;
    let mut prometheus = Command::new(prometheus_bin)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let query = format!(
        "http://{web}/api/v1/query?query=drawbridge_requests_total%7Bsite%3D%22jelly.test%22%2Cstatus%3D%222xx%22%7D"
    );
    let mut value = None;
    for _ in 0..150 {
        if let Ok(response) = reqwest::get(&query).await {
            if let Ok(answer) = response.json::<serde_json::Value>().await {
                value = answer["data"]["result"][0]["value"][1]
                    .as_str()
                    .map(str::to_string);
                if value.is_some() {
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    assert_eq!(
        value.as_deref(),
        Some("5"),
        "Prometheus read the counter back"
    );
}

fn which(name: &str) -> Result<String, ()> {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .map_err(|_| ())?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if path.is_empty() {
        Err(())
    } else {
        Ok(path)
    }
}

#[tokio::test]
async fn a_configured_token_is_asked_for_and_a_public_address_needs_one() {
    let origin = Origin::start().await;
    let gw = TestGateway::start_with_server_extra(
        tempfile::tempdir().unwrap(),
        "admin_token = \"s3cret-token\"\n",
        &site("jelly.test", origin.addr, ""),
    )
    .await;
    let admin = gw.admin.unwrap();
    let bare = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap();
    assert_eq!(bare.status(), 401);
    let client = reqwest::Client::new();
    let wrong = client
        .get(format!("http://{admin}/metrics"))
        .bearer_auth("guess")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let right = client
        .get(format!("http://{admin}/metrics"))
        .bearer_auth("s3cret-token")
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    // A public address without a token is refused by the config itself.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "[server]\nadmin_listen = \"0.0.0.0:9180\"\n\n[[site]]\nhost = \"a.example.com\"\nupstream = \"http://10.0.0.2:8096\"\n").unwrap();
    let out = Command::new(crate::support::binary())
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("need `admin_token`"));
}

/// The value of the sample `name` (labels included) in `text`.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Bytes each way, the upstream's health and answer time, open WebSockets
/// and responses in flight per site; the guard's failed logins and bans.
#[tokio::test]
async fn bytes_home_health_websockets_and_the_guard_are_counted() {
    use futures_util::StreamExt;
    let origin = Origin::start().await;
    let down = closed_addr().await;
    let gw = TestGateway::start(&format!(
        "[guard]\n{}\n{}{}",
        crate::support::BAN_LOOPBACK,
        site("jelly.test", origin.addr, "login_rate = \"off\""),
        site("down.test", down, "")
    ))
    .await;
    let admin = gw.admin.unwrap();
    let scrape = || crate::support::scrape(admin);
    let client = gw.reqwest(&["jelly.test", "down.test"], true);
    let upload = client
        .post(gw.url("jelly.test", "/upload"))
        .body(vec![7u8; 100_000])
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), 200);
    let bulk = client
        .get(gw.url("jelly.test", "/bulk/1"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(bulk.len(), 1 << 20);
    let gone = client.get(gw.url("down.test", "/")).send().await.unwrap();
    assert_eq!(gone.status(), 502);
    // From an address of its own: the ban must not close the others.
    let stranger = gw.reqwest_from("jelly.test", "127.0.0.77");
    gw.fail_logins(&stranger, 3).await;
    let stream = gw.tls_connect(Some("jelly.test"), &[b"http/1.1"]).await;
    let (mut socket, _) = tokio_tungstenite::client_async(
        format!(
            "wss://jelly.test/socket?api_key={}",
            crate::support::origin::TEST_API_KEY
        ),
        stream.unwrap(),
    )
    .await
    .unwrap();
    socket.next().await.unwrap().unwrap();

    let text = scrape().await;
    let site = |name: &str| sample(&text, &format!("{name}{{site=\"jelly.test\"}}"));
    let login = crate::support::WRONG_LOGIN.len() as f64;
    assert_eq!(
        site("drawbridge_received_bytes_total"),
        Some(100_000.0 + 3.0 * login),
        "the upload and the three login bodies: {text}"
    );
    let sent = site("drawbridge_sent_bytes_total").unwrap();
    assert!(sent >= f64::from(1 << 20), "{sent}");
    assert_eq!(site("drawbridge_upstream_up"), Some(1.0), "{text}");
    assert_eq!(
        sample(&text, "drawbridge_upstream_up{site=\"down.test\"}"),
        Some(0.0),
        "{text}"
    );
    assert!(site("drawbridge_upstream_response_time_seconds_count").unwrap() >= 5.0);
    assert_eq!(site("drawbridge_websockets_open"), Some(1.0), "{text}");
    let serving = |protocol: &str| {
        sample(
            &text,
            &format!("drawbridge_connections_serving{{protocol=\"{protocol}\"}}"),
        )
    };
    assert!(serving("http1") >= Some(1.0), "the WebSocket's: {text}");
    assert_eq!(
        serving("http2"),
        Some(2.0),
        "reqwest's, one per site: {text}"
    );
    assert_eq!(serving("http3"), Some(0.0), "{text}");
    assert_eq!(
        sample(
            &text,
            "drawbridge_guard_events_total{reason=\"failed_login\"}"
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "drawbridge_guard_events_total{reason=\"banned_now\"}"
        ),
        Some(1.0),
        "{text}"
    );
    // Closed: the WebSocket and its connection, and the banned client's
    // (kept to deliver its 401, refused at its next request), are no longer
    // counted; no response is in flight.
    drop(socket);
    drop(stranger);
    let mut closed = false;
    for _ in 0..100 {
        let text = scrape().await;
        let http1 = sample(&text, "drawbridge_connections_serving{protocol=\"http1\"}");
        if sample(&text, "drawbridge_websockets_open{site=\"jelly.test\"}") == Some(0.0)
            && http1 == Some(0.0)
        {
            assert_eq!(
                sample(&text, "drawbridge_responses_in_flight{site=\"jelly.test\"}"),
                Some(0.0),
                "{text}"
            );
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        closed,
        "the closed WebSocket and connections are no longer counted"
    );
}
