//! Trailers: an answer's come back to a client who said `TE: trailers`,
//! over HTTP/1.1 and HTTP/2, on the direct path and through the tunnel; a
//! request's never reach home, so fields hidden there cannot pass the
//! rewrites of the head (an X-Forwarded-For, an Authorization).

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::support::tunnel::Home;
use crate::support::{client_config, tls_connect, TestGateway};

/// What came back for `/trailers`.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
    trailers: Option<HeaderMap>,
}

/// A POST of `/trailers` to jelly.test at `https` over a fresh connection:
/// `te` sent or not; the body ends with trailers a client should not get
/// home (announced by `Trailer`, as HTTP/1.1 needs).
async fn exchange(https: SocketAddr, ca_pem: &[u8], http2: bool, te: bool) -> Answer {
    let alpn: &[&[u8]] = if http2 { &[b"h2"] } else { &[b"http/1.1"] };
    let tls = tls_connect(https, client_config(ca_pem, alpn), Some("jelly.test"))
        .await
        .unwrap();
    let mut smuggled = HeaderMap::new();
    smuggled.insert("x-forwarded-for", "6.6.6.6".parse().unwrap());
    smuggled.insert(
        "authorization",
        "MediaBrowser Token=\"stolen\"".parse().unwrap(),
    );
    let frames = vec![
        Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(b"upload"))),
        Ok(Frame::trailers(smuggled)),
    ];
    let mut request = Request::post(format!("https://jelly.test:{}/trailers", https.port()))
        .header("host", format!("jelly.test:{}", https.port()))
        .header("trailer", "x-forwarded-for, authorization");
    if te {
        request = request.header("te", "trailers");
    }
    let request = request
        .body(StreamBody::new(futures_util::stream::iter(frames)))
        .unwrap();
    let response = if http2 {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(connection);
        // HTTP/2 has no Host header; `:authority` comes from the URI.
        let (mut parts, body) = request.into_parts();
        parts.headers.remove("host");
        parts.headers.remove("trailer");
        sender
            .send_request(Request::from_parts(parts, body))
            .await
            .unwrap()
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(connection);
        sender.send_request(request).await.unwrap()
    };
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    Answer {
        status,
        headers,
        body: collected.to_bytes(),
        trailers,
    }
}

/// Every combination of version and TE at `https`: the answer's trailer
/// exactly when asked for, the request's trailers never.
async fn check_all(https: SocketAddr, ca_pem: &[u8]) {
    for http2 in [false, true] {
        for te in [true, false] {
            let what = format!("http2 {http2}, te {te}");
            let answer = exchange(https, ca_pem, http2, te).await;
            assert_eq!(answer.status, 200, "{what}");
            assert_eq!(answer.body, "part one\npart two\n", "{what}");
            assert_eq!(
                answer.headers["x-request-trailers"], "",
                "{what}: a request's trailers reached home"
            );
            if te {
                assert_eq!(answer.headers["x-te"], "trailers", "{what}");
                let trailers = answer.trailers.expect("the answer's trailer");
                assert_eq!(trailers["x-checksum"], "sum-42", "{what}");
            } else {
                assert!(answer.headers.get("x-te").is_none(), "{what}");
                assert!(answer.trailers.is_none(), "{what}");
            }
        }
    }
}

#[tokio::test]
async fn trailers_come_back_to_who_asks_and_a_requests_never_go_home() {
    let (_origin, gw) = TestGateway::in_front_of_jellyfin("").await;
    check_all(gw.https, gw.ca_pem.as_deref().unwrap()).await;
}

#[tokio::test]
async fn trailers_cross_the_tunnel_the_same_way() {
    let home = Home::start("", 1).await;
    let ca_pem = home.ca_pem();
    check_all(home.edge.https, &ca_pem).await;
}
