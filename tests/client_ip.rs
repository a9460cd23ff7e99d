//! One client address, impossible to forge: forwarded claims count only from
//! trusted proxies (a client bound to 127.0.0.2 stands in for a load balancer),
//! multi-hop chains resolve to the right-most untrusted hop, and the PROXY
//! protocol is read only on listeners that ask for it.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::support::origin::{seen, Origin};
use crate::support::pebble::free_port;
use crate::support::{client_config, exchange, site, status_of, TestGateway};

#[tokio::test]
async fn forwarded_chain_counts_only_from_trusted_peers() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let access = dir.path().join("access.json");
    let rest = format!(
        "[log]\naccess = \"{}\"\nformat = \"json\"\n\n{}",
        access.display(),
        site("jelly.test", origin.addr, "")
    );
    let gw = TestGateway::start_with_server_extra(
        dir,
        "trusted_proxies = [\"127.0.0.2\", \"10.0.0.0/8\"]\n",
        &rest,
    )
    .await;
    let client_from = |local: &str| gw.reqwest_from("jelly.test", local);
    let url = gw.url("jelly.test", "/echo");
    let chain = "6.6.6.6, 198.51.100.7, 10.1.2.3";

    let via_balancer: Value = client_from("127.0.0.2")
        .get(&url)
        .header("x-forwarded-for", chain)
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen(&via_balancer, "x-real-ip"), ["198.51.100.7"]);
    assert_eq!(
        seen(&via_balancer, "x-forwarded-for"),
        ["198.51.100.7, 10.1.2.3, 127.0.0.2"],
        "forged prefix dropped, trusted hops kept"
    );

    let direct: Value = client_from("127.0.0.1")
        .get(&url)
        .header("x-forwarded-for", chain)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen(&direct, "x-real-ip"), ["127.0.0.1"]);
    assert_eq!(seen(&direct, "x-forwarded-for"), ["127.0.0.1"]);

    let mut lines = String::new();
    for _ in 0..50 {
        lines = std::fs::read_to_string(&access).unwrap_or_default();
        if lines.lines().count() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let clients: Vec<String> = lines
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["client"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        clients,
        ["198.51.100.7", "127.0.0.1"],
        "the access log uses the same client address"
    );
}

async fn proxy_gateway(origin: SocketAddr) -> (TestGateway, u16) {
    let dir = tempfile::tempdir().unwrap();
    let https = free_port();
    let text = format!(
        "[server]\nhttp = [\"127.0.0.1:0\"]\nhttps = [\"127.0.0.1:{https}\"]\nproxy_protocol = [\"127.0.0.1:{https}\"]\nstate_dir = \"{}\"\n\n[log]\naccess = \"off\"\n\n{}",
        dir.path().join("state").display(),
        site("jelly.test", origin, "https_redirect = false")
    );
    (TestGateway::start_text(dir, &text).await, https)
}

async fn echo_after(gw: &TestGateway, header: &[u8]) -> Result<Value, String> {
    let mut tcp = tokio::net::TcpStream::connect(gw.https).await.unwrap();
    tcp.write_all(header).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(client_config(
        gw.ca_pem.as_deref().unwrap(),
        &[b"http/1.1"],
    ));
    let name = rustls::pki_types::ServerName::try_from("jelly.test").unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (bytes, _) = exchange(
        &mut tls,
        b"GET /echo HTTP/1.1\r\nHost: jelly.test\r\nConnection: close\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    let text = String::from_utf8_lossy(&bytes);
    let body = &text[text.find("\r\n\r\n").ok_or("no response")? + 4..];
    serde_json::from_str(body).map_err(|e| e.to_string())
}

#[tokio::test]
async fn proxy_protocol_v1_and_v2_name_the_client() {
    let origin = Origin::start().await;
    let (gw, port) = proxy_gateway(origin.addr).await;
    let v1 = format!("PROXY TCP4 198.51.100.7 127.0.0.1 40000 {port}\r\n");
    let echo = echo_after(&gw, v1.as_bytes()).await.unwrap();
    assert_eq!(seen(&echo, "x-real-ip"), ["198.51.100.7"]);

    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v2.extend_from_slice(&[0x21, 0x11, 0x00, 12]);
    v2.extend_from_slice(&[203, 0, 113, 50, 127, 0, 0, 1]);
    v2.extend_from_slice(&40001u16.to_be_bytes());
    v2.extend_from_slice(&port.to_be_bytes());
    let echo = echo_after(&gw, &v2).await.unwrap();
    assert_eq!(seen(&echo, "x-real-ip"), ["203.0.113.50"]);

    let v6 = format!("PROXY TCP6 ::ffff:192.0.2.9 ::1 40002 {port}\r\n");
    let echo = echo_after(&gw, v6.as_bytes()).await.unwrap();
    assert_eq!(
        seen(&echo, "x-real-ip"),
        ["192.0.2.9"],
        "IPv4-mapped addresses are normalised"
    );
}

#[tokio::test]
async fn missing_or_malformed_proxy_headers_are_refused() {
    let origin = Origin::start().await;
    let (gw, _) = proxy_gateway(origin.addr).await;
    assert!(
        echo_after(&gw, b"").await.is_err(),
        "a bare TLS ClientHello is not a PROXY header"
    );
    assert!(echo_after(&gw, b"PROXY GARBAGE\r\n").await.is_err());
    assert!(echo_after(&gw, b"PROXY TCP4 not.an.ip 127.0.0.1 1 2\r\n")
        .await
        .is_err());
    assert_eq!(origin.seen.total(), 0);
}

#[tokio::test]
async fn proxy_headers_are_never_read_where_not_enabled() {
    let (origin, gw) = TestGateway::in_front_of_jellyfin("https_redirect = false").await;
    let mut tcp = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    let (bytes, _) = exchange(
        &mut tcp,
        b"PROXY TCP4 198.51.100.7 127.0.0.1 1 2\r\nGET /echo HTTP/1.1\r\nHost: jelly.test\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(status_of(&bytes), 400);
    assert_eq!(origin.seen.total(), 0);
}

#[tokio::test]
async fn start_says_which_address_to_add_to_jellyfins_known_proxies() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drawbridge.toml");
    let text = format!(
        "{}{}",
        crate::support::server_block(dir.path()),
        site("jelly.test", origin.addr, "")
    );
    std::fs::write(&path, text).unwrap();
    let process = crate::support::Process::start(&path);
    assert!(
        process.wait_for_log(
            "add 127.0.0.1 to Jellyfin's Known proxies",
            Duration::from_secs(10)
        ),
        "{:#?}",
        process.log.lock().unwrap()
    );
}
