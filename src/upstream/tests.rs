use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::dial::interleaved;
use super::pool::{Lease, Pool, PooledConn, UpstreamBody, POOL_IDLE, SWEEP_EVERY};
use crate::body::empty_body;

/// An origin answering every request on a connection with `answer`; with
/// `close_after`, it closes the connection that long after its first answer.
async fn origin(answer: &'static [u8], close_after: Option<Duration>) -> SocketAddr {
    origin_telling_closes(answer, close_after).await.0
}

/// `origin`, also telling when drawbridge closed one of its connections.
async fn origin_telling_closes(
    answer: &'static [u8],
    close_after: Option<Duration>,
) -> (SocketAddr, mpsc::UnboundedReceiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (closed, closes) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let closed = closed.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        let _ = closed.send(());
                        return;
                    }
                    if stream.write_all(answer).await.is_err() {
                        return;
                    }
                    if let Some(after) = close_after {
                        tokio::time::sleep(after).await;
                        return;
                    }
                }
            });
        }
    });
    (addr, closes)
}

async fn connect(addr: SocketAddr) -> PooledConn {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let permit = Arc::new(tokio::sync::Semaphore::new(1))
        .try_acquire_owned()
        .unwrap();
    PooledConn { sender, permit }
}

/// Sends one GET on `conn` and returns its body, leased from `pool`.
async fn get(mut conn: PooledConn, pool: &Arc<Pool>, epoch: u64) -> UpstreamBody {
    let request = Request::get("/").body(empty_body()).unwrap();
    let response = conn.sender.send_request(request).await.unwrap();
    let lease = Lease {
        conn,
        epoch,
        pool: pool.clone(),
    };
    UpstreamBody::new(response.into_body(), lease)
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

#[tokio::test]
async fn a_body_read_to_its_end_gives_its_connection_back_for_the_next_request() {
    let addr = origin(OK, None).await;
    let pool = Arc::new(Pool::default());
    let body = get(connect(addr).await, &pool, 0).await;
    assert_eq!(pool.idle(), 0, "lent while the body is read");
    let read = body.collect().await.unwrap().to_bytes();
    assert_eq!(read, Bytes::from_static(b"ok"));
    assert_eq!(pool.idle(), 1);
    let again = pool.checkout(0).expect("the same connection, ready");
    let body = get(again, &pool, 0).await;
    assert_eq!(body.collect().await.unwrap().to_bytes(), "ok");
    assert_eq!(pool.idle(), 1, "still one connection");
}

#[tokio::test]
async fn a_body_dropped_after_its_last_frame_counts_as_read() {
    // hyper stops polling a body that says it has ended.
    let addr = origin(OK, None).await;
    let pool = Arc::new(Pool::default());
    let mut body = get(connect(addr).await, &pool, 0).await;
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "ok");
    assert!(body.is_end_stream());
    drop(body);
    assert_eq!(pool.idle(), 1);
}

#[tokio::test]
async fn a_body_dropped_half_read_takes_its_connection_with_it() {
    let addr = origin(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok", None).await;
    let pool = Arc::new(Pool::default());
    let mut body = get(connect(addr).await, &pool, 0).await;
    let _ = body.frame().await;
    drop(body);
    assert_eq!(pool.idle(), 0, "mid-message: cannot carry another request");
}

#[tokio::test]
async fn dns_moving_on_retires_idle_connections() {
    let addr = origin(OK, None).await;
    let pool = Arc::new(Pool::default());
    let body = get(connect(addr).await, &pool, 0).await;
    body.collect().await.unwrap();
    assert_eq!(pool.idle(), 1);
    assert!(pool.checkout(1).is_none(), "made for the old addresses");
    assert_eq!(pool.idle(), 0);
    // One lent under the old epoch is not taken back either.
    let body = get(connect(addr).await, &pool, 0).await;
    body.collect().await.unwrap();
    assert_eq!(pool.idle(), 0);
}

#[tokio::test]
async fn a_connection_the_upstream_closed_is_never_checked_out() {
    let addr = origin(OK, Some(Duration::from_millis(100))).await;
    let pool = Arc::new(Pool::default());
    let sender = connect(addr).await;
    let body = get(sender, &pool, 0).await;
    body.collect().await.unwrap();
    assert_eq!(pool.idle(), 1, "given back before the close arrives");
    // The upstream closes it 100 ms after answering.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        pool.checkout(0).is_none(),
        "a closed connection was offered"
    );
    assert_eq!(pool.idle(), 0, "and it was dropped, not kept");
}

#[tokio::test(start_paused = true)]
async fn a_connection_idle_past_the_pool_idle_time_is_closed_not_reused() {
    let addr = origin(OK, None).await;
    let pool = Arc::new(Pool::default());
    get(connect(addr).await, &pool, 0)
        .await
        .collect()
        .await
        .unwrap();
    tokio::time::advance(POOL_IDLE - Duration::from_secs(1)).await;
    let sender = pool.checkout(0).expect("not yet aged");
    get(sender, &pool, 0).await.collect().await.unwrap();
    tokio::time::advance(POOL_IDLE).await;
    assert!(pool.checkout(0).is_none(), "aged past POOL_IDLE");
    assert_eq!(pool.idle(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_sweep_closes_connections_idle_past_the_pool_idle_time_with_no_request_coming() {
    let (addr, mut closes) = origin_telling_closes(OK, None).await;
    let pool = Arc::new(Pool::default());
    let shutdown = CancellationToken::new();
    tokio::spawn(super::pool::sweep(Arc::downgrade(&pool), shutdown.clone()));
    get(connect(addr).await, &pool, 0)
        .await
        .collect()
        .await
        .unwrap();
    tokio::time::advance(POOL_IDLE - SWEEP_EVERY).await;
    assert_eq!(pool.idle(), 1, "not yet aged");
    tokio::time::advance(2 * SWEEP_EVERY).await;
    assert_eq!(pool.idle(), 0, "swept without a checkout");
    closes
        .recv()
        .await
        .expect("the origin saw the connection close");
    shutdown.cancel();
}

#[test]
fn addresses_alternate_families_starting_with_the_first() {
    let v4 = |n| IpAddr::V4(Ipv4Addr::new(192, 0, 2, n));
    let v6 = |n| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, n));
    assert_eq!(
        interleaved(&[v6(1), v6(2), v6(3), v4(1)]),
        [v6(1), v4(1), v6(2), v6(3)]
    );
    assert_eq!(
        interleaved(&[v4(1), v4(2), v6(1), v6(2), v6(3)]),
        [v4(1), v6(1), v4(2), v6(2), v6(3)]
    );
    assert!(interleaved(&[]).is_empty());
}
