//! The dashboard in a real browser (Debian's headless Chromium, driven over
//! its DevTools protocol): it shows the live figures of a running setup,
//! its Unban button lifts a ban, and a screenshot is kept in
//! `target/test-artefacts/dashboard.png`. And the walks around it: a
//! command from another page, another Host (DNS rebinding) or without the
//! page's CSRF value is refused.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::support::origin::Origin;
use crate::support::{site, TestGateway};

/// One page of a headless Chromium, spoken to over DevTools.
pub(crate) struct Browser {
    child: Child,
    page: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    next: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Chromium opened on `url`; `None` when it is not installed.
    async fn open(url: &str) -> Option<Browser> {
        Browser::open_with(url, &[]).await
    }

    /// Like `open`, with more command-line flags.
    pub(crate) async fn open_with(url: &str, flags: &[String]) -> Option<Browser> {
        let profile = tempfile::tempdir().unwrap();
        let Ok(mut child) = Command::new("chromium")
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=900,900",
            ])
            .args(flags)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
        else {
            return None;
        };
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/…"
        let stderr = child.stderr.take().unwrap();
        let port = tokio::task::spawn_blocking(move || {
            use std::io::BufRead;
            let mut lines = std::io::BufReader::new(stderr).lines();
            let port = lines.by_ref().map_while(Result::ok).find_map(|line| {
                let rest = line.split("ws://127.0.0.1:").nth(1)?;
                rest.split('/').next()?.parse::<u16>().ok()
            });
            // Keep reading, so Chromium never blocks on a full pipe.
            std::thread::spawn(move || lines.for_each(drop));
            port
        })
        .await
        .unwrap()
        .expect("Chromium says where DevTools listens");
        let target: Value = reqwest::Client::new()
            .put(format!("http://127.0.0.1:{port}/json/new?{url}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let socket = target["webSocketDebuggerUrl"].as_str().unwrap().to_string();
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let (page, _) = tokio_tungstenite::client_async(socket, tcp).await.unwrap();
        Some(Browser {
            child,
            page,
            next: 0,
            _profile: profile,
        })
    }

    /// One DevTools command's result (events meanwhile are skipped).
    pub(crate) async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let message = json!({ "id": id, "method": method, "params": params });
        self.page
            .send(Message::text(message.to_string()))
            .await
            .unwrap();
        loop {
            let Some(Ok(Message::Text(text))) = self.page.next().await else {
                panic!("DevTools closed during {method}");
            };
            let answer: Value = serde_json::from_str(&text).unwrap();
            if answer["id"] == id {
                assert!(answer["error"].is_null(), "{method}: {answer}");
                return answer["result"].clone();
            }
        }
    }

    /// The value of `expression` in the page.
    pub(crate) async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        result["result"]["value"].clone()
    }

    /// Waits (up to 10 s) until `expression` is true in the page; else
    /// fails, saying `what` and the value of `context` as it then stood.
    pub(crate) async fn shows(&mut self, expression: &str, what: &str, context: &str) {
        let shown = self.until(expression).await;
        let stood = if shown {
            Value::Null
        } else {
            self.eval(context).await
        };
        assert!(shown, "{what}: {stood}");
    }

    /// Waits (up to 10 s) until `expression` is true in the page.
    pub(crate) async fn until(&mut self, expression: &str) -> bool {
        for _ in 0..200 {
            if self.eval(expression).await == json!(true) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn the_dashboard_shows_the_live_setup_and_unbans_in_a_real_browser() {
    let origin = Origin::start().await;
    let gw = TestGateway::start(&format!(
        "[guard]\n{}\n{}\n{}",
        crate::support::BAN_LOOPBACK,
        site(
            "jelly.test",
            origin.addr,
            "login_rate = \"off\"\n[[site.path]]\nprefix = \"/secret/\"\ndeny = [\"127.0.0.0/8\"]\n"
        ),
        site("gated.test", origin.addr, "gate = \"enforce\"")
    ))
    .await;
    let admin = gw.admin.unwrap();
    // A stranger at a side door of the gated site: refused, and counted.
    let door = format!("/Videos/{}/stream", crate::support::jellyfin::movie_id());
    let refused = gw
        .reqwest(&["gated.test"], false)
        .get(gw.url("gated.test", &door))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    // Live figures: home answered, and an address banned for failed logins.
    let client = gw.reqwest(&["jelly.test"], true);
    let answered = client
        .get(gw.url("jelly.test", "/System/Info/Public"))
        .send()
        .await
        .unwrap();
    assert_eq!(answered.status(), 200);
    // A poster, twice: the second from the edge cache.
    for _ in 0..2 {
        let poster = client
            .get(gw.url("jelly.test", "/Items/abc/Images/Primary?tag=dash"))
            .send()
            .await
            .unwrap();
        assert_eq!(poster.status(), 200);
        poster.bytes().await.unwrap();
    }
    // A path the site's deny list keeps from this address.
    let listed = client
        .get(gw.url("jelly.test", "/secret/plans"))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 403);
    let stranger = gw.reqwest_from("jelly.test", "127.0.0.78");
    gw.fail_logins(&stranger, 3).await;

    // A film being watched: its answer's body still on its way, a
    // megabyte of it read.
    let mut watching = client
        .get(gw.url("jelly.test", "/bulk/64"))
        .send()
        .await
        .unwrap();
    assert_eq!(watching.status(), 200);
    let mut read = 0;
    while read < 1024 * 1024 {
        read += watching.chunk().await.unwrap().unwrap().len();
    }

    // A film through the gate, played for a signed-in user (a long one:
    // still on its way while the page looks).
    let gated = gw.reqwest(&["gated.test"], true);
    let token = origin.seen.jellyfin.sign_in();
    let mut playing = gated
        .get(gw.url("gated.test", &format!("/bulk/64?ApiKey={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(playing.status(), 200);
    let first = playing.chunk().await.unwrap().unwrap();
    assert!(!first.is_empty());

    let Some(mut browser) = Browser::open(&format!("http://{admin}/")).await else {
        panic!("chromium is not installed (.ci/run installs Debian's)");
    };
    // Every violation of the page's Content-Security-Policy, from its
    // first line on.
    browser.call("Page.enable", json!({})).await;
    browser
        .call(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({ "source": "window.violations = []; document.addEventListener('securitypolicyviolation', (e) => window.violations.push(e.violatedDirective + ' ' + e.blockedURI));" }),
        )
        .await;
    browser.call("Page.reload", json!({})).await;
    browser
        .shows(r#"document.querySelector('#sites tr[data-site="jelly.test"] .up')?.textContent === "up""#, "the site's home shown up", "document.body.innerText")
        .await;
    browser
        .shows(r#"document.querySelector('#bans tr[data-address="127.0.0.78"] .why')?.textContent === "failed login at /Users/AuthenticateByName""#, "the ban shown with what earned it", "document.querySelector('#bans').innerText")
        .await;
    browser
        .shows(r#"document.querySelector('#sites tr[data-site="jelly.test"] .streams')?.textContent === "1""#, "the stream in flight shown", "document.body.innerText")
        .await;
    browser
        .shows(r#"document.querySelector('#sites tr[data-site="gated.test"] .gate')?.textContent === "1 refused""#, "the gate's refusal shown", "document.body.innerText")
        .await;
    assert_eq!(
        browser
            .eval(
                r#"document.querySelector('#sites tr[data-site="jelly.test"] .gate').textContent"#
            )
            .await,
        json!("open (gate off)")
    );
    let text = browser.eval("document.body.innerText").await;
    let text = text.as_str().unwrap();
    assert!(
        text.contains("days left") && text.contains("live, updated"),
        "{text}"
    );
    // Home: up since when, and how fast it answers.
    let detail = browser
        .eval(r#"document.querySelector('#sites tr[data-site="jelly.test"] .detail').textContent"#)
        .await;
    let detail = detail.as_str().unwrap();
    assert!(
        detail.starts_with(" since ")
            && detail.contains(", answers in ")
            && detail.ends_with(" ms"),
        "{detail}"
    );

    // The streams now: who, what, how, how fast, for how long.
    browser
        .shows(r#"[...document.querySelectorAll('#streams tr[data-client="127.0.0.1"] .how')].some((c) => c.textContent === "HTTP/2.0, direct")"#, "the film shown as a stream", "document.querySelector('#streams').innerText")
        .await;
    browser
        .shows(r#"[...document.querySelectorAll('#streams .who')].some((c) => c.textContent === "127.0.0.1 (mum)")"#, "the gated film shown with its user", "document.querySelector('#streams').innerText")
        .await;
    browser
        .shows(r#"[...document.querySelectorAll('#streams .rate')].some((c) => Number(c.dataset.bytes) >= 1048576)"#, "the bytes the film has carried", "document.querySelector('#streams').innerText")
        .await;
    drop(playing);

    // The charts, from the process's history: the data each is drawn
    // from, as the page holds it. The last point is the minute under way.
    let last = |site: &str, label: &str| {
        format!(
            r#"JSON.parse(document.querySelector('#traffic [data-site="{site}"] svg[aria-label="{label}"]').dataset.series)[0].values.at(-1)"#
        )
    };
    browser
        .shows(
            &format!("{} > 0", last("jelly.test", "requests")),
            "requests drawn",
            &last("jelly.test", "requests"),
        )
        .await;
    browser
        .shows(
            &format!("{} > 0", last("jelly.test", "sent")),
            "the film's bytes drawn while it plays",
            &last("jelly.test", "sent"),
        )
        .await;
    let gate_line = r#"JSON.parse(document.querySelector('#refusals svg').dataset.series).find((l) => l.name === "gate").values.at(-1)"#;
    let list_line = r#"JSON.parse(document.querySelector('#refusals svg').dataset.series).find((l) => l.name === "access_list").values.at(-1)"#;
    browser
        .shows(
            &format!("{list_line} > 0"),
            "the deny list's refusal drawn",
            "document.querySelector('#refusals svg').dataset.series",
        )
        .await;
    browser
        .shows(
            &format!("{gate_line} > 0"),
            "the gate's refusal drawn",
            "document.querySelector('#refusals svg').dataset.series",
        )
        .await;
    browser
        .shows(
            "JSON.parse(document.querySelector('#cache-chart svg').dataset.series)[0].values.at(-1) > 0",
            "the cache's hit ratio drawn",
            "document.querySelector('#cache-chart').textContent",
        )
        .await;
    assert!(
        browser
            .until(r#"document.querySelectorAll('#traffic svg polyline').length === 4 && document.querySelector('#cache-chart svg') !== null"#)
            .await
    );
    // The day's span: the same series, ten minutes a point.
    browser
        .eval(r#"document.querySelector('button[data-range="day"]').click()"#)
        .await;
    assert!(
        browser
            .until(&format!(
                r#"document.querySelector('button[data-range="day"]').getAttribute('aria-pressed') === "true" && {} > 0"#,
                last("jelly.test", "requests")
            ))
            .await
    );
    // A phone: everything shown, nothing wider than the screen.
    browser
        .call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": true }),
        )
        .await;
    assert!(
        browser
            .until("document.documentElement.scrollWidth <= window.innerWidth && window.innerWidth <= 400")
            .await,
        "wider than a phone: {} > {}",
        browser.eval("document.documentElement.scrollWidth").await,
        browser.eval("window.innerWidth").await
    );
    assert_eq!(
        browser.eval("window.violations").await,
        json!([]),
        "no CSP violation"
    );

    let shot = browser
        .call("Page.captureScreenshot", json!({ "format": "png" }))
        .await;
    use base64::Engine as _;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap())
        .unwrap();
    let artefacts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artefacts");
    std::fs::create_dir_all(&artefacts).unwrap();
    std::fs::write(artefacts.join("dashboard.png"), &png).unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    drop(watching);

    // Unban: the button's command lifts the ban in the running process.
    browser
        .eval(r#"document.querySelector('button[data-unban="127.0.0.78"]').click()"#)
        .await;
    assert!(
        browser
            .until(r#"document.querySelector('#bans tr[data-address="127.0.0.78"]') === null"#)
            .await,
        "the ban left the page"
    );
    let served = stranger
        .get(gw.url("jelly.test", "/System/Info/Public"))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200, "the unbanned address is served again");

    // Ban by hand from the page: the address is refused at once.
    browser
        .eval(r#"document.getElementById('ban-address').value = '127.0.0.79'; document.querySelector('#ban button').click()"#)
        .await;
    browser
        .shows(r#"document.querySelector('#bans tr[data-address="127.0.0.79"] .why')?.textContent === "by hand""#, "the ban made by hand shown", "document.querySelector('#bans').innerText")
        .await;
    let banned = gw
        .reqwest_from("jelly.test", "127.0.0.79")
        .get(gw.url("jelly.test", "/System/Info/Public"))
        .send()
        .await;
    assert!(banned.is_err(), "the banned address is refused: {banned:?}");
    browser
        .shows(
            r#"JSON.parse(document.querySelector('#refusals svg').dataset.series).find((l) => l.name === "banned").values.at(-1) > 0"#,
            "the banned address's refusal drawn",
            "document.querySelector('#refusals svg').dataset.series",
        )
        .await;
}

/// A command must come from the dashboard itself: another Host (a page
/// that rebound its DNS name to 127.0.0.1), another Origin, or no CSRF
/// value is refused, and the ban stays.
#[tokio::test]
async fn commands_from_anywhere_but_the_dashboard_are_refused() {
    let (_origin, gw) = TestGateway::in_front_of_jellyfin("").await;
    let admin = gw.admin.unwrap();
    let page = reqwest::get(format!("http://{admin}/")).await.unwrap();
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
    let html = page.text().await.unwrap();
    let csrf = html
        .split("name=\"drawbridge-csrf\" content=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_string();
    assert_eq!(csrf.len(), 32);
    let client = reqwest::Client::new();
    let api = format!("http://{admin}/api");
    let status = r#"{"command":"status"}"#;
    let send = |host: Option<String>, origin: Option<&str>, csrf: Option<&str>| {
        let mut request = client.post(&api).body(status);
        if let Some(host) = host {
            request = request.header("host", host);
        }
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        if let Some(csrf) = csrf {
            request = request.header("x-drawbridge-csrf", csrf);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let own = format!("http://{admin}");
    assert_eq!(
        send(None, Some(&own), Some(&csrf)).await,
        200,
        "the page itself"
    );
    assert_eq!(send(None, None, None).await, 403, "no CSRF value");
    assert_eq!(
        send(None, Some(&own), Some("0123")).await,
        403,
        "a wrong one"
    );
    assert_eq!(
        send(None, Some("http://evil.example"), Some(&csrf)).await,
        403,
        "another origin"
    );
    assert_eq!(
        send(
            Some(format!("evil.example:{}", admin.port())),
            None,
            Some(&csrf)
        )
        .await,
        421,
        "a rebound DNS name"
    );
    // The page and the metrics also refuse a foreign Host.
    let rebound = client
        .get(format!("http://{admin}/metrics"))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), 421);
    // Nor can an absolute-form target name another authority while Host
    // names the listener (the target's authority wins: RFC 9112 §3.2.2).
    let mut raw = tokio::net::TcpStream::connect(admin).await.unwrap();
    let request = format!(
        "GET http://evil.example/metrics HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n"
    );
    let (answer, _) = crate::support::exchange(
        &mut raw,
        request.as_bytes(),
        std::time::Duration::from_secs(5),
    )
    .await;
    assert_eq!(crate::support::status_of(&answer), 400);
    assert!(!String::from_utf8_lossy(&answer).contains("drawbridge_"));
    // The page's Ban form, sent by another page: refused, nobody banned.
    let ban = r#"{"command":"bans_add","address":"127.0.0.90","seconds":3600}"#;
    let forged = client
        .post(&api)
        .header("origin", "http://evil.example")
        .header("x-drawbridge-csrf", &csrf)
        .body(ban)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let listed: Value = client
        .post(&api)
        .header("origin", own.as_str())
        .header("x-drawbridge-csrf", &csrf)
        .body(r#"{"command":"bans_list"}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!listed.to_string().contains("127.0.0.90"), "{listed}");
}

/// The dashboard of an edge whose home is behind the tunnel: the agent
/// shown with its connections, their round trip, and the bytes each way
/// while a film comes home through it.
#[tokio::test]
async fn the_dashboard_shows_the_agent_its_round_trip_and_throughput() {
    let home = crate::support::tunnel::Home::start("", 2).await;
    let line = home
        .edge
        .log
        .lock()
        .unwrap()
        .iter()
        .find(|l| l.contains("admin listener open: dashboard at http://"))
        .cloned()
        .expect("the edge names its dashboard");
    let admin = line
        .split("dashboard at http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap()
        .to_string();
    // A film coming home through the tunnel while the page looks.
    let mut film = home
        .client(true)
        .get(home.url("/bulk/64"))
        .send()
        .await
        .unwrap();
    assert_eq!(film.status(), 200);
    let Some(mut browser) = Browser::open(&format!("http://{admin}/")).await else {
        panic!("chromium is not installed (.ci/run installs Debian's)");
    };
    let agent = r#"document.querySelector('#agents li[data-agent="home"]')?.textContent ?? """#;
    // Read on while the page refreshes (every two seconds), so that its
    // throughput is of bytes moving.
    let mut shown = String::new();
    for _ in 0..100 {
        for _ in 0..8 {
            if film.chunk().await.unwrap().is_none() {
                break;
            }
        }
        shown = browser.eval(agent).await.as_str().unwrap_or("").to_string();
        let moving = shown
            .split("from home ")
            .nth(1)
            .is_some_and(|rest| !rest.starts_with("0B/s"));
        if shown.contains("2 connection(s)") && shown.contains("round trip ") && moving {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        shown.contains("2 connection(s) from 127.0.0.1")
            && shown.contains("round trip ")
            && shown.contains(" ms; from home ")
            && !shown.contains("from home 0B/s"),
        "{shown}"
    );
}

/// A certificate whose order failed: the page says so, with when and why,
/// beside the site (here the first order: no certificate yet).
#[tokio::test]
async fn the_dashboard_shows_a_failed_certificate_order_and_why() {
    let gw = TestGateway::start(
        "[acme]\ndirectory = \"https://acme-directory.invalid/dir\"\n\n\
         [[site]]\nhost = \"jelly.example.com\"\nupstream = \"http://127.0.0.1:9\"\ngate = \"off\"\n",
    )
    .await;
    let admin = gw.admin.unwrap();
    let Some(mut browser) = Browser::open(&format!("http://{admin}/")).await else {
        panic!("chromium is not installed (.ci/run installs Debian's)");
    };
    let certificate = r#"document.querySelector('#sites tr[data-site="jelly.example.com"] .certificate')?.textContent ?? """#;
    browser
        .shows(
            &format!(
                "({certificate}).startsWith('not issued yet; renewal failed ') && ({certificate}).includes('dns error')"
            ),
            "the failed order shown, with why",
            "document.querySelector('#sites').innerText",
        )
        .await;
}

/// A home router registered for the router's own WireGuard: the page lists
/// it with its tunnel address, down until its first handshake.
#[tokio::test]
async fn the_dashboard_lists_the_wireguard_routers() {
    let dir = tempfile::tempdir().unwrap();
    drawbridge::wireguard::register::Peers::new(&dir.path().join("state"))
        .add("cabin", "10.99.0.1/24".parse().unwrap())
        .unwrap();
    let gw =
        TestGateway::start_in(dir, &site("jelly.test", "127.0.0.1:9".parse().unwrap(), "")).await;
    let admin = gw.admin.unwrap();
    let Some(mut browser) = Browser::open(&format!("http://{admin}/")).await else {
        panic!("chromium is not installed (.ci/run installs Debian's)");
    };
    let router = r#"document.querySelector('#routers li[data-router="cabin"]')?.textContent ?? """#;
    browser
        .shows(
            &format!("({router}).startsWith('cabin (10.99.0.2): down; no handshake yet')"),
            "the router listed, down",
            "document.getElementById('routers').textContent",
        )
        .await;
    assert_eq!(
        browser
            .eval("document.getElementById('routers-none').hidden")
            .await,
        json!(true)
    );
}
