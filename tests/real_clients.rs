//! Real Jellyfin clients and players through the side-door gate, direct
//! and through the tunnel: Jellyfin's Python client library and TypeScript
//! SDK (from PyPI and npm) sign in, list the library, ask for PlaybackInfo
//! and fetch a poster as an app's image loader does; ffprobe reads the
//! stream URL the Python library builds; headless Chromium signs in on a
//! page, shows every poster with `<img>` and plays the film's HLS with
//! hls.js; ffmpeg reads both kinds of Jellyfin's HLS playlists; a WebSocket
//! opens with `ApiKey`; and a second address plays a stream URL handed over
//! by a signed-in one, as a Chromecast does. None of them may be refused —
//! while the same side doors stay shut to a stranger.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::jellyfin::{self, movie_id, Jellyfin, PASSWORD, USER};
use crate::support::origin::Origin;
use crate::support::tunnel::Home;
use crate::support::{site, TestGateway};

/// The way from a client to the fake Jellyfin.
#[derive(Clone, Copy, Debug)]
enum Way {
    /// Clients → drawbridge → Jellyfin.
    Direct,
    /// Clients → edge → agent at home → Jellyfin.
    Tunnel,
}

/// A gated site named `localhost` (a name every client resolves without
/// being told), its CA in a file for the clients, the fake Jellyfin behind.
struct Front {
    https: SocketAddr,
    ca: PathBuf,
    _ca_dir: tempfile::TempDir,
    direct: Option<(Origin, TestGateway)>,
    home: Option<Home>,
}

impl Front {
    async fn start(way: Way) -> Front {
        let ca_dir = tempfile::tempdir().unwrap();
        let ca = ca_dir.path().join("ca.pem");
        match way {
            Way::Direct => {
                let origin = Origin::start().await;
                let gw =
                    TestGateway::start(&site("localhost", origin.addr, "gate = \"enforce\"")).await;
                std::fs::write(&ca, gw.ca_pem.as_deref().unwrap()).unwrap();
                Front {
                    https: gw.https,
                    ca,
                    _ca_dir: ca_dir,
                    direct: Some((origin, gw)),
                    home: None,
                }
            }
            Way::Tunnel => {
                let home = Home::start_at("localhost", "gate = \"enforce\"", 1).await;
                std::fs::write(&ca, home.ca_pem()).unwrap();
                Front {
                    https: home.edge.https,
                    ca,
                    _ca_dir: ca_dir,
                    direct: None,
                    home: Some(home),
                }
            }
        }
    }

    fn base(&self) -> String {
        format!("https://localhost:{}", self.https.port())
    }

    fn jellyfin(&self) -> &Jellyfin {
        match (&self.direct, &self.home) {
            (Some((origin, _)), _) => &origin.seen.jellyfin,
            (_, Some(home)) => &home.origin.seen.jellyfin,
            _ => unreachable!(),
        }
    }

    /// A reqwest client trusting the CA, from loopback address `from`.
    fn stranger(&self, from: &str) -> reqwest::Client {
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_pem(&std::fs::read(&self.ca).unwrap()).unwrap(),
            )
            .local_address(Some(from.parse().unwrap()))
            .build()
            .unwrap()
    }

    /// The stranger's status for `path` (no credentials, another address);
    /// whatever it is, no side door at home served the stranger.
    async fn strangers_status(&self, path: &str) -> u16 {
        let served = self.jellyfin().side_door_count();
        let response = self
            .stranger("127.0.0.66")
            .get(format!("{}{path}", self.base()))
            .send()
            .await
            .unwrap();
        assert_eq!(
            self.jellyfin().side_door_count(),
            served,
            "{path} reached a side door at home"
        );
        response.status().as_u16()
    }
}

/// Runs `program` with `args` and `env` off the runtime's threads; its
/// stdout, or a panic with what it said. `missing` names what installs it.
async fn run(program: &str, args: Vec<String>, env: Vec<(&str, PathBuf)>, missing: &str) -> String {
    let program = program.to_string();
    let env: Vec<(String, PathBuf)> = env.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&program)
            .args(&args)
            .envs(env)
            .current_dir(clients_dir())
            .output()
            .map(|out| (program, args, out))
    })
    .await
    .unwrap();
    let Ok((program, args, out)) = out else {
        panic!("{missing}");
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn clients_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients"))
}

