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

/// What every test here starts from: a fake Jellyfin, two fixed loopback
/// ports (Pebble validates against them), Pebble itself, a folder for the
/// state, and Pebble's root to verify what is served.
struct Ca {
    origin: Origin,
    http: u16,
    https: u16,
    pebble: Pebble,
    dir: tempfile::TempDir,
    root: String,
}

impl Ca {
    async fn start() -> Ca {
        Ca::started(None).await
    }

    /// Pebble requiring external account binding with this key.
    async fn with_eab(kid: &str, key: &str) -> Ca {
        Ca::started(Some((kid, key))).await
    }

    async fn started(eab: Option<(&str, &str)>) -> Ca {
        let origin = Origin::start().await;
        let (http, https) = (free_port(), free_port());
        let pebble = match eab {
            None => Pebble::start(http, https).await,
            Some(binding) => Pebble::start_with_eab(http, https, Some(binding)).await,
        };
        let root = pebble.root_pem().await;
        Ca {
            origin,
            http,
            https,
            pebble,
            dir: tempfile::tempdir().unwrap(),
            root,
        }
    }

    /// A config of one ACME site named by `host_line`, state in a folder of
    /// its own under the fixture's.
    fn config(&self, acme_extra: &str, host_line: &str) -> String {
        let state = tempfile::tempdir_in(self.dir.path()).unwrap().keep();
        config(
            &state,
            self.http,
            self.https,
            &self.pebble,
            acme_extra,
            &acme_site(host_line, self.origin.addr),
        )
    }

    /// Serves `text` in this process.
    async fn serve(&self, text: &str) -> TestGateway {
        TestGateway::start_text(tempfile::tempdir().unwrap(), text).await
    }

    /// `text` written as a config file, for a drawbridge process.
    fn file(&self, text: &str) -> std::path::PathBuf {
        let path = tempfile::tempdir_in(self.dir.path())
            .unwrap()
            .keep()
            .join("drawbridge.toml");
        std::fs::write(&path, text).unwrap();
        path
    }
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

/// The state folder a config names.
fn state_of(text: &str) -> std::path::PathBuf {
    let line = text
        .lines()
        .find(|l| l.starts_with("state_dir = "))
        .unwrap();
    line.trim_start_matches("state_dir = ")
        .trim_matches('"')
        .into()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn tls_alpn_01_then_a_restart_reuses_the_stored_certificate_without_the_ca() {
    let ca = Ca::start().await;
    let (https, root) = (ca.https, ca.root.clone());
    let text = ca.config("challenges = [\"tls-alpn-01\"]", "host = \"alpn.test\"");
    // The config names Pebble's listener CA, which goes with Pebble: keep a copy.
    let kept_ca = ca.dir.path().join("listener-ca.pem");
    std::fs::copy(&ca.pebble.listener_ca, &kept_ca).unwrap();
    let text = text.replace(
        &ca.pebble.listener_ca.display().to_string(),
        &kept_ca.display().to_string(),
    );
    let state = state_of(&text);

    let mut gw = ca.serve(&text).await;
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
    drop(ca.pebble);
    std::fs::write(
        cert_dir.join(".key.pem.new"),
        "-----BEGIN PRIVATE KEY-----\ntrunc",
    )
    .unwrap();
    let gw = TestGateway::start_text(tempfile::tempdir().unwrap(), &text).await;
    let again = served(gw.https, &root, "alpn.test").await;
    drop(ca.dir);
    assert_eq!(
        again,
        Some(first),
        "the stored certificate is served at once, no new order"
    );
}

#[tokio::test]
async fn http_01_certificate_is_served() {
    let ca = Ca::start().await;
    let text = ca.config("challenges = [\"http-01\"]", "host = \"web.test\"");
    let gw = ca.serve(&text).await;
    wait_served(gw.https, &ca.root, "web.test").await;
    let client = reqwest_for(&ca.root, &["web.test"], gw.https);
    let echo = client
        .get(format!("https://web.test:{}/echo", ca.https))
        .send()
        .await
        .unwrap();
    assert_eq!(echo.status(), 200);
}

#[tokio::test]
async fn dns_01_through_a_hook_covers_a_wildcard() {
    let ca = Ca::start().await;
    let hook = ca.dir.path().join("dns-hook.sh");
    let calls = ca.dir.path().join("hook-calls.log");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\necho \"$1 $2\" >> {calls}\nif [ \"$1\" = present ]; then\n  curl -sf -X POST -d \"{{\\\"host\\\":\\\"_acme-challenge.$2.\\\",\\\"value\\\":\\\"$3\\\"}}\" http://{mgmt}/set-txt\nelse\n  curl -sf -X POST -d \"{{\\\"host\\\":\\\"_acme-challenge.$2.\\\"}}\" http://{mgmt}/clear-txt\nfi\n",
            calls = calls.display(),
            mgmt = ca.pebble.challtest_addr()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let acme = format!(
        "challenges = [\"dns-01\"]\ndns_hook = \"{}\"",
        hook.display()
    );
    let text = ca.config(&acme, "hosts = [\"dns.test\", \"*.dns.test\"]");
    let gw = ca.serve(&text).await;
    wait_served(gw.https, &ca.root, "films.dns.test").await;
    assert!(served(gw.https, &ca.root, "dns.test").await.is_some());
    let log = std::fs::read_to_string(&calls).unwrap();
    assert!(
        log.contains("present dns.test") && log.contains("cleanup dns.test"),
        "{log}"
    );
}

#[tokio::test]
async fn forced_renewal_swaps_the_certificate_while_a_connection_stays_open() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ca = Ca::start().await;
    let root = &ca.root;
    let gw = ca.serve(&ca.config("", "host = \"renew.test\"")).await;
    let before = wait_served(gw.https, root, "renew.test").await;
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
        after = served(gw.https, root, "renew.test")
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
    let ca = Ca::start().await;
    let (http, https) = (ca.http, ca.https);
    // The CA resolves the name to an address where nothing listens.
    ca.pebble
        .challtest(
            "/add-a",
            serde_json::json!({"host": "elsewhere.test.", "addresses": ["127.0.0.2"]}),
        )
        .await;
    let path = ca.file(&ca.config("", "host = \"elsewhere.test\""));
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
    assert!(served(process.https, &ca.root, "elsewhere.test")
        .await
        .is_none());
    assert!(started.elapsed() < Duration::from_secs(15));

    // doctor, beside the running process: its ports listen, the account is
    // stored, and the failed order is named with the CA's words.
    let asked = path.clone();
    let doctor = tokio::task::spawn_blocking(move || {
        std::process::Command::new(crate::support::binary())
            .args(["doctor", "-c"])
            .arg(&asked)
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
        .arg(&path)
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
    let key = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";
    let ca = Ca::with_eab("kid-1", key).await;
    // Without binding the CA refuses the account; with it, the certificate comes.
    let bare = ca.config("challenges = [\"http-01\"]", "host = \"eab.test\"");
    let refused = Process::start(&ca.file(&bare));
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

    let acme = format!("challenges = [\"http-01\"]\neab_kid = \"kid-1\"\neab_hmac_key = \"{key}\"");
    let gw = ca.serve(&ca.config(&acme, "host = \"eab.test\"")).await;
    wait_served(gw.https, &ca.root, "eab.test").await;
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
    // `status` (and the dashboard, from the same answer) says why.
    let (said, _) = crate::support::tunnel::cli(&["status", "-c", path.to_str().unwrap()]);
    assert!(
        said.contains("certificate: not issued yet; last order failed: ")
            && said.contains("dns error"),
        "{said}"
    );
    drop(process);
}
