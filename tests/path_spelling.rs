//! One path, every spelling: each rule that reads the path — a path deny
//! rule, the login rate limit, failed-login counting for bans, the cache's
//! routes and keys — is tried with more than forty spellings of the path it
//! guards, over HTTP/1.1 and HTTP/2, against an origin that routes the way
//! Kestrel does (`kestrel_route`). Each spelling must be refused (400) or
//! treated exactly as the plain path; the origin must never serve a guarded
//! route that the rule kept from the plain spelling.

use std::time::Duration;

use crate::support::origin::{kestrel_path, kestrel_route, Origin};
use crate::support::raw::{send, Answer, Proto, Raw};
use crate::support::{site, TestGateway};

/// Spellings of `path` (absolute, at least two segments): escapes in every
/// segment, case, dot segments in every position, double slashes, and the
/// spellings drawbridge refuses (encoded slashes and backslashes, `;`,
/// overlong and malformed escapes, control characters, `..` above the root).
fn spellings(path: &str) -> Vec<String> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    assert!(segments.len() >= 2);
    let join = |parts: &[String]| format!("/{}", parts.join("/"));
    let owned = || segments.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let escape_all = |s: &str, upper: bool| {
        s.bytes()
            .map(|b| {
                if upper {
                    format!("%{b:02X}")
                } else {
                    format!("%{b:02x}")
                }
            })
            .collect::<String>()
    };
    let escape_first = |s: &str| format!("%{:02X}{}", s.as_bytes()[0], &s[1..]);
    let (first, rest) = (segments[0], join(&owned()[1..]));
    let last = segments.len() - 1;
    let mut out = vec![
        path.to_string(),
        path.to_ascii_lowercase(),
        path.to_ascii_uppercase(),
        path.chars()
            .enumerate()
            .map(|(i, c)| {
                if i % 2 == 0 {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect(),
        format!(
            "/{}",
            segments
                .iter()
                .map(|s| escape_all(s, true))
                .collect::<Vec<_>>()
                .join("/")
        ),
        format!(
            "/{}",
            segments
                .iter()
                .map(|s| escape_all(s, false))
                .collect::<Vec<_>>()
                .join("/")
        ),
        format!("/./{first}{rest}"),
        format!("/x/..{path}"),
        format!("/%2e{path}"),
        format!("/x/%2e%2e{path}"),
        format!("/x/%2E%2E{path}"),
        format!("/x/.%2e{path}"),
        format!("/x/%2e.{path}"),
        format!("/./././{first}{rest}"),
        format!("{path}/."),
        format!("{path}/x/.."),
        format!("{path}/"),
        format!("/{path}"),
        format!("///{first}{rest}"),
        format!("/{}", segments.join("//")),
        format!("/{first}/../{first}{rest}"),
        format!("/./{}/y/..{rest}", first.to_ascii_uppercase()),
        format!("/%2e/%2e{path}"),
        format!("{path}?x=1"),
        format!("/a/b/../..{path}"),
        // Not the guarded route for Kestrel either: must be consistent too.
        format!("/x/%252e%252e{path}"),
        format!("{path}%20"),
        // Refused.
        format!("/{first}%2F{}", &rest[1..]),
        format!("/{first}%2f{}", &rest[1..]),
        format!("/{first}%5C{}", &rest[1..]),
        format!("/{first}\\{}", &rest[1..]),
        format!("/{first};x{rest}"),
        format!("/x/..;{path}"),
        format!("{path};"),
        format!("/{first}%3Bx{rest}"),
        format!("/x/%C0%AE%C0%AE{path}"),
        format!("/x/%E0%80%AE%E0%80%AE{path}"),
        format!("/{first}%C0%AF{}", &rest[1..]),
        format!("{path}%00"),
        format!("{path}%0A"),
        format!("{path}%09"),
        format!("/..{path}"),
        format!("/x/../..{path}"),
        format!("{path}%"),
        format!("{path}%zz"),
        format!(
            "/{first}/%u{:04X}{}",
            segments[1].as_bytes()[0],
            &join(&owned()[1..])[2..]
        ),
    ];
    for i in 0..segments.len() {
        let mut parts = owned();
        parts[i] = escape_first(segments[i]);
        out.push(join(&parts));
        let mut parts = owned();
        parts[i] = escape_all(segments[i], i % 2 == 0);
        out.push(join(&parts));
        if i > 0 {
            let mut parts = owned();
            parts.insert(i, ".".into());
            out.push(join(&parts));
            let mut parts = owned();
            parts.insert(i, "..".into());
            parts.insert(i, "x".into());
            out.push(join(&parts));
        }
    }
    let mut parts = owned();
    let mid = parts[last].len() / 2;
    parts[last] = format!(
        "{}%{:02x}{}",
        &segments[last][..mid],
        segments[last].as_bytes()[mid],
        &segments[last][mid + 1..]
    );
    out.push(join(&parts));
    out.sort();
    out.dedup();
    assert!(out.len() >= 40, "{} spellings", out.len());
    out
}

/// The spellings Kestrel would route to `path`, when forwarded as written.
pub(crate) fn reaching(path: &str) -> Vec<String> {
    let route = kestrel_route(path);
    let reach: Vec<String> = spellings(path)
        .into_iter()
        .filter(|s| kestrel_route(s.split('?').next().unwrap()) == route)
        .collect();
    assert!(reach.len() >= 30, "only {} reach {path}", reach.len());
    reach
}

const PROTOCOLS: [Proto; 2] = [Proto::H1, Proto::H2];

#[tokio::test]
async fn a_path_deny_rule_holds_for_every_spelling() {
    let origin = Origin::start().await;
    let gw = TestGateway::start(&site(
        "jelly.test",
        origin.addr,
        "[[site.path]]\nprefix = \"/secret/\"\ndeny = [\"127.0.0.0/8\"]\n",
    ))
    .await;
    for proto in PROTOCOLS {
        for target in spellings("/secret/x") {
            let answer = send(&gw, Raw::get(proto, "jelly.test", &target)).await;
            let status = answer.status();
            let reaches = kestrel_route(target.split('?').next().unwrap()) == "/secret/x";
            assert!(
                status == 400 || status == 403 || !reaches,
                "{proto:?} {target:?}: {status}, a spelling of the denied path"
            );
            assert_ne!(status, 0, "{proto:?} {target:?}: no answer");
        }
        for (target, expected) in [
            ("/%73ecret/x", 403),
            ("/./secret/x", 403),
            ("/x/../secret/x", 403),
            ("/SECRET/X", 403),
            ("/secret", 403),
            ("/%73ecret/", 403),
            ("/secret%2Fx", 400),
            ("/x/..;/secret/x", 400),
            ("/public/x", 404),
        ] {
            let answer = send(&gw, Raw::get(proto, "jelly.test", target)).await;
            assert_eq!(answer.status(), expected, "{proto:?} {target}");
        }
    }
    assert_eq!(
        origin.seen.hits("/secret/x"),
        0,
        "the denied route was served"
    );
    assert_eq!(
        origin.seen.hits("/secret"),
        0,
        "the denied prefix was served"
    );
}

fn login<'a>(proto: Proto, from: &'a str, target: &'a str) -> Raw<'a> {
    Raw {
        proto,
        from,
        host: "jelly.test",
        method: "POST",
        target,
        headers: &[("content-type", "application/json")],
        body: br#"{"Username":"mum","Pw":"guess"}"#,
    }
}

#[tokio::test]
async fn the_login_rate_limit_holds_for_every_spelling() {
    let origin = Origin::start().await;
    let rest = format!(
        "[guard]\nmax_failures = 1000\n{}\n{}",
        crate::support::BAN_LOOPBACK,
        site(
            "jelly.test",
            origin.addr,
            "login_rate = \"1/h\"\nlogin_burst = 2"
        )
    );
    let gw = TestGateway::start(&rest).await;
    let mut forwarded = 0;
    for (proto, from) in [(Proto::H1, "127.0.3.1"), (Proto::H2, "127.0.3.2")] {
        for _ in 0..2 {
            let answer = send(&gw, login(proto, from, "/Users/AuthenticateByName")).await;
            assert_eq!(answer.status(), 401, "{proto:?} within the burst");
            forwarded += 1;
        }
        let mut limited = 0;
        for target in reaching("/Users/AuthenticateByName") {
            let status = send(&gw, login(proto, from, &target)).await.status();
            assert!(
                status == 429 || status == 400,
                "{proto:?} {target:?}: {status} past the burst"
            );
            limited += usize::from(status == 429);
        }
        assert!(
            limited >= 20,
            "{proto:?}: only {limited} spellings were normalised, not refused"
        );
    }
    assert_eq!(
        origin.seen.hits("/users/authenticatebyname"),
        forwarded,
        "a login past the limit reached Jellyfin"
    );
}

/// Whether the gateway closes a fresh connection from `from` at accept (on
/// the plain HTTP listener: on TLS a banned address is read as far as its
/// ClientHello, in case it is the home agent).
async fn banned(gw: &TestGateway, from: &str) -> bool {
    use tokio::io::AsyncReadExt;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut tcp = socket.connect(gw.http).await.unwrap();
    let mut buf = [0u8; 8];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), tcp.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn failed_logins_count_toward_a_ban_in_every_spelling() {
    let origin = Origin::start().await;
    let gw = TestGateway::start(&format!(
        "[guard]\n{}\n{}",
        crate::support::BAN_LOOPBACK,
        site("jelly.test", origin.addr, "login_rate = \"off\"")
    ))
    .await;
    let mut counted = 0;
    for (proto, net) in [(Proto::H1, 1), (Proto::H2, 2)] {
        for (n, target) in reaching("/Users/AuthenticateByName").iter().enumerate() {
            let from = format!("127.0.{net}.{}", n + 1);
            let mut statuses = Vec::new();
            for _ in 0..3 {
                statuses.push(send(&gw, login(proto, &from, target)).await.status());
            }
            match statuses.as_slice() {
                [400, 400, 400] => {}
                [401, 401, 401] => {
                    assert!(
                        banned(&gw, &from).await,
                        "{proto:?} {target:?}: three failed logins and no ban"
                    );
                    counted += 1;
                }
                other => panic!("{proto:?} {target:?}: {other:?}"),
            }
        }
    }
    assert!(
        counted >= 40,
        "only {counted} spellings were normalised, not refused"
    );
}

fn with_token<'a>(proto: Proto, target: &'a str, token: &'a [(&'a str, &'a str)]) -> Raw<'a> {
    Raw {
        headers: token,
        ..Raw::get(proto, "jelly.test", target)
    }
}

#[tokio::test]
async fn cache_routes_and_keys_follow_the_canonical_path() {
    let (origin, gw) = TestGateway::in_front_of_jellyfin("").await;
    let poster = "/Items/abc/Images/Primary";
    let mut keys = std::collections::HashSet::from([poster.to_string()]);
    for proto in PROTOCOLS {
        // The plain spelling fills the entry (the fill ends with the body).
        let mut label = None;
        for _ in 0..50 {
            label = send(&gw, Raw::get(proto, "jelly.test", poster))
                .await
                .header("x-cache");
            if label.as_deref() == Some("HIT") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(label.as_deref(), Some("HIT"), "{proto:?}");
        for target in reaching(poster) {
            let answer = send(&gw, Raw::get(proto, "jelly.test", &target)).await;
            let hit = answer.header("x-cache");
            let status = answer.status();
            let key = match target.split_once('?') {
                Some((path, query)) => format!("{}?{query}", kestrel_path(path)),
                None => kestrel_path(&target),
            };
            if key == poster {
                assert!(
                    status == 400 || (status == 200 && hit.as_deref() == Some("HIT")),
                    "{proto:?} {target:?}: {status} {hit:?}, not the poster's entry"
                );
            } else {
                // Another letter case, a trailing slash or a query: the same
                // route for Jellyfin, another key for the cache (a path's
                // case matters to RFC 3986 and to files on disk).
                assert!(
                    status == 400 || status == 200,
                    "{proto:?} {target:?}: {status}"
                );
            }
            if status == 200 {
                keys.insert(key);
            }
        }
    }
    assert_eq!(
        origin.seen.hits("/items/abc/images/primary"),
        keys.len(),
        "a spelling of a cached path went home: not its canonical key ({keys:?})"
    );

    // A personal answer marked public must never be stored under a cache
    // route it only looks like.
    let alice = origin.seen.jellyfin.sign_in();
    for proto in PROTOCOLS {
        for target in [
            "/web/../Users/Me",
            "/web/%2e%2e/Users/Me",
            "/Items/1/Images/../../../Users/Me",
            "/web/x/../../Users/Me",
            "/web/.%2E/Users/Me",
        ] {
            let token = [("x-emby-token", alice.as_str())];
            let mine = send(&gw, with_token(proto, target, &token)).await;
            assert!(
                mine.text().contains("\"Name\":\"mum\""),
                "{proto:?} {target}"
            );
            let theirs = send(&gw, Raw::get(proto, "jelly.test", target)).await;
            assert_eq!(
                theirs.status(),
                401,
                "{proto:?} {target}: another visitor got alice's answer"
            );
            assert_eq!(theirs.header("x-cache"), None, "{proto:?} {target}");
        }
    }
}

#[tokio::test]
async fn trace_is_never_forwarded_and_star_is_for_options_only() {
    let (origin, gw) = TestGateway::in_front_of_jellyfin("").await;
    for proto in PROTOCOLS {
        for method in ["TRACE", "TRACK", "trace"] {
            let answer = send(
                &gw,
                Raw {
                    method,
                    headers: &[("cookie", "session=secret")],
                    ..Raw::get(proto, "jelly.test", "/echo")
                },
            )
            .await;
            assert_eq!(answer.status(), 405, "{proto:?} {method}");
            assert!(
                answer.header("allow").is_some(),
                "{proto:?} {method}: Allow"
            );
            assert!(!answer.text().contains("secret"), "{proto:?} {method}");
        }
        let star = send(
            &gw,
            Raw {
                method: "OPTIONS",
                ..Raw::get(proto, "jelly.test", "*")
            },
        )
        .await;
        assert_eq!(star.status(), 200, "{proto:?} OPTIONS *");
        assert!(star.header("allow").unwrap().contains("GET"));
        assert_eq!(
            send(&gw, Raw::get(proto, "jelly.test", "*")).await.status(),
            400,
            "{proto:?} GET *"
        );
        let plain: Answer = send(&gw, Raw::get(proto, "jelly.test", "/echo")).await;
        assert_eq!(plain.status(), 200, "{proto:?} a plain GET still works");
    }
    assert_eq!(
        origin.seen.hits("/echo"),
        2,
        "only the two GETs reached the origin"
    );
}