/// The JSON line a client script printed last.
fn last_json(stdout: &str) -> serde_json::Value {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or("");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// ffprobe's word on `url`: the streams it found, by codec type.
async fn ffprobe(url: &str, ca: &Path) -> Vec<String> {
    let out = run(
        "ffprobe",
        vec![
            "-v".into(),
            "error".into(),
            "-ca_file".into(),
            ca.display().to_string(),
            "-tls_verify".into(),
            "1".into(),
            "-show_entries".into(),
            "stream=codec_type".into(),
            "-of".into(),
            "csv=p=0".into(),
            url.into(),
        ],
        vec![],
        "ffprobe is not installed (.ci/run installs Debian's ffmpeg)",
    )
    .await;
    out.lines().map(|l| l.trim().to_string()).collect()
}

async fn python_client_library(way: Way) {
    let front = Front::start(way).await;
    let out = run(
        "python3",
        vec![
            "python_client.py".into(),
            front.base(),
            USER.into(),
            PASSWORD.into(),
        ],
        vec![("REQUESTS_CA_BUNDLE", front.ca.clone())],
        "python3 is not installed",
    )
    .await;
    let said = last_json(&out);
    assert_eq!(said["items"], 2, "{said}");
    assert_eq!(said["media_sources"], 1, "{said}");
    let url = said["video_url"].as_str().unwrap();
    assert!(url.contains("ApiKey="), "{url}");
    assert!(url.contains("/Videos/"), "{url}");
    // ffprobe, as a player handed the URL would read it.
    let streams = ffprobe(url, &front.ca).await;
    assert_eq!(streams, ["video", "audio"], "{url}");
    // The same door without the library's ApiKey: shut.
    let bare = url.split('?').next().unwrap().replace(&front.base(), "");
    assert_eq!(front.strangers_status(&bare).await, 401);
}

#[tokio::test]
async fn jellyfins_python_client_library_signs_in_and_streams() {
    python_client_library(Way::Direct).await;
}

#[tokio::test]
async fn jellyfins_python_client_library_through_the_tunnel() {
    python_client_library(Way::Tunnel).await;
}

async fn typescript_sdk(way: Way) {
    let front = Front::start(way).await;
    assert!(
        clients_dir().join("node_modules/@jellyfin/sdk").exists(),
        "the SDK is not installed: npm ci --prefix tests/clients (.ci/run does)"
    );
    let out = run(
        "node",
        vec![
            "node_client.mjs".into(),
            front.base(),
            USER.into(),
            PASSWORD.into(),
        ],
        vec![("NODE_EXTRA_CA_CERTS", front.ca.clone())],
        "node is not installed (.ci/run installs Debian's nodejs)",
    )
    .await;
    let said = last_json(&out);
    assert_eq!(said["server"], "fake", "the public info: {said}");
    assert_eq!(said["items"], 2, "{said}");
    assert_eq!(said["media_sources"], 1, "{said}");
    // The poster by the URL the SDK builds, without a token, as an app's
    // image loader fetches it: through, by the address's grant.
    assert_eq!(said["poster_status"], 200, "{said}");
    assert_eq!(
        said["poster_bytes"].as_u64().unwrap() as usize,
        jellyfin::media().poster.len()
    );
    let poster = said["poster"].as_str().unwrap().replace(&front.base(), "");
    assert!(!poster.contains("ApiKey"), "{poster}");
    assert_eq!(front.strangers_status(&poster).await, 401);
}

#[tokio::test]
async fn jellyfins_typescript_sdk_signs_in_and_lists() {
    typescript_sdk(Way::Direct).await;
}

#[tokio::test]
async fn jellyfins_typescript_sdk_through_the_tunnel() {
    typescript_sdk(Way::Tunnel).await;
}

async fn chromium_plays(way: Way) {
    use base64::Engine as _;
    let front = Front::start(way).await;
    assert!(
        Path::new(jellyfin::HLS_JS).exists(),
        "hls.js is not installed: npm ci --prefix tests/clients (.ci/run does)"
    );
    // Chromium checks the certificate against a pin of its key (the local
    // CA is not in its store).
    let config = crate::support::client_config(&std::fs::read(&front.ca).unwrap(), &[b"http/1.1"]);
    let tls = crate::support::tls_connect(front.https, config, Some("localhost"))
        .await
        .unwrap();
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).unwrap();
    let spki = ring::digest::digest(&ring::digest::SHA256, cert.public_key().raw);
    let pin = base64::engine::general_purpose::STANDARD.encode(spki.as_ref());
    let flags = vec![
        format!("--ignore-certificate-errors-spki-list={pin}"),
        "--autoplay-policy=no-user-gesture-required".to_string(),
    ];
    let url = format!("{}/web/player.html?signin={USER}:{PASSWORD}", front.base());
    let Some(mut browser) = crate::dashboard::Browser::open_with(&url, &flags).await else {
        panic!("chromium is not installed (.ci/run installs Debian's)");
    };
    let report = "JSON.stringify(window.report)";
    let finished = browser
        .until("window.report !== undefined && (window.report.done || window.report.errors.length > 0 || (window.report.fragments >= 4 && window.report.playing))")
        .await;
    let said: serde_json::Value =
        serde_json::from_str(browser.eval(report).await.as_str().unwrap_or("{}")).unwrap();
    assert!(finished, "the page finished: {said}");
    assert_eq!(said["errors"], serde_json::json!([]), "{said}");
    assert_eq!(said["items"], 2, "{said}");
    assert_eq!(said["images"], 2, "every poster shown: {said}");
    assert_eq!(said["imageErrors"], 0, "{said}");
    let segments = jellyfin::media().segments.len() as u64;
    assert!(
        said["fragments"].as_u64().unwrap() >= segments,
        "every segment loaded: {said}"
    );
    assert_eq!(said["playing"], true, "the film plays: {said}");
    // The browser holds the gate's cookie for its session: host-only,
    // Secure, HttpOnly, SameSite.
    let cookies = browser
        .call(
            "Network.getCookies",
            serde_json::json!({ "urls": [front.base()] }),
        )
        .await;
    let cookie = cookies["cookies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "__Host-drawbridge")
        .unwrap_or_else(|| panic!("the gate's cookie: {cookies}"));
    assert_eq!(cookie["secure"], true, "{cookie}");
    assert_eq!(cookie["httpOnly"], true, "{cookie}");
    assert_eq!(cookie["sameSite"], "Lax", "{cookie}");
    // And a stranger, from another address, sees none of it.
    let poster = format!(
        "/Items/{}/Images/Primary?fillHeight=300&quality=96&tag=tag1",
        movie_id()
    );
    assert_eq!(front.strangers_status(&poster).await, 401);
    assert_eq!(
        front
            .strangers_status(&format!("/Videos/{}/hls1/main/0.ts", movie_id()))
            .await,
        401
    );
}

#[tokio::test]
async fn chromium_shows_posters_and_plays_hls_with_hls_js() {
    chromium_plays(Way::Direct).await;
}

#[tokio::test]
async fn chromium_shows_posters_and_plays_hls_through_the_tunnel() {
    chromium_plays(Way::Tunnel).await;
}

impl Front {
    /// Signs in with reqwest as an app would: the session's token.
    async fn sign_in(&self) -> String {
        let signed_in = self
            .stranger("127.0.0.1")
            .post(format!("{}/Users/AuthenticateByName", self.base()))
            .header("content-type", "application/json")
            .header(
                "authorization",
                r#"MediaBrowser Client="test", Device="test", DeviceId="t1", Version="1""#,
            )
            .body(format!(r#"{{"Username":"{USER}","Pw":"{PASSWORD}"}}"#))
            .send()
            .await
            .unwrap();
        assert_eq!(signed_in.status(), 200);
        let said: serde_json::Value = signed_in.json().await.unwrap();
        said["AccessToken"].as_str().unwrap().to_string()
    }
}

/// The video frames ffprobe decodes from `url` (an HLS playlist).
async fn frames(url: &str, ca: &Path) -> u64 {
    let out = run(
        "ffprobe",
        vec![
            "-v".into(),
            "error".into(),
            "-ca_file".into(),
            ca.display().to_string(),
            "-tls_verify".into(),
            "1".into(),
            "-count_frames".into(),
            "-select_streams".into(),
            "v".into(),
            "-show_entries".into(),
            "stream=nb_read_frames".into(),
            "-of".into(),
            "csv=p=0".into(),
            url.into(),
        ],
        vec![],
        "ffprobe is not installed (.ci/run installs Debian's ffmpeg)",
    )
    .await;
    // One line per program and stream: the same count on each.
    let counts: Vec<u64> = out
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().parse().unwrap_or(0))
        .collect();
    assert!(
        !counts.is_empty() && counts.iter().all(|c| *c == counts[0]),
        "ffprobe said {out:?}"
    );
    counts[0]
}

async fn ffmpeg_reads_hls(way: Way) {
    let front = Front::start(way).await;
    let token = front.sign_in().await;
    let film = movie_id();
    // The whole film: 4 s at 25 frames a second.
    let whole = 100;
    // Today's HLS: the playlists copy the ApiKey onto every segment's URL.
    let current = format!(
        "{}/Videos/{film}/master.m3u8?MediaSourceId={film}&ApiKey={token}",
        front.base()
    );
    assert_eq!(frames(&current, &front.ca).await, whole, "{current}");
    // The older HLS: the playlist asks for the token, its segments are
    // bare — through by the grant to the address a checked session uses.
    let older = format!(
        "{}/Videos/{film}/hls/pl1/stream.m3u8?ApiKey={token}",
        front.base()
    );
    assert_eq!(frames(&older, &front.ca).await, whole, "{older}");
    // The bare segments stay shut to another address.
    assert_eq!(
        front
            .strangers_status(&format!("/Videos/{film}/hls/pl1/0.ts"))
            .await,
        401
    );
}

#[tokio::test]
async fn ffmpeg_reads_both_kinds_of_jellyfins_hls() {
    ffmpeg_reads_hls(Way::Direct).await;
}

#[tokio::test]
async fn ffmpeg_reads_both_kinds_of_jellyfins_hls_through_the_tunnel() {
    ffmpeg_reads_hls(Way::Tunnel).await;
}

async fn websocket_and_chromecast(way: Way) {
    use futures_util::StreamExt;
    let front = Front::start(way).await;
    let token = front.sign_in().await;
    let ca = std::fs::read(&front.ca).unwrap();

    // The session's WebSocket with ApiKey, as Jellyfin 12's clients open it.
    let config = crate::support::client_config(&ca, &[b"http/1.1"]);
    let tls = crate::support::tls_connect(front.https, config.clone(), Some("localhost"))
        .await
        .unwrap();
    let url = format!(
        "wss://localhost:{}/socket?ApiKey={token}",
        front.https.port()
    );
    let (mut socket, response) = tokio_tungstenite::client_async(url, tls).await.unwrap();
    assert_eq!(response.status(), 101);
    let hello = socket.next().await.unwrap().unwrap();
    assert!(hello.to_text().unwrap().contains("ForceKeepAlive"));
    // Without credentials: refused before home.
    let tls = crate::support::tls_connect(front.https, config, Some("localhost"))
        .await
        .unwrap();
    let url = format!("wss://localhost:{}/socket", front.https.port());
    let refused = tokio_tungstenite::client_async(url, tls).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401);
        }
        other => panic!("a WebSocket without credentials: {other:?}"),
    }

    // A Chromecast: another address, handed the stream URL (ApiKey in it)
    // by the signed-in sender; curl from 127.0.0.9 stands for it.
    let film = movie_id();
    let handed = format!(
        "{}/Videos/{film}/stream?static=true&MediaSourceId={film}&ApiKey={token}",
        front.base()
    );
    let cast = |url: String| {
        run(
            "curl",
            vec![
                "-sS".into(),
                "--interface".into(),
                "127.0.0.9".into(),
                "--cacert".into(),
                front.ca.display().to_string(),
                "-o".into(),
                "/dev/null".into(),
                "-w".into(),
                "%{http_code} %{size_download}".into(),
                url,
            ],
            vec![],
            "curl is not installed",
        )
    };
    let said = cast(handed).await;
    assert_eq!(said, format!("200 {}", jellyfin::media().film.len()));
    let segment = format!(
        "{}/Videos/{film}/hls1/main/0.ts?MediaSourceId={film}&ApiKey={token}",
        front.base()
    );
    let said = cast(segment).await;
    assert_eq!(said, format!("200 {}", jellyfin::media().segments[0].len()));
    // The address next to it, without the URL's ApiKey, has nothing: no
    // session was used from there.
    let bare = format!("/Videos/{film}/stream?static=true");
    assert_eq!(front.strangers_status(&bare).await, 401);
}

#[tokio::test]
async fn a_websocket_with_apikey_and_a_chromecast_on_another_address() {
    websocket_and_chromecast(Way::Direct).await;
}

#[tokio::test]
async fn a_websocket_with_apikey_and_a_chromecast_through_the_tunnel() {
    websocket_and_chromecast(Way::Tunnel).await;
}
