//! The home leg through the tunnel, the real binary at both ends: the agent
//! dials out, the edge forwards through it, and every HTTP semantic of the
//! direct path holds; tokens, pins and service names are the whole trust,
//! and each is tried the wrong way.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::support::origin::{is_video_at, Origin, VIDEO_LEN};
use crate::support::tunnel::{
    add_token, cli, cli_fails, count, edge_config, enroll, rss_kib, set_services, wait_until,
    Agent, Home,
};
use crate::support::Process;

#[tokio::test]
async fn requests_reach_jellyfin_through_the_tunnel_with_the_client_named() {
    let home = Home::start("", 2).await;
    for http2 in [false, true] {
        let client = home.client(http2);
        let response = client.get(home.url("/echo?x=1")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let echo: serde_json::Value = response.json().await.unwrap();
        let header = |name: &str| {
            echo["headers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|pair| pair[0] == name)
                .map(|pair| pair[1].as_str().unwrap().to_string())
        };
        assert_eq!(
            header("host").as_deref(),
            Some(format!("jelly.test:{}", home.edge.https.port()).as_str()),
            "Host as the visitor sent it"
        );
        assert_eq!(
            header("x-forwarded-for").as_deref(),
            Some("127.0.0.1"),
            "the visitor, not the agent"
        );
        assert_eq!(header("x-real-ip").as_deref(), Some("127.0.0.1"));
        assert_eq!(header("x-forwarded-proto").as_deref(), Some("https"));
    }
    // The agent names the address Jellyfin sees it from, for Known proxies.
    assert_eq!(
        home.agent
            .count("add 127.0.0.1 to Jellyfin's Known proxies"),
        1
    );
    assert_eq!(
        count(&home.edge, "Known proxies"),
        0,
        "the edge's hint would be wrong here"
    );
    // Each link's round trip is timed (the dashboard's RTT), answered by
    // the agent itself: nothing more reached Jellyfin for it.
    let config = home.edge_config.to_str().unwrap().to_string();
    let timed = || {
        let (json, _) = cli(&["status", "--json", "-c", &config]);
        let status: serde_json::Value = serde_json::from_str(&json).unwrap();
        status["tunnels"][0]["connections"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|link| link["rtt_us"].as_u64().unwrap_or(0) > 0)
            .count()
    };
    wait_until(|| timed() == 2, Duration::from_secs(10), "both links timed").await;
    assert_eq!(home.agent.count("does not expose"), 0);
}

#[tokio::test]
async fn ranges_head_and_a_large_stream_pass_with_flat_memory_at_both_ends() {
    let home = Home::start("", 2).await;
    let client = home.client(false);
    let ranged = client
        .get(home.url("/Videos/v/stream"))
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.status(), 206);
    let body = ranged.bytes().await.unwrap();
    assert_eq!(body.len(), 1000);
    assert!(is_video_at(&body, 1000));
    let head = client
        .head(home.url("/Videos/v/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"],
        VIDEO_LEN.to_string().as_str()
    );

    // 200 MiB, read slowly at first: neither end may buffer what the
    // client has not taken.
    let (edge_before, agent_before) = (
        rss_kib(home.edge.child.id()),
        rss_kib(home.agent.child.id()),
    );
    let mut response = client.get(home.url("/bulk/200")).send().await.unwrap();
    let mut at = 0usize;
    let mut peak = (0, 0);
    while let Some(chunk) = response.chunk().await.unwrap() {
        assert!(is_video_at(&chunk, at), "bytes in order at {at}");
        at += chunk.len();
        if at < 4 * 1024 * 1024 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if at % (16 * 1024 * 1024) < chunk.len() {
            peak.0 = peak.0.max(rss_kib(home.edge.child.id()));
            peak.1 = peak.1.max(rss_kib(home.agent.child.id()));
        }
    }
    assert_eq!(at, 200 * 1024 * 1024, "the whole stream");
    let growth = (
        peak.0.saturating_sub(edge_before),
        peak.1.saturating_sub(agent_before),
    );
    assert!(
        growth.0 < 48 * 1024 && growth.1 < 48 * 1024,
        "memory grew by {} KiB at the edge, {} KiB at the agent",
        growth.0,
        growth.1
    );
}

#[tokio::test]
async fn uploads_pass_and_the_body_limit_holds_at_the_edge() {
    let home = Home::start("max_body = \"30MiB\"\n", 1).await;
    let client = home.client(true);
    let body = vec![7u8; 20 * 1024 * 1024];
    let response = client
        .post(home.url("/upload"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        home.origin
            .seen
            .upload_bytes
            .load(std::sync::atomic::Ordering::SeqCst),
        20 * 1024 * 1024
    );
    let too_big = client
        .post(home.url("/upload"))
        .body(vec![7u8; 31 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(too_big.status(), 413);
    assert_eq!(
        home.origin.seen.hits("/upload"),
        1,
        "the refused upload never entered the tunnel"
    );
}

#[tokio::test]
async fn websockets_cross_the_tunnel_both_ways() {
    let home = Home::start("", 1).await;
    let mut ws = home.websocket().await;
    for n in 0..3 {
        ws.send(Message::text(format!("ping{n}"))).await.unwrap();
        let echo = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(echo, Message::text(format!("echo:ping{n}")));
    }
}

#[tokio::test]
async fn a_stream_cut_by_the_agent_dying_ends_short_and_the_next_request_waits_for_the_reconnect() {
    let mut home = Home::start("", 1).await;
    let client = home.client(false);
    let poster = home.url("/Items/short/Images/Primary");
    let fresh = client.get(&poster).send().await.unwrap();
    assert_eq!(fresh.headers()["x-cache"], "MISS");
    let poster_bytes = fresh.bytes().await.unwrap();
    let mut response = client.get(home.url("/bulk/100")).send().await.unwrap();
    let first = response.chunk().await.unwrap().unwrap();
    assert!(!first.is_empty());
    home.agent.child.kill().unwrap();
    let mut read = first.len();
    let ended = loop {
        match response.chunk().await {
            Ok(Some(chunk)) => read += chunk.len(),
            Ok(None) => break "complete",
            Err(_) => break "cut",
        }
    };
    assert_eq!(
        ended, "cut",
        "a truncated stream is never passed off as whole"
    );
    assert!(read < 100 * 1024 * 1024);
    // No agent: a short wait, then drawbridge's own 502 (never the home address).
    let gone = client
        .get(home.url("/System/Info/Public"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 502);
    let page = gone.text().await.unwrap();
    assert!(!page.contains(&home.origin.addr.to_string()));
    // The edge cache still serves the poster it has, stale, as when home is down.
    let stale = client.get(&poster).send().await.unwrap();
    assert_eq!(stale.status(), 200);
    assert_eq!(stale.headers()["x-cache"], "STALE");
    assert_eq!(stale.bytes().await.unwrap(), poster_bytes);
    // The agent comes back: a request made meanwhile waits for it.
    home.agent = Agent::start(&home.agent_config);
    let waiting = client.get(home.url("/System/Info/Public")).send();
    let response = waiting.await.unwrap();
    assert_eq!(response.status(), 200, "served once the agent reconnected");
}

#[tokio::test]
async fn the_agent_comes_back_after_the_edge_restarts() {
    let mut home = Home::start("", 1).await;
    assert_eq!(home.info_status().await, 200);
    restart_edge_on_its_port(&mut home);
    home.attached(1).await;
    assert_eq!(home.info_status().await, 200);
}

/// `systemctl restart` with an agent attached: the agent's tunnel is not a
/// request in flight, so SIGTERM stops the edge as fast as without one
/// (well inside a grace of 60 s), the link closed cleanly for the agent to
/// reconnect to the next start.
#[tokio::test]
async fn an_attached_agent_does_not_hold_a_restart_for_the_grace() {
    let mut home = Home::start("", 2).await;
    let text = std::fs::read_to_string(&home.edge_config)
        .unwrap()
        .replace("[server]\n", "[server]\nshutdown_grace = \"60s\"\n");
    std::fs::write(&home.edge_config, text).unwrap();
    restart_edge_on_its_port(&mut home);
    home.attached(2).await;
    assert_eq!(home.info_status().await, 200);
    let told = home.agent.count("closed by the edge");
    home.edge.signal("TERM");
    let stopped = tokio::task::spawn_blocking({
        let mut edge = std::mem::replace(&mut home.edge, dummy_process());
        move || {
            let status = edge.child.wait().unwrap();
            (status, edge.log.lock().unwrap().clone())
        }
    });
    let (status, log) = tokio::time::timeout(Duration::from_secs(20), stopped)
        .await
        .expect("stopped without waiting out the 60 s grace")
        .unwrap();
    assert!(status.success(), "{log:#?}");
    assert!(
        log.iter()
            .any(|l| l.contains("tunnel connection closed, the agent will reconnect")),
        "{log:#?}"
    );
    // The next start: the agent is back on its own.
    let before = home.agent.count("tunnel connection up");
    home.edge = Process::start(&home.edge_config);
    wait_until(
        || home.agent.count("tunnel connection up") >= before + 2,
        Duration::from_secs(15),
        "the agent back on the new edge",
    )
    .await;
    assert_eq!(
        home.agent.count("closed by the edge") - told,
        2,
        "told cleanly"
    );
    assert_eq!(home.info_status().await, 200);
}

/// `drawbridge tunnel remove` is what a household does when an agent's key
/// is stolen: everything of the removed agent ends at once — a download
/// and a WebSocket already flowing through it included, not only new
/// requests.
#[tokio::test]
async fn a_removed_agents_streams_and_websockets_end_at_once() {
    let home = Home::start("", 1).await;
    let mut ws = home.websocket().await;
    let download = home
        .client(false)
        .get(home.url("/bulk/400"))
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), 200);
    let mut body = download.bytes_stream();
    // Flowing: a first piece has arrived, and the client reads no more.
    assert!(body.next().await.unwrap().is_ok());
    let c = home.edge_config.to_str().unwrap();
    cli(&["tunnel", "remove", "home", "-c", c]);
    let ended = async {
        let mut read = 0usize;
        loop {
            match body.next().await {
                Some(Ok(piece)) => read += piece.len(),
                Some(Err(_)) => return Err(read),
                None => return Ok(read),
            }
        }
    };
    let outcome = tokio::time::timeout(Duration::from_secs(10), ended)
        .await
        .expect("the download ended at once");
    let read = outcome.expect_err("cut short, never completed");
    assert!(read < 400 << 20, "{read} of 400 MiB");
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        ws.send(Message::text("still there?")).await.ok();
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    });
    closed.await.expect("the WebSocket ended at once");
}

/// `drawbridge agent enroll TOKEN`, which must fail: what it said.
fn enroll_fails(token: &str, agent_config: &std::path::Path) -> String {
    cli_fails(&[
        "agent",
        "enroll",
        token,
        "-c",
        agent_config.to_str().unwrap(),
    ])
}

/// A process that has already exited, to stand in while the edge restarts.
/// Stops the edge and starts it again on the same HTTPS port: a restart
/// does not promise the ports of `127.0.0.1:0`, and the agent's config names
/// the edge's port.
fn restart_edge_on_its_port(home: &mut Home) {
    let port = home.edge.https.port();
    drop(std::mem::replace(&mut home.edge, dummy_process()));
    let text = std::fs::read_to_string(&home.edge_config).unwrap().replace(
        "https = [\"127.0.0.1:0\"]",
        &format!("https = [\"127.0.0.1:{port}\"]"),
    );
    std::fs::write(&home.edge_config, text).unwrap();
    home.edge = Process::start(&home.edge_config);
}

fn dummy_process() -> Process {
    Process {
        child: std::process::Command::new("true").spawn().unwrap(),
        http: "127.0.0.1:1".parse().unwrap(),
        https: "127.0.0.1:1".parse().unwrap(),
        log: Default::default(),
    }
}

#[tokio::test]
async fn tokens_are_one_time_and_expire_and_the_agent_trusts_only_its_edge() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("drawbridge.toml");
    std::fs::write(&config, edge_config(dir.path(), "")).unwrap();
    let edge = Process::start(&config);
    let agent_config = dir.path().join("home/agent.toml");
    std::fs::create_dir_all(agent_config.parent().unwrap()).unwrap();
    let token = add_token(&config, "home", edge.https);
    let said = enroll(&token, &agent_config);
    assert!(said.contains("enrolled as `home`"), "{said}");
    // The same agent again (its config lost, or the answer): enrolled still,
    // once. Another key with the same token: refused.
    let again = enroll(&token, &agent_config);
    assert!(again.contains("enrolled as `home`"), "{again}");
    let thief_config = dir.path().join("thief/agent.toml");
    std::fs::create_dir_all(thief_config.parent().unwrap()).unwrap();
    let stolen = enroll_fails(&token, &thief_config);
    assert!(stolen.contains("already used"), "{stolen}");
    let (list, _) = cli(&["tunnel", "list", "-c", config.to_str().unwrap()]);
    assert_eq!(list.matches("home\t").count(), 1, "one agent: {list}");

    let c = config.to_str().unwrap();
    let https = edge.https.to_string();
    let (out, _) = cli(&[
        "tunnel",
        "add",
        "late",
        "--edge",
        &https,
        "--expires",
        "1s",
        "-c",
        c,
    ]);
    let expired = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("drawbridge agent enroll "))
        .unwrap()
        .to_string();
    std::thread::sleep(Duration::from_millis(2100));
    let refused = enroll_fails(&expired, &agent_config);
    assert!(refused.contains("expired"), "{refused}");

    // A token made for another edge: this edge's key is not its pin.
    let other = tempfile::tempdir().unwrap();
    let other_config = other.path().join("drawbridge.toml");
    std::fs::write(&other_config, edge_config(other.path(), "")).unwrap();
    let foreign = add_token(&other_config, "home", edge.https);
    let impostor = enroll_fails(&foreign, &agent_config);
    assert!(
        impostor.contains("without the pinned key's proof"),
        "{impostor}"
    );
    assert!(enroll_fails("garbage", &agent_config).contains("not a drawbridge tunnel token"));

    // An enrolled agent whose config pins another key does not connect.
    let origin = crate::support::origin::Origin::start().await;
    set_services(&agent_config, origin.addr, 1);
    let pinned = std::fs::read_to_string(&agent_config).unwrap();
    let wrong = pinned.replace("edge_pin = \"sha256/", "edge_pin = \"sha256/AAAA");
    std::fs::write(&agent_config, wrong).unwrap();
    let agent = Agent::start(&agent_config);
    wait_until(
        || agent.count("without the pinned key's proof") >= 1,
        Duration::from_secs(10),
        "the agent refusing the edge",
    )
    .await;
    // The edge took its knock (the key is enrolled), but the agent, not
    // finding its edge's key, never serves: nothing of home is reachable.
    assert_eq!(agent.count("tunnel connection up"), 0);
    drop(agent);
    std::fs::write(&agent_config, pinned).unwrap();
    let agent = Agent::start(&agent_config);
    wait_until(
        || agent.count("tunnel connection up") >= 1,
        Duration::from_secs(10),
        "the agent",
    )
    .await;
    let ready = |list: &str| list.contains("home\t1 connections");
    let listed = || cli(&["tunnel", "list", "-c", c]).0;
    wait_until(
        || ready(&listed()),
        Duration::from_secs(5),
        "the edge to list it",
    )
    .await;

    // list, then remove: the open connection closes at once.
    let (list, _) = cli(&["tunnel", "list", "-c", c]);
    assert!(list.contains("home\t1 connections"), "{list}");
    let (removed, _) = cli(&["tunnel", "remove", "home", "-c", c]);
    assert!(removed.contains("removed"), "{removed}");
    wait_until(
        || count(&edge, "closing its tunnel connection") >= 1,
        Duration::from_secs(5),
        "the revoked connection to close",
    )
    .await;
    // The agent hears that it was removed, in those words, and stops
    // knocking every few seconds.
    wait_until(
        || agent.count("the edge says this agent was removed") >= 1,
        Duration::from_secs(10),
        "the agent to be told it was removed",
    )
    .await;
    let client = crate::support::tunnel::client_for(dir.path(), edge.https, false);
    let gone = client
        .get(format!(
            "https://jelly.test:{}/System/Info/Public",
            edge.https.port()
        ))
        .send()
        .await
        .expect("answered: the removed agent's retries do not ban its household");
    assert_eq!(
        gone.status(),
        502,
        "a removed agent's key no longer connects"
    );
    assert_eq!(agent.count("tunnel connection up"), 1);
    assert_eq!(
        count(&edge, "a removed agent knocked"),
        1,
        "once, not every 250 ms"
    );
    // Its address is no longer kept out of kernel bans.
    let homes = std::fs::read_to_string(dir.path().join("state/tunnel/homes.json")).unwrap();
    assert!(!homes.contains("127.0.0.1"), "{homes}");
}

