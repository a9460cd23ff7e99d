//! Answers that are ready together on one HTTP/2 connection leave together:
//! in shared TLS records, not one record (and one system call, and one
//! decryption for the client) per answer; and every answer arrives whole,
//! also when the client stops reading for a while with large and small
//! answers on their way.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;
use std::task::Waker;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use tokio::sync::Barrier;

use crate::support::origin::{video_byte, VIDEO_LEN};
use crate::support::{site, TestGateway};

/// Answers held until this many requests are in, then all sent at once.
const TOGETHER: usize = 16;

/// An origin that answers `/n/<i>` with 1,000 bytes of `i` once `TOGETHER`
/// requests are waiting.
async fn origin_answering_together() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let barrier = Arc::new(Barrier::new(TOGETHER));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let barrier = barrier.clone();
                    async move {
                        let i: u8 = request.uri().path()[3..].parse().unwrap();
                        barrier.wait().await;
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(vec![
                            b'a' + i;
                            1000
                        ]))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// The client's TCP stream: counts the TLS records it receives, and can hold
/// its reads (while `held` the client reads nothing, so the proxy's socket
/// fills).
struct ClientIo {
    tcp: TcpStream,
    records: Arc<AtomicUsize>,
    /// Bytes of the current record's header seen, and of its body still to skip.
    header: Vec<u8>,
    skip: usize,
    held: Arc<AtomicBool>,
    waiting: Arc<Mutex<Option<Waker>>>,
}

/// What a test sees of and does to its client's stream.
#[derive(Clone, Default)]
struct Watch {
    records: Arc<AtomicUsize>,
    held: Arc<AtomicBool>,
    waiting: Arc<Mutex<Option<Waker>>>,
}

impl Watch {
    fn hold(&self) {
        self.held.store(true, Ordering::Release);
    }

    fn release(&self) {
        self.held.store(false, Ordering::Release);
        if let Some(waker) = self.waiting.lock().unwrap().take() {
            waker.wake();
        }
    }
}

/// An HTTP/2 client on `tcp` to the gateway, and the watch on its stream.
async fn h2_client(
    gw: &TestGateway,
    tcp: TcpStream,
) -> (hyper::client::conn::http2::SendRequest<Empty<Bytes>>, Watch) {
    let watch = Watch::default();
    let io = ClientIo {
        tcp,
        records: watch.records.clone(),
        header: Vec::new(),
        skip: 0,
        held: watch.held.clone(),
        waiting: watch.waiting.clone(),
    };
    let tls = tokio_rustls::TlsConnector::from(gw.tls_client(&[b"h2"]))
        .connect("jelly.test".try_into().unwrap(), io)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    (sender, watch)
}

impl ClientIo {
    fn scan(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (5 - self.header.len()).min(bytes.len());
            self.header.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.header.len() == 5 {
                self.skip = u16::from_be_bytes([self.header[3], self.header[4]]) as usize;
                self.header.clear();
                self.records.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl AsyncRead for ClientIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.held.load(Ordering::Acquire) {
            *self.waiting.lock().unwrap() = Some(cx.waker().clone());
            // Checked again: a release between the two would be missed.
            if self.held.load(Ordering::Acquire) {
                return Poll::Pending;
            }
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.tcp).poll_read(cx, buf);
        let fresh = buf.filled()[before..].to_vec();
        self.scan(&fresh);
        polled
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn answers_ready_together_share_tls_records_and_arrive_whole() {
    let origin = origin_answering_together().await;
    let gw = TestGateway::start(&site("jelly.test", origin, "")).await;
    let (sender, watch) = h2_client(&gw, TcpStream::connect(gw.https).await.unwrap()).await;
    let records = watch.records;

    // Twice: the first round also opens the upstream connections.
    for round in 0..2 {
        let before = records.load(Ordering::Relaxed);
        let requests = (0..TOGETHER).map(|i| {
            let mut sender = sender.clone();
            let uri = format!("https://jelly.test:{}/n/{i}", gw.https.port());
            async move {
                let request = Request::get(uri).body(Empty::<Bytes>::new()).unwrap();
                let response = sender.send_request(request).await.unwrap();
                assert_eq!(response.status(), 200);
                let body = response.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(
                    body,
                    vec![b'a' + i as u8; 1000],
                    "answer {i} whole and its own"
                );
            }
        });
        futures_util::future::join_all(requests).await;
        let used = records.load(Ordering::Relaxed) - before;
        // One record per answer before coalescing; the client's own
        // acknowledgements and window updates arrive in none of these.
        assert!(
            used <= TOGETHER / 2,
            "round {round}: {TOGETHER} answers ready together came in {used} TLS records"
        );
    }
}

#[tokio::test]
async fn large_and_small_answers_arrive_whole_after_the_client_stops_reading() {
    let (origin, gw) = TestGateway::in_front_of_jellyfin("").await;
    // A small receive buffer, so that the proxy's socket fills soon.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let (sender, watch) = h2_client(&gw, socket.connect(gw.https).await.unwrap()).await;
    // Held while the answers are on their way: the proxy's socket fills with
    // the videos, and small answers queue behind them.
    watch.hold();
    let get = |path: &'static str| {
        let mut sender = sender.clone();
        let uri = format!("https://jelly.test:{}{path}", gw.https.port());
        tokio::spawn(async move {
            let request = Request::get(uri).body(Empty::<Bytes>::new()).unwrap();
            let response = sender.send_request(request).await.unwrap();
            assert_eq!(response.status(), 200, "{path}");
            response.into_body().collect().await.unwrap().to_bytes()
        })
    };
    let videos: Vec<_> = (0..3).map(|_| get("/videos/v/stream")).collect();
    let smalls: Vec<_> = (0..12).map(|_| get("/system/info/public")).collect();
    // Every request has reached the origin; then the client keeps not
    // reading for a while — the behaviour under test, so a fixed time: the
    // proxy's socket fills and its buffered path meets `Pending`.
    crate::support::poll_until(|| origin.seen.total() >= 15, "all 15 requests upstream").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    watch.release();
    let whole: Vec<u8> = (0..VIDEO_LEN).map(video_byte).collect();
    for video in videos {
        let body = tokio::time::timeout(Duration::from_secs(10), video)
            .await
            .expect("the video arrives once the client reads again")
            .unwrap();
        assert!(
            body == whole,
            "video whole and in order ({} bytes)",
            body.len()
        );
    }
    for small in smalls {
        let body = small.await.unwrap();
        assert!(
            body.starts_with(b"{") && body.ends_with(b"}"),
            "small answer whole: {body:?}"
        );
    }
}
