//! One accepted connection: the TLS handshake (bounded in time), then exactly
//! the protocol ALPN agreed (RFC 7301: `h2` is HTTP/2, anything else or no
//! ALPN is HTTP/1.1, plain HTTP too) with the protocol limits of `[limits]`,
//! until the client leaves, a deadline passes, the pipeline closes the door,
//! or shutdown drains it. No guessing from the first bytes: an HTTP/1.1
//! request after `h2` ends the connection (hyper's HTTP/2 server closes it),
//! an HTTP/2 preface after `http/1.1` gets HTTP/1.1's 400.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::LazyConfigAcceptor;

use crate::config::normalise_host;
use crate::guard::Guard;
use crate::proxy_protocol::{self, Rewind};
use crate::tls::challenges::ACME_TLS_ALPN;
use crate::tls::failures::{Failure, HandshakeFailures};
use crate::tls::{ServerConfigs, TlsStore, FIRST_CERTIFICATE_WAIT};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::body::{Body, ClientBody};
use crate::coalesce::Coalesce;
use crate::config::Limits;
use crate::deadline::{ConnState, Deadlines, Parked, Readiness};
use crate::pipeline::{Closed, Conn, Gateway};

/// Everything a connection needs, shared by all connections of the process.
pub struct Shared {
    /// The request handler.
    pub gateway: Arc<Gateway>,
    /// The rustls config (its resolver reads `certificates`).
    pub tls: ServerConfigs,
    /// Certificates by SNI, to wait for an ACME site's first one.
    pub certificates: Arc<TlsStore>,
    /// Protocol limits (fixed at start).
    pub limits: Limits,
    /// hyper's connection builders, configured once from `limits`.
    pub http: HttpBuilders,
    /// Fired when the shutdown grace is over: every connection and tunnel ends.
    pub kill: CancellationToken,
    /// Bans and connection limits.
    pub guard: Arc<Guard>,
    /// Failed handshakes, summed up once a minute.
    pub handshake_failures: Arc<HandshakeFailures>,
    /// Every connection's task and every WebSocket tunnel: shutdown waits
    /// for them, up to its grace.
    pub tasks: tokio_util::task::TaskTracker,
}

/// hyper's builders for the two protocols, each serving only its own (not
/// hyper-util's auto builder, which guesses the protocol from the first
/// bytes whatever ALPN said).
#[derive(Debug, Clone)]
pub struct HttpBuilders {
    /// HTTP/1.1.
    pub h1: http1::Builder,
    /// HTTP/2.
    pub h2: http2::Builder<TokioExecutor>,
}

impl HttpBuilders {
    /// Both builders with every limit of `limits` set explicitly.
    pub fn new(limits: &Limits) -> HttpBuilders {
        let mut h1 = http1::Builder::new();
        h1.timer(TokioTimer::new())
            // Head and idle deadlines are ours (deadline/): hyper's would also
            // run while a keep-alive connection waits.
            .header_read_timeout(None)
            .max_headers(limits.max_headers)
            // A head over `max_head` gets 431, whether it arrives in
            // pieces (the read buffer's bound) or in one read (the parsed
            // head's).
            .max_buf_size(limits.max_head)
            .max_header_size(limits.max_head)
            .keep_alive(true);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_concurrent_streams(limits.h2_max_concurrent_streams)
            .max_header_list_size(16 * 1024)
            // Rapid Reset (CVE-2023-44487) and MadeYouReset (CVE-2025-8671) bounds.
            .max_pending_accept_reset_streams(20)
            .max_local_error_reset_streams(1024)
            .initial_stream_window_size(1024 * 1024)
            .initial_connection_window_size(2 * 1024 * 1024)
            .enable_connect_protocol();
        HttpBuilders { h1, h2 }
    }
}

/// A connection being served, in one of the two protocols.
enum Serving<H1, H2> {
    H1(Pin<Box<H1>>),
    H2(Pin<Box<H2>>),
}

impl<H1, H2> Future for Serving<H1, H2>
where
    H1: Future<Output = hyper::Result<()>>,
    H2: Future<Output = hyper::Result<()>>,
{
    type Output = hyper::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Serving::H1(connection) => connection.as_mut().poll(cx),
            Serving::H2(connection) => connection.as_mut().poll(cx),
        }
    }
}

/// What a listener speaks.
#[derive(Debug, Clone, Copy)]
pub struct ListenerKind {
    /// TLS (else plain HTTP).
    pub tls: bool,
    /// A PROXY protocol header comes first.
    pub proxy_protocol: bool,
}

