//! Upstreams that move: a name re-resolved by its TTL through a real DNS
//! server on 127.0.0.1, the last good address kept while DNS fails, AAAA-only
//! and mixed answers where one address refuses or never answers.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::dns::DnsServer;
use crate::support::origin::Origin;
use crate::support::TestGateway;

async fn gateway(dns: &DnsServer, host: &str, port: u16) -> TestGateway {
    let server = format!(
        "resolvers = [\"{}\"]\ndns_min_ttl = \"1s\"\ndns_max_ttl = \"2s\"\n",
        dns.addr
    );
    let site = format!("[[site]]\nhost = \"jelly.test\"\nupstream = \"http://{host}:{port}\"\ntls = \"internal\"\n");
    TestGateway::start_with_server_extra(tempfile::tempdir().unwrap(), &server, &site).await
}

async fn get(gw: &TestGateway, client: &reqwest::Client) -> u16 {
    client
        .get(gw.url("jelly.test", "/System/Info/Public"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn the_upstream_follows_its_name_and_survives_a_failing_dns_server() {
    let first = Origin::start().await;
    let port = first.addr.port();
    let second = Origin::start_on(SocketAddr::from(([127, 0, 0, 2], port))).await;
    let dns = DnsServer::start().await;
    dns.set("home.test", &["127.0.0.1"], 1);
    let gw = gateway(&dns, "home.test", port).await;
    let client = gw.reqwest(&["jelly.test"], false);
    assert_eq!(get(&gw, &client).await, 200);
    assert_eq!(first.seen.hits("/system/info/public"), 1);

    dns.set("home.test", &["127.0.0.2"], 1);
    let mut moved = false;
    for _ in 0..40 {
        assert_eq!(get(&gw, &client).await, 200);
        if second.seen.hits("/system/info/public") > 0 {
            moved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(moved, "new requests go to the new address after the TTL");
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("drawbridge_upstream_dns_changes_total{site=\"jelly.test\"} 1\n"),
        "one change of address counted: {metrics}"
    );
    let before = first.seen.hits("/system/info/public");

    dns.fail(true);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    for _ in 0..3 {
        assert_eq!(
            get(&gw, &client).await,
            200,
            "the last good address keeps serving"
        );
    }
    assert_eq!(
        first.seen.hits("/system/info/public"),
        before,
        "nothing goes back to the old address"
    );
    assert!(second.seen.hits("/system/info/public") >= 4);
}

#[tokio::test]
async fn aaaa_only_and_mixed_answers() {
    let origin = Origin::start_on("[::1]:0".parse().unwrap()).await;
    let port = origin.addr.port();
    let dns = DnsServer::start().await;
    dns.set("v6.test", &["::1"], 60);
    let gw = gateway(&dns, "v6.test", port).await;
    assert_eq!(
        get(&gw, &gw.reqwest(&["jelly.test"], true)).await,
        200,
        "AAAA-only name"
    );

    // 127.0.0.3 refuses (nothing listens there); drawbridge moves on to ::1.
    dns.set("both.test", &["127.0.0.3", "::1"], 60);
    let gw = gateway(&dns, "both.test", port).await;
    assert_eq!(
        get(&gw, &gw.reqwest(&["jelly.test"], true)).await,
        200,
        "mixed answer, refusing address skipped"
    );
    assert_eq!(origin.seen.hits("/system/info/public"), 2);
}

#[tokio::test]
async fn an_address_that_never_answers_costs_the_attempt_delay_not_the_connect_timeout() {
    let origin = Origin::start_on("127.0.0.3:0".parse().unwrap()).await;
    let port = origin.addr.port();
    // A listener whose accept queue (backlog 0) holds one connection nobody
    // accepts: the kernel drops every further SYN, like a host that is gone.
    let silent = tokio::net::TcpSocket::new_v4().unwrap();
    silent
        .bind(SocketAddr::from(([127, 0, 0, 2], port)))
        .unwrap();
    let silent = silent.listen(0).unwrap();
    let _queued = tokio::net::TcpStream::connect(silent.local_addr().unwrap())
        .await
        .unwrap();
    let dns = DnsServer::start().await;
    dns.set("gone.test", &["127.0.0.2", "127.0.0.3"], 60);
    let gw = gateway(&dns, "gone.test", port).await;
    // With connect_timeout at its 3 s default, trying the silent address
    // alone would end in a 502.
    assert_eq!(
        get(&gw, &gw.reqwest(&["jelly.test"], true)).await,
        200,
        "the second address tried while the first stays silent"
    );
    assert_eq!(origin.seen.hits("/system/info/public"), 1);
}

#[tokio::test]
async fn an_unresolvable_name_is_a_502_until_it_resolves() {
    let origin = Origin::start().await;
    let dns = DnsServer::start().await;
    let gw = gateway(&dns, "later.test", origin.addr.port()).await;
    let client = gw.reqwest(&["jelly.test"], false);
    assert_eq!(get(&gw, &client).await, 502);
    dns.set("later.test", &["127.0.0.1"], 60);
    let mut served = false;
    for _ in 0..40 {
        if get(&gw, &client).await == 200 {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "recovers without a restart once the name resolves");
}
