//! Jellyfin's side doors, closed at the edge (`gate/`): the routes Jellyfin
//! serves to anyone who knows an item id — direct video and audio streams,
//! older HLS segments, images, subtitles, attachments — reach home only for
//! a signed-in household. The attacker tries every door without credentials,
//! with a made-up token, with a token after its logout, with a legacy
//! credential Jellyfin 12 refuses, in every spelling, over HTTP/1.1, HTTP/2
//! and HTTP/3, through the tunnel, and after the edge cache was warmed by a
//! signed-in user; the fake Jellyfin counts what its side doors served. The
//! household, meanwhile, is never refused.

use bytes::Bytes;
use http::Request;

use crate::support::jellyfin::{movie_id, song_id};
use crate::support::origin::Origin;
use crate::support::raw::{send, Answer, Proto, Raw};
use crate::support::{site, TestGateway, BAN_LOOPBACK};

/// Every side door of the fake's library, as a client would write it.
fn side_doors() -> Vec<String> {
    let (m, s) = (movie_id(), song_id());
    vec![
        format!("/Videos/{m}/stream"),
        format!("/Videos/{m}/stream.mp4?static=true"),
        format!("/Audio/{s}/stream"),
        format!("/Audio/{s}/stream.mp3"),
        format!("/Items/{m}/Images/Primary"),
        format!("/Items/{m}/Images/Primary/0/tag1/png/100/100/0/0"),
        format!("/Videos/{m}/{m}/Subtitles/2/Stream.srt"),
        format!("/Videos/{m}/{m}/Subtitles/2/0/Stream.srt"),
        format!("/Videos/{m}/{m}/Attachments/1"),
        format!("/Videos/{m}/hls/pl/0.ts"),
        format!("/Audio/{s}/hls/0/stream.aac"),
    ]
}

/// A gated site in front of `origin`, failed checks counted but far from a
/// ban (the ban has a test of its own).
async fn gated(origin: &Origin, extra: &str) -> TestGateway {
    TestGateway::start(&format!(
        "[guard]\nmax_failures = 1000\n{BAN_LOOPBACK}\n{}",
        site(
            "jelly.test",
            origin.addr,
            &format!("gate = \"enforce\"\nlogin_rate = \"off\"\n{extra}")
        )
    ))
    .await
}

/// Signs in through the edge as the household would: its token.
async fn sign_in(gw: &TestGateway, proto: Proto) -> String {
    let answer = send(
        gw,
        Raw {
            method: "POST",
            headers: &[
                ("content-type", "application/json"),
                (
                    "authorization",
                    r#"MediaBrowser Client="test", Device="d", DeviceId="1", Version="1""#,
                ),
            ],
            body: br#"{"Username":"mum","Pw":"right"}"#,
            ..Raw::get(proto, "jelly.test", "/Users/AuthenticateByName")
        },
    )
    .await;
    assert_eq!(answer.status(), 200, "{}", answer.text());
    let value: serde_json::Value = serde_json::from_str(&answer.text()).unwrap();
    value["AccessToken"].as_str().unwrap().to_string()
}

