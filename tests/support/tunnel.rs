//! A whole home leg through the tunnel, with the real binary at both ends:
//! an edge (`drawbridge run`) whose site is `tunnel:home/jellyfin`, an agent
//! (`drawbridge agent`) enrolled with a token from `drawbridge tunnel add`,
//! and the fake Jellyfin behind the agent.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::origin::Origin;
use super::{binary, server_block, Process};

/// A command of the binary, which must succeed: stdout and stderr.
pub fn cli(args: &[&str]) -> (String, String) {
    let out = Command::new(binary()).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{args:?} failed:\n{stdout}\n{stderr}");
    (stdout, stderr)
}

/// A command of the binary that must fail: its stderr.
pub fn cli_fails(args: &[&str]) -> String {
    let out = Command::new(binary()).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{args:?} should have failed");
    stderr
}

/// `drawbridge agent -c config` as a process, its log kept.
pub struct Agent {
    pub child: Child,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Agent {
    /// Starts the agent on `config`.
    pub fn start(config: &Path) -> Agent {
        let (child, stderr) = super::spawn_binary(&["agent", "-c"], config);
        Agent::watch(child, stderr)
    }

    /// `command` (a `drawbridge agent` however started: a container of the
    /// image too), its stderr read.
    pub fn start_command(mut command: Command) -> Agent {
        let mut child = command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        Agent::watch(child, stderr)
    }

    fn watch(child: Child, stderr: std::process::ChildStderr) -> Agent {
        let log = Arc::new(Mutex::new(Vec::new()));
        let keep = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                keep.lock().unwrap().push(line);
            }
        });
        Agent { child, log }
    }

    /// Waits until the agent has said which address Jellyfin's Known
    /// proxies must list (it asked the service once to know it is Jellyfin).
    pub async fn hinted(&self) {
        wait_until(
            || self.count("Known proxies (Dashboard") >= 1,
            Duration::from_secs(10),
            "the agent's Known proxies hint",
        )
        .await;
    }

    /// How many log lines contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How many of `process`'s log lines contain `needle`.
pub fn count(process: &Process, needle: &str) -> usize {
    process
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(needle))
        .count()
}

/// Waits (polling, up to `wait`) until `ready()`.
pub async fn wait_until(mut ready: impl FnMut() -> bool, wait: Duration, what: &str) {
    let deadline = tokio::time::Instant::now() + wait;
    while !ready() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {wait:?} for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A WebSocket of jelly.test's, through the edge at `https`.
pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// A WebSocket to the fake Jellyfin's `/socket` through the edge at `https`
/// (whose local CA is `ca`), its server's first message (ForceKeepAlive)
/// already read.
pub async fn websocket_at(https: SocketAddr, ca: &[u8]) -> Socket {
    use futures_util::StreamExt;
    let config = crate::support::client_config(ca, &[b"http/1.1"]);
    let tls = crate::support::tls_connect(https, config, Some("jelly.test"))
        .await
        .unwrap();
    let url = format!(
        "wss://jelly.test:{}/socket?api_key={}",
        https.port(),
        super::origin::TEST_API_KEY
    );
    let (mut ws, response) = tokio_tungstenite::client_async(url, tls).await.unwrap();
    assert_eq!(response.status(), 101);
    let hello = ws.next().await.unwrap().unwrap();
    assert!(hello.to_text().unwrap().contains("ForceKeepAlive"));
    ws
}

/// The edge's config text: one site, jelly.test, through the tunnel.
pub fn edge_config(dir: &Path, extra: &str) -> String {
    edge_config_at(dir, "jelly.test", extra)
}

/// Like `edge_config`, the site named `host`.
pub fn edge_config_at(dir: &Path, host: &str, extra: &str) -> String {
    format!(
        "{}[log]\naccess = \"off\"\n\n[guard]\n{}\n[[site]]\nhost = \"{host}\"\nupstream = \"tunnel:home/jellyfin\"\ntls = \"internal\"\nhttps_redirect = false\n{}{extra}",
        server_block(dir),
        super::BAN_LOOPBACK,
        super::gate_off_unless(extra)
    )
}

/// An edge, an enrolled agent and the fake Jellyfin behind it.
pub struct Home {
    pub dir: tempfile::TempDir,
    pub origin: Origin,
    pub edge: Process,
    pub agent: Agent,
    pub edge_config: PathBuf,
    pub agent_config: PathBuf,
    /// The site's name (jelly.test unless started `at` another).
    pub host: String,
}

impl Home {
    /// Everything up, with `connections` agent connections attached.
    pub async fn start(site_extra: &str, connections: usize) -> Home {
        Home::start_at("jelly.test", site_extra, connections).await
    }

    /// Like `start`, the site named `host` (`localhost` for clients that
    /// cannot be told where a name is).
    pub async fn start_at(host: &str, site_extra: &str, connections: usize) -> Home {
        let origin = Origin::start().await;
        let dir = tempfile::tempdir().unwrap();
        let edge_config = dir.path().join("drawbridge.toml");
        std::fs::write(&edge_config, edge_config_at(dir.path(), host, site_extra)).unwrap();
        let edge = Process::start(&edge_config);
        let agent_config = dir.path().join("home/agent.toml");
        std::fs::create_dir_all(agent_config.parent().unwrap()).unwrap();
        let token = add_token(&edge_config, "home", edge.https);
        enroll(&token, &agent_config);
        set_services(&agent_config, origin.addr, connections);
        let agent = Agent::start(&agent_config);
        let home = Home {
            dir,
            origin,
            edge,
            agent,
            edge_config,
            agent_config,
            host: host.to_string(),
        };
        home.attached(connections).await;
        // The agent asks Jellyfin who it is once (its Known proxies hint):
        // done before a test counts what reaches home.
        home.agent.hinted().await;
        home
    }

    /// Waits until the edge has seen `n` agent connections in all.
    pub async fn attached(&self, n: usize) {
        wait_until(
            || count(&self.edge, "agent connected") >= n,
            Duration::from_secs(10),
            "agent connections",
        )
        .await;
    }

    /// The edge's local CA certificate (PEM), for clients built by hand.
    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.dir.path().join("state/ca/root.pem")).unwrap()
    }

    /// A client for the site at the edge, trusting its local CA.
    pub fn client(&self, http2: bool) -> reqwest::Client {
        client_for_at(self.dir.path(), &self.host, self.edge.https, http2)
    }

    /// The status of GET /System/Info/Public through the edge.
    pub async fn info_status(&self) -> u16 {
        let response = self
            .client(false)
            .get(self.url("/System/Info/Public"))
            .send();
        response.await.unwrap().status().as_u16()
    }

    /// A WebSocket to the fake Jellyfin's `/socket` through the edge, its
    /// server's first message (ForceKeepAlive) already read.
    pub async fn websocket(&self) -> Socket {
        websocket_at(self.edge.https, &self.ca_pem()).await
    }

    /// `https://HOST:PORT{path}` at the edge.
    pub fn url(&self, path: &str) -> String {
        format!("https://{}:{}{path}", self.host, self.edge.https.port())
    }
}

