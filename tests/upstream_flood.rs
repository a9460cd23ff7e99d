//! One client cannot make the home server hold thousands of connections:
//! HTTP/2 streams for a route home never answers each want an upstream
//! connection; the site's cap (`upstream_max_conns`) and the client's share
//! of it hold, the rest wait in a bounded queue (past its
//! bound: 503 with Retry-After at once; in it: 503 after `response_timeout`),
//! another client is served all along, and the queue empties when the
//! flooder leaves.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::task::JoinSet;

use crate::support::origin::Origin;
use crate::support::raw::{send, tls, Proto, Raw};
use crate::support::{site, TestGateway};

type Never = BoxBody<Bytes, Infallible>;

/// No request body.
fn nothing() -> Never {
    http_body_util::Empty::new().boxed()
}

/// Waits until `done` holds, checking every 20 ms, for at most `wait`.
async fn until(wait: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    while tokio::time::Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done()
}

#[tokio::test]
async fn a_thousand_hanging_requests_from_one_client_hold_its_share_and_no_more() {
    let origin = Origin::start().await;
    let gw = TestGateway::start(&site(
        "jelly.test",
        origin.addr,
        "upstream_max_conns = 20\nresponse_timeout = \"30s\"",
    ))
    .await;

    // Ten connections from one address, a hundred requests on each that
    // home never answers. (Stalled uploads hold nothing at home at all:
    // `stalled_uploads.rs`.)
    let mut connections = JoinSet::new();
    let mut streams = JoinSet::new();
    for _ in 0..10 {
        let stream = tls(&gw, "127.0.4.1", "jelly.test", Proto::H2)
            .await
            .unwrap();
        let (sender, connection) = hyper::client::conn::http2::handshake::<_, _, Never>(
            TokioExecutor::new(),
            TokioIo::new(stream),
        )
        .await
        .unwrap();
        connections.spawn(connection);
        for _ in 0..100 {
            let mut sender = sender.clone();
            streams.spawn(async move {
                let request = Request::get("https://jelly.test/hang")
                    .body(nothing())
                    .unwrap();
                match sender.send_request(request).await {
                    Ok(response) => (
                        response.status().as_u16(),
                        response.headers().contains_key("retry-after"),
                    ),
                    Err(_) => (0, false),
                }
            });
        }
    }

    // Its share (half of 20) reaches the origin, and no more.
    assert!(
        until(Duration::from_secs(10), || origin
            .seen
            .open
            .load(Ordering::SeqCst)
            >= 10)
        .await,
        "the flooder's share never reached the origin"
    );

    // Another client is served meanwhile, over its own HTTP/2 connection.
    let other = tokio::time::timeout(
        Duration::from_secs(5),
        send(
            &gw,
            Raw {
                from: "127.0.4.2",
                ..Raw::get(Proto::H2, "jelly.test", "/echo")
            },
        ),
    )
    .await
    .expect("another client waited behind the flood");
    assert_eq!(other.status(), 200);

    // Past the share and the queue's bound (4 per connection of the cap:
    // 80), streams are answered 503 + Retry-After at once, long before
    // response_timeout; the share and the queue wait.
    for _ in 0..(1000 - 10 - 80) {
        let next = tokio::time::timeout(Duration::from_secs(10), streams.join_next())
            .await
            .expect("a stream past the queue's bound waited")
            .expect("answers before the held and queued streams");
        assert_eq!(
            next.unwrap(),
            (503, true),
            "a stream past the queue's bound"
        );
    }
    assert_eq!(
        streams.len(),
        90,
        "the share and the queue are still waiting"
    );
    let most = origin.seen.most_open.load(Ordering::SeqCst);
    assert!(
        most <= 20,
        "the origin held {most} connections; the cap is 20"
    );
    assert!(
        origin.seen.open.load(Ordering::SeqCst) <= 11,
        "more than the flooder's share and one pooled connection are open"
    );

    // The flooder leaves: its connections to the origin close, and it is
    // served again at once.
    streams.abort_all();
    connections.abort_all();
    assert!(
        until(Duration::from_secs(10), || origin
            .seen
            .open
            .load(Ordering::SeqCst)
            <= 1)
        .await,
        "the flooder's upstream connections outlived it: {}",
        origin.seen.open.load(Ordering::SeqCst)
    );
    let back = send(
        &gw,
        Raw {
            from: "127.0.4.1",
            ..Raw::get(Proto::H2, "jelly.test", "/echo")
        },
    )
    .await;
    assert_eq!(back.status(), 200, "the share came back");
}

#[tokio::test]
async fn websockets_count_toward_the_cap() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let origin = Origin::start().await;
    let gw = TestGateway::start(&site(
        "jelly.test",
        origin.addr,
        "upstream_max_conns = 4\nupstream_max_conns_per_client = 4\nresponse_timeout = \"1s\"",
    ))
    .await;
    let mut sockets = Vec::new();
    for _ in 0..4 {
        let stream = tls(&gw, "127.0.4.3", "jelly.test", Proto::H1)
            .await
            .unwrap();
        let (mut socket, _) = tokio_tungstenite::client_async(
            format!(
                "wss://jelly.test/socket?api_key={}",
                crate::support::origin::TEST_API_KEY
            ),
            stream,
        )
        .await
        .unwrap();
        let hello = socket.next().await.unwrap().unwrap();
        assert!(matches!(hello, Message::Text(_)));
        sockets.push(socket);
    }
    let fifth = send(
        &gw,
        Raw {
            from: "127.0.4.4",
            ..Raw::get(Proto::H1, "jelly.test", "/echo")
        },
    )
    .await;
    assert_eq!(fifth.status(), 503, "four WebSockets fill a cap of four");
    let mut first = sockets.remove(0);
    first.close(None).await.unwrap();
    drop(first);
    let mut served = false;
    for _ in 0..50 {
        let again = send(
            &gw,
            Raw {
                from: "127.0.4.4",
                ..Raw::get(Proto::H1, "jelly.test", "/echo")
            },
        )
        .await;
        if again.status() == 200 {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served, "a closed WebSocket gives its place back");
    for socket in &mut sockets {
        socket.send(Message::text("KeepAlive")).await.unwrap();
    }
}
