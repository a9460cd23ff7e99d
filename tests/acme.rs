//! Automatic HTTPS against a real ACME server (Pebble): certificates through
//! TLS-ALPN-01, HTTP-01 and DNS-01 (a hook script), each served and verified;
//! a restart reuses the stored certificate even with the CA down and a crashed
//! write beside it; a forced renewal swaps the certificate while a connection
//! stays open; a failing challenge falls back to the next and logs the CA's
//! problem with a hint.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use rustls::pki_types::CertificateDer;

use crate::support::origin::Origin;
use crate::support::pebble::{free_port, Pebble};
use crate::support::{client_config, tls_connect, Process, TestGateway};

/// A full config: fixed loopback ports (Pebble must know them), ACME at `pebble`.
fn config(
    dir: &Path,
    http: u16,
    https: u16,
    pebble: &Pebble,
    acme_extra: &str,
    sites: &str,
) -> String {
    format!(
        "[server]\nhttp = [\"127.0.0.1:{http}\"]\nhttps = [\"127.0.0.1:{https}\"]\nstate_dir = \"{}\"\n\n[log]\naccess = \"off\"\n\n[acme]\ndirectory = \"{}\"\nca_roots = \"{}\"\nemail = \"admin@example.org\"\n{acme_extra}\n{sites}",
        dir.join("state").display(),
        pebble.directory,
        pebble.listener_ca.display(),
    )
}

fn acme_site(host_line: &str, origin: std::net::SocketAddr) -> String {
    format!(
        "[[site]]\n{host_line}\nupstream = \"http://{origin}\"\ntls = \"acme\"\ngate = \"off\"\n"
    )
}

/// The leaf served for `name`, verified against `root`, once there is one.
async fn served(
    addr: std::net::SocketAddr,
    root: &str,
    name: &str,
) -> Option<CertificateDer<'static>> {
    let conn = tls_connect(
        addr,
        client_config(root.as_bytes(), &[b"http/1.1"]),
        Some(name),
    )
    .await
    .ok()?;
    conn.get_ref()
        .1
        .peer_certificates()
        .map(|c| c[0].clone().into_owned())
}

/// Waits for the first certificate; a handshake for a pending site itself waits
/// up to 10 s for it, so few attempts are needed.
async fn wait_served(
    addr: std::net::SocketAddr,
    root: &str,
    name: &str,
) -> CertificateDer<'static> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(45);
    while tokio::time::Instant::now() < deadline {
        if let Some(cert) = served(addr, root, name).await {
            return cert;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("no verified certificate for {name} within 45 s");
}

fn reqwest_for(root: &str, names: &[&str], addr: std::net::SocketAddr) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(root.as_bytes()).unwrap());
    for name in names {
        builder = builder.resolve(name, addr);
    }
    builder.build().unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn tls_alpn_01_then_a_restart_reuses_the_stored_certificate_without_the_ca() {
    let origin = Origin::start().await;
    let (http, https) = (free_port(), free_port());
    let pebble = Pebble::start(http, https).await;
    let dir = tempfile::tempdir().unwrap();
    let text = config(
        dir.path(),
        http,
        https,
        &pebble,
        "challenges = [\"tls-alpn-01\"]",
        &acme_site("host = \"alpn.test\"", origin.addr),
    );
    // The config names Pebble's listener CA, which goes with Pebble: keep a copy.
    let kept_ca = dir.path().join("listener-ca.pem");
    std::fs::copy(&pebble.listener_ca, &kept_ca).unwrap();
    let text = text.replace(
        &pebble.listener_ca.display().to_string(),
        &kept_ca.display().to_string(),
    );
    let state = dir.path().join("state");
    let root = pebble.root_pem().await;

    let mut gw = TestGateway::start_text(tempfile::tempdir().unwrap(), &text).await;
    let first = wait_served(gw.https, &root, "alpn.test").await;
    let client = reqwest_for(&root, &["alpn.test"], gw.https);
    let info = client
        .get(format!("https://alpn.test:{https}/System/Info/Public"))
        .send()
        .await
        .unwrap();
    assert_eq!(info.status(), 200, "served through the new certificate");
    let cert_dir = state.join("certificates/alpn.test");
    assert!(cert_dir.join("cert.pem").is_file());
    assert_eq!(mode(&cert_dir.join("key.pem")), 0o600);
    let accounts: Vec<_> = std::fs::read_dir(state.join("acme")).unwrap().collect();
    assert_eq!(accounts.len(), 1);
    assert_eq!(
        mode(&accounts[0].as_ref().unwrap().path().join("account.json")),
        0o600
    );
    gw.begin_shutdown();
    gw.stopped().await;

    // The CA goes down, and a crashed write left a half-written key beside the pair.
    drop(pebble);
    std::fs::write(
        cert_dir.join(".key.pem.new"),
        "-----BEGIN PRIVATE KEY-----\ntrunc",
    )
    .unwrap();
    let gw = TestGateway::start_text(tempfile::tempdir().unwrap(), &text).await;
    let again = served(gw.https, &root, "alpn.test").await;
    assert_eq!(
        again,
        Some(first),
        "the stored certificate is served at once, no new order"
    );
}