#[tokio::test]
async fn the_edge_reaches_only_the_services_the_agent_names() {
    let home = Home::start("", 1).await;
    // Another site of the edge asks the agent for a service it does not expose.
    let text = std::fs::read_to_string(&home.edge_config).unwrap()
        + "\n[[site]]\nhost = \"other.test\"\nupstream = \"tunnel:home/ssh\"\ntls = \"internal\"\nhttps_redirect = false\n";
    std::fs::write(&home.edge_config, text).unwrap();
    home.edge.signal("HUP");
    assert!(home
        .edge
        .wait_for_log("config reloaded", Duration::from_secs(10)));
    let ca = home.ca_pem();
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .resolve("other.test", home.edge.https)
        .build()
        .unwrap();
    let before = home.origin.seen.total();
    let response = client
        .get(format!("https://other.test:{}/", home.edge.https.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    assert!(home
        .edge
        .wait_for_log("does not expose service `ssh`", Duration::from_secs(5)));
    assert_eq!(home.agent.count("does not expose"), 1);
    assert_eq!(
        home.origin.seen.total(),
        before,
        "nothing reached home's services"
    );
}

#[tokio::test]
async fn two_agents_under_one_name_both_attach_and_one_covers_for_the_other() {
    let home = Home::start("", 1).await;
    // A second machine at home, enrolled under the same name.
    let second_config = home.dir.path().join("second/agent.toml");
    std::fs::create_dir_all(second_config.parent().unwrap()).unwrap();
    let token = add_token(&home.edge_config, "home", home.edge.https);
    enroll(&token, &second_config);
    set_services(&second_config, home.origin.addr, 1);
    let mut second = Agent::start(&second_config);
    home.attached(2).await;
    second.hinted().await;
    let asked = home.origin.seen.hits("/system/info/public");
    let (list, _) = cli(&["tunnel", "list", "-c", home.edge_config.to_str().unwrap()]);
    assert_eq!(list.matches("home\t1 connections").count(), 2, "{list}");
    for _ in 0..6 {
        assert_eq!(home.info_status().await, 200);
    }
    // One machine goes down: the other serves (no 502, no reconnect needed).
    second.child.kill().unwrap();
    let _ = second.child.wait();
    for _ in 0..6 {
        assert_eq!(home.info_status().await, 200);
    }
    assert_eq!(home.origin.seen.hits("/system/info/public") - asked, 12);
}

/// Two machines at home under one name, and one cannot reach Jellyfin (its
/// address is wrong, or the machine's network is down): requests go to the
/// one that can. The first request the other refuses is sent again to the
/// healthy one (nothing reached Jellyfin the first time); after that the
/// refusing agent is passed over, uploads included, until none is left.
#[tokio::test]
async fn requests_go_to_the_agent_that_reaches_jellyfin() {
    let mut home = Home::start("", 1).await;
    let second_config = home.dir.path().join("second/agent.toml");
    std::fs::create_dir_all(second_config.parent().unwrap()).unwrap();
    let token = add_token(&home.edge_config, "home", home.edge.https);
    enroll(&token, &second_config);
    set_services(&second_config, crate::support::closed_addr().await, 1);
    let mut second = Agent::start(&second_config);
    home.attached(2).await;
    let asked = home.origin.seen.hits("/system/info/public");
    for _ in 0..8 {
        assert_eq!(home.info_status().await, 200);
    }
    let client = home.client(true);
    for _ in 0..4 {
        let upload = client
            .post(home.url("/upload"))
            .body(vec![7u8; 1000])
            .send()
            .await
            .unwrap();
        assert_eq!(upload.status(), 200);
    }
    assert_eq!(home.origin.seen.hits("/system/info/public") - asked, 8);
    assert_eq!(
        second.count("the local service did not answer"),
        1,
        "asked once, then passed over"
    );
    assert_eq!(count(&home.edge, "sending the request once more"), 1);
    let (list, _) = cli(&["tunnel", "list", "-c", home.edge_config.to_str().unwrap()]);
    assert_eq!(
        list.matches("cannot reach its service `jellyfin`").count(),
        1,
        "{list}"
    );
    // The healthy machine goes: the other is all there is, and its refusal
    // is drawbridge's 502, at once.
    home.agent.child.kill().unwrap();
    let _ = home.agent.child.wait();
    wait_until(
        || {
            count(&home.edge, "tunnel connection ended")
                + count(&home.edge, "tunnel connection closed")
                >= 1
        },
        Duration::from_secs(10),
        "the edge to see the healthy agent go",
    )
    .await;
    let started = tokio::time::Instant::now();
    assert_eq!(home.info_status().await, 502);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(second.count("the local service did not answer"), 2);
    second.child.kill().unwrap();
    let _ = second.child.wait();
}

/// One agent key used from several places at once (stolen, or one config
/// copied to three machines) holds at most 16 tunnel connections at the
/// edge: each one past that closes the key's oldest. Visitors are served.
#[tokio::test]
async fn one_agent_key_holds_at_most_sixteen_tunnel_connections() {
    let home = Home::start("", 8).await;
    let _second = Agent::start(&home.agent_config);
    let _third = Agent::start(&home.agent_config);
    home.attached(24).await;
    wait_until(
        || count(&home.edge, "closing its oldest") >= 8,
        Duration::from_secs(10),
        "the oldest connections to be closed",
    )
    .await;
    let (list, _) = cli(&["tunnel", "list", "-c", home.edge_config.to_str().unwrap()]);
    let up: usize = list
        .split_once("home\t")
        .and_then(|(_, rest)| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{list}"));
    assert!((1..=16).contains(&up), "{up} connections up:\n{list}");
    assert_eq!(home.info_status().await, 200);
}

/// Only the agent marks its refusals: a service's answer that carries the
/// mark (a header it was made to reflect) is served as it is, and the agent
/// is not passed over for it.
#[tokio::test]
async fn a_services_answer_cannot_pass_for_the_agents_refusal() {
    let home = Home::start("", 1).await;
    let response = home
        .client(true)
        .get(home.url("/refusal"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("drawbridge-agent-refused").is_none());
    assert_eq!(response.text().await.unwrap(), "fine");
    let (list, _) = cli(&["tunnel", "list", "-c", home.edge_config.to_str().unwrap()]);
    assert!(!list.contains("cannot reach"), "{list}");
}

/// Visitors who pause a film stop reading; what home already sent waits at
/// the edge. On one tunnel connection, six paused films (more than the
/// connection's credit divided by a stream's) must not freeze the API calls
/// and WebSockets of everyone else, as a paused film does not on the
/// direct path.
#[tokio::test]
async fn paused_films_do_not_freeze_the_tunnel_for_everyone_else() {
    let home = Home::start("", 1).await;
    let edge_before = rss_kib(home.edge.child.id());
    let mut paused = Vec::new();
    for _ in 0..6 {
        // A client of its own each: one client connection per film.
        let client = home.client(false);
        let mut film = client.get(home.url("/bulk/200")).send().await.unwrap();
        assert_eq!(film.status(), 200);
        film.chunk().await.unwrap();
        paused.push((client, film));
    }
    // Home fills the paused films' credit at the edge: past 16 MiB held (the
    // connection credit that used to freeze the tunnel), ask for more.
    let edge = home.edge.child.id();
    wait_until(
        || rss_kib(edge).saturating_sub(edge_before) >= 16 * 1024,
        Duration::from_secs(10),
        "the paused films' data held at the edge",
    )
    .await;
    let info = tokio::time::timeout(Duration::from_secs(10), home.info_status()).await;
    assert_eq!(info, Ok(200), "an API call while six films are paused");
    let mut ws = home.websocket().await;
    ws.send(Message::text("still here")).await.unwrap();
    let echo = tokio::time::timeout(Duration::from_secs(10), ws.next()).await;
    assert!(
        matches!(echo, Ok(Some(Ok(ref m))) if *m == Message::text("echo:still here")),
        "a WebSocket while six films are paused: {echo:?}"
    );
    // What the edge holds for them is bounded by their streams' credit.
    let grown = rss_kib(home.edge.child.id()).saturating_sub(edge_before);
    assert!(grown < 96 * 1024, "the edge grew by {grown} KiB");
    // The paused films go on where they stopped.
    for (_, film) in &mut paused {
        let more = tokio::time::timeout(Duration::from_secs(10), film.chunk()).await;
        assert!(matches!(more, Ok(Ok(Some(_)))), "the film resumes");
    }
}

/// One member of the household mistypes a password three times through the
/// public name, from home — the agent's own address. The ban holds for that
/// address's visits, but the agent's tunnel stays up for every remote
/// viewer, and the agent re-attaches from the banned address after a
/// restart; a banned connection asking for anything but the tunnel is
/// closed, and the tunnel without an enrolled key gets nowhere.
#[tokio::test]
async fn a_ban_of_the_households_address_leaves_the_agents_tunnel_up() {
    let mut home = Home::start("login_rate = \"off\"", 1).await;
    let household = home.client(false);
    for _ in 0..3 {
        let failed = household
            .post(home.url("/Users/AuthenticateByName"))
            .body(crate::support::WRONG_LOGIN)
            .send()
            .await
            .unwrap();
        assert_eq!(failed.status(), 401);
    }
    let banned = home
        .client(false)
        .get(home.url("/System/Info/Public"))
        .send();
    assert!(banned.await.is_err(), "the banned address is refused");
    let ca = home.ca_pem();
    let remote = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .resolve("jelly.test", home.edge.https)
        .local_address(Some("127.0.0.2".parse().unwrap()))
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let info = remote.get(home.url("/System/Info/Public")).send().await;
    assert_eq!(
        info.map(|r| r.status().as_u16()).ok(),
        Some(200),
        "a remote viewer is still served through the tunnel"
    );
    assert_eq!(
        count(&home.edge, "agent connected"),
        1,
        "the ban did not cut the tunnel (no reconnect was needed)"
    );
    let homes = std::fs::read_to_string(home.dir.path().join("state/tunnel/homes.json")).unwrap();
    assert!(
        homes.contains("127.0.0.1"),
        "the agent's address is noted for the kernel bans to leave out: {homes}"
    );

    // A banned address knocking with a key the edge never enrolled: the
    // connection is closed with nothing said (no agent slot, nothing served).
    let stranger = tempfile::tempdir().unwrap();
    let (answer, closed) =
        crate::support::tunnel::knock(home.edge.https, &ca, &stranger.path().join("k.pem")).await;
    assert!(
        closed && answer.is_empty(),
        "no enrolled key, no tunnel: {answer:?}"
    );

    // The agent restarts at home, from the banned address, and attaches.
    home.agent.child.kill().unwrap();
    home.agent = Agent::start(&home.agent_config);
    home.attached(2).await;
    let info = remote.get(home.url("/System/Info/Public")).send().await;
    assert_eq!(info.map(|r| r.status().as_u16()).ok(), Some(200));
    let banned = home
        .client(false)
        .get(home.url("/System/Info/Public"))
        .send();
    assert!(banned.await.is_err(), "still banned for visits");
}

/// An agent's connections take streams in turn, so one lossy connection
/// does not carry every viewer: four downloads over two connections, and
/// `tunnel list` shows each connection carried megabytes of them.
#[tokio::test]
async fn streams_are_spread_over_the_agents_connections() {
    let home = Home::start("", 2).await;
    let client = home.client(true);
    let downloads = (0..4).map(|_| async {
        let body = client.get(home.url("/bulk/2")).send().await.unwrap();
        body.bytes().await.unwrap().len()
    });
    let sizes = futures_util::future::join_all(downloads).await;
    assert!(sizes.iter().all(|n| *n == 2 << 20), "{sizes:?}");
    let (list, _) = cli(&["tunnel", "list", "-c", home.edge_config.to_str().unwrap()]);
    let carried: Vec<u64> = list
        .lines()
        .filter_map(|l| l.split('\t').nth(1))
        .filter_map(|l| l.split(" bytes in").next()?.parse().ok())
        .collect();
    assert_eq!(carried.len(), 2, "two connections: {list}");
    assert!(
        carried.iter().all(|bytes| *bytes >= 2 << 20),
        "each carried at least one download: {list}"
    );
}

/// Revalidation passes through the tunnel: the web client's ETag gets
/// Jellyfin's 304, with no body, over both HTTP versions.
#[tokio::test]
async fn a_conditional_request_gets_its_304_through_the_tunnel() {
    let home = Home::start("", 1).await;
    for http2 in [false, true] {
        let client = home.client(http2);
        let fresh = client
            .get(home.url("/web/index.html"))
            .send()
            .await
            .unwrap();
        assert_eq!(fresh.status(), 200);
        let etag = fresh.headers()["etag"].clone();
        let again = client
            .get(home.url("/web/index.html"))
            .header("if-none-match", etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304);
        assert!(again.bytes().await.unwrap().is_empty());
    }
}

/// The agent says which address Jellyfin's Known proxies must list once
/// Jellyfin answers — also when Jellyfin starts after the agent (a NAS
/// booting) — and says nothing of the kind for a service that is not
/// Jellyfin.
#[tokio::test]
async fn the_known_proxies_hint_comes_when_jellyfin_does_and_only_for_jellyfin() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("drawbridge.toml");
    std::fs::write(&config, edge_config(dir.path(), "")).unwrap();
    let edge = Process::start(&config);
    let agent_config = dir.path().join("home/agent.toml");
    std::fs::create_dir_all(agent_config.parent().unwrap()).unwrap();
    enroll(&add_token(&config, "home", edge.https), &agent_config);
    // Jellyfin not up yet; beside it, a service that is not Jellyfin.
    let later = crate::support::closed_addr().await;
    let other = crate::support::closed_addr().await;
    set_services(&agent_config, later, 1);
    let text = std::fs::read_to_string(&agent_config).unwrap();
    std::fs::write(
        &agent_config,
        text.replace(
            "[services]\n",
            &format!("[services]\nphotos = \"http://{other}\"\n"),
        ),
    )
    .unwrap();
    let photos = tokio::net::TcpListener::bind(other).await.unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut stream, _)) = photos.accept().await {
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf).await;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                .await;
        }
    });
    let agent = Agent::start(&agent_config);
    wait_until(
        || agent.count("local service not reachable yet") >= 1,
        Duration::from_secs(10),
        "the agent noticing Jellyfin is not up",
    )
    .await;
    let judged = || agent.count("does not answer as Jellyfin") >= 1;
    wait_until(judged, Duration::from_secs(10), "the other service judged").await;
    assert_eq!(agent.count("Known proxies (Dashboard"), 0);
    let _jellyfin = Origin::start_on(later).await;
    agent.hinted().await;
    assert_eq!(agent.count("Known proxies (Dashboard"), 1, "once");
    assert!(agent
        .log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("service=\"jellyfin\"") || l.contains("service=jellyfin")));
}