/// Serves one accepted TCP connection until it ends.
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    listener: ListenerKind,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let (stream, peer) = if listener.proxy_protocol {
        match Box::pin(proxy_protocol::accept(
            stream,
            peer,
            shared.limits.handshake_timeout,
        ))
        .await
        {
            Ok((stream, client)) => {
                tracing::Span::current().record("client.addr", tracing::field::display(client));
                (stream, client)
            }
            Err(error) => {
                tracing::debug!(%error, "closing: this listener expects a PROXY protocol header");
                return;
            }
        }
    } else {
        (Rewind::new(stream), peer)
    };
    // The guard, before any TLS work: bans and connection limits.
    let trusted = shared
        .gateway
        .routes()
        .trusted_proxies
        .contains(crate::client_ip::normalise(peer.ip()));
    let admission = match shared
        .guard
        .admit(peer.ip(), trusted, tokio::time::Instant::now())
    {
        Ok(admission) => admission,
        Err(refused) => {
            tracing::debug!(%refused, "connection closed at accept");
            return;
        }
    };
    let kill = admission.kill.clone();
    let tls = listener.tls;
    let h1 = Deadlines {
        head: Some(shared.limits.header_timeout),
        idle: shared.limits.keepalive_timeout,
    };
    if !tls {
        return serve_http(
            stream,
            peer,
            None,
            h1,
            &shared,
            &shutdown,
            (kill, admission.id),
        )
        .await;
    }
    // In a block: a local that was borrowed stays in the task's state until
    // its scope ends, moved or not, and this one (1.2 KiB) is moved into
    // `serve_http` for the connection's whole life.
    let (stream, sni, deadlines) = {
        // Boxed: the handshake's state is freed once it is done, and the task
        // keeps only what an open connection needs.
        let stream = tokio::select! {
            stream = Box::pin(handshake(stream, &shared)) => stream,
            // Banned meanwhile, or the shutdown grace is over.
            () = kill.cancelled() => None,
        };
        let Some(stream) = stream else {
            return;
        };
        let (_, session) = stream.get_ref();
        if session.alpn_protocol() == Some(ACME_TLS_ALPN) {
            // A CA validating TLS-ALPN-01: the handshake was the whole answer.
            return;
        }
        let sni = session.server_name().map(str::to_string);
        tracing::Span::current().record("tls.sni", sni.as_deref());
        let h2 = session.alpn_protocol() == Some(b"h2");
        let deadlines = if h2 {
            Deadlines {
                head: None,
                idle: shared.limits.h2_idle_timeout,
            }
        } else {
            h1
        };
        // HTTP/2's answers leave in shared TLS records (see `coalesce`).
        (Coalesce::new(stream, h2), sni, deadlines)
    };
    serve_http(
        stream,
        peer,
        Some(sni),
        deadlines,
        &shared,
        &shutdown,
        (kill, admission.id),
    )
    .await;
    drop(admission);
}

/// The TLS handshake, each half bounded by `handshake_timeout`. Between
/// them, a ClientHello for an ACME site whose first certificate is being
/// ordered waits up to `FIRST_CERTIFICATE_WAIT`; an unknown name is refused by
/// the resolver with an alert.
async fn handshake(
    stream: Rewind,
    shared: &Shared,
) -> Option<tokio_rustls::server::TlsStream<Rewind>> {
    let bound = shared.limits.handshake_timeout;
    let acceptor = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
    let start = match tokio::time::timeout(bound, acceptor).await {
        Ok(Ok(start)) => start,
        Ok(Err(error)) => {
            tracing::debug!(%error, "not a TLS ClientHello");
            shared.handshake_failures.count(Failure::NotTls);
            return None;
        }
        Err(_) => {
            tracing::debug!("TLS ClientHello not received in time");
            shared.handshake_failures.count(Failure::TimedOut);
            return None;
        }
    };
    let hello = start.client_hello();
    // A CA validating TLS-ALPN-01 is the reason the site is pending: never make it wait.
    let validation = hello
        .alpn()
        .is_some_and(|mut offered| offered.any(|p| p == ACME_TLS_ALPN));
    let config = shared.tls.for_hello(&hello);
    if let Some(sni) = hello
        .server_name()
        .and_then(normalise_host)
        .filter(|_| !validation)
    {
        if shared.certificates.is_pending(&sni) {
            tracing::debug!(sni, "waiting for the first certificate of this site");
            shared
                .certificates
                .wait_for_first(&sni, FIRST_CERTIFICATE_WAIT)
                .await;
        }
    }
    match tokio::time::timeout(bound, start.into_stream(config)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(error)) => {
            tracing::debug!(%error, "TLS handshake refused");
            shared.handshake_failures.count(Failure::Refused);
            None
        }
        Err(_) => {
            tracing::debug!("TLS handshake not finished in time");
            shared.handshake_failures.count(Failure::TimedOut);
            None
        }
    }
}

