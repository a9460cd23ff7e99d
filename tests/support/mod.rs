//! Test support: a drawbridge started in-process on 127.0.0.1 port 0 with
//! certificates made per run, a drawbridge started as a real process for
//! signal and CLI tests, and raw TLS and TCP clients.

#![allow(dead_code)]

pub mod dns;
pub mod h2;
pub mod h3;
pub mod jellyfin;
pub mod origin;
pub mod pebble;
pub mod raw;
pub mod tunnel;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use drawbridge::config::Config;
use drawbridge::server::{Reloader, Server};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::RootCertStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

/// A drawbridge running inside the test process.
pub struct TestGateway {
    pub dir: tempfile::TempDir,
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub ca_pem: Option<Vec<u8>>,
    pub reloader: Reloader,
    cache: std::sync::Arc<drawbridge::cache::Cache>,
    /// The admin listener (`/metrics`).
    pub admin: Option<SocketAddr>,
    /// The HTTP/3 endpoint (UDP), when one is bound.
    pub quic: Option<SocketAddr>,
    guard: std::sync::Arc<drawbridge::guard::Guard>,
    shutdown: CancellationToken,
    run: Option<tokio::task::JoinHandle<()>>,
}

/// Waits, checking every 5 ms for up to 5 s, until `ready()`; panics naming
/// `what` otherwise. For events a test cannot be told of.
pub async fn poll_until(mut ready: impl FnMut() -> bool, what: &str) {
    let waited = tokio::time::timeout(Duration::from_secs(5), async {
        while !ready() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    waited
        .await
        .unwrap_or_else(|_| panic!("waited 5 s for {what}"));
}

/// Like `poll_until`, for a condition that must be awaited (a scrape), every
/// 20 ms for up to 5 s.
pub async fn poll_until_async<F, Fut>(mut ready: F, what: &str)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let waited = tokio::time::timeout(Duration::from_secs(5), async {
        while !ready().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    waited
        .await
        .unwrap_or_else(|_| panic!("waited 5 s for {what}"));
}

/// The `[guard]` line tests that ban their own clients need: every test
/// client comes from 127.0.0.1, which drawbridge never bans otherwise (the
/// machine's own addresses, as fail2ban's `ignoreself`).
pub const BAN_LOOPBACK: &str = "ban_own_addresses = true\n";

/// The `[server]` block every test uses: port 0 on loopback, state in `dir`.
pub fn server_block(dir: &Path) -> String {
    format!(
        "[server]\nhttp = [\"127.0.0.1:0\"]\nhttps = [\"127.0.0.1:0\"]\nstate_dir = \"{}\"\ncert_watch_interval = \"100ms\"\nadmin_listen = \"127.0.0.1:0\"\n",
        dir.join("state").display()
    )
}

impl TestGateway {
    /// Starts drawbridge with the `[server]` block above followed by `rest`.
    pub async fn start(rest: &str) -> TestGateway {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, rest).await
    }

    /// The most common start: a fake Jellyfin, and drawbridge with one site,
    /// `jelly.test`, in front of it (`extra`: the site's further keys).
    pub async fn in_front_of_jellyfin(extra: &str) -> (origin::Origin, TestGateway) {
        let origin = origin::Origin::start().await;
        let gw = Self::start(&site("jelly.test", origin.addr, extra)).await;
        (origin, gw)
    }

    /// Like `start`, in a folder the test prepared (for cert files, webroots).
    pub async fn start_in(dir: tempfile::TempDir, rest: &str) -> TestGateway {
        Self::start_with_server_extra(dir, "", rest).await
    }

    /// Like `start_in`, with `server_extra` lines added to `[server]`.
    pub async fn start_with_server_extra(
        dir: tempfile::TempDir,
        server_extra: &str,
        rest: &str,
    ) -> TestGateway {
        // Access lines on stderr are noise here; tests of the log configure it.
        let quiet = if rest.contains("[log]") {
            ""
        } else {
            "[log]\naccess = \"off\"\n"
        };
        let text = format!("{}{server_extra}{quiet}{rest}", server_block(dir.path()));
        Self::start_text(dir, &text).await
    }

    /// Starts drawbridge on exactly `text` (its own `[server]` block included).
    pub async fn start_text(dir: tempfile::TempDir, text: &str) -> TestGateway {
        // drawbridge's log goes to the test's captured output, shown on failure.
        let _ = tracing_subscriber::fmt()
            .with_env_filter("drawbridge=debug,info")
            .with_test_writer()
            .with_ansi(false)
            .try_init();
        let path = dir.path().join("drawbridge.toml");
        std::fs::write(&path, text).unwrap();
        let config = Config::load(&path).unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
        let server = Server::bind(config).await.unwrap();
        let http = server.http_addrs()[0];
        let https = server.https_addrs()[0];
        let ca_pem = server.ca_cert_path().map(|p| std::fs::read(p).unwrap());
        let reloader = server.reloader();
        let cache = server.cache();
        let admin = server.admin_addr();
        let quic = server.quic_addrs().first().copied();
        let guard = server.guard();
        let shutdown = CancellationToken::new();
        let run = Some(tokio::spawn(server.run(shutdown.clone())));
        TestGateway {
            dir,
            http,
            https,
            ca_pem,
            reloader,
            cache,
            admin,
            quic,
            guard,
            shutdown,
            run,
        }
    }

    /// Waits until the edge cache has stored `count` responses in memory
    /// (and, with `on_disk`, written them to its disk tier too).
    pub async fn cache_stored(&self, count: u64, on_disk: bool) {
        let stored = || {
            let (memory, disk) = self.cache.stored();
            if on_disk {
                disk >= count
            } else {
                memory >= count
            }
        };
        poll_until(stored, "the cache to store a response").await;
    }

    /// Responses the edge cache has stored so far: in memory, on disk.
    pub fn cache_stored_now(&self) -> (u64, u64) {
        self.cache.stored()
    }

    /// Waits until the guard counts exactly `count` open client connections.
    pub async fn open_connections(&self, count: usize) {
        poll_until(
            || self.guard.open_connections() == count,
            "open connections",
        )
        .await;
    }

    /// The bans in force now, as `bans list` shows them.
    pub fn bans(&self) -> Vec<drawbridge::guard::ban::StoredBan> {
        self.guard.bans.list(tokio::time::Instant::now())
    }

    /// Starts the shutdown, as SIGTERM does.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits until the server has stopped (drained or past its grace).
    pub async fn stopped(&mut self) {
        if let Some(run) = self.run.take() {
            run.await.unwrap();
        }
    }

    /// A rustls client config trusting the local CA, offering `alpn`.
    pub fn tls_client(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        client_config(
            self.ca_pem.as_deref().expect("a site uses the local CA"),
            alpn,
        )
    }

    /// A TLS connection to the gateway with `sni` (None sends no SNI).
    pub async fn tls_connect(
        &self,
        sni: Option<&str>,
        alpn: &[&[u8]],
    ) -> std::io::Result<TlsStream<TcpStream>> {
        tls_connect(self.https, self.tls_client(alpn), sni).await
    }

    /// A reqwest client that trusts the local CA and resolves `hosts` to the gateway.
    pub fn reqwest(&self, hosts: &[&str], http2: bool) -> reqwest::Client {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.ca_pem.as_deref().unwrap()).unwrap(),
            )
            .redirect(reqwest::redirect::Policy::none());
        for host in hosts {
            builder = builder.resolve(host, self.https);
        }
        builder = if http2 {
            builder.http2_prior_knowledge()
        } else {
            builder.http1_only()
        };
        builder.build().unwrap()
    }

    /// An HTTP/1.1 reqwest client for `host` from the loopback address `from`
    /// (different 127.x addresses stand for different people).
    pub fn reqwest_from(&self, host: &str, from: &str) -> reqwest::Client {
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.ca_pem.as_deref().unwrap()).unwrap(),
            )
            .resolve(host, self.https)
            .local_address(Some(from.parse().unwrap()))
            .http1_only()
            .build()
            .unwrap()
    }

    /// The admin listener's metrics text, as Prometheus would scrape it.
    pub async fn metrics(&self) -> String {
        scrape(self.admin.expect("the admin listener is on")).await
    }

    /// `times` failed logins at jelly.test with `client` (each a 401).
    pub async fn fail_logins(&self, client: &reqwest::Client, times: usize) {
        for _ in 0..times {
            let failed = client
                .post(self.url("jelly.test", "/Users/AuthenticateByName"))
                .body(WRONG_LOGIN)
                .send()
                .await
                .unwrap();
            assert_eq!(failed.status(), 401);
        }
    }

    /// The URL of `path` on `host` over https.
    pub fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.https.port())
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Writes `dir/drawbridge.toml`: the test `[server]` block, then `rest`;
/// returns its path (for `Process::start` and the command line).
pub fn config_file(dir: &Path, rest: &str) -> PathBuf {
    let path = dir.join("drawbridge.toml");
    std::fs::write(&path, format!("{}{rest}", server_block(dir))).unwrap();
    path
}

