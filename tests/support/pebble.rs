//! A real ACME server for tests: Debian's `pebble` in strict mode, with
//! `pebble-challtestsrv` as its DNS (every name → 127.0.0.1 unless a test says
//! otherwise). Its HTTPS listener gets a CA made per run; its validation ports
//! point at the drawbridge under test. Nonce rejection stays at Pebble's
//! default (5 %), so the client's badNonce retry is exercised.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A port free on 127.0.0.1, for a server that must listen on a port known
/// before it starts (Pebble validates HTTP-01 and TLS-ALPN-01 on fixed ports).
/// Taken below Linux's ephemeral range (32768 up), one after another: a
/// server another test binds to port 0 meanwhile, or an outgoing connection,
/// cannot take it before its test binds it (a CI run failed that way).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering::SeqCst};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // Apart from another test process running at the same time.
    let start = 20_000 + (std::process::id() % 500) as u16 * 20;
    let _ = NEXT.compare_exchange(0, start, SeqCst, SeqCst);
    loop {
        let port = NEXT.fetch_add(1, SeqCst);
        assert!(port < 32_768, "no free port left below the ephemeral range");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A running Pebble and challenge test server.
pub struct Pebble {
    /// The ACME directory URL.
    pub directory: String,
    /// PEM file of the CA that signed Pebble's HTTPS listener.
    pub listener_ca: PathBuf,
    management: SocketAddr,
    challtest: SocketAddr,
    children: Vec<Child>,
    _dir: tempfile::TempDir,
}

impl Pebble {
    /// Starts Pebble validating against `http_port` (HTTP-01) and `tls_port` (TLS-ALPN-01).
    pub async fn start(http_port: u16, tls_port: u16) -> Pebble {
        Self::start_with_eab(http_port, tls_port, None).await
    }

    /// Like `start`; with `eab = Some((kid, base64url key))` accounts need
    /// External Account Binding with that key.
    pub async fn start_with_eab(
        http_port: u16,
        tls_port: u16,
        eab: Option<(&str, &str)>,
    ) -> Pebble {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "pebble listener test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .unwrap()
                .signed_by(&leaf_key, &issuer)
                .unwrap();
        let listener_ca = dir.path().join("listener-ca.pem");
        std::fs::write(&listener_ca, ca_cert.pem()).unwrap();
        std::fs::write(dir.path().join("cert.pem"), leaf.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), leaf_key.serialize_pem()).unwrap();

        let (listen, management, dns, challtest) =
            (free_port(), free_port(), free_port(), free_port());
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{listen}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": dir.path().join("cert.pem"),
            "privateKey": dir.path().join("key.pem"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": eab.is_some(),
            "externalAccountMACKeys": eab.map(|(kid, key)| serde_json::json!({ kid: key })).unwrap_or_else(|| serde_json::json!({})),
        }});
        let config_path = dir.path().join("pebble.json");
        std::fs::write(&config_path, config.to_string()).unwrap();

        let log = |name: &str| std::fs::File::create(dir.path().join(name)).unwrap();
        let challtestsrv = Command::new("pebble-challtestsrv")
            .args([
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
            ])
            .args([
                "-dns01",
                &format!("127.0.0.1:{dns}"),
                "-management",
                &format!("127.0.0.1:{challtest}"),
            ])
            .stdout(log("challtestsrv.log"))
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "pebble-challtestsrv is installed (Debian package pebble; .ci/run installs it)",
            );
        let pebble = Command::new("pebble")
            .arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &format!("127.0.0.1:{dns}"), "-strict"])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .stdout(log("pebble.log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble is installed (Debian package pebble; .ci/run installs it)");
        let pebble = Pebble {
            directory: format!("https://127.0.0.1:{listen}/dir"),
            listener_ca,
            management: ([127, 0, 0, 1], management).into(),
            challtest: ([127, 0, 0, 1], challtest).into(),
            children: vec![challtestsrv, pebble],
            _dir: dir,
        };
        for port in [listen, management, challtest] {
            if !wait_for_port(port).await {
                let log = std::fs::read_to_string(pebble._dir.path().join("pebble.log"))
                    .unwrap_or_default();
                panic!("pebble did not open port {port}; its log:\n{log}");
            }
        }
        pebble
    }

    /// An HTTPS client that trusts Pebble's listener.
    fn client(&self) -> reqwest::Client {
        let ca = std::fs::read(&self.listener_ca).unwrap();
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .build()
            .unwrap()
    }

    /// The root that signs issued certificates (new at every Pebble start).
    pub async fn root_pem(&self) -> String {
        let url = format!("https://{}/roots/0", self.management);
        self.client()
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Calls the challenge test server's management API (e.g. `/add-a`).
    pub async fn challtest(&self, path: &str, body: serde_json::Value) {
        let url = format!("http://{}{path}", self.challtest);
        let status = reqwest::Client::new()
            .post(url)
            .json(&body)
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_success(), "challtestsrv {path}: {status}");
    }

    /// The challenge test server's management address, for hook scripts.
    pub fn challtest_addr(&self) -> SocketAddr {
        self.challtest
    }
}

/// Whether something listens on `port` within 30 s.
async fn wait_for_port(port: u16) -> bool {
    for _ in 0..600 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