/// Serves HTTP on `io`; `tls` is `Some(sni)` for TLS connections. A quiet
/// HTTP/1.1 keep-alive connection is parked between requests (see
/// `deadline::Watched`): its hyper connection is dropped, and a new one is made
/// when the client sends again.
///
/// Not an `async fn`: the setup runs before the future is made, so the future
/// holds `io` once, inside `Parked`. An `async fn` keeps its arguments in
/// every state, and `io` (a TLS stream is 1.2 KiB) would be held twice for as
/// long as the connection is open.
fn serve_http<'a, IO>(
    io: IO,
    peer: SocketAddr,
    tls: Option<Option<String>>,
    deadlines: Deadlines,
    shared: &'a Arc<Shared>,
    shutdown: &'a CancellationToken,
    (kill, id): (CancellationToken, u64),
) -> impl Future<Output = ()> + Send + 'a
where
    IO: AsyncRead + AsyncWrite + Readiness + Unpin + Send + 'static,
{
    let state = Arc::new(ConnState::default());
    let conn = Conn {
        client: peer,
        tls: tls.is_some(),
        sni: tls.flatten(),
        state: state.clone(),
        kill: kill.clone(),
        drain: shutdown.clone(),
        tasks: shared.tasks.clone(),
        id,
    };
    // Closes the connection unanswered: a filter's verdict, or `kill` (banned,
    // or the shutdown grace is over). One token, so a wake of the connection
    // polls two cancellations, not three.
    let close_door = kill.child_token();
    let mut parked = Parked::new(io, state.clone(), deadlines);
    let service = {
        let gateway = shared.gateway.clone();
        let close_door = close_door.clone();
        let conn = Arc::new(conn);
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let gateway = gateway.clone();
            let close_door = close_door.clone();
            let conn = conn.clone();
            let in_flight = state.request_started();
            // Boxed: hyper moves the future into a task per HTTP/2 stream,
            // and a pointer moves faster than the multi-KB future itself.
            Box::pin(
                async move {
                    match gateway.handle(request.map(ClientBody::new), &conn).await {
                        Ok(response) => Ok::<_, Closed>(hold_until_sent(response, in_flight)),
                        Err(Closed) => {
                            close_door.cancel();
                            Err(Closed)
                        }
                    }
                }
                .in_current_span(),
            )
        })
    };
    // HTTP/2 by ALPN (no head clock): never parked, so no way back is made.
    let h2 = deadlines.head.is_none();
    let parks = !h2;
    async move {
        loop {
            let (watched, back) = if parks {
                let (watched, back) = parked.wake();
                (watched, Some(back))
            } else {
                (parked.keep(), None)
            };
            // Boxed: while parked, the task keeps no room for a hyper connection.
            let io = TokioIo::new(watched);
            let mut connection = if h2 {
                Serving::H2(Box::pin(
                    shared.http.h2.serve_connection(io, service.clone()),
                ))
            } else {
                Serving::H1(Box::pin(
                    shared
                        .http
                        .h1
                        .serve_connection(io, service.clone())
                        .with_upgrades(),
                ))
            };
            tokio::select! {
                result = &mut connection => {
                    if let Err(error) = result {
                        tracing::debug!(error = %error, "connection ended with an error");
                    }
                }
                () = close_door.cancelled() => {
                    // An unknown :authority on HTTP/2 ends the connection
                    // with GOAWAY, briefly; on HTTP/1.1, and when banned or
                    // past the shutdown grace, dropping the connection
                    // closes the socket with nothing written.
                    if let (Serving::H2(c), false) = (&mut connection, kill.is_cancelled()) {
                        c.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(GOAWAY_GRACE, &mut connection).await;
                    }
                    return;
                }
                () = shutdown.cancelled() => {
                    match &mut connection {
                        Serving::H1(c) => c.as_mut().graceful_shutdown(),
                        Serving::H2(c) => c.as_mut().graceful_shutdown(),
                    }
                    tokio::select! {
                        _ = &mut connection => {}
                        () = close_door.cancelled() => {}
                    }
                    return;
                }
            }
            drop(connection);
            // Parked, when hyper ended because the connection went quiet (the
            // drop above sent it back); else it closed or was upgraded.
            let Some(Ok(back)) = back.map(|mut back| back.try_recv()) else {
                return;
            };
            parked = back;
            tokio::select! {
                ready = parked.readable() => {
                    if ready.is_err() {
                        return;
                    }
                }
                () = close_door.cancelled() => return,
                () = shutdown.cancelled() => return,
            }
        }
    }
}

/// How long an HTTP/2 connection refused for an unknown `:authority` may
/// take to see its GOAWAY before it is closed.
const GOAWAY_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Keeps the request counted as in flight until its response body is done.
fn hold_until_sent(
    response: Response<Body>,
    in_flight: crate::deadline::InFlight,
) -> Response<Body> {
    use http_body_util::BodyExt;
    response.map(|body| {
        // The closure owns the guard, so it drops with the body: when the last
        // byte is sent, or when the client goes away mid-stream.
        body.map_frame(move |frame| {
            let _held = &in_flight;
            frame
        })
        .boxed()
    })
}

impl Readiness for tokio_rustls::server::TlsStream<Rewind> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.get_ref().0.poll_read_ready(cx)
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("limits", &self.limits)
            .finish()
    }
}