fn bearer(token: &str) -> String {
    format!(r#"MediaBrowser Client="test", Device="d", DeviceId="1", Version="1", Token="{token}""#)
}

fn with_param(target: &str, param: &str) -> String {
    let join = if target.contains('?') { '&' } else { '?' };
    format!("{target}{join}{param}")
}

async fn status(
    gw: &TestGateway,
    proto: Proto,
    from: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> Answer {
    send(
        gw,
        Raw {
            from,
            headers,
            ..Raw::get(proto, "jelly.test", target)
        },
    )
    .await
}

/// A stranger at every side door, over HTTP/1.1 and HTTP/2: no credentials,
/// a made-up token in the query and in the header — 401 from the edge each
/// time, and the fake's side doors serve nothing. The household's own token
/// opens each of them.
#[tokio::test]
async fn every_side_door_is_shut_to_a_stranger_and_open_to_the_household() {
    let origin = Origin::start().await;
    let gw = gated(&origin, "").await;
    let made_up = bearer("00000000000000000000000000000000");
    for proto in [Proto::H1, Proto::H2] {
        for door in side_doors() {
            for (query, headers) in [
                (None, vec![]),
                (Some("ApiKey=deadbeefdeadbeefdeadbeefdeadbeef"), vec![]),
                (None, vec![("authorization", made_up.as_str())]),
                (None, vec![("x-emby-token", "deadbeef")]),
            ] {
                let target = query.map_or(door.clone(), |q| with_param(&door, q));
                let answer = status(&gw, proto, "127.0.0.21", &target, &headers).await;
                assert_eq!(answer.status(), 401, "{proto:?} {target} {headers:?}");
                // The edge's own page, with the security headers.
                assert!(answer.header("x-content-type-options").is_some());
            }
        }
    }
    assert_eq!(
        origin.seen.jellyfin.side_door_count(),
        0,
        "nothing reached home"
    );
    let token = sign_in(&gw, Proto::H1).await;
    for proto in [Proto::H1, Proto::H2] {
        for door in side_doors() {
            let target = with_param(&door, &format!("ApiKey={token}"));
            let answer = status(&gw, proto, "127.0.0.22", &target, &[]).await;
            assert!(
                matches!(answer.status(), 200 | 206),
                "{proto:?} {target}: {}",
                answer.status()
            );
        }
    }
}

/// Every spelling of two side doors that Jellyfin's router would route to
/// them, over HTTP/1.1 and HTTP/2, without credentials: refused (401), or
/// refused as a spelling (400) — never served.
#[tokio::test]
async fn no_spelling_walks_around_the_gate() {
    let origin = Origin::start().await;
    let gw = gated(&origin, "").await;
    let m = movie_id();
    for door in [
        format!("/Videos/{m}/stream"),
        format!("/Items/{m}/Images/Primary"),
    ] {
        let spellings = crate::path_spelling::reaching(&door);
        for proto in [Proto::H1, Proto::H2] {
            for target in &spellings {
                let answer = status(&gw, proto, "127.0.0.23", target, &[]).await;
                assert!(
                    matches!(answer.status(), 400 | 401),
                    "{proto:?} {target}: {}",
                    answer.status()
                );
            }
        }
    }
    assert_eq!(
        origin.seen.jellyfin.side_door_count(),
        0,
        "nothing reached home"
    );
}

/// Over HTTP/3 the same: the doors are shut to a stranger, open with a
/// token.
#[tokio::test]
async fn the_gate_holds_over_http3() {
    let origin = Origin::start().await;
    let gw = gated(&origin, "").await;
    let token = sign_in(&gw, Proto::H2).await;
    // A stranger, and the household (whose address its token then lets
    // through the side doors: its player may carry none).
    let mut stranger = crate::support::h3::connect(&gw, "127.0.0.24", "jelly.test")
        .await
        .unwrap();
    let mut household = crate::support::h3::connect(&gw, "127.0.0.36", "jelly.test")
        .await
        .unwrap();
    for door in side_doors() {
        let (response, _) = stranger.get("jelly.test", &door).await.unwrap();
        assert_eq!(response.status(), 401, "{door}");
        let request = Request::get(format!("https://jelly.test{door}"))
            .header("authorization", bearer(&token))
            .body(())
            .unwrap();
        let (response, _) = household.send(request, None::<Bytes>).await.unwrap();
        assert!(
            matches!(response.status().as_u16(), 200 | 206),
            "{door}: {}",
            response.status()
        );
    }
    // Each stranger's try came to nothing at home; the household's were served.
    assert_eq!(
        origin.seen.jellyfin.side_door_count(),
        side_doors().len() as u64
    );
}

/// Logout passing through ends what the edge remembered of the token at
/// once; a token Jellyfin refuses after the edge remembered it good ends
/// too. And the edge asks Jellyfin once per token however many requests
/// wait on it.
#[tokio::test]
async fn a_logout_ends_the_token_at_the_edge_and_a_token_is_asked_about_once() {
    let origin = Origin::start().await;
    let gw = gated(&origin, "").await;
    let token = sign_in(&gw, Proto::H2).await;
    let door = side_doors()[0].clone();
    let asks_before = origin.seen.jellyfin.me_count();
    let tries: Vec<_> = (0..30)
        .map(|i| {
            let gw = &gw;
            let target = with_param(&door, &format!("ApiKey={token}&n={i}"));
            async move {
                let answer = send(
                    gw,
                    Raw {
                        method: "HEAD",
                        ..Raw::get(Proto::H2, "jelly.test", &target)
                    },
                )
                .await;
                answer.status()
            }
        })
        .collect();
    let statuses = futures_util::future::join_all(tries).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(
        origin.seen.jellyfin.me_count() - asks_before,
        1,
        "asked once"
    );
    let authorization = bearer(&token);
    let logout = send(
        &gw,
        Raw {
            method: "POST",
            headers: &[("authorization", authorization.as_str())],
            ..Raw::get(Proto::H1, "jelly.test", "/Sessions/Logout")
        },
    )
    .await;
    assert_eq!(logout.status(), 204);
    let after = status(
        &gw,
        Proto::H1,
        "127.0.0.25",
        &with_param(&door, &format!("ApiKey={token}")),
        &[],
    )
    .await;
    assert_eq!(after.status(), 401, "a token after its logout");
    let grant = status(&gw, Proto::H1, "127.0.0.1", &door, &[]).await;
    assert_eq!(
        grant.status(),
        401,
        "the address it was used from is no longer let in"
    );
}

/// Jellyfin 12 refuses legacy credentials by default: the edge lets through
/// only what Jellyfin accepts, because it asks with exactly what the request
/// carries — the legacy `api_key` and `X-Emby-Token` of a good session are
/// refused, `ApiKey` and the `MediaBrowser` header are not. Jellyfin 10.11
/// accepts both, and so does the edge.
#[tokio::test]
async fn legacy_credentials_count_only_where_jellyfin_accepts_them() {
    let origin = Origin::start().await;
    let gw = gated(&origin, "").await;
    let door = side_doors()[4].clone();
    let token = sign_in(&gw, Proto::H1).await;
    let legacy_param = status(
        &gw,
        Proto::H1,
        "127.0.0.26",
        &with_param(&door, &format!("api_key={token}")),
        &[],
    )
    .await;
    assert_eq!(legacy_param.status(), 200, "10.11 accepts api_key");
    origin.seen.jellyfin.v12();
    let token = sign_in(&gw, Proto::H1).await;
    for (target, headers) in [
        (with_param(&door, &format!("api_key={token}")), vec![]),
        (door.clone(), vec![("x-emby-token", token.as_str())]),
    ] {
        let answer = status(&gw, Proto::H1, "127.0.0.27", &target, &headers).await;
        assert_eq!(answer.status(), 401, "12 refuses {target} {headers:?}");
    }
    let authorization = bearer(&token);
    for (target, headers) in [
        (with_param(&door, &format!("ApiKey={token}")), vec![]),
        (
            door.clone(),
            vec![("authorization", authorization.as_str())],
        ),
    ] {
        let answer = status(&gw, Proto::H1, "127.0.0.28", &target, &headers).await;
        assert_eq!(answer.status(), 200, "12 accepts {target} {headers:?}");
    }
}

/// The edge cache is no side door: a poster a signed-in user warmed it with
/// is served to a stranger only where the gate would let the request
/// through — not at all.
#[tokio::test]
async fn a_poster_in_the_cache_is_no_side_door() {
    let origin = Origin::start().await;
    let gw = gated(&origin, "").await;
    let token = sign_in(&gw, Proto::H2).await;
    let poster = side_doors()[4].clone();
    for proto in [Proto::H1, Proto::H2] {
        let mut label = None;
        for _ in 0..50 {
            let warm = status(
                &gw,
                proto,
                "127.0.0.29",
                &with_param(&poster, &format!("ApiKey={token}")),
                &[],
            )
            .await;
            assert_eq!(warm.status(), 200);
            label = warm.header("x-cache");
            if label.as_deref() == Some("HIT") {
                break;
            }
            gw.cache_stored(1, false).await;
        }
        assert_eq!(label.as_deref(), Some("HIT"), "the cache holds it");
        let stranger = status(&gw, proto, "127.0.0.30", &poster, &[]).await;
        assert_eq!(stranger.status(), 401, "{proto:?}");
        assert_eq!(stranger.header("x-cache"), None);
    }
    let mut h3 = crate::support::h3::connect(&gw, "127.0.0.31", "jelly.test")
        .await
        .unwrap();
    let (response, _) = h3.get("jelly.test", &poster).await.unwrap();
    assert_eq!(response.status(), 401);
}

/// What a signed-out app needs passes: its login screen's routes, the web
/// client; `/Users/Public` names nobody to a stranger; the first-run wizard
/// and the splash screen (which shows the library) are no public routes.
#[tokio::test]
async fn the_public_routes_pass_and_the_login_screen_names_nobody() {
    let origin = Origin::start().await;
    let gw = gated(&origin, "gate_public = [\"/sso/**\"]").await;
    for target in [
        "/System/Info/Public",
        "/web/index.html",
        "/Branding/Configuration",
        "/QuickConnect/Enabled",
        "/sso/OID/start/x",
    ] {
        let answer = status(&gw, Proto::H2, "127.0.0.32", target, &[]).await;
        assert_ne!(answer.status(), 401, "{target}");
    }
    let users = status(&gw, Proto::H1, "127.0.0.32", "/Users/Public", &[]).await;
    assert_eq!((users.status(), users.text().as_str()), (200, "[]"));
    assert_eq!(origin.seen.hits("/users/public"), 0, "answered at the edge");
    for target in [
        "/Startup/Configuration",
        "/Branding/Splashscreen",
        "/Users/Me",
        "/socket",
    ] {
        let answer = status(&gw, Proto::H1, "127.0.0.32", target, &[]).await;
        assert_eq!(answer.status(), 401, "{target}");
    }
    assert_eq!(origin.seen.jellyfin.side_door_count(), 0);
}

/// Guessing tokens is guessing passwords: fifty made-up tokens from one
/// address end in a ban (closed at accept); the checks one client can make
/// Jellyfin do are bounded.
#[tokio::test]
async fn guessing_tokens_ends_in_a_ban_and_checks_are_bounded() {
    let origin = Origin::start().await;
    let gw = TestGateway::start(&format!(
        "[guard]\n{BAN_LOOPBACK}\n{}",
        site("jelly.test", origin.addr, "gate = \"enforce\"")
    ))
    .await;
    let door = side_doors()[0].clone();
    let mut refused = 0;
    for i in 0..50 {
        let target = with_param(&door, &format!("ApiKey={i:032x}"));
        match status(&gw, Proto::H1, "127.0.0.33", &target, &[]).await {
            Answer::Closed => break,
            answer => {
                assert_eq!(answer.status(), 401);
                refused += 1;
            }
        }
    }
    assert_eq!(refused, 3, "banned after the third bad token");
    let bans = gw.bans();
    assert_eq!(
        (bans[0].address.as_str(), bans[0].reason.as_str()),
        ("127.0.0.33", "a token Jellyfin refused, at video_stream"),
        "what earned the ban, and where"
    );
    assert_eq!(
        status(&gw, Proto::H1, "127.0.0.33", "/web/index.html", &[])
            .await
            .status(),
        0
    );
    // Checks per client: with a generous ban, the budget answers 429.
    let origin = Origin::start().await;
    let gw = TestGateway::start(&format!(
        "[guard]\nmax_failures = 1000\n{BAN_LOOPBACK}\n[gate]\ncheck_burst = 5\nchecks_per_client = \"1/h\"\n\n{}",
        site("jelly.test", origin.addr, "gate = \"enforce\"")
    ))
    .await;
    let mut statuses = Vec::new();
    for i in 0..8 {
        let target = with_param(&door, &format!("ApiKey={i:032x}"));
        statuses.push(
            status(&gw, Proto::H1, "127.0.0.34", &target, &[])
                .await
                .status(),
        );
    }
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429, 429, 429]);
    assert_eq!(
        origin.seen.jellyfin.me_count(),
        5,
        "Jellyfin asked five times, no more"
    );
}