/// A `[[site]]` for `host` in front of `upstream`, with `extra` keys.
pub fn site(host: &str, upstream: SocketAddr, extra: &str) -> String {
    format!(
        "[[site]]\nhost = \"{host}\"\nupstream = \"http://{upstream}\"\ntls = \"internal\"\n{}{extra}\n",
        gate_off_unless(extra)
    )
}

/// `gate = "off"` for a test site whose `extra` says nothing of the gate:
/// the tests of proxying, streaming and the guard send requests the side-door
/// gate would refuse (`/echo`, a stream without a token); the gate's own
/// tests (`side_doors.rs`) turn it on.
pub fn gate_off_unless(extra: &str) -> &'static str {
    if extra.contains("gate") {
        ""
    } else {
        "gate = \"off\"\n"
    }
}

/// A rustls client config trusting `ca_pem`.
pub fn client_config(ca_pem: &[u8], alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    if alpn.is_empty() {
        config.alpn_protocols.clear();
    }
    Arc::new(config)
}

/// Connects with TLS; `sni = None` sends no server name (as for an IP address).
pub async fn tls_connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    sni: Option<&str>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut config = (*config).clone();
    let name = match sni {
        Some(name) => ServerName::try_from(name.to_string()).unwrap(),
        None => {
            config.enable_sni = false;
            // Verification still needs a name; the handshake is refused before that.
            ServerName::try_from("no-sni.invalid").unwrap()
        }
    };
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