/// A client for jelly.test at `https`, trusting the local CA under `dir`.
pub fn client_for(dir: &Path, https: SocketAddr, http2: bool) -> reqwest::Client {
    client_for_at(dir, "jelly.test", https, http2)
}

/// Like `client_for`, for the site named `host`.
pub fn client_for_at(dir: &Path, host: &str, https: SocketAddr, http2: bool) -> reqwest::Client {
    let ca = std::fs::read(dir.join("state/ca/root.pem")).unwrap();
    let builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .resolve(host, https)
        .timeout(Duration::from_secs(60));
    let builder = if http2 {
        builder.http2_prior_knowledge()
    } else {
        builder.http1_only()
    };
    builder.build().unwrap()
}

/// `drawbridge tunnel add NAME` for the edge at `https`: the token.
pub fn add_token(edge_config: &Path, name: &str, https: SocketAddr) -> String {
    let (stdout, _) = cli(&[
        "tunnel",
        "add",
        name,
        "--edge",
        &https.to_string(),
        "-c",
        edge_config.to_str().unwrap(),
    ]);
    token_in(&stdout)
}

/// The token of the enrol line `tunnel add` printed in `stdout`.
pub fn token_in(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("drawbridge agent enroll "))
        .unwrap_or_else(|| panic!("no enroll line in:\n{stdout}"))
        .to_string()
}

/// `drawbridge agent enroll TOKEN -c agent_config`, which must succeed.
pub fn enroll(token: &str, agent_config: &Path) -> String {
    cli(&[
        "agent",
        "enroll",
        token,
        "-c",
        agent_config.to_str().unwrap(),
    ])
    .0
}

/// Points the agent's `jellyfin` service at `origin`, with `connections`.
pub fn set_services(agent_config: &Path, origin: SocketAddr, connections: usize) {
    let text = std::fs::read_to_string(agent_config).unwrap();
    let text = text
        .replace("http://127.0.0.1:8096", &format!("http://{origin}"))
        .replace("connections = 2", &format!("connections = {connections}"));
    std::fs::write(agent_config, text).unwrap();
}

/// Resident memory of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// Knocks at the edge on `https` as an agent whose key is at `key` (made if
/// missing) would, over TLS to jelly.test trusting `ca`: what came back
/// within 3 s, and whether the edge closed the connection.
pub async fn knock(https: SocketAddr, ca: &[u8], key: &Path) -> (Vec<u8>, bool) {
    use drawbridge::tunnel::protocol::{Knock, Proof, AGENT_SIGNS};
    let identity = drawbridge::tunnel::identity::Identity::load_or_create(key).unwrap();
    send_head(https, ca, |exported| {
        Knock::Tunnel(Proof::make(&identity, AGENT_SIGNS, exported)).request_head("jelly.test")
    })
    .await
}

/// Sends the head `head` makes of the connection's exporter, over TLS to
/// jelly.test at `https` trusting `ca` (ALPN http/1.1): what came back
/// within 3 s, and whether the edge closed the connection.
pub async fn send_head(
    https: SocketAddr,
    ca: &[u8],
    head: impl FnOnce(&[u8; 32]) -> String,
) -> (Vec<u8>, bool) {
    let config = super::client_config(ca, &[b"http/1.1"]);
    let mut tls = super::tls_connect(https, config, Some("jelly.test"))
        .await
        .unwrap();
    let mut exported = [0u8; 32];
    tls.get_ref()
        .1
        .export_keying_material(
            &mut exported,
            drawbridge::tunnel::protocol::EXPORTER_LABEL,
            None,
        )
        .unwrap();
    let head = head(&exported);
    super::exchange(&mut tls, head.as_bytes(), Duration::from_secs(3)).await
}
