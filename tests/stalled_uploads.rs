//! Uploads that stall or trickle hold nothing at home (issue #31.1): from 2,
//! 4 and 8 attacking addresses, one HTTP/2 connection each with 99 `POST`s
//! that declare ten megabytes and send nothing (or a kilobyte a second),
//! home sees not one of them — drawbridge reads a body whole before it
//! takes a connection home (`spool.rs`) — and another client's request is
//! answered at once. A legitimate 20 MiB upload arrives intact, with the
//! edge's memory flat (the body waits in the spool, not in memory), and an
//! upload over `max_body` is 413 through the tunnel as it is directly.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::task::JoinSet;

use crate::support::origin::Origin;
use crate::support::raw::{send, tls, Proto, Raw};
use crate::support::{site, TestGateway};

type Upload = BoxBody<Bytes, Infallible>;

/// A body that sends nothing, ever.
fn stalled() -> Upload {
    BodyExt::boxed(StreamBody::new(futures_util::stream::pending::<
        Result<Frame<Bytes>, Infallible>,
    >()))
}

/// A body that sends a kilobyte a second, forever.
fn trickling() -> Upload {
    let chunks = futures_util::stream::unfold((), |()| async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Some((Ok(Frame::data(Bytes::from(vec![b'x'; 1024]))), ()))
    });
    BodyExt::boxed(StreamBody::new(chunks))
}

/// `n` chunks of 1 MiB, made as they are sent (the client holds none).
fn megabytes(n: usize) -> Upload {
    let chunks = futures_util::stream::iter(0..n)
        .map(|i| Ok(Frame::data(Bytes::from(vec![(i % 251) as u8; 1 << 20]))));
    BodyExt::boxed(StreamBody::new(chunks))
}

