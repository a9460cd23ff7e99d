//! The guard, with clients bound to different 127.x addresses standing for
//! different people: the login rate limit (429 + Retry-After, lower-case path),
//! bans after failed logins (closed before any TLS byte, open connections cut,
//! kept across a restart, lifted by `drawbridge bans remove`), allow and deny
//! lists per site and per path, and connection caps.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};

use crate::support::origin::Origin;
use crate::support::{bans_cli, server_block, site, Process, TestGateway, BAN_LOOPBACK};

/// A TCP connection to `to` from the loopback address `from`.
async fn tcp_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

/// Whether the server closes a fresh connection from `from` at once, before
/// any byte (a refused client), rather than waiting for its ClientHello.
async fn closed_at_accept(from: &str, to: SocketAddr) -> bool {
    let mut tcp = tcp_from(from, to).await;
    let mut buf = [0u8; 8];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), tcp.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

fn client(gw: &TestGateway, from: &str) -> reqwest::Client {
    gw.reqwest_from("jelly.test", from)
}

/// The status of GET `path` on jelly.test from the loopback address `from`.
async fn status(gw: &TestGateway, from: &str, path: &str) -> u16 {
    let response = client(gw, from)
        .get(gw.url("jelly.test", path))
        .send()
        .await
        .unwrap();
    response.status().as_u16()
}