/// Nobody without an agent's key learns that drawbridge or a tunnel is
/// there: the old tunnel's ALPN is no protocol here, the certificate an
/// agent's dial gets is the site's own, and a knock with a key the edge
/// never enrolled — or the household's real key, its proof made on another
/// connection — gets exactly what the same request without it gets.
#[tokio::test]
async fn the_tunnel_door_shows_nothing_to_anyone_without_the_key() {
    use crate::support::tunnel::send_head;
    use drawbridge::tunnel::protocol::{Knock, Proof, AGENT_SIGNS};
    let home = Home::start("", 1).await;
    let ca = home.ca_pem();
    let old = crate::support::client_config(&ca, &[b"drawbridge-tunnel/1"]);
    let refused = crate::support::tls_connect(home.edge.https, old, Some("jelly.test")).await;
    assert!(refused.is_err(), "no such protocol");
    let tls = crate::support::tls_connect(
        home.edge.https,
        crate::support::client_config(&ca, &[b"http/1.1"]),
        Some("jelly.test"),
    )
    .await
    .expect("the site's own certificate, from the site's CA");
    let leaf = &tls.get_ref().1.peer_certificates().unwrap()[0];
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref()).unwrap();
    assert_eq!(drawbridge::certfile::dns_names(&parsed), ["jelly.test"]);
    // What a client gets for the same request, and what a stranger's knock
    // gets: the same, to the byte (the date aside).
    let plain = |_: &[u8; 32]| {
        "GET / HTTP/1.1\r\nHost: jelly.test\r\nConnection: Upgrade\r\nUpgrade: drawbridge-tunnel/2\r\nContent-Length: 0\r\n\r\n".to_string()
    };
    let stranger = tempfile::tempdir().unwrap();
    let key = stranger.path().join("k.pem");
    let agent_key = home.agent_config.parent().unwrap().join("agent.pem");
    let identity = drawbridge::tunnel::identity::Identity::load_or_create(&agent_key).unwrap();
    let replayed = Proof::make(&identity, AGENT_SIGNS, &[9u8; 32]);
    let (visitor, strange, replay) = tokio::join!(
        send_head(home.edge.https, &ca, plain),
        crate::support::tunnel::knock(home.edge.https, &ca, &key),
        send_head(home.edge.https, &ca, |_| Knock::Tunnel(replayed)
            .request_head("jelly.test")),
    );
    let undated = |bytes: &[u8]| -> String {
        String::from_utf8_lossy(bytes)
            .lines()
            .filter(|l| !l.to_ascii_lowercase().starts_with("date:"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(!visitor.0.is_empty());
    assert_eq!(undated(&strange.0), undated(&visitor.0));
    assert_eq!(undated(&replay.0), undated(&visitor.0));
    assert!(!undated(&visitor.0)
        .to_ascii_lowercase()
        .contains("drawbridge"));
    assert_eq!(count(&home.edge, "agent connected"), 1, "no second link");
}
