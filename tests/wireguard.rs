//! The router's own WireGuard (`wireguard:PEER/http://…`), in network
//! namespaces the test makes: the edge in one, a home router in another
//! running Debian's `wireguard-go` with the very file `drawbridge wireguard
//! add` printed (`wg-quick up`), and the fake Jellyfin on the router's LAN
//! side (the test's own namespace, on a LAN link of its own). The edge has
//! no route to that LAN but the TUN. GET, Range, 200 MiB with flat memory,
//! an upload, a WebSocket; the fence; strangers, a handshake flood; the
//! home's address moving; the router quiet, down and back; the cache and
//! the guard above the transport; new keys; the peer removed. Root only
//! (CI runs so).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use futures_util::StreamExt as _;

use crate::support::binary;
use crate::support::origin::{is_video_at, Origin, TEST_API_KEY};
use crate::support::tunnel::{cli, rss_kib, wait_until};

const EDGE: &str = "198.18.214.2:8080";
const EDGE_WG: &str = "198.18.213.1:51820";
const JELLYFIN: &str = "192.168.213.10";

/// Floods the edge's port with 2,000 handshake initiations from a key
/// nobody registered, each with a valid MAC1 (made with the edge's public
/// key, argv[1]) so that the edge must look at them; prints how many cookie
/// replies came back within two seconds.
const FLOOD: &str = "import socket, os, sys, base64, hashlib, time
public = base64.b64decode(sys.argv[1])
key = hashlib.blake2s(b'mac1----' + public).digest()
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
for i in range(2000):
    body = bytes([1, 0, 0, 0]) + os.urandom(112)
    s.sendto(body + hashlib.blake2s(body, digest_size=16, key=key).digest() + bytes(16), ('198.18.213.1', 51820))
cookies = 0
s.settimeout(0.2)
deadline = time.time() + 2
while time.time() < deadline:
    try:
        reply = s.recv(2048)
        cookies += reply[0] == 3 and len(reply) == 64
    except socket.timeout:
        pass
print(cookies)
";

/// Sends what is not WireGuard's, and an initiation nobody could have made,
/// to the edge's port; prints whether anything came back within a second.
const STRANGERS: &str = "import socket, os
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1)
for p in [os.urandom(32), bytes([1, 0, 0, 0]) + os.urandom(144), bytes([4, 0, 0, 0]) + os.urandom(60)]:
    s.sendto(p, ('198.18.213.1', 51820))
try:
    s.recv(2048)
    print('answered')
except socket.timeout:
    print('silent')
";

/// The namespaces and links, removed on drop.
struct Net {
    edge: String,
    router: String,
    client_link: String,
    lan_link: String,
}