async fn login(
    gw: &TestGateway,
    client: &reqwest::Client,
    password: &str,
) -> Result<reqwest::Response, reqwest::Error> {
    let body = format!(r#"{{"Username":"mum","Pw":"{password}"}}"#);
    client
        .post(gw.url("jelly.test", "/users/authenticatebyname"))
        .body(body)
        .send()
        .await
}

#[tokio::test]
async fn login_burst_then_429_with_retry_after_for_that_address_only() {
    let origin = Origin::start().await;
    let rest = format!(
        "[guard]\nmax_failures = 100\n{BAN_LOOPBACK}\n{}",
        site("jelly.test", origin.addr, "login_burst = 3")
    );
    let gw = TestGateway::start(&rest).await;
    let attacker = client(&gw, "127.0.0.2");
    for _ in 0..3 {
        assert_eq!(login(&gw, &attacker, "guess").await.unwrap().status(), 401);
    }
    let limited = login(&gw, &attacker, "guess").await.unwrap();
    assert_eq!(limited.status(), 429);
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=12).contains(&retry), "Retry-After {retry}");
    assert_eq!(
        origin.seen.hits("/users/authenticatebyname"),
        3,
        "the fourth never reached Jellyfin"
    );
    let other = client(&gw, "127.0.0.3");
    assert_eq!(
        login(&gw, &other, "right").await.unwrap().status(),
        200,
        "another address is unaffected"
    );
    assert_eq!(
        other
            .get(gw.url("jelly.test", "/System/Info/Public"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn failed_logins_ban_the_address_before_tls_and_close_its_connections() {
    let origin = Origin::start().await;
    let gw = TestGateway::start(&format!(
        "[guard]\n{BAN_LOOPBACK}\n{}",
        site("jelly.test", origin.addr, "login_rate = \"off\"")
    ))
    .await;
    let attacker = client(&gw, "127.0.0.4");
    assert!(
        !closed_at_accept("127.0.0.4", gw.https).await,
        "not banned yet: waits for a ClientHello"
    );
    let mut idle = tcp_from("127.0.0.4", gw.https).await;
    for _ in 0..3 {
        assert_eq!(login(&gw, &attacker, "guess").await.unwrap().status(), 401);
    }
    // The connection that carried the third failure is refused at its next
    // request; a new one is closed before TLS.
    assert!(
        login(&gw, &attacker, "guess").await.is_err(),
        "banned: the connection is closed"
    );
    let mut buf = [0u8; 8];
    let cut = tokio::time::timeout(Duration::from_secs(1), idle.read(&mut buf)).await;
    assert!(
        matches!(cut, Ok(Ok(0)) | Ok(Err(_))),
        "its other open connection is closed too: {cut:?}"
    );
    // On TLS, a banned address is heard as far as its ClientHello (its
    // home agent may share it: tunnel.rs), then closed before any crypto
    // work: no ServerHello for a client.
    let visitor = client(&gw, "127.0.0.4")
        .get(gw.url("jelly.test", "/System/Info/Public"))
        .send();
    assert!(visitor.await.is_err(), "new connections closed before TLS");
    let mut silent = tcp_from("127.0.0.4", gw.https).await;
    let closed = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "a banned silent connection is not kept past a short wait: {closed:?}"
    );
    assert!(
        closed_at_accept("127.0.0.4", gw.http).await,
        "on every listener"
    );
    assert_eq!(origin.seen.hits("/users/authenticatebyname"), 3);

    // Successful logins are not failures.
    let family = client(&gw, "127.0.0.5");
    for password in ["typo", "typo", "right", "right", "right", "right"] {
        login(&gw, &family, password).await.unwrap();
    }
    assert_eq!(
        family
            .get(gw.url("jelly.test", "/System/Info/Public"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn allow_listed_and_never_ban_addresses_are_never_banned() {
    let origin = Origin::start().await;
    let rest = format!(
        "[guard]\nnever_ban = [\"127.0.0.7\"]\n{BAN_LOOPBACK}\n{}",
        site(
            "jelly.test",
            origin.addr,
            "login_rate = \"off\"\nallow = [\"127.0.0.6\", \"127.0.0.7\", \"127.0.0.1\"]"
        )
    );
    let gw = TestGateway::start(&rest).await;
    for from in ["127.0.0.6", "127.0.0.7"] {
        let c = client(&gw, from);
        for _ in 0..5 {
            assert_eq!(
                login(&gw, &c, "guess").await.unwrap().status(),
                401,
                "{from}"
            );
        }
        assert!(!closed_at_accept(from, gw.https).await, "{from} not banned");
    }
    let outsider = client(&gw, "127.0.0.8");
    assert_eq!(
        outsider
            .get(gw.url("jelly.test", "/web/"))
            .send()
            .await
            .unwrap()
            .status(),
        403,
        "not on the allow list"
    );
}

#[tokio::test]
async fn deny_lists_per_site_and_path_and_the_closed_door_refusal() {
    let origin = Origin::start().await;
    let config = format!(
        "{}{}",
        site("jelly.test", origin.addr, "deny = [\"127.0.0.9\"]\n[[site.path]]\nprefix = \"/System/\"\nallow = [\"127.0.0.10\", \"::ffff:127.0.0.11\"]\n"),
        site("quiet.test", origin.addr, "deny = [\"127.0.0.9\"]\nrefuse = \"close\"")
    );
    let gw = TestGateway::start_with_server_extra(
        tempfile::tempdir().unwrap(),
        "trusted_proxies = [\"127.0.0.12\"]\n",
        &config,
    )
    .await;
    let url = |path: &str| gw.url("jelly.test", path);
    assert_eq!(status(&gw, "127.0.0.9", "/web/").await, 403);
    assert_eq!(
        status(&gw, "127.0.0.1", "/system/info/public").await,
        403,
        "path rule, any case"
    );
    assert_eq!(status(&gw, "127.0.0.10", "/System/Info/Public").await, 200);
    assert_eq!(
        status(&gw, "127.0.0.11", "/System/Info/Public").await,
        200,
        "an IPv4-mapped rule matches the IPv4 client"
    );
    assert_eq!(status(&gw, "127.0.0.1", "/echo").await, 200);
    // Jellyfin's unauthenticated /metrics: private networks only.
    assert_eq!(
        status(&gw, "127.0.0.1", "/metrics").await,
        404,
        "from loopback it reaches Jellyfin"
    );
    let via_proxy = client(&gw, "127.0.0.12")
        .get(url("/metrics"))
        .header("x-forwarded-for", "203.0.113.5")
        .send()
        .await
        .unwrap();
    assert_eq!(via_proxy.status(), 403, "from the internet it is denied");
    // refuse = "close": zero bytes.
    let quiet = gw.reqwest_from("quiet.test", "127.0.0.9");
    assert!(
        quiet.get(gw.url("quiet.test", "/")).send().await.is_err(),
        "closed without an answer"
    );
}

#[tokio::test]
async fn connection_caps_close_at_accept() {
    let origin = Origin::start().await;
    let rest = format!(
        "[guard]\nmax_connections = 3\nmax_connections_per_ip = 2\n{BAN_LOOPBACK}\n{}",
        site("jelly.test", origin.addr, "")
    );
    let gw = TestGateway::start(&rest).await;
    let _a = tcp_from("127.0.0.13", gw.https).await;
    let _b = tcp_from("127.0.0.13", gw.https).await;
    gw.open_connections(2).await;
    assert!(
        closed_at_accept("127.0.0.13", gw.https).await,
        "a third from one address"
    );
    let _c = tcp_from("127.0.0.14", gw.https).await;
    gw.open_connections(3).await;
    assert!(
        closed_at_accept("127.0.0.15", gw.https).await,
        "a fourth in all"
    );
    drop(_a);
    gw.open_connections(2).await;
    assert!(
        !closed_at_accept("127.0.0.15", gw.https).await,
        "a place came free"
    );
}

#[tokio::test]
async fn a_ban_outlives_a_restart_and_is_lifted_by_the_cli() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drawbridge.toml");
    std::fs::write(
        &path,
        format!(
            "{}[guard]\n{BAN_LOOPBACK}\n{}",
            server_block(dir.path()),
            site(
                "jelly.test",
                origin.addr,
                "login_rate = \"off\"\nhttps_redirect = false"
            )
        ),
    )
    .unwrap();
    let process = Process::start(&path);
    let http = process.http;
    let fail = || async move {
        let mut tcp = tcp_from("127.0.0.16", http).await;
        let request = "POST /Users/AuthenticateByName HTTP/1.1\r\nHost: jelly.test\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
        crate::support::exchange(&mut tcp, request.as_bytes(), Duration::from_secs(2))
            .await
            .0
    };
    for _ in 0..3 {
        assert!(crate::support::status_of(&fail().await) == 401);
    }
    assert!(
        process.wait_for_log("ban 127.0.0.16 until", Duration::from_secs(2)),
        "one greppable line per ban"
    );
    // The writer thread stores it a moment after the line; the kill below is
    // a SIGKILL, which nothing flushes before.
    let bans = dir.path().join("state/bans.json");
    let mut stored = false;
    for _ in 0..100 {
        stored = std::fs::read_to_string(&bans).is_ok_and(|t| t.contains("127.0.0.16"));
        if stored {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(stored, "the ban never reached bans.json");
    drop(process);

    let process = Process::start(&path);
    assert!(
        closed_at_accept("127.0.0.16", process.http).await,
        "the ban outlived the restart"
    );
    use std::os::unix::fs::PermissionsExt;
    let admin = std::fs::metadata(dir.path().join("state/admin.sock")).unwrap();
    assert_eq!(
        admin.permissions().mode() & 0o777,
        0o600,
        "only drawbridge's own user may use the admin socket"
    );
    let listed = bans_cli(&path, &["list"]).0;
    assert!(
        listed.starts_with("127.0.0.16\tsite jelly.test\tfailed logins 3\tsince 20")
            && listed
                .lines()
                .next()
                .unwrap()
                .ends_with("\tfailed login at /Users/AuthenticateByName"),
        "what earned it, kept across the restart: {listed}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&bans_cli(&path, &["list", "--json"]).0).unwrap();
    assert_eq!(json[0]["address"], "127.0.0.16");
    assert_eq!(json[0]["site"], "jelly.test");
    assert_eq!(json[0]["failures"], 3);
    assert!(json[0]["since"].as_u64().unwrap() > 1_700_000_000);
    // A ban by hand: its connections close at once, and it is listed as such.
    let mut open = tcp_from("127.0.0.17", process.http).await;
    let added = bans_cli(&path, &["add", "127.0.0.17", "--for", "2h"]).0;
    assert!(added.starts_with("127.0.0.17 banned until 20"), "{added}");
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::io::AsyncReadExt::read(&mut open, &mut byte),
    )
    .await;
    assert!(
        matches!(closed, Ok(Ok(0) | Err(_))),
        "the open connection is closed"
    );
    assert!(closed_at_accept("127.0.0.17", process.http).await);
    let json: serde_json::Value =
        serde_json::from_str(&bans_cli(&path, &["list", "--json"]).0).unwrap();
    let manual = &json[1];
    assert_eq!(manual["address"], "127.0.0.17");
    assert_eq!(manual["site"], "manual");
    assert_eq!(manual["reason"], "by hand");
    let length = manual["until"].as_u64().unwrap() - manual["since"].as_u64().unwrap();
    assert!((7_190..=7_210).contains(&length), "2h: {length}");
    assert_eq!(
        bans_cli(&path, &["remove", "127.0.0.17"]).0.trim(),
        "ban on 127.0.0.17 lifted"
    );
    assert_eq!(
        bans_cli(&path, &["remove", "127.0.0.16"]).0.trim(),
        "ban on 127.0.0.16 lifted"
    );
    assert!(process.wait_for_log("unban 127.0.0.16 reason=removed", Duration::from_secs(2)));
    assert!(
        !closed_at_accept("127.0.0.16", process.http).await,
        "lifted at once in the running drawbridge"
    );
    drop(process);
    assert_eq!(
        bans_cli(&path, &["list"]).0.trim(),
        "no bans",
        "stored list, drawbridge not running"
    );
    // Not running: a ban by hand goes into the stored list, and holds at
    // the next start.
    let added = bans_cli(&path, &["add", "127.0.0.18"]).0;
    assert!(added.starts_with("127.0.0.18 banned until 20"), "{added}");
    let process = Process::start(&path);
    assert!(closed_at_accept("127.0.0.18", process.http).await);
}

#[tokio::test]
async fn a_corrupt_bans_file_is_set_aside_and_drawbridge_starts() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    std::fs::write(dir.path().join("state/bans.json"), "{\"bans\": [garbage").unwrap();
    let path = dir.path().join("drawbridge.toml");
    std::fs::write(
        &path,
        format!(
            "{}{}",
            server_block(dir.path()),
            site("jelly.test", origin.addr, "")
        ),
    )
    .unwrap();
    let process = Process::start(&path);
    assert!(process.wait_for_log("is damaged; set aside", Duration::from_secs(2)));
    let aside = std::fs::read_dir(dir.path().join("state"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("corrupt")
        })
        .count();
    assert_eq!(aside, 1);
    assert!(
        !closed_at_accept("127.0.0.1", process.https).await,
        "serving"
    );
}

/// Three mistyped passwords from the machine itself (a script on the VPS,
/// an admin testing with curl) never ban it — fail2ban's `ignoreself` —
/// while another address is banned as usual; and `bans add` takes an
/// address or an IPv6 /64, refusing a wider range with the reason instead
/// of banning its first address.
#[tokio::test]
async fn the_machine_itself_is_never_banned_and_a_range_is_not_narrowed() {
    let (_origin, gw) = TestGateway::in_front_of_jellyfin("login_rate = \"off\"").await;
    let own = client(&gw, "127.0.0.1");
    for _ in 0..4 {
        assert_eq!(login(&gw, &own, "guess").await.unwrap().status(), 401);
    }
    assert!(
        !closed_at_accept("127.0.0.1", gw.https).await,
        "never banned"
    );
    assert_eq!(status(&gw, "127.0.0.1", "/System/Info/Public").await, 200);
    // The commands reach this running drawbridge (in this process: off
    // the runtime's thread, which answers them).
    let config = gw.dir.path().join("drawbridge.toml");
    let (said, listed, added) = tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(crate::support::binary())
            .args(["bans", "add", "10.0.0.0/8", "-c"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let said = String::from_utf8_lossy(&out.stderr).into_owned();
        let (listed, _) = bans_cli(&config, &["list"]);
        let (added, _) = bans_cli(&config, &["add", "2001:db8:1:2::/64"]);
        (said, listed, added)
    })
    .await
    .unwrap();
    assert!(
        said.contains("`10.0.0.0/8` is a range") && said.contains("deny"),
        "{said}"
    );
    assert!(!listed.contains("10.0.0.0"), "{listed}");
    assert!(added.contains("2001:db8:1:2::/64"), "{added}");
}

/// A client that sends a wrong password and closes its connection before
/// home answers (never reading the answer) has still made home check the
/// password: home's 401 counts toward the ban when it comes, over HTTP/1.1
/// and HTTP/2, and the access log says 499 for each, as nginx does.
#[tokio::test]
async fn a_login_whose_client_leaves_before_the_answer_still_counts() {
    use crate::support::raw::{tls, Proto};
    use tokio::io::AsyncWriteExt;
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let gw = TestGateway::start_in(
        dir,
        &format!(
            "[log]\naccess = \"{}\"\n\n[guard]\n{BAN_LOOPBACK}\n{}",
            log.display(),
            site("jelly.test", origin.addr, "login_rate = \"off\"")
        ),
    )
    .await;
    let body = r#"{"Username":"mum","Pw":"wrong"}"#;
    for (proto, from) in [(Proto::H1, "127.0.0.93"), (Proto::H2, "127.0.0.94")] {
        for attempt in 1..=3 {
            let mut stream = tls(&gw, from, "jelly.test", proto).await.unwrap();
            let logins = || origin.seen.hits("/Users/AuthenticateByName");
            let before = logins();
            match proto {
                Proto::H1 => {
                    let request = format!(
                        "POST /Users/AuthenticateByName HTTP/1.1\r\nHost: jelly.test\r\nContent-Type: application/json\r\nx-test-delay-ms: 300\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    stream.write_all(request.as_bytes()).await.unwrap();
                    crate::support::poll_until(|| logins() > before, "the login at home").await;
                    drop(stream);
                }
                Proto::H2 => {
                    let (mut sender, connection) = hyper::client::conn::http2::handshake(
                        hyper_util::rt::TokioExecutor::new(),
                        hyper_util::rt::TokioIo::new(stream),
                    )
                    .await
                    .unwrap();
                    let connection = tokio::spawn(connection);
                    let request =
                        http::Request::post("https://jelly.test/Users/AuthenticateByName")
                            .header("content-type", "application/json")
                            .header("x-test-delay-ms", "300")
                            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                            .unwrap();
                    let waiting = tokio::spawn(async move { sender.send_request(request).await });
                    crate::support::poll_until(|| logins() > before, "the login at home").await;
                    waiting.abort();
                    connection.abort();
                }
            }
            if attempt < 3 {
                assert!(!closed_at_accept(from, gw.https).await, "banned too soon");
            }
        }
        // The third answer, counted after its client left, bans the address.
        crate::support::poll_until_async(
            || closed_at_accept(from, gw.https),
            "the ban from answers nobody read",
        )
        .await;
    }
    crate::support::poll_until(
        || std::fs::read_to_string(&log).is_ok_and(|text| text.matches("\" 499 ").count() >= 6),
        "six 499 lines in the access log",
    )
    .await;
}