/// `gate = "report"`: everything passes, and what would have been refused
/// is counted by route; a reload to `enforce` refuses it from then on, and
/// a token checked before the reload is not asked about again.
#[tokio::test]
async fn report_lets_through_and_counts_then_a_reload_enforces() {
    let (origin, gw) = TestGateway::in_front_of_jellyfin("gate = \"report\"").await;
    let answer = status(&gw, Proto::H1, "127.0.0.35", &side_doors()[0], &[]).await;
    assert_eq!(answer.status(), 200);
    let text = crate::support::scrape(gw.admin.unwrap()).await;
    assert!(
        text.contains(r#"drawbridge_gate_refusals_total{site="jelly.test",route="video_stream",mode="report"} 1"#),
        "{text}"
    );
    let token = sign_in(&gw, Proto::H1).await;
    let with_token = with_param(&side_doors()[0], &format!("ApiKey={token}"));
    assert_eq!(
        status(&gw, Proto::H1, "127.0.0.36", &with_token, &[])
            .await
            .status(),
        200
    );
    let asked = origin.seen.jellyfin.me_count();

    let path = gw.dir.path().join("drawbridge.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("gate = \"report\"", "gate = \"enforce\""),
    )
    .unwrap();
    let config = drawbridge::config::Config::load(&path).unwrap();
    gw.reloader.reload(config).await.unwrap();
    let refused = status(&gw, Proto::H1, "127.0.0.35", &side_doors()[0], &[]).await;
    assert_eq!(refused.status(), 401, "enforced after the reload");
    assert_eq!(
        status(&gw, Proto::H1, "127.0.0.36", &with_token, &[])
            .await
            .status(),
        200
    );
    assert_eq!(
        origin.seen.jellyfin.me_count(),
        asked,
        "the token's check outlived the reload"
    );
}