#[tokio::test]
async fn http_01_certificate_is_served() {
    let origin = Origin::start().await;
    let (http, https) = (free_port(), free_port());
    let pebble = Pebble::start(http, https).await;
    let dir = tempfile::tempdir().unwrap();
    let text = config(
        dir.path(),
        http,
        https,
        &pebble,
        "challenges = [\"http-01\"]",
        &acme_site("host = \"web.test\"", origin.addr),
    );
    let root = pebble.root_pem().await;
    let gw = TestGateway::start_text(dir, &text).await;
    wait_served(gw.https, &root, "web.test").await;
    let client = reqwest_for(&root, &["web.test"], gw.https);
    let echo = client
        .get(format!("https://web.test:{https}/echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(echo.status(), 200);
}

#[tokio::test]
async fn dns_01_through_a_hook_covers_a_wildcard() {
    let origin = Origin::start().await;
    let (http, https) = (free_port(), free_port());
    let pebble = Pebble::start(http, https).await;
    let dir = tempfile::tempdir().unwrap();
    let hook = dir.path().join("dns-hook.sh");
    let calls = dir.path().join("hook-calls.log");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\necho \"$1 $2\" >> {calls}\nif [ \"$1\" = present ]; then\n  curl -sf -X POST -d \"{{\\\"host\\\":\\\"_acme-challenge.$2.\\\",\\\"value\\\":\\\"$3\\\"}}\" http://{mgmt}/set-txt\nelse\n  curl -sf -X POST -d \"{{\\\"host\\\":\\\"_acme-challenge.$2.\\\"}}\" http://{mgmt}/clear-txt\nfi\n",
            calls = calls.display(),
            mgmt = pebble.challtest_addr()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let acme = format!(
        "challenges = [\"dns-01\"]\ndns_hook = \"{}\"",
        hook.display()
    );
    let text = config(
        dir.path(),
        http,
        https,
        &pebble,
        &acme,
        &acme_site("hosts = [\"dns.test\", \"*.dns.test\"]", origin.addr),
    );
    let root = pebble.root_pem().await;
    let gw = TestGateway::start_text(dir, &text).await;
    wait_served(gw.https, &root, "films.dns.test").await;
    assert!(served(gw.https, &root, "dns.test").await.is_some());
    let log = std::fs::read_to_string(&calls).unwrap();
    assert!(
        log.contains("present dns.test") && log.contains("cleanup dns.test"),
        "{log}"
    );
}

#[tokio::test]
async fn forced_renewal_swaps_the_certificate_while_a_connection_stays_open() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = Origin::start().await;
    let (http, https) = (free_port(), free_port());
    let pebble = Pebble::start(http, https).await;
    let dir = tempfile::tempdir().unwrap();
    let text = config(
        dir.path(),
        http,
        https,
        &pebble,
        "",
        &acme_site("host = \"renew.test\"", origin.addr),
    );
    let root = pebble.root_pem().await;
    let gw = TestGateway::start_text(dir, &text).await;
    let before = wait_served(gw.https, &root, "renew.test").await;
    let mut open = tls_connect(
        gw.https,
        client_config(root.as_bytes(), &[b"http/1.1"]),
        Some("renew.test"),
    )
    .await
    .unwrap();
    let request = b"GET /System/Info/Public HTTP/1.1\r\nHost: renew.test\r\n\r\n";
    let mut buf = vec![0u8; 4096];
    open.write_all(request).await.unwrap();
    assert!(open.read(&mut buf).await.unwrap() > 0);

    assert!(gw.reloader.renew_now("renew.test"));
    let mut after = before.clone();
    for _ in 0..150 {
        after = served(gw.https, &root, "renew.test")
            .await
            .expect("every handshake succeeds during renewal");
        if after != before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_ne!(after, before, "a new certificate is served");
    open.write_all(request).await.unwrap();
    let n = open.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "the open connection carries on"
    );
}

#[tokio::test]
async fn a_failing_challenge_falls_back_then_logs_the_cas_problem() {
    let origin = Origin::start().await;
    let (http, https) = (free_port(), free_port());
    let pebble = Pebble::start(http, https).await;
    // The CA resolves the name to an address where nothing listens.
    pebble
        .challtest(
            "/add-a",
            serde_json::json!({"host": "elsewhere.test.", "addresses": ["127.0.0.2"]}),
        )
        .await;
    let dir = tempfile::tempdir().unwrap();
    let text = config(
        dir.path(),
        http,
        https,
        &pebble,
        "",
        &acme_site("host = \"elsewhere.test\"", origin.addr),
    );
    let path = dir.path().join("drawbridge.toml");
    std::fs::write(&path, text).unwrap();
    let process = Process::start(&path);
    assert!(
        process.wait_for_log(
            "could not get a certificate for elsewhere.test",
            Duration::from_secs(60)
        ),
        "{:#?}",
        process.log.lock().unwrap()
    );
    let log = process.log.lock().unwrap().join("\n");
    assert!(
        log.contains("ordering certificate for elsewhere.test via tls-alpn-01"),
        "{log}"
    );
    assert!(
        log.contains("ordering certificate for elsewhere.test via http-01"),
        "fell back: {log}"
    );
    assert!(
        log.contains("urn:ietf:params:acme:error:connection"),
        "the CA's problem type: {log}"
    );
    assert!(log.contains("check that DNS points here"), "a hint: {log}");
    assert!(log.contains("retrying in about 1 min"), "{log}");
    // Meanwhile the name gets no certificate: after a bounded wait the handshake is refused.
    let started = tokio::time::Instant::now();
    let root = pebble.root_pem().await;
    assert!(served(process.https, &root, "elsewhere.test")
        .await
        .is_none());
    assert!(started.elapsed() < Duration::from_secs(15));

    // doctor, beside the running process: its ports listen, the account is
    // stored, and the failed order is named with the CA's words.
    let doctor = tokio::task::spawn_blocking(move || {
        std::process::Command::new(crate::support::binary())
            .args(["doctor", "-c"])
            .arg(&path)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let said = String::from_utf8_lossy(&doctor.stdout);
    assert!(!doctor.status.success(), "{said}");
    assert!(
        said.contains(&format!("✓ http 127.0.0.1:{http} is listening")),
        "{said}"
    );
    assert!(
        said.contains(&format!("✓ https 127.0.0.1:{https} is listening")),
        "{said}"
    );
    assert!(
        said.contains("✓ ACME account for https://127.0.0.1:"),
        "{said}"
    );
    assert!(
        said.contains("✗ site elsewhere.test: the last certificate order failed (")
            && said.contains("urn:ietf:params:acme:error:connection"),
        "{said}"
    );
    assert!(said.contains("→ fix what the CA says"), "{said}");
    drop(process);
    let doctor = std::process::Command::new(crate::support::binary())
        .args(["doctor", "-c"])
        .arg(dir.path().join("drawbridge.toml"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&doctor.stdout);
    assert!(
        said.contains(&format!("✗ nothing listens on https 127.0.0.1:{https}")),
        "{said}"
    );
    assert!(said.contains("→ start drawbridge"), "{said}");
}

#[tokio::test]
async fn external_account_binding_is_sent_when_the_ca_requires_it() {
    let origin = Origin::start().await;
    let (http, https) = (free_port(), free_port());
    let key = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";
    let pebble = Pebble::start_with_eab(http, https, Some(("kid-1", key))).await;
    let root = pebble.root_pem().await;
    // Without binding the CA refuses the account; with it, the certificate comes.
    let dir = tempfile::tempdir().unwrap();
    let bare = config(
        dir.path(),
        http,
        https,
        &pebble,
        "challenges = [\"http-01\"]",
        &acme_site("host = \"eab.test\"", origin.addr),
    );
    let path = dir.path().join("drawbridge.toml");
    std::fs::write(&path, &bare).unwrap();
    let refused = Process::start(&path);
    assert!(refused.wait_for_log(
        "could not get a certificate for eab.test",
        Duration::from_secs(30)
    ));
    assert!(
        refused
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("externalAccountRequired")),
        "{:#?}",
        refused.log.lock().unwrap()
    );
    drop(refused);

    let dir = tempfile::tempdir().unwrap();
    let acme = format!("challenges = [\"http-01\"]\neab_kid = \"kid-1\"\neab_hmac_key = \"{key}\"");
    let bound = config(
        dir.path(),
        http,
        https,
        &pebble,
        &acme,
        &acme_site("host = \"eab.test\"", origin.addr),
    );
    let gw = TestGateway::start_text(dir, &bound).await;
    wait_served(gw.https, &root, "eab.test").await;
}

#[tokio::test]
async fn an_unreachable_ca_is_explained_and_handshakes_are_not_kept_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drawbridge.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nhttp = [\"127.0.0.1:0\"]\nhttps = [\"127.0.0.1:0\"]\nstate_dir = \"{}\"\n\n[log]\naccess = \"off\"\n\n[acme]\ndirectory = \"https://acme-directory.invalid/dir\"\n\n[[site]]\nhost = \"jelly.example.com\"\nupstream = \"http://127.0.0.1:9\"\n",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let process = Process::start(&path);
    let https = process.https;
    let failed = tokio::task::spawn_blocking(move || {
        let seen = process.wait_for_log("could not get a certificate", Duration::from_secs(20));
        (seen, process)
    });
    let (seen, process) = failed.await.unwrap();
    assert!(seen, "the failed order was not logged");
    let line = process
        .log
        .lock()
        .unwrap()
        .iter()
        .find(|l| l.contains("could not get a certificate"))
        .cloned()
        .unwrap();
    assert!(
        line.contains("dns error") || line.contains("failed to lookup"),
        "the cause is hidden: {line}"
    );
    // No order runs now: a handshake is refused at once, not after the
    // ten seconds a first order is waited for.
    let (cert, _) = crate::support::self_signed("unrelated.test");
    let refused = tokio::time::timeout(
        Duration::from_secs(5),
        tls_connect(
            https,
            client_config(cert.as_bytes(), &[b"h2"]),
            Some("jelly.example.com"),
        ),
    )
    .await
    .expect("the handshake was kept waiting for an order that is not running");
    assert!(refused.is_err(), "a certificate was shown");
}