fn run(args: &[&str]) -> Output {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl Net {
    fn make() -> Net {
        let n = std::process::id() % 100_000;
        let net = Net {
            edge: format!("dbwge{n}"),
            router: format!("dbwgr{n}"),
            client_link: format!("dbwc{n}"),
            lan_link: format!("dbwl{n}"),
        };
        let (e, r) = (net.edge.as_str(), net.router.as_str());
        for step in [
            format!("ip netns add {e}"),
            format!("ip netns add {r}"),
            format!("ip -n {e} link set lo up"),
            format!("ip -n {r} link set lo up"),
            // The client's side of the internet: this namespace to the edge.
            format!(
                "ip link add {} type veth peer name c0 netns {e}",
                net.client_link
            ),
            format!("ip addr add 198.18.214.1/30 dev {}", net.client_link),
            format!("ip link set {} up", net.client_link),
            format!("ip -n {e} addr add 198.18.214.2/30 dev c0"),
            format!("ip -n {e} link set c0 up"),
            // The home's side: the edge to the router.
            format!("ip -n {e} link add i0 type veth peer name i0 netns {r}"),
            format!("ip -n {e} addr add 198.18.213.1/24 dev i0"),
            format!("ip -n {e} link set i0 up"),
            format!("ip -n {r} addr add 198.18.213.2/24 dev i0"),
            format!("ip -n {r} link set i0 up"),
            format!("ip netns exec {r} sysctl -qw net.ipv4.conf.i0.promote_secondaries=1"),
            // The home LAN: the router to Jellyfin (here).
            format!(
                "ip link add {} type veth peer name l0 netns {r}",
                net.lan_link
            ),
            format!("ip addr add {JELLYFIN}/24 dev {}", net.lan_link),
            format!("ip link set {} up", net.lan_link),
            format!("ip -n {r} addr add 192.168.213.1/24 dev l0"),
            format!("ip -n {r} link set l0 up"),
            format!("ip netns exec {r} sysctl -qw net.ipv4.ip_forward=1"),
            // Jellyfin's host answers the tunnel's addresses by its router.
            format!(
                "ip route add 10.213.0.0/24 via 192.168.213.1 dev {}",
                net.lan_link
            ),
        ] {
            run(&step.split(' ').collect::<Vec<_>>());
        }
        net
    }

    fn in_ns(&self, ns: &str, args: &[&str]) -> Output {
        let mut all = vec!["ip", "netns", "exec", ns];
        all.extend_from_slice(args);
        Command::new(all[0]).args(&all[1..]).output().unwrap()
    }

    fn router(&self, args: &[&str]) -> Output {
        self.in_ns(&self.router, args)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in [&self.edge, &self.router] {
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).output();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        for link in [&self.client_link, &self.lan_link] {
            let _ = Command::new("ip").args(["link", "del", link]).output();
        }
    }
}

/// The edge's config: one site through the peer `home`.
fn edge_config(dir: &Path, jellyfin: SocketAddr) -> PathBuf {
    let path = dir.join("drawbridge.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nhttp = [\"0.0.0.0:8080\"]\nhttps = []\nstate_dir = \"{}\"\nadmin_listen = \"127.0.0.1:9100\"\n\n[log]\naccess = \"off\"\n\n[wireguard]\nlisten = \"0.0.0.0:51820\"\naddress = \"10.213.0.1/24\"\nendpoint = \"{EDGE_WG}\"\nkeepalive = \"1s\"\n\n[[site]]\nhost = \"jelly.test\"\nupstream = \"wireguard:home/http://{jellyfin}\"\ngate = \"off\"\nhttps_redirect = false\nmax_body = \"30MiB\"\n",
            dir.join("state").display()
        ),
    )
    .unwrap();
    path
}

/// `drawbridge wireguard ACTION home`, its file written where `wg-quick`
/// takes it (the interface is named after the file).
fn home_file(config: &Path, action: &str, file: &Path) -> String {
    let c = config.to_str().unwrap();
    let (stdout, stderr) = cli(&["wireguard", "-c", c, action, "home"]);
    std::fs::write(file, &stdout).unwrap();
    stderr
}

