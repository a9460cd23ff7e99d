//! WebSocket through drawbridge: HTTP/1.1 Upgrade and HTTP/2 extended CONNECT
//! (RFC 8441) from the client, HTTP/1.1 Upgrade to Jellyfin; the socket
//! survives silence longer than every idle timeout; a refused upgrade's answer
//! reaches the client; open sockets get Close 1001 (Going Away) when shutdown
//! begins.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::support::origin::Origin;
use crate::support::{site, TestGateway};

/// Idle timeouts far below the silence the tests keep.
const SHORT_IDLE: &str =
    "[limits]\nkeepalive_timeout = \"1s\"\nh2_idle_timeout = \"1s\"\nheader_timeout = \"1s\"\n\n";

async fn jellyfin_exchange<S>(ws: &mut WebSocketStream<S>, silence: Duration)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let hello = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        hello,
        Message::text(r#"{"MessageType":"ForceKeepAlive","Data":60}"#)
    );
    tokio::time::sleep(silence).await;
    ws.send(Message::text(r#"{"MessageType":"KeepAlive"}"#))
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(answer, Message::text(r#"{"MessageType":"KeepAlive"}"#));
    ws.send(Message::text("ping")).await.unwrap();
    let echo = ws.next().await.unwrap().unwrap();
    assert_eq!(echo, Message::text("echo:ping"));
}

#[tokio::test]
async fn http1_upgrade_round_trip_survives_silence() {
    let origin = Origin::start().await;
    let gw = TestGateway::start(&format!(
        "{SHORT_IDLE}{}",
        site("jelly.test", origin.addr, "")
    ))
    .await;
    let tls = gw
        .tls_connect(Some("jelly.test"), &[b"http/1.1"])
        .await
        .unwrap();
    let url = format!(
        "wss://jelly.test:{}/socket?api_key={}&deviceId=d",
        gw.https.port(),
        crate::support::origin::TEST_API_KEY
    );
    let (mut ws, response) = tokio_tungstenite::client_async(url, tls).await.unwrap();
    assert_eq!(response.status(), 101);
    jellyfin_exchange(&mut ws, Duration::from_millis(2500)).await;
}

#[tokio::test]
async fn http2_extended_connect_round_trip_survives_silence() {
    let origin = Origin::start().await;
    let gw = TestGateway::start(&format!(
        "{SHORT_IDLE}{}",
        site("jelly.test", origin.addr, "")
    ))
    .await;
    let tls = gw.tls_connect(Some("jelly.test"), &[b"h2"]).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let base = format!("https://jelly.test:{}", gw.https.port());
    // One ordinary request first, so the server's SETTINGS (extended CONNECT on) are in.
    let probe = http::Request::get(format!("{base}/System/Info/Public"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    assert_eq!(sender.send_request(probe).await.unwrap().status(), 200);
    let key = crate::support::origin::TEST_API_KEY;
    let connect = http::Request::connect(format!("{base}/socket?api_key={key}"))
        .extension(hyper::ext::Protocol::from_static("websocket"))
        .header("sec-websocket-version", "13")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(connect).await.unwrap();
    assert_eq!(response.status(), 200);
    let upgraded = hyper::upgrade::on(response).await.unwrap();
    let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await;
    jellyfin_exchange(&mut ws, Duration::from_millis(2500)).await;
    // The same HTTP/2 connection still serves requests beside the socket.
    let again = http::Request::get(format!("{base}/System/Info/Public"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    assert_eq!(sender.send_request(again).await.unwrap().status(), 200);
}

#[tokio::test]
async fn refused_upgrade_answer_reaches_the_client() {
    let (_origin, gw) = TestGateway::in_front_of_jellyfin("").await;
    let tls = gw
        .tls_connect(Some("jelly.test"), &[b"http/1.1"])
        .await
        .unwrap();
    let url = format!("wss://jelly.test:{}/socket", gw.https.port());
    let error = tokio_tungstenite::client_async(url, tls).await.unwrap_err();
    match error {
        // Jellyfin answers a socket without credentials 403.
        tokio_tungstenite::tungstenite::Error::Http(response) => assert_eq!(response.status(), 403),
        other => panic!("expected the origin's 403, got {other:?}"),
    }
}

/// A Jellyfin socket through `gw` over HTTP/1.1, its first message read.
async fn open_socket(
    gw: &TestGateway,
) -> WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tls = gw
        .tls_connect(Some("jelly.test"), &[b"http/1.1"])
        .await
        .unwrap();
    let url = format!(
        "wss://jelly.test:{}/socket?api_key={}",
        gw.https.port(),
        crate::support::origin::TEST_API_KEY
    );
    let (mut ws, _) = tokio_tungstenite::client_async(url, tls).await.unwrap();
    let _hello = ws.next().await.unwrap().unwrap();
    ws
}

#[tokio::test]
async fn a_reload_does_not_cut_an_open_socket() {
    let (origin, gw) = TestGateway::in_front_of_jellyfin("").await;
    let mut ws = open_socket(&gw).await;
    // Reload to a config where the site is gone: new requests are refused,
    // the open socket carries on.
    let path = gw.dir.path().join("drawbridge.toml");
    let other = format!(
        "{}[log]\naccess = \"off\"\n{}",
        crate::support::server_block(gw.dir.path()),
        site("other.test", origin.addr, "")
    );
    std::fs::write(&path, other).unwrap();
    gw.reloader
        .reload(drawbridge::config::Config::load(&path).unwrap())
        .await
        .unwrap();
    ws.send(Message::text("still here")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("echo:still here")
    );
}

#[tokio::test]
async fn open_sockets_are_told_going_away_at_shutdown() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    let origin = Origin::start().await;
    let gw = TestGateway::start_with_server_extra(
        tempfile::tempdir().unwrap(),
        "shutdown_grace = \"1s\"\n",
        &site("jelly.test", origin.addr, ""),
    )
    .await;
    let mut ws = open_socket(&gw).await;
    // A frame in flight when the grace ends must not be broken by the Close.
    ws.send(Message::text("ping")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("echo:ping")
    );
    gw.begin_shutdown();
    let last = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("the socket was left hanging")
        .expect("closed without a Close frame")
        .expect("a broken frame instead of a Close");
    match last {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("not Close 1001: {other:?}"),
    }
}
