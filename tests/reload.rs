//! Reload without restart: SIGHUP with a broken file keeps serving, with a good
//! file switches; certificate files replaced on disk are served on the next
//! handshakes.

use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::support::{
    client_config, exchange, self_signed, server_block, status_of, tls_connect, Process,
    TestGateway,
};

fn site(host: &str) -> String {
    format!("[[site]]\nhost = \"{host}\"\nupstream = \"http://127.0.0.1:9\"\ntls = \"internal\"\n")
}

async fn plain_status(addr: std::net::SocketAddr, host: &str) -> Option<u16> {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let (bytes, _) = exchange(&mut tcp, request.as_bytes(), Duration::from_secs(2)).await;
    (!bytes.is_empty()).then(|| status_of(&bytes))
}

#[tokio::test]
async fn sighup_keeps_running_config_on_error_and_switches_on_success() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drawbridge.toml");
    let block = server_block(dir.path());
    std::fs::write(&path, format!("{block}{}", site("one.test"))).unwrap();
    let process = Process::start(&path);
    assert_eq!(plain_status(process.http, "one.test").await, Some(308));
    assert_eq!(
        plain_status(process.http, "two.test").await,
        None,
        "unknown yet"
    );

    std::fs::write(
        &path,
        format!(
            "{block}{}\n[[site]]\nhost = \"two.test\"\nupstrem = \"x\"\n",
            site("one.test")
        ),
    )
    .unwrap();
    process.signal("HUP");
    assert!(
        process.wait_for_log("reload failed", Duration::from_secs(5)),
        "the error is logged"
    );
    assert!(
        process.wait_for_log("drawbridge.toml:", Duration::from_secs(1)),
        "with file:line:col"
    );
    assert_eq!(
        plain_status(process.http, "one.test").await,
        Some(308),
        "still serving"
    );
    assert_eq!(plain_status(process.http, "two.test").await, None);

    std::fs::write(
        &path,
        format!("{block}{}{}", site("one.test"), site("two.test")),
    )
    .unwrap();
    process.signal("HUP");
    assert!(process.wait_for_log("config reloaded", Duration::from_secs(5)));
    assert_eq!(
        plain_status(process.http, "two.test").await,
        Some(308),
        "new site served"
    );
}

#[tokio::test]
async fn replaced_certificate_files_are_served_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_a, key_a) = self_signed("files.test");
    let (cert_b, key_b) = self_signed("files.test");
    let (cert_path, key_path) = (
        dir.path().join("fullchain.pem"),
        dir.path().join("privkey.pem"),
    );
    std::fs::write(&cert_path, &cert_a).unwrap();
    std::fs::write(&key_path, &key_a).unwrap();
    let config = format!(
        "[[site]]\nhost = \"files.test\"\nupstream = \"http://127.0.0.1:9\"\ntls = {{ cert = \"{}\", key = \"{}\" }}\n",
        cert_path.display(),
        key_path.display()
    );
    let gw = TestGateway::start_in(dir, &config).await;
    let served = |trust: String| async move {
        let conn = tls_connect(
            gw.https,
            client_config(trust.as_bytes(), &[b"h2"]),
            Some("files.test"),
        )
        .await
        .ok()?;
        conn.get_ref().1.peer_certificates().map(|c| c[0].clone())
    };
    let der_a = CertificateDer::from_pem_slice(cert_a.as_bytes()).unwrap();
    let der_b = CertificateDer::from_pem_slice(cert_b.as_bytes()).unwrap();
    assert_eq!(served(cert_a.clone()).await, Some(der_a));

    // certbot writes new files in place: key first, then the chain.
    std::fs::write(&key_path, &key_b).unwrap();
    std::fs::write(&cert_path, &cert_b).unwrap();
    let mut switched = false;
    for _ in 0..50 {
        // Every handshake in between succeeds with one pair or the other.
        let old = served(cert_a.clone()).await;
        let new = served(cert_b.clone()).await;
        assert!(
            old.is_some() || new.is_some(),
            "no failed handshake during the swap"
        );
        if new == Some(der_b.clone()) {
            switched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(switched, "the new certificate is served");
}

#[tokio::test]
async fn sigterm_stops_accepting_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drawbridge.toml");
    let text = format!("{}{}", server_block(dir.path()), site("one.test"));
    std::fs::write(&path, text).unwrap();
    let mut process = Process::start(&path);
    // An idle keep-alive connection must not hold the shutdown up.
    let mut idle = tokio::net::TcpStream::connect(process.http).await.unwrap();
    let (bytes, _) = exchange(
        &mut idle,
        b"GET / HTTP/1.1\r\nHost: one.test\r\n\r\n",
        Duration::from_millis(300),
    )
    .await;
    assert_eq!(status_of(&bytes), 308);
    process.signal("TERM");
    let mut exited = None;
    for _ in 0..100 {
        if let Some(status) = process.child.try_wait().unwrap() {
            exited = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = exited.expect("exits well within the 30 s grace");
    assert!(status.success(), "{status:?}");
    assert!(
        tokio::net::TcpStream::connect(process.http).await.is_err(),
        "no longer accepting"
    );
    assert!(process.wait_for_log("shutting down", Duration::from_secs(1)));
}

#[test]
fn a_reload_does_not_repeat_the_known_proxies_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let origin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let path = crate::support::config_file(
        dir.path(),
        &format!(
            "[[site]]\nhost = \"jelly.test\"\nupstream = \"http://{}\"\ntls = \"internal\"\n",
            origin.local_addr().unwrap()
        ),
    );
    let process = Process::start(&path);
    assert!(process.wait_for_log("Known proxies", Duration::from_secs(5)));
    for round in 1..=3 {
        process.signal("HUP");
        let reloaded = || {
            process
                .log
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.contains("config reloaded"))
                .count()
        };
        for _ in 0..100 {
            if reloaded() >= round {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(reloaded(), round);
    }
    // Time for a repeated announcement to be made, had one been started.
    std::thread::sleep(Duration::from_millis(300));
    let told = process
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("Known proxies"))
        .count();
    assert_eq!(told, 1, "said again at every reload");
}
