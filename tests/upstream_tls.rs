//! `https://` upstreams for those who keep a port forward: the certificate
//! is checked (a pin, a CA file, or the system's roots) and a failed check
//! is a 502 with the reason logged, never plain text instead; `check` warns
//! about plain HTTP to a public address.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::support::origin::Origin;
use crate::support::{config_file, site, Process, TestGateway};

/// A CA and a leaf for 127.0.0.1 signed by it, as PEM: (ca, leaf, key).
fn ca_and_leaf() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (ca_cert.pem(), leaf.pem(), key.serialize_pem())
}

/// TLS in front of `origin` with `cert`/`key`: Jellyfin's own https port.
async fn tls_front(origin: SocketAddr, cert: &str, key: &str) -> SocketAddr {
    use rustls::pki_types::pem::PemObject;
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
        .map(Result::unwrap)
        .collect();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let mut plain = tokio::net::TcpStream::connect(origin).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    addr
}

fn pin_of(pem: &str) -> String {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    drawbridge::tunnel::identity::pin_of(&der).unwrap()
}

async fn status(gw: &TestGateway) -> u16 {
    gw.reqwest(&["jelly.test"], false)
        .get(gw.url("jelly.test", "/System/Info/Public"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_pinned_or_ca_checked_https_upstream_serves_and_a_wrong_one_is_502() {
    let origin = Origin::start().await;
    let (ca, leaf, key) = ca_and_leaf();
    let front = tls_front(origin.addr, &leaf, &key).await;
    let https = |extra: &str| {
        site("jelly.test", origin.addr, extra).replace(
            &format!("http://{}", origin.addr),
            &format!("https://{front}"),
        )
    };
    let gw = TestGateway::start(&https(&format!("upstream_pin = \"{}\"", pin_of(&leaf)))).await;
    assert_eq!(status(&gw).await, 200, "pinned");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &ca).unwrap();
    let ca_path = dir.path().join("ca.pem");
    let gw = TestGateway::start(&https(&format!("upstream_ca = \"{}\"", ca_path.display()))).await;
    assert_eq!(status(&gw).await, 200, "checked against the CA file");

    // The system's roots do not know this CA; another key does not match the pin.
    let before = origin.seen.total();
    let gw = TestGateway::start(&https("")).await;
    assert_eq!(
        status(&gw).await,
        502,
        "not verified against the system roots"
    );
    let (_, other_leaf, _) = ca_and_leaf();
    let gw = TestGateway::start(&https(&format!(
        "upstream_pin = \"{}\"",
        pin_of(&other_leaf)
    )))
    .await;
    assert_eq!(status(&gw).await, 502, "another key's pin");
    assert_eq!(origin.seen.total(), before, "nothing went out unchecked");

    // The reason is in the error log.
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        dir.path(),
        &https(&format!(
            "upstream_pin = \"{}\"\nhttps_redirect = false",
            pin_of(&other_leaf)
        )),
    );
    let process = Process::start(&config);
    let client = reqwest::Client::builder()
        .resolve("jelly.test", process.http)
        .build()
        .unwrap();
    let response = client
        .get(format!(
            "http://jelly.test:{}/System/Info/Public",
            process.http.port()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let process = tokio::task::spawn_blocking(move || {
        assert!(process.wait_for_log(
            "TLS: invalid peer certificate",
            std::time::Duration::from_secs(5)
        ));
        process
    })
    .await
    .unwrap();
    drop(process);
}

#[test]
fn check_warns_about_plain_http_to_a_public_address_and_refuses_half_settings() {
    let dir = tempfile::tempdir().unwrap();
    let run = |text: &str| {
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(crate::support::binary())
            .args(["check", "-c"])
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, stderr) =
        run("[[site]]\nhost = \"jelly.example.com\"\nupstream = \"http://203.0.113.7:8096\"\n");
    assert!(ok);
    assert!(
        stderr.contains("credentials cross the internet in clear text"),
        "{stderr}"
    );
    for private in [
        "http://192.168.1.10:8096",
        "http://jellyfin.lan:8096",
        "https://203.0.113.7:8920",
        "tunnel:home/jellyfin",
    ] {
        let (ok, stderr) = run(&format!(
            "[[site]]\nhost = \"jelly.example.com\"\nupstream = \"{private}\"\n"
        ));
        assert!(ok, "{stderr}");
        assert!(!stderr.contains("clear text"), "{private}: {stderr}");
    }
    let (ok, stderr) = run("[[site]]\nhost = \"jelly.example.com\"\nupstream = \"http://10.0.0.2:8096\"\nupstream_pin = \"sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\n");
    assert!(!ok);
    assert!(
        stderr.contains(":4:") && stderr.contains("are for an https:// upstream"),
        "{stderr}"
    );
    let (ok, stderr) = run("[[site]]\nhost = \"jelly.example.com\"\nupstream = \"https://10.0.0.2:8920\"\nupstream_pin = \"sha256/short\"\n");
    assert!(!ok);
    assert!(stderr.contains("is not a key pin"), "{stderr}");
    let (ok, stderr) =
        run("[[site]]\nhost = \"jelly.example.com\"\nupstream = \"tunnel:Home Server/jellyfin\"\n");
    assert!(!ok);
    assert!(stderr.contains("is not a tunnel target"), "{stderr}");
}