/// Jellyfin's `/socket` needs credentials: without them the edge answers
/// 401 and nothing reaches home; with the household's `ApiKey` the
/// WebSocket opens, over HTTP/1.1.
#[tokio::test]
async fn a_websocket_needs_credentials_jellyfin_accepts() {
    use futures_util::StreamExt;
    let origin = Origin::start().await;
    let gw = gated(&origin, "").await;
    let token = sign_in(&gw, Proto::H1).await;
    let open = |query: String| {
        let gw = &gw;
        async move {
            let tls = gw
                .tls_connect(Some("jelly.test"), &[b"http/1.1"])
                .await
                .unwrap();
            let url = format!("wss://jelly.test:{}/socket{query}", gw.https.port());
            tokio_tungstenite::client_async(url, tls).await
        }
    };
    match open(String::new()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401)
        }
        other => panic!("expected the edge's 401, got {:?}", other.map(|_| ())),
    }
    assert_eq!(origin.seen.hits("/socket"), 0, "nothing reached home");
    let (mut ws, response) = open(format!("?ApiKey={token}&deviceId=d")).await.unwrap();
    assert_eq!(response.status(), 101);
    let hello = ws.next().await.unwrap().unwrap();
    assert!(hello.to_text().unwrap().contains("ForceKeepAlive"));
}