/// The SHA-256 of `megabytes(n)`, as the origin writes it.
fn sha_of_megabytes(n: usize) -> String {
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    for i in 0..n {
        digest.update(&vec![(i % 251) as u8; 1 << 20]);
    }
    digest
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

use futures_util::StreamExt as _;

/// One attacker: an HTTP/2 connection from `from` with 99 uploads that
/// declare ten megabytes, then a GET on the same connection, answered once
/// every upload's head has reached drawbridge (streams are taken in order).
async fn attack(
    gw: &TestGateway,
    from: &str,
    trickle: bool,
    connections: &mut JoinSet<()>,
    uploads: &mut JoinSet<u16>,
) {
    let stream = tls(gw, from, "jelly.test", Proto::H2).await.unwrap();
    let (sender, connection) = hyper::client::conn::http2::handshake::<_, _, Upload>(
        TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .unwrap();
    connections.spawn(async move {
        let _ = connection.await;
    });
    for _ in 0..99 {
        let mut sender = sender.clone();
        let body = if trickle { trickling() } else { stalled() };
        uploads.spawn(async move {
            let request = Request::post("https://jelly.test/upload")
                .header("content-length", "10000000")
                .body(body)
                .unwrap();
            match sender.send_request(request).await {
                Ok(response) => response.status().as_u16(),
                Err(_) => 0,
            }
        });
    }
    let mut sender = sender.clone();
    let after = Request::get("https://jelly.test/echo")
        .body(http_body_util::Empty::new().boxed())
        .unwrap();
    let answered = sender.send_request(after).await.unwrap();
    assert_eq!(answered.status(), 200, "the attacker's own GET");
}

async fn attacked_by(addresses: usize, trickle: bool) {
    let origin = Origin::start().await;
    let gw = TestGateway::start(&site(
        "jelly.test",
        origin.addr,
        // Small, so that two addresses would take all of it.
        "upstream_max_conns = 16",
    ))
    .await;
    let mut connections = JoinSet::new();
    let mut uploads = JoinSet::new();
    for i in 0..addresses {
        attack(
            &gw,
            &format!("127.0.5.{}", i + 1),
            trickle,
            &mut connections,
            &mut uploads,
        )
        .await;
    }
    if trickle {
        // Every trickling upload has sent its first kilobyte.
        let streams = (addresses * 99 * 1024) as u64;
        crate::support::poll_until_async(
            || async {
                let text = gw.metrics().await;
                received(&text) >= streams
            },
            "the first kilobyte of every trickling upload",
        )
        .await;
    }
    // Another client: answered at once, whatever the attack.
    let other = tokio::time::timeout(
        Duration::from_secs(1),
        send(
            &gw,
            Raw {
                from: "127.0.5.200",
                ..Raw::get(Proto::H2, "jelly.test", "/echo")
            },
        ),
    )
    .await
    .unwrap_or_else(|_| {
        panic!("{addresses} attackers (trickle: {trickle}) kept another client waiting")
    });
    assert_eq!(other.status(), 200);
    // Home holds no connection for an upload: none has a complete body.
    assert_eq!(
        origin.seen.hits("/upload"),
        0,
        "an unfinished upload reached home"
    );
    let most = origin.seen.most_open.load(Ordering::SeqCst);
    assert!(
        most <= 2,
        "home held {most} connections for {addresses} attackers"
    );
    // A household upload of 20 MiB, meanwhile: intact.
    let household = tls(&gw, "127.0.5.201", "jelly.test", Proto::H2)
        .await
        .unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake::<_, _, Upload>(
        TokioExecutor::new(),
        TokioIo::new(household),
    )
    .await
    .unwrap();
    connections.spawn(async move {
        let _ = connection.await;
    });
    let upload = Request::post("https://jelly.test/upload")
        .body(megabytes(20))
        .unwrap();
    let answered = sender.send_request(upload).await.unwrap();
    assert_eq!(answered.status(), 200);
    assert_eq!(
        answered.headers()["x-body-sha256"].to_str().unwrap(),
        sha_of_megabytes(20)
    );
    assert_eq!(
        answered.headers()["x-body-framing"],
        "length",
        "sent home with its length"
    );
    assert_eq!(origin.seen.hits("/upload"), 1, "the household's alone");
    uploads.abort_all();
    connections.abort_all();
}

/// `drawbridge_received_bytes_total` for jelly.test in a metrics text.
fn received(text: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with("drawbridge_received_bytes_total{site=\"jelly.test\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn stalled_uploads_from_two_four_and_eight_addresses_hold_nothing_at_home() {
    for addresses in [2, 4, 8] {
        attacked_by(addresses, false).await;
    }
}

#[tokio::test]
async fn trickling_uploads_from_two_four_and_eight_addresses_hold_nothing_at_home() {
    for addresses in [2, 4, 8] {
        attacked_by(addresses, true).await;
    }
}

/// The edge's memory while a 20 MiB upload passes: the body goes to the
/// spool, not to memory (drawbridge as its own process, its RSS read).
#[tokio::test]
async fn a_large_upload_passes_with_flat_memory() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = crate::support::config_file(
        dir.path(),
        &format!(
            "[log]\naccess = \"off\"\n{}",
            site("jelly.test", origin.addr, "")
        ),
    );
    let edge = crate::support::Process::start(&config);
    let ca = std::fs::read(dir.path().join("state/ca/root.pem")).unwrap();
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .resolve("jelly.test", edge.https)
        .build()
        .unwrap();
    let url = format!("https://jelly.test:{}/upload", edge.https.port());
    // Warm: the first answers grow the allocator's arenas once.
    let small = client
        .post(&url)
        .body(vec![1u8; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(small.status(), 200);
    let before = crate::support::tunnel::rss_kib(edge.child.id());
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(before));
    let watch = {
        let peak = peak.clone();
        let pid = edge.child.id();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(crate::support::tunnel::rss_kib(pid), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let body = reqwest::Body::wrap_stream(
        futures_util::stream::iter(0..20)
            .map(|i| Ok::<_, std::io::Error>(Bytes::from(vec![(i % 251) as u8; 1 << 20]))),
    );
    let answered = client.post(&url).body(body).send().await.unwrap();
    watch.abort();
    assert_eq!(answered.status(), 200);
    assert_eq!(
        answered.headers()["x-body-sha256"].to_str().unwrap(),
        sha_of_megabytes(20)
    );
    let grown = peak.load(Ordering::SeqCst).saturating_sub(before);
    assert!(
        grown < 8 * 1024,
        "the edge grew by {grown} KiB for a 20 MiB upload"
    );
    // The spool file is gone with the request (unlinked from the start).
    let spool = dir.path().join("state/spool");
    let left = std::fs::read_dir(&spool).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0);
}

/// An upload over `max_body` without a length: 413 through the tunnel, over
/// HTTP/1.1 and HTTP/2, as on the direct path; nothing reaches home.
#[tokio::test]
async fn an_upload_over_the_limit_is_413_through_the_tunnel_too() {
    let home = crate::support::tunnel::Home::start("max_body = \"1MiB\"", 1).await;
    for http2 in [false, true] {
        let body = reqwest::Body::wrap_stream(
            futures_util::stream::iter(0..2)
                .map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![0u8; 1 << 20]))),
        );
        let answered = home
            .client(http2)
            .post(home.url("/upload"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(answered.status(), 413, "http2: {http2}");
    }
    assert_eq!(home.origin.seen.upload_bytes.load(Ordering::SeqCst), 0);
}