/// Sends `request` raw and reads until the peer closes or `wait` passes.
/// Returns the bytes received and whether the peer closed.
pub async fn exchange<S>(stream: &mut S, request: &[u8], wait: Duration) -> (Vec<u8>, bool)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    stream.write_all(request).await.unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (received, true),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => return (received, false),
        }
    }
}

/// An address on 127.0.0.1 where nothing listens: a port bound, then let go.
pub async fn closed_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The status code of a raw HTTP/1.1 response.
pub fn status_of(response: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(response);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"))
}

/// A self-signed certificate and key for `host`, as PEM.
pub fn self_signed(host: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec![host.to_string()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// drawbridge run as a real process, for signals and the command line.
pub struct Process {
    pub child: Child,
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub log: Arc<std::sync::Mutex<Vec<String>>>,
}

/// `drawbridge bans -c config ARGS…`, which must succeed: its stdout and stderr.
pub fn bans_cli(config: &Path, args: &[&str]) -> (String, String) {
    let out = Command::new(binary())
        .arg("bans")
        .arg("-c")
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}

/// The drawbridge binary Cargo built for these tests.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_drawbridge"))
}

/// The binary with `args` and `config`, its stderr piped for reading.
pub fn spawn_binary(
    args: &[&str],
    config: &Path,
) -> (std::process::Child, std::process::ChildStderr) {
    let mut child = Command::new(binary())
        .args(args)
        .arg(config)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    (child, stderr)
}

impl Process {
    /// Starts `drawbridge run -c config` and waits until both listeners are up.
    pub fn start(config: &Path) -> Process {
        Process::start_logging_to(config, None)
    }

    /// Like `start`, for a config whose `[log] error` is `log_file`: the log
    /// is read from that file (stderr must stay empty of it).
    pub fn start_logging_to(config: &Path, log_file: Option<&Path>) -> Process {
        let (child, stderr) = spawn_binary(&["run", "-c"], config);
        Process::watch(child, stderr, log_file)
    }

    /// `command` (a `drawbridge run` however started: a container of the
    /// image too), its stderr read, once both listeners are up.
    pub fn start_command(mut command: Command) -> Process {
        let mut child = command
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        Process::watch(child, stderr, None)
    }

    fn watch(child: Child, stderr: std::process::ChildStderr, log_file: Option<&Path>) -> Process {
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let keep = move |line: String, log: &std::sync::Mutex<Vec<String>>| {
            if line.contains("listening") {
                let _ = tx.send(line.clone());
            }
            log.lock().unwrap().push(line);
        };
        match log_file {
            None => {
                let log = log.clone();
                std::thread::spawn(move || {
                    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                        keep(line, &log);
                    }
                });
            }
            Some(path) => {
                let path = path.to_path_buf();
                let weak = Arc::downgrade(&log);
                std::thread::spawn(move || {
                    let mut seen = 0;
                    // Until the Process is dropped: new complete lines of the file.
                    while let Some(log) = weak.upgrade() {
                        let text = std::fs::read_to_string(&path).unwrap_or_default();
                        let complete = text.rfind('\n').map_or(0, |i| i + 1);
                        for line in text[seen.min(complete)..complete].lines() {
                            keep(line.to_string(), &log);
                        }
                        seen = complete;
                        drop(log);
                        std::thread::sleep(Duration::from_millis(50));
                    }
                });
                let log = log.clone();
                std::thread::spawn(move || {
                    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                        log.lock().unwrap().push(format!("STDERR {line}"));
                    }
                });
            }
        }
        let mut http = None;
        let mut https = None;
        while http.is_none() || https.is_none() {
            let line = rx
                .recv_timeout(Duration::from_secs(20))
                .expect("drawbridge did not start listening");
            let addr: SocketAddr = line
                .split("listener=")
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap();
            if line.contains("tls=true") {
                https = Some(addr)
            } else {
                http = Some(addr)
            }
        }
        Process {
            child,
            http: http.unwrap(),
            https: https.unwrap(),
            log,
        }
    }

    /// Sends `signal` (e.g. "HUP") to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits until a log line contains `needle`, up to `wait`.
    pub fn wait_for_log(&self, needle: &str, wait: Duration) -> bool {
        let tries = wait.as_millis() / 50;
        for _ in 0..tries {
            if self.log.lock().unwrap().iter().any(|l| l.contains(needle)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A login body the fake Jellyfin refuses (401).
pub const WRONG_LOGIN: &str = r#"{"Username":"a","Pw":"wrong"}"#;

/// The metrics text at the admin listener `admin`.
pub async fn scrape(admin: SocketAddr) -> String {
    reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Whether the tests run as root, which some need (network namespaces,
/// installing the package, dropping privileges). Not root: said on stderr
/// with `skipped`, and false — but under CI (which runs as root) a failure.
pub fn as_root(skipped: &str) -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:\t0\t"));
    if !root {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs the tests as root"
        );
        eprintln!("not root: {skipped}");
    }
    root
}
