//! The deadlines and parking of `Watched`, under a paused clock.

use super::{ConnState, Deadlines, Parked, Watched, PARK_AFTER};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn deadlines() -> Deadlines {
    Deadlines {
        head: Some(Duration::from_secs(10)),
        idle: Duration::from_secs(75),
    }
}

#[tokio::test(start_paused = true)]
async fn idle_connection_closes_after_idle_timeout_not_head_timeout() {
    let (client, server) = tokio::io::duplex(64);
    let state = Arc::new(ConnState::default());
    let mut watched = Watched::new(server, state, deadlines());
    let start = tokio::time::Instant::now();
    let mut buf = [0u8; 8];
    let err = watched.read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    assert_eq!(start.elapsed(), Duration::from_secs(75));
    drop(client);
}

#[tokio::test(start_paused = true)]
async fn partial_head_is_cut_at_head_deadline() {
    let (mut client, server) = tokio::io::duplex(64);
    let state = Arc::new(ConnState::default());
    let mut watched = Watched::new(server, state, deadlines());
    client.write_all(b"GET / HT").await.unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(watched.read(&mut buf).await.unwrap(), 8);
    let start = tokio::time::Instant::now();
    let err = watched.read(&mut buf).await.unwrap_err();
    assert_eq!(err.to_string(), "request head not received in time");
    assert_eq!(start.elapsed(), Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn no_deadline_while_a_request_is_in_flight() {
    let (mut client, server) = tokio::io::duplex(64);
    let state = Arc::new(ConnState::default());
    let mut watched = Watched::new(server, state.clone(), deadlines());
    client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(watched.read(&mut buf).await.unwrap(), 18);
    let in_flight = state.request_started();
    let read = tokio::time::timeout(Duration::from_secs(3600), watched.read(&mut buf)).await;
    assert!(read.is_err(), "an hour-long response is not cut");
    drop(in_flight);
    let start = tokio::time::Instant::now();
    assert!(watched.read(&mut buf).await.is_err());
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(75),
        "idle counts from the response's end"
    );
}

#[tokio::test(start_paused = true)]
async fn idle_clock_restarts_when_the_response_ends_during_a_pending_read() {
    let (_client, server) = tokio::io::duplex(64);
    let state = Arc::new(ConnState::default());
    let mut watched = Watched::new(server, state.clone(), deadlines());
    let in_flight = state.request_started();
    // hyper polls for the next request while the response is still streaming.
    let ended = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(500)).await;
        drop(in_flight);
        tokio::time::Instant::now()
    });
    let mut buf = [0u8; 8];
    assert!(watched.read(&mut buf).await.is_err());
    let closed_at = tokio::time::Instant::now();
    assert_eq!(closed_at - ended.await.unwrap(), Duration::from_secs(75));
}

#[tokio::test(start_paused = true)]
async fn upgraded_connections_have_no_deadline() {
    let (_client, server) = tokio::io::duplex(64);
    let state = Arc::new(ConnState::default());
    let mut watched = Watched::new(server, state.clone(), deadlines());
    state.mark_upgraded();
    let mut buf = [0u8; 8];
    let read = tokio::time::timeout(Duration::from_secs(86_400), watched.read(&mut buf)).await;
    assert!(read.is_err(), "still open after a day of silence");
}

/// A Watched that may park, after one request read and answered.
async fn answered(
    request: &[u8],
) -> (
    tokio::io::DuplexStream,
    Watched<tokio::io::DuplexStream>,
    tokio::sync::oneshot::Receiver<Parked<tokio::io::DuplexStream>>,
    Arc<ConnState>,
) {
    let (mut client, server) = tokio::io::duplex(256);
    let state = Arc::new(ConnState::default());
    let (mut watched, back) = Parked::new(server, state.clone(), deadlines()).wake();
    client.write_all(request).await.unwrap();
    let mut buf = [0u8; 256];
    assert_eq!(watched.read(&mut buf).await.unwrap(), request.len());
    let in_flight = state.request_started();
    watched.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
    drop(in_flight);
    watched.flush().await.unwrap();
    (client, watched, back, state)
}

#[tokio::test(start_paused = true)]
async fn quiet_answered_connection_parks_and_comes_back() {
    let (mut client, mut watched, mut back, _state) =
        answered(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let start = tokio::time::Instant::now();
    let mut buf = [0u8; 64];
    assert_eq!(
        watched.read(&mut buf).await.unwrap(),
        0,
        "end-of-stream for hyper"
    );
    assert_eq!(start.elapsed(), PARK_AFTER);
    watched.shutdown().await.unwrap();
    assert!(back.try_recv().is_err(), "still with hyper until dropped");
    drop(watched);
    let parked = back.try_recv().expect("handed back on drop");
    // The client's side is still open, and what it sends next is there.
    client
        .write_all(b"GET /next HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    let (mut watched, _back) = parked.wake();
    let n = watched.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"GET /next HTTP/1.1\r\n\r\n");
}

/// Reads until the idle deadline: an error, never a parking end-of-stream.
async fn never_parks(mut watched: Watched<tokio::io::DuplexStream>) {
    let mut buf = [0u8; 64];
    let read = watched.read(&mut buf).await;
    assert!(read.is_err(), "the idle deadline, not parking: {read:?}");
}

#[tokio::test(start_paused = true)]
async fn never_parks_with_bytes_hyper_may_hold() {
    // A pipelined request read together with the first.
    let (_c, watched, _b, _s) = answered(b"GET / HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n").await;
    never_parks(watched).await;
    // A request with a body.
    let (_c, watched, _b, _s) = answered(b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi").await;
    never_parks(watched).await;
}

#[tokio::test(start_paused = true)]
async fn never_parks_while_answering_or_unflushed_or_upgraded() {
    let (mut client, server) = tokio::io::duplex(256);
    let state = Arc::new(ConnState::default());
    let (mut watched, _back) = Parked::new(server, state.clone(), deadlines()).wake();
    let mut buf = [0u8; 64];
    client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    assert_eq!(watched.read(&mut buf).await.unwrap(), 18);
    let in_flight = state.request_started();
    let read = tokio::time::timeout(Duration::from_secs(60), watched.read(&mut buf)).await;
    assert!(
        read.is_err(),
        "no end-of-stream while a request is answered"
    );
    drop(in_flight);
    // Answered but never flushed.
    never_parks(watched).await;
    let (_c, watched, _b, state) = answered(b"GET /ws HTTP/1.1\r\n\r\n").await;
    state.mark_upgraded();
    let mut watched = watched;
    let read = tokio::time::timeout(Duration::from_secs(600), watched.read(&mut buf)).await;
    assert!(read.is_err(), "an upgraded connection is never parked");
}

#[tokio::test(start_paused = true)]
async fn plain_watched_never_parks() {
    let (mut client, server) = tokio::io::duplex(256);
    let state = Arc::new(ConnState::default());
    let mut watched = Watched::new(server, state.clone(), deadlines());
    client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(watched.read(&mut buf).await.unwrap(), 18);
    drop(state.request_started());
    watched.flush().await.unwrap();
    never_parks(watched).await;
}
