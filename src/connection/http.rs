//! HTTP on an established connection: hyper's builder for the protocol ALPN
//! chose, the service that hands each request to the tunnel's door (an
//! agent's knock) or else to the pipeline, and parking of quiet HTTP/1.1
//! connections between requests.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::Instrument;

use super::Shared;
use crate::body::{Body, ClientBody};
use crate::config::Limits;
use crate::pipeline::{Closed, Conn};
use crate::socket::deadline::{Deadlines, InFlight, Parked, Readiness};
use crate::tunnel::edge::Answered;
use crate::tunnel::protocol::Knock;

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

/// Serves HTTP on `io` for `conn`. A quiet
/// HTTP/1.1 keep-alive connection is parked between requests (see
/// `deadline::Watched`): its hyper connection is dropped, and a new one is made
/// when the client sends again.
///
/// Not an `async fn`: the setup runs before the future is made, so the future
/// holds `io` once, inside `Parked`. An `async fn` keeps its arguments in
/// every state, and `io` (a TLS stream is 1.2 KiB) would be held twice for as
/// long as the connection is open.
pub(super) fn serve_http<'a, IO>(
    io: IO,
    conn: Conn,
    deadlines: Deadlines,
    shared: &'a Arc<Shared>,
) -> impl Future<Output = ()> + Send + 'a
where
    IO: AsyncRead + AsyncWrite + Readiness + Unpin + Send + 'static,
{
    let state = conn.state.clone();
    let kill = conn.kill.clone();
    let shutdown = conn.drain.clone();
    // Closes the connection unanswered: a filter's verdict, or `kill` (banned,
    // or the shutdown grace is over). One token, so a wake of the connection
    // polls two cancellations, not three.
    let close_door = kill.child_token();
    let parked = Parked::new(io, state.clone(), deadlines);
    // An agent's tunnel this connection became: the connection's task (and
    // its place under the guard) lasts as long as the tunnel.
    let links = tokio_util::task::TaskTracker::new();
    let service = {
        let shared = shared.clone();
        let close_door = close_door.clone();
        let conn = Arc::new(conn);
        let links = links.clone();
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let shared = shared.clone();
            let close_door = close_door.clone();
            let conn = conn.clone();
            let links = links.clone();
            let in_flight = state.request_started();
            // Boxed: hyper moves the future into a task per HTTP/2 stream,
            // and a pointer moves faster than the multi-KB future itself.
            Box::pin(
                async move {
                    // An agent's knock is HTTP/1.1 over TLS with the
                    // tunnel's Upgrade: one header looked at, and the
                    // door's own future (boxed) only then.
                    let knocks = conn.exporter.is_some() && Knock::asks(&request);
                    let (request, in_flight) = if knocks {
                        let knock = knocked(&shared, request, &conn, &links, in_flight);
                        match Box::pin(knock).await {
                            Ok(answer) => return Ok(answer),
                            Err(visitor) => visitor,
                        }
                    } else {
                        (request, in_flight)
                    };
                    if conn.agent_only {
                        // Banned, but the household's: a client from
                        // it gets no answer.
                        shared.guard.refused_banned();
                        close_door.cancel();
                        return Err(Closed);
                    }
                    match shared
                        .gateway
                        .handle(request.map(ClientBody::new), &conn)
                        .await
                    {
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
    // One async block, the socket boxed: the connection's task is allocated
    // at the size of its largest state, for every connection, so it keeps
    // a pointer to the parked socket (a TLS stream is 1.5 KiB), not the
    // socket; and a future nested in another and awaited there would be
    // kept twice (its captured copy and the one being polled).
    let mut parked = Box::new(parked);
    async move {
        // Until the client leaves, the door closes, or shutdown; then
        // for as long as a tunnel this connection became is up.
        'serving: loop {
            // Out of its box, which is freed: an HTTP/2 connection keeps
            // its socket inside hyper's connection alone.
            let parked_now = unbox(parked);
            let (watched, back) = if parks {
                let (watched, back) = parked_now.wake();
                (watched, Some(back))
            } else {
                (parked_now.keep(), None)
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
                    break 'serving;
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
                    break 'serving;
                }
            }
            drop(connection);
            // Parked, when hyper ended because the connection went quiet (the
            // drop above sent it back); else it closed or was upgraded.
            let Some(Ok(back)) = back.map(|mut back| back.try_recv()) else {
                break 'serving;
            };
            // `parked` was moved out whole (`unbox`): there is no box to reuse.
            #[expect(clippy::replace_box, reason = "the old box was freed by unbox")]
            {
                parked = Box::new(back);
            }
            tokio::select! {
                ready = parked.readable() => {
                    if ready.is_err() {
                        break 'serving;
                    }
                }
                () = close_door.cancelled() => break 'serving,
                () = shutdown.cancelled() => break 'serving,
            }
        }
        links.close();
        links.wait().await;
    }
}

/// The value out of its box, the box freed (a move out of `*boxed` in place
/// would keep the allocation until the variable is assigned again).
#[expect(
    clippy::boxed_local,
    reason = "taking the box is the point: it is freed here"
)]
fn unbox<T>(boxed: Box<T>) -> T {
    *boxed
}

/// The tunnel's door (`tunnel/edge.rs`): an agent's knock answered, its
/// tunnel attached once the `101` is out (in `links`, holding the
/// connection's in-flight mark, so no deadline cuts it); `Err` gives a
/// client's request back with its mark.
async fn knocked(
    shared: &Arc<Shared>,
    request: Request<Incoming>,
    conn: &Arc<Conn>,
    links: &tokio_util::task::TaskTracker,
    in_flight: InFlight,
) -> Result<Response<Body>, (Request<Incoming>, InFlight)> {
    let answered = shared
        .edge
        .answer(request, conn.exporter.as_ref(), conn.client)
        .await;
    let (response, link, failed) = match answered {
        Answered::Visitor(request) => return Err((request, in_flight)),
        Answered::Agent {
            response,
            link,
            failed,
        } => (response, link, failed),
    };
    if failed {
        // A failed enrolment is guessing at a secret, as a failed login is.
        let now = tokio::time::Instant::now();
        shared.guard.failed_login(
            conn.client.ip(),
            "tunnel",
            "an agent's enrolment refused",
            false,
            now,
            conn.id,
        );
    }
    let Some(link) = link else {
        return Ok(hold_until_sent(response, in_flight));
    };
    // Proven by its pinned key: bans of its address leave it open, and a
    // film crosses it in large reads.
    shared.guard.mark_agent(conn.id);
    conn.state.mark_upgraded();
    conn.state.read_ahead(crate::tunnel::protocol::READ_AHEAD);
    let hub = shared.edge.hub.clone();
    let (kill, drain, from) = (conn.kill.clone(), conn.drain.clone(), conn.client);
    links.spawn(async move {
        let _in_flight = in_flight;
        let Ok(upgraded) = link.upgrade.await else {
            return;
        };
        let attached = hub.attach(TokioIo::new(upgraded), link.name, link.pin, from, drain);
        tokio::select! {
            () = attached => {}
            // The shutdown grace is over.
            () = kill.cancelled() => {}
        }
    });
    Ok(response)
}

/// How long an HTTP/2 connection refused for an unknown `:authority` may
/// take to see its GOAWAY before it is closed.
const GOAWAY_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Keeps the request counted as in flight until its response body is done.
fn hold_until_sent(response: Response<Body>, in_flight: InFlight) -> Response<Body> {
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
