//! One agent connection at the edge, from its HTTP/2 start to its end: kept
//! in the hub while up, at most `MAX_LINKS_PER_AGENT` per agent key, its
//! streams counted so that a draining link closes once the last one ends,
//! and its socket killed when the link must end with streams in flight.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::counted::{ByteCounts, Counted, Kill};
use super::Hub;
use crate::body::Body;
use crate::tunnel::protocol;

/// The most tunnel connections one agent key keeps up at the edge: an agent
/// dials at most 8, and as many again may linger after a network change
/// until their PINGs go unanswered. A stolen key from many addresses
/// (each under `max_connections_per_ip`) cannot hold more.
const MAX_LINKS_PER_AGENT: usize = 16;

/// One agent connection that is up.
pub(super) struct Link {
    pub(super) id: u64,
    pub(super) name: String,
    pub(super) pin: String,
    pub(super) from: SocketAddr,
    pub(super) since: SystemTime,
    pub(super) sender: SendRequest<Body>,
    /// Fired to end the link at once (its agent removed, or over the
    /// key's limit): its socket is killed, streams in flight included.
    pub(super) close: CancellationToken,
    /// Set while the edge shuts down: no new stream.
    pub(super) draining: Arc<std::sync::atomic::AtomicBool>,
    /// Streams on it now.
    pub(super) streams: Arc<Streams>,
    pub(super) bytes: Arc<ByteCounts>,
    /// The link's last round trip to the agent and back, in microseconds
    /// (0: not timed yet): `protocol::PING_SERVICE`, every `PING_EVERY`.
    pub(super) rtt: Arc<std::sync::atomic::AtomicU64>,
}

impl Link {
    /// Can take a new stream.
    pub(super) fn open(&self) -> bool {
        self.sender.is_ready()
            && !self.close.is_cancelled()
            && !self.draining.load(Ordering::Relaxed)
    }

    /// Open, and its agent not passed over for `service`.
    pub(super) fn takes(&self, service: &str, down: &HashMap<(String, String), Instant>) -> bool {
        let passed_over = !down.is_empty()
            && down
                .get(&(self.pin.clone(), service.to_string()))
                .is_some_and(|until| *until > Instant::now());
        self.open() && !passed_over
    }
}

/// The streams a link carries now, and a wake when the last one ends.
#[derive(Debug, Default)]
pub(super) struct Streams {
    count: AtomicUsize,
    ended: Notify,
}

/// One stream's place on its link, held by the answer's body or the
/// WebSocket it became; a link that drains closes once none is held.
#[derive(Debug)]
pub struct StreamHold(Arc<Streams>);

impl StreamHold {
    pub(super) fn new(streams: &Arc<Streams>) -> StreamHold {
        streams.count.fetch_add(1, Ordering::AcqRel);
        StreamHold(streams.clone())
    }
}

impl Drop for StreamHold {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.ended.notify_waiters();
        }
    }
}

impl Hub {
    /// Serves an agent's authenticated connection as the edge's HTTP/2
    /// client until it ends: its socket breaks, its PINGs go unanswered, its
    /// agent is removed (everything on it cut at once), or `drain` fires
    /// (the edge shutting down: no new stream, closed once the last ends).
    pub async fn attach<IO>(
        self: &Arc<Self>,
        io: IO,
        name: String,
        pin: String,
        from: SocketAddr,
        drain: CancellationToken,
    ) where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let bytes = Arc::new(ByteCounts::default());
        let kill = Arc::new(Kill::default());
        let io = Counted {
            inner: io,
            bytes: bytes.clone(),
            kill: kill.clone(),
        };
        let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
        protocol::edge_link(&mut builder);
        let handshake = builder.handshake::<_, Body>(TokioIo::new(io)).await;
        let (sender, connection) = match handshake {
            Ok(pair) => pair,
            Err(error) => {
                tracing::info!(agent = name, %from, %error, "tunnel connection failed at its HTTP/2 start");
                return;
            }
        };
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let close = CancellationToken::new();
        let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let streams = Arc::new(Streams::default());
        let rtt = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let timing = time_round_trips(sender.clone(), rtt.clone());
        let register = self.register.clone();
        let pin_noted = pin.clone();
        let noted = tokio::task::spawn_blocking(move || {
            register
                .note_home(from.ip(), &pin_noted)
                .map(|new| new.then(|| register.homes()))
        });
        match noted.await {
            Ok(Ok(Some(homes))) => {
                self.homes.send_replace(homes);
            }
            Ok(Ok(None)) | Err(_) => {}
            Ok(Err(error)) => tracing::warn!(%error, "could not note the agent's address"),
        }
        {
            let mut links = self.links.lock().expect("hub lock");
            links.push(Link {
                id,
                name: name.clone(),
                pin: pin.clone(),
                from,
                since: SystemTime::now(),
                sender,
                close: close.clone(),
                draining: draining.clone(),
                streams: streams.clone(),
                bytes,
                rtt,
            });
            // Links are kept in the order they came: the first of this key's
            // is its oldest, most likely one whose network went away.
            let mine: Vec<&Link> = links
                .iter()
                .filter(|l| l.pin == pin && !l.close.is_cancelled())
                .collect();
            if mine.len() > MAX_LINKS_PER_AGENT {
                let oldest = mine[0];
                tracing::warn!(agent = name, from = %oldest.from, "more than {MAX_LINKS_PER_AGENT} tunnel connections with this agent's key; closing its oldest");
                oldest.close.cancel();
            }
        }
        // Logged once the connection can take requests and `tunnel list`
        // shows it (tests wait for this line).
        tracing::info!(agent = name, %from, "agent connected");
        self.arrived.notify_waiters();
        // hyper runs the link in a task of its own: ending it means killing
        // its socket, so that what is in flight on it ends too.
        tokio::pin!(connection);
        let drained = async {
            drain.cancelled().await;
            draining.store(true, Ordering::Relaxed);
            loop {
                let ended = streams.ended.notified();
                if streams.count.load(Ordering::Acquire) == 0 {
                    return;
                }
                ended.await;
            }
        };
        tokio::select! {
            result = &mut connection => {
                if let Err(error) = result {
                    tracing::info!(agent = name, %from, %error, "tunnel connection ended");
                } else {
                    tracing::info!(agent = name, %from, "tunnel connection closed");
                }
            }
            () = close.cancelled() => kill.now(),
            () = timing => {}
            () = drained => {
                tracing::info!(agent = name, %from, "shutting down: tunnel connection closed, the agent will reconnect to the next start");
                kill.now();
            }
        }
        self.links.lock().expect("hub lock").retain(|l| l.id != id);
    }
}

/// Times a request the agent answers itself (`protocol::PING_SERVICE`)
/// over `sender` at once and then every `PING_EVERY`, keeping the last
/// round trip in `rtt` (microseconds). Never ends by itself.
async fn time_round_trips(mut sender: SendRequest<Body>, rtt: Arc<std::sync::atomic::AtomicU64>) {
    loop {
        let request = http::Request::get(format!("http://{}/", protocol::PING_SERVICE))
            .body(crate::body::empty_body())
            .expect("a fixed request");
        let started = Instant::now();
        if sender.ready().await.is_ok() {
            if let Ok(answer) = sender.send_request(request).await {
                let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                rtt.store(took.max(1), Ordering::Relaxed);
                drop(answer);
            }
        }
        tokio::time::sleep(protocol::PING_EVERY).await;
    }
}