/// Through the tunnel the gate holds the same: the side doors are shut to a
/// stranger, open with the household's token, and nothing of the
/// stranger's reaches home.
#[tokio::test]
async fn the_gate_holds_through_the_tunnel() {
    let home = crate::support::tunnel::Home::start("gate = \"enforce\"", 1).await;
    let client = home.client(true);
    let door = side_doors()[0].clone();
    let refused = client.get(home.url(&door)).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let login = client
        .post(home.url("/Users/AuthenticateByName"))
        .header("content-type", "application/json")
        .body(r#"{"Username":"mum","Pw":"right"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let token = login.json::<serde_json::Value>().await.unwrap()["AccessToken"]
        .as_str()
        .unwrap()
        .to_string();
    let served = client
        .get(home.url(&with_param(&door, &format!("ApiKey={token}"))))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
    assert_eq!(
        home.origin.seen.jellyfin.side_door_count(),
        1,
        "the household's alone"
    );
}

/// The two ways in without a token, and their bounds: a side door from the
/// address a checked session used passes (an image loader, a player of the
/// older HLS), from the address next to it does not; the gate's cookie
/// lets a browser in from anywhere while its session is good, a made-up one
/// lets nobody in, and both end with the session; with
/// `address_grant = "off"`, the cookie alone.
#[tokio::test]
async fn grants_and_the_cookie_let_in_only_the_session_they_stand_for() {
    for grants in [true, false] {
        let origin = Origin::start().await;
        let gw = TestGateway::start(&format!(
            "[guard]\nmax_failures = 1000\n{BAN_LOOPBACK}\n{}{}",
            if grants {
                ""
            } else {
                "[gate]\naddress_grant = \"off\"\n\n"
            },
            site("jelly.test", origin.addr, "gate = \"enforce\"")
        ))
        .await;
        let token = sign_in(&gw, Proto::H1).await;
        let door = format!("/Items/{}/Images/Primary", movie_id());
        // A browser's request with the session's token, from 127.0.0.41.
        let items = status(
            &gw,
            Proto::H1,
            "127.0.0.41",
            "/Items",
            &[
                ("authorization", bearer(&token).as_str()),
                ("sec-fetch-mode", "cors"),
            ],
        )
        .await;
        assert_eq!(items.status(), 200);
        let cookie = items.header("set-cookie").expect("the gate's cookie");
        assert!(
            cookie.starts_with("__Host-drawbridge=")
                && cookie.contains("Secure")
                && cookie.contains("HttpOnly")
                && cookie.contains("SameSite=Lax")
                && cookie.contains("Path=/")
                && !cookie.contains("Domain"),
            "{cookie}"
        );
        let pair = cookie.split(';').next().unwrap().to_string();
        // Token-less, from the same address: the grant.
        let same = status(&gw, Proto::H1, "127.0.0.41", &door, &[]).await;
        assert_eq!(
            same.status(),
            if grants { 200 } else { 401 },
            "grants {grants}"
        );
        // From the address next to it: nothing.
        let next = status(&gw, Proto::H1, "127.0.0.42", &door, &[]).await;
        assert_eq!(next.status(), 401);
        // The cookie, from anywhere: its session.
        let with_cookie = status(
            &gw,
            Proto::H2,
            "127.0.0.43",
            &door,
            &[("cookie", pair.as_str())],
        )
        .await;
        assert_eq!(with_cookie.status(), 200);
        // A made-up cookie: nothing.
        let forged = status(
            &gw,
            Proto::H1,
            "127.0.0.43",
            &door,
            &[(
                "cookie",
                "__Host-drawbridge=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            )],
        )
        .await;
        assert_eq!(forged.status(), 401);
        // The session ends: the cookie with it.
        let ended = send(
            &gw,
            Raw {
                method: "POST",
                from: "127.0.0.41",
                headers: &[("authorization", bearer(&token).as_str())],
                ..Raw::get(Proto::H1, "jelly.test", "/Sessions/Logout")
            },
        )
        .await;
        assert_eq!(ended.status(), 204);
        let after = status(
            &gw,
            Proto::H1,
            "127.0.0.43",
            &door,
            &[("cookie", pair.as_str())],
        )
        .await;
        assert_eq!(after.status(), 401, "the cookie ended with its session");
        assert_eq!(
            status(&gw, Proto::H1, "127.0.0.41", &door, &[])
                .await
                .status(),
            401,
            "the grant too"
        );
    }
}

/// Home unreachable while a token is due for a check: 503, never a pass,
/// for a good token and a made-up one alike.
#[tokio::test]
async fn no_word_from_home_is_no_pass() {
    let origin = Origin::start().await;
    let gw = gated(&origin, "").await;
    let token = sign_in(&gw, Proto::H1).await;
    origin.stop();
    let door = with_param(&side_doors()[0], &format!("ApiKey={token}"));
    let answer = status(&gw, Proto::H1, "127.0.0.51", &door, &[]).await;
    assert_eq!(answer.status(), 503);
    let made_up = with_param(&side_doors()[0], "ApiKey=0123456789abcdef0123456789abcdef");
    let answer = status(&gw, Proto::H1, "127.0.0.51", &made_up, &[]).await;
    assert_eq!(
        answer.status(),
        503,
        "no pass for a token nobody vouched for"
    );
}

/// One kept connection to the gateway from `from`, over `proto`: requests
/// on it share the connection's recall of credentials (`gate/recall.rs`).
enum Kept {
    H1(hyper::client::conn::http1::SendRequest<http_body_util::Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<http_body_util::Full<Bytes>>),
}

impl Kept {
    async fn open(gw: &TestGateway, from: &str, proto: Proto) -> Kept {
        use hyper_util::rt::{TokioExecutor, TokioIo};
        let stream = crate::support::raw::tls(gw, from, "jelly.test", proto)
            .await
            .unwrap();
        let io = TokioIo::new(stream);
        match proto {
            Proto::H1 => {
                let (sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
                tokio::spawn(connection);
                Kept::H1(sender)
            }
            Proto::H2 => {
                let (sender, connection) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                        .await
                        .unwrap();
                tokio::spawn(connection);
                Kept::H2(sender)
            }
        }
    }

    /// GET `target` on the kept connection: its status.
    async fn get(&mut self, target: &str, headers: &[(&str, &str)]) -> u16 {
        let mut request = Request::get(format!("https://jelly.test{target}"));
        if let Kept::H1(_) = self {
            request = request.header("host", "jelly.test");
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(http_body_util::Full::new(Bytes::new()))
            .unwrap();
        let response = match self {
            Kept::H1(sender) => {
                sender.ready().await.unwrap();
                sender.send_request(request).await.unwrap()
            }
            Kept::H2(sender) => sender.send_request(request).await.unwrap(),
        };
        let status = response.status().as_u16();
        let _ = http_body_util::BodyExt::collect(response.into_body()).await;
        status
    }
}

/// A connection recalls the last credentials it passed, and the recall
/// holds no longer than they do: after a logout made on another
/// connection, the same token on the kept connection — HTTP/1.1 keep-alive
/// and HTTP/2 alike — is refused, and the side door serves nothing more.
#[tokio::test]
async fn a_kept_connection_recalls_a_token_no_longer_than_it_stands() {
    let origin = Origin::start().await;
    let gw = gated(&origin, "").await;
    let door = side_doors()[0].clone();
    for proto in [Proto::H1, Proto::H2] {
        let token = sign_in(&gw, proto).await;
        let authorization = bearer(&token);
        let carried = [("authorization", authorization.as_str())];
        let mut kept = Kept::open(&gw, "127.0.0.61", proto).await;
        let asks = origin.seen.jellyfin.me_count();
        for _ in 0..3 {
            assert_eq!(kept.get(&door, &carried).await, 200, "{proto:?}");
        }
        assert_eq!(origin.seen.jellyfin.me_count() - asks, 1, "asked once");
        // Anything else sent on the connection is read afresh: a made-up
        // token beside the good one is Jellyfin's to judge (asked), one
        // instead of it is refused.
        let made_up = bearer("00000000000000000000000000000000");
        let beside = [
            ("authorization", authorization.as_str()),
            ("x-emby-token", "00000000000000000000000000000000"),
        ];
        let asks = origin.seen.jellyfin.me_count();
        kept.get(&door, &beside).await;
        assert_eq!(
            origin.seen.jellyfin.me_count() - asks,
            1,
            "{proto:?}: asked"
        );
        assert_eq!(
            kept.get(&door, &[("authorization", made_up.as_str())])
                .await,
            401,
            "{proto:?}"
        );
        assert_eq!(kept.get(&door, &carried).await, 200, "{proto:?}");
        let logout = send(
            &gw,
            Raw {
                method: "POST",
                from: "127.0.0.62",
                headers: &carried,
                ..Raw::get(Proto::H1, "jelly.test", "/Sessions/Logout")
            },
        )
        .await;
        assert_eq!(logout.status(), 204);
        let served = origin.seen.jellyfin.side_door_count();
        assert_eq!(
            kept.get(&door, &carried).await,
            401,
            "{proto:?}: the token after its logout, on the connection that recalled it"
        );
        assert_eq!(origin.seen.jellyfin.side_door_count(), served);
    }
}

/// A trusted proxy carries many clients on one connection: the recall is
/// of one client address, so a second client using the same token is
/// granted the side doors for its own address, and a third, without a
/// token, is not.
#[tokio::test]
async fn a_recall_is_of_one_client_behind_a_trusted_proxy() {
    let origin = Origin::start().await;
    let gw = TestGateway::start_with_server_extra(
        tempfile::tempdir().unwrap(),
        "trusted_proxies = [\"127.0.0.63\"]\n",
        &format!(
            "[guard]\nmax_failures = 1000\n{BAN_LOOPBACK}\n{}",
            site("jelly.test", origin.addr, "gate = \"enforce\"")
        ),
    )
    .await;
    let token = sign_in(&gw, Proto::H1).await;
    let authorization = bearer(&token);
    let door = side_doors()[4].clone();
    for proto in [Proto::H1, Proto::H2] {
        let mut kept = Kept::open(&gw, "127.0.0.63", proto).await;
        let (first, second, third) = match proto {
            Proto::H1 => ("198.51.100.1", "198.51.100.2", "198.51.100.3"),
            Proto::H2 => ("198.51.100.11", "198.51.100.12", "198.51.100.13"),
        };
        for client in [first, second] {
            let headers = [
                ("authorization", authorization.as_str()),
                ("x-forwarded-for", client),
            ];
            assert_eq!(kept.get(&door, &headers).await, 200, "{proto:?} {client}");
        }
        assert_eq!(
            kept.get(&door, &[("x-forwarded-for", second)]).await,
            200,
            "{proto:?}: the second client's address was granted by its own request"
        );
        assert_eq!(
            kept.get(&door, &[("x-forwarded-for", third)]).await,
            401,
            "{proto:?}: a third client without a token"
        );
    }
}