fn wg_quick(net: &Net, up: &str, file: &Path) {
    let out = net.router(&["wg-quick", up, file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "wg-quick {up}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What `drawbridge doctor` prints.
fn doctor(config: &Path) -> String {
    let out = Command::new(binary())
        .args(["doctor", "-c", config.to_str().unwrap()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn listed(config: &Path) -> String {
    cli(&["wireguard", "-c", config.to_str().unwrap(), "list"]).0
}

async fn status(client: &reqwest::Client, path: &str) -> u16 {
    match client
        .get(format!("http://jelly.test:8080{path}"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
    {
        Ok(response) => response.status().as_u16(),
        Err(_) => 0,
    }
}

async fn served(client: &reqwest::Client, wait: Duration, what: &str) {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let last = status(client, "/System/Info/Public").await;
        if last == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {wait:?} for {what}, last {last}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether no TCP connection from namespace `ns` to `target` could be
/// opened (curl timed out or was refused), `extra` curl's arguments.
fn unreachable_from(net: &Net, ns: &str, target: &str, extra: &[&str]) -> bool {
    let mut args = vec!["curl", "-s", "-m", "3", "-o", "/dev/null"];
    args.extend_from_slice(extra);
    let url = format!("http://{target}/");
    args.push(&url);
    matches!(net.in_ns(ns, &args).status.code(), Some(7 | 28))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_home_router_s_own_wireguard_carries_jellyfin_and_nothing_else() {
    if !crate::support::as_root("no network namespaces; skipped") {
        return;
    }
    for tool in ["wireguard-go", "wg", "wg-quick"] {
        assert!(
            Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().unwrap().status.success(),
            "{tool} is installed (Debian's wireguard-go and wireguard-tools; .ci/run installs them)"
        );
    }
    let net = Net::make();
    let origin = Origin::start_on(format!("{JELLYFIN}:0").parse().unwrap()).await;
    // Another service at home, which no site names.
    let other = tokio::net::TcpListener::bind(format!("{JELLYFIN}:0"))
        .await
        .unwrap();
    let other_addr = other.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = edge_config(dir.path(), origin.addr);
    let n = std::process::id() % 10_000;
    let file = dir.path().join(format!("wgh{n}.conf"));

    // `check` names the peer nobody registered yet.
    let checked = Command::new(binary())
        .args(["check", "-c", config.to_str().unwrap()])
        .output()
        .unwrap();
    let checked = String::from_utf8_lossy(&checked.stdout).into_owned()
        + &String::from_utf8_lossy(&checked.stderr);
    assert!(
        checked.contains("no WireGuard peer called `home`"),
        "{checked}"
    );
    // Here Jellyfin's LAN is also this machine's own (the test's link):
    // `check` says routing it into the tunnel would cut that path.
    assert!(
        checked.contains("192.168.213.10 is on this machine's own network 192.168.213.0/24"),
        "{checked}"
    );

    // The keys and the router's file, before the edge runs.
    let told = home_file(&config, "add", &file);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("Address = 10.213.0.2/32"), "{text}");
    assert!(text.contains(&format!("Endpoint = {EDGE_WG}")), "{text}");
    assert!(text.contains("AllowedIPs = 10.213.0.1/32"), "{text}");
    assert!(told.contains("It serves jelly.test"), "{told}");

    let log = dir.path().join("edge.log");
    let mut edge: Child = Command::new("ip")
        .args(["netns", "exec", &net.edge])
        .arg(binary())
        .args(["run", "-c", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until(
        || read_log().contains("listening"),
        Duration::from_secs(10),
        "the edge",
    )
    .await;
    assert!(
        read_log().contains("WireGuard on 0.0.0.0:51820"),
        "{}",
        read_log()
    );

    wg_quick(&net, "up", &file);
    let client = reqwest::Client::builder()
        .resolve("jelly.test", EDGE.parse().unwrap())
        .build()
        .unwrap();
    served(
        &client,
        Duration::from_secs(10),
        "the first request through the router",
    )
    .await;
    assert!(
        listed(&config).contains("home\tup\t10.213.0.2"),
        "{}",
        listed(&config)
    );
    assert!(
        doctor(&config).contains("✓ site jelly.test: WireGuard peer `home` is up (last handshake"),
        "{}",
        doctor(&config)
    );
    let metrics = net.in_ns(&net.edge, &["curl", "-s", "http://127.0.0.1:9100/metrics"]);
    let metrics = String::from_utf8_lossy(&metrics.stdout).into_owned();
    assert!(
        metrics.contains("wireguard_peer_up{peer=\"home\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("wireguard_handshake_age_seconds{peer=\"home\"}"),
        "{metrics}"
    );

    // Jellyfin's Known proxies entry: the edge's tunnel address.
    wait_until(
        || read_log().contains("drawbridge reaches the upstream from 10.213.0.1: add 10.213.0.1 to Jellyfin's Known proxies"),
        Duration::from_secs(10),
        "the Known proxies hint",
    )
    .await;

    // What Jellyfin is told of the client.
    let echo: serde_json::Value = client
        .get("http://jelly.test:8080/echo")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        crate::support::origin::seen(&echo, "x-forwarded-for"),
        ["198.18.214.1"]
    );

    // Range.
    let ranged = client
        .get("http://jelly.test:8080/Videos/v/stream")
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.status(), 206);
    let body = ranged.bytes().await.unwrap();
    assert!(body.len() == 1000 && is_video_at(&body, 1000));

    // 200 MiB, byte for byte, with the edge's memory flat.
    let before = rss_kib(edge.id());
    let mut response = client
        .get("http://jelly.test:8080/bulk/200")
        .send()
        .await
        .unwrap();
    let (mut at, mut peak) = (0usize, 0);
    while let Some(chunk) = response.chunk().await.unwrap() {
        assert!(is_video_at(&chunk, at), "bytes in order at {at}");
        at += chunk.len();
        if at % (16 << 20) < chunk.len() {
            peak = peak.max(rss_kib(edge.id()));
        }
    }
    assert_eq!(at, 200 << 20, "the whole stream");
    assert!(
        peak.saturating_sub(before) < 48 * 1024,
        "the edge grew by {} KiB",
        peak.saturating_sub(before)
    );

    // An upload.
    let upload = client
        .post("http://jelly.test:8080/upload")
        .body(vec![7u8; 20 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), 200);
    assert_eq!(
        origin
            .seen
            .upload_bytes
            .load(std::sync::atomic::Ordering::SeqCst),
        20 << 20
    );

    // A WebSocket.
    let tcp = tokio::net::TcpStream::connect(EDGE).await.unwrap();
    let url = format!("ws://jelly.test:8080/socket?api_key={TEST_API_KEY}");
    let (mut ws, answer) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
    assert_eq!(answer.status(), 101);
    let hello = ws.next().await.unwrap().unwrap();
    assert!(hello.to_text().unwrap().contains("ForceKeepAlive"));
    drop(ws);

    // The fence: the router cannot open a connection to the edge through
    // the tunnel (the edge listens on every address), and nothing on the
    // edge reaches a service at home that no site names.
    assert!(
        unreachable_from(&net, &net.router, "10.213.0.1:8080", &[]),
        "the router reached the edge's listener"
    );
    // Not even from Jellyfin's own address and port, whose answers pass.
    let port = origin.addr.port().to_string();
    assert!(net
        .router(&["ip", "addr", "add", &format!("{JELLYFIN}/32"), "dev", "lo"])
        .status
        .success());
    let spoofed = unreachable_from(
        &net,
        &net.router,
        "10.213.0.1:8080",
        &["--interface", JELLYFIN, "--local-port", &port],
    );
    assert!(net
        .router(&["ip", "addr", "del", &format!("{JELLYFIN}/32"), "dev", "lo"])
        .status
        .success());
    assert!(
        spoofed,
        "the router opened a connection to the edge from Jellyfin's address"
    );
    let accepted = tokio::spawn(async move { other.accept().await.is_ok() });
    assert!(unreachable_from(
        &net,
        &net.edge,
        &other_addr.to_string(),
        &["--interface", "drawbridge0"]
    ));
    assert!(unreachable_from(
        &net,
        &net.edge,
        &other_addr.to_string(),
        &[]
    ));
    assert!(
        !accepted.is_finished(),
        "the other service at home was reached"
    );
    accepted.abort();

    // Strangers: packets that are not WireGuard's, and a peer whose key
    // the edge does not know, get no answer at all.
    let probe = net.router(&["python3", "-c", STRANGERS]);
    assert_eq!(String::from_utf8_lossy(&probe.stdout).trim(), "silent");
    // A flood of initiations the edge must look at (valid MAC1): above
    // WireGuard's rate it answers with cookies instead of doing the
    // Diffie-Hellman work, and the router is still served meanwhile.
    let edge_public = text
        .lines()
        .find_map(|l| l.strip_prefix("PublicKey = "))
        .unwrap()
        .to_string();
    let flood = net.router(&["python3", "-c", FLOOD, &edge_public]);
    let cookies: u32 = String::from_utf8_lossy(&flood.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    assert!(
        cookies > 0,
        "no cookie replies under a flood: {}",
        String::from_utf8_lossy(&flood.stderr)
    );
    assert_eq!(status(&client, "/System/Info/Public").await, 200);
    let stranger = format!("wgx{n}");
    let key = dir.path().join("stranger.key");
    let genkey = net.router(&["wg", "genkey"]);
    std::fs::write(&key, &genkey.stdout).unwrap();
    assert!(net.router(&["wireguard-go", &stranger]).status.success());
    assert!(net
        .router(&[
            "wg",
            "set",
            &stranger,
            "private-key",
            key.to_str().unwrap(),
            "peer",
            &edge_public,
            "endpoint",
            EDGE_WG,
            "allowed-ips",
            "10.213.0.1/32",
            "persistent-keepalive",
            "1"
        ])
        .status
        .success());
    assert!(net
        .router(&["ip", "link", "set", &stranger, "up"])
        .status
        .success());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let handshakes = net.router(&["wg", "show", &stranger, "latest-handshakes"]);
    let handshakes = String::from_utf8_lossy(&handshakes.stdout).into_owned();
    assert!(
        handshakes.trim().ends_with("\t0"),
        "a stranger's handshake was answered: {handshakes}"
    );
    let _ = net.router(&["ip", "link", "del", &stranger]);

    // A quiet router stays up: nothing has crossed for a while, and its
    // keepalives carry no data — they count all the same. (Time must pass
    // here: more than two keepalives and five seconds.)
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(
        listed(&config).contains("home\tup"),
        "a quiet router counted down: {}",
        listed(&config)
    );

    // The home's public address changes (a new lease behind the ISP's NAT,
    // a carrier-grade NAT's new mapping): the router's packets now come
    // from 198.18.213.3 and another port, and the edge follows them. The
    // router's own socket is bound anew so that its flow is a new one for
    // the NAT (conntrack keeps an old flow's mapping).
    let interface = format!("wgh{n}");
    for step in [
        "ip addr add 198.18.213.3/24 dev i0",
        "nft add table ip nat",
        "nft add chain ip nat post { type nat hook postrouting priority 100 ; }",
        "nft add rule ip nat post oif i0 udp dport 51820 snat to 198.18.213.3",
    ] {
        let out = net.router(&step.split(' ').collect::<Vec<_>>());
        assert!(
            out.status.success(),
            "{step}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(net
        .router(&["wg", "set", &interface, "listen-port", "51999"])
        .status
        .success());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !listed(&config).contains("from 198.18.213.3:51999") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the edge did not follow the new address: {}",
            listed(&config)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after_move = format!("a request after the move: {}", listed(&config));
    served(&client, Duration::from_secs(20), &after_move).await;

    // The router goes down: 502 at once once it is silent, shown down.
    wg_quick(&net, "down", &file);
    wait_until(
        || listed(&config).contains("home\tdown"),
        Duration::from_secs(15),
        "the peer shown down",
    )
    .await;
    assert!(
        doctor(&config).contains("✗ site jelly.test: WireGuard peer `home` is silent"),
        "{}",
        doctor(&config)
    );
    let asked = tokio::time::Instant::now();
    assert_eq!(status(&client, "/System/Info/Public").await, 502);
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "502 took {:?}",
        asked.elapsed()
    );
    wg_quick(&net, "up", &file);
    served(&client, Duration::from_secs(10), "the router back").await;

    // New keys: the old file stops working, the new one works.
    home_file(&config, "rotate", &file);
    let stale = status(&client, "/System/Info/Public").await;
    assert_eq!(stale, 502, "the old key still worked");
    wg_quick(&net, "down", &file);
    wg_quick(&net, "up", &file);
    served(&client, Duration::from_secs(10), "the rotated key").await;

    // A new key for the edge itself: the router's file with the old one no
    // longer gets in (its handshakes are not the edge's any more); with the
    // new public key `rotate-edge` printed, it does.
    let (printed, _) = cli(&["wireguard", "-c", config.to_str().unwrap(), "rotate-edge"]);
    let new_edge_key = printed
        .trim()
        .strip_prefix("PublicKey = ")
        .unwrap()
        .to_string();
    wg_quick(&net, "down", &file);
    wg_quick(&net, "up", &file);
    wait_until(
        || listed(&config).contains("home\tdown"),
        Duration::from_secs(15),
        "the router with the edge's old key shut out",
    )
    .await;
    assert_eq!(status(&client, "/System/Info/Public").await, 502);
    let old_file = std::fs::read_to_string(&file).unwrap();
    let new_file: String = old_file
        .lines()
        .map(|line| match line.starts_with("PublicKey = ") {
            true => format!("PublicKey = {new_edge_key}\n"),
            false => format!("{line}\n"),
        })
        .collect();
    assert_ne!(old_file, new_file);
    std::fs::write(&file, new_file).unwrap();
    wg_quick(&net, "down", &file);
    wg_quick(&net, "up", &file);
    served(
        &client,
        Duration::from_secs(10),
        "the router with the edge's new key",
    )
    .await;

    // Above the transport the site's rules hold as on the direct path: a
    // poster comes from the edge's cache the second time, and three failed
    // logins through the router ban the client, until `bans remove`.
    // (The first answer is stored as its body ends: asked again until the
    // edge answers from its cache, within five seconds.)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut said = Vec::new();
    loop {
        let poster = client
            .get("http://jelly.test:8080/Items/big/Images/Primary")
            .send()
            .await
            .unwrap();
        assert_eq!(poster.status(), 200);
        let cache = poster
            .headers()
            .get("x-cache")
            .map(|v| v.to_str().unwrap_or("?").to_string());
        poster.bytes().await.unwrap();
        if cache.as_deref() == Some("HIT") {
            break;
        }
        said.push(cache);
        assert!(
            tokio::time::Instant::now() < deadline,
            "no cache hit through WireGuard: {said:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..3 {
        let login = client
            .post("http://jelly.test:8080/Users/AuthenticateByName")
            .body(r#"{"Username":"mum","Pw":"guess"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(login.status(), 401);
    }
    assert_eq!(
        status(&client, "/System/Info/Public").await,
        0,
        "banned: nothing answered"
    );
    cli(&[
        "bans",
        "-c",
        config.to_str().unwrap(),
        "remove",
        "198.18.214.1",
    ]);
    served(&client, Duration::from_secs(5), "the client unbanned").await;

    // A reload that points the site elsewhere takes the old address out of
    // the tunnel's routes (the machine reaches it as before) and routes the
    // new one.
    let routes = || {
        let out = net.in_ns(&net.edge, &["ip", "route", "show", "dev", "drawbridge0"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(routes().contains(JELLYFIN), "{}", routes());
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(
            &format!("http://{}", origin.addr),
            "http://192.168.213.11:8096",
        ),
    )
    .unwrap();
    let reloads = read_log().matches("config reloaded").count();
    assert!(Command::new("kill")
        .args(["-HUP", &edge.id().to_string()])
        .status()
        .unwrap()
        .success());
    wait_until(
        || read_log().matches("config reloaded").count() > reloads,
        Duration::from_secs(10),
        "the reload",
    )
    .await;
    wait_until(
        || !routes().contains(&format!("{JELLYFIN} ")),
        Duration::from_secs(5),
        "the old route gone",
    )
    .await;
    assert!(routes().contains("192.168.213.11"), "{}", routes());

    // Removed: refused at once.
    cli(&[
        "wireguard",
        "-c",
        config.to_str().unwrap(),
        "remove",
        "home",
    ]);
    assert_eq!(status(&client, "/System/Info/Public").await, 502);

    let _ = wg_quick_down_quietly(&net, &file);
    let _ = edge.kill();
    let _ = edge.wait();
}

fn wg_quick_down_quietly(net: &Net, file: &Path) -> Output {
    net.router(&["wg-quick", "down", file.to_str().unwrap()])
}

/// `check` says what a `wireguard:` site lacks where drawbridge would run
/// without CAP_NET_ADMIN (here: root with the capability taken from its
/// bounding set, as a unit without the drop-in would run it).
#[test]
fn check_says_the_tun_needs_cap_net_admin() {
    if !crate::support::as_root("no capabilities to take away; skipped") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = edge_config(dir.path(), "192.168.213.10:8096".parse().unwrap());
    let run = |setpriv: bool| {
        let mut command = if setpriv {
            let mut c = Command::new("setpriv");
            c.args(["--bounding-set=-net_admin"]).arg(binary());
            c
        } else {
            Command::new(binary())
        };
        let out = command
            .args(["check", "-c", config.to_str().unwrap()])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout)
    };
    let without = run(true);
    assert!(
        without.contains("`wireguard:` upstreams need the CAP_NET_ADMIN capability"),
        "{without}"
    );
    assert!(!run(false).contains("CAP_NET_ADMIN"), "root has it");
}
