//! The edge's side of the tunnels: every agent connection that is up, as an
//! HTTP/2 client (the roles reversed: the agent dialled, the edge asks), and
//! the pins of the enrolled agents its handshakes accept.
//!
//! A request for `tunnel:NAME/service` goes out on one of NAME's connections
//! that can take a stream, in turn; with none up it waits up to
//! `AGENT_WAIT` for one to arrive, then fails (a 502 for the visitor). An
//! agent that said it could not reach the service is passed over for it for
//! `DOWN_FOR` while another agent of the name is up (two machines at home:
//! requests go to the one that reaches Jellyfin). A
//! connection ends when its TCP or TLS breaks, its PINGs go unanswered, or
//! its agent is removed: the streams on it end cut short, never completed —
//! a removed agent's streams and WebSockets in flight included (its link's
//! socket is killed, not just left unused). When the edge shuts down, each
//! link takes no new stream and closes once its last one has ended, so an
//! attached agent never holds a restart for the shutdown grace; the agent
//! reconnects to the new process.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use super::protocol;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::register::{Agent, Register};
use crate::body::Body;

/// How long a request waits for an agent connection when none is up.
pub const AGENT_WAIT: Duration = Duration::from_secs(5);

/// The most tunnel connections one agent key keeps up at the edge: an agent
/// dials at most 8, and as many again may linger after a network change
/// until their PINGs go unanswered. A stolen key from many addresses
/// (each under `max_connections_per_ip`) cannot hold more.
const MAX_LINKS_PER_AGENT: usize = 16;

/// How long an agent that could not reach a service is passed over for
/// that service while another agent of its name can take the request.
const DOWN_FOR: Duration = Duration::from_secs(10);

/// One agent connection that is up.
struct Link {
    id: u64,
    name: String,
    pin: String,
    from: SocketAddr,
    since: SystemTime,
    sender: SendRequest<Body>,
    /// Fired to end the link at once (its agent removed, or over the
    /// key's limit): its socket is killed, streams in flight included.
    close: CancellationToken,
    /// Set while the edge shuts down: no new stream.
    draining: Arc<std::sync::atomic::AtomicBool>,
    /// Streams on it now.
    streams: Arc<Streams>,
    bytes: Arc<ByteCounts>,
}

impl Link {
    /// Can take a new stream.
    fn open(&self) -> bool {
        self.sender.is_ready()
            && !self.close.is_cancelled()
            && !self.draining.load(Ordering::Relaxed)
    }

    /// Open, and its agent not passed over for `service`.
    fn takes(&self, service: &str, down: &HashMap<(String, String), Instant>) -> bool {
        let passed_over = !down.is_empty()
            && down
                .get(&(self.pin.clone(), service.to_string()))
                .is_some_and(|until| *until > Instant::now());
        self.open() && !passed_over
    }
}

/// The streams a link carries now, and a wake when the last one ends.
#[derive(Debug, Default)]
struct Streams {
    count: AtomicUsize,
    ended: Notify,
}

/// One stream's place on its link, held by the answer's body or the
/// WebSocket it became; a link that drains closes once none is held.
#[derive(Debug)]
pub struct StreamHold(Arc<Streams>);

impl StreamHold {
    fn new(streams: &Arc<Streams>) -> StreamHold {
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

/// Bytes through one connection, both ways.
#[derive(Debug, Default)]
struct ByteCounts {
    read: AtomicU64,
    written: AtomicU64,
}

/// An agent as `drawbridge tunnel list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// Its name.
    pub name: String,
    /// Its key's pin.
    pub pin: String,
    /// When it enrolled (Unix seconds).
    pub enrolled: u64,
    /// Its connections that are up.
    pub connections: Vec<LinkStatus>,
    /// The services it said it could not reach, for which it is passed
    /// over now.
    #[serde(default)]
    pub unreachable: Vec<String>,
}

/// One tunnel connection in `AgentStatus`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkStatus {
    /// The address the agent dialled from.
    pub from: String,
    /// Since when (Unix seconds).
    pub since: u64,
    /// Bytes the edge received on it.
    pub received: u64,
    /// Bytes the edge sent on it.
    pub sent: u64,
}

/// Why a request could not go through a tunnel.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// No connection of the agent came up in time.
    #[error("agent `{0}` is not connected")]
    NotConnected(String),
    /// The connection failed before the answer's head.
    #[error("tunnel to agent `{agent}` failed: {source}")]
    Exchange {
        /// The agent.
        agent: String,
        /// What hyper said.
        #[source]
        source: hyper::Error,
    },
}

/// The edge's tunnels.
pub struct Hub {
    register: Register,
    /// The addresses agents attach from (kept in the register), for the
    /// kernel bans to leave out (`guard/nftables.rs`).
    homes: tokio::sync::watch::Sender<Vec<std::net::IpAddr>>,
    agents: ArcSwap<Vec<Agent>>,
    links: Mutex<Vec<Link>>,
    arrived: Notify,
    next: AtomicU64,
    turn: AtomicUsize,
    /// (agent key's pin, service) → until when that agent is passed over
    /// for that service: it said the service did not answer.
    down: Mutex<HashMap<(String, String), Instant>>,
}

/// One agent connection chosen for a request: its sender, the pin of the
/// agent's key (to name the agent in `Hub::service_down`), and the stream's
/// place on it.
struct Picked {
    sender: SendRequest<Body>,
    pin: String,
    hold: StreamHold,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").finish_non_exhaustive()
    }
}

impl Hub {
    /// The hub of the register under `state_dir`, its agents read.
    pub fn new(register: Register) -> Arc<Hub> {
        let agents = register.agents().unwrap_or_else(|error| {
            tracing::error!(%error, "cannot read the tunnel agents; none can connect until this is fixed");
            Vec::new()
        });
        let homes = tokio::sync::watch::Sender::new(register.homes());
        Arc::new(Hub {
            homes,
            register,
            agents: ArcSwap::from_pointee(agents),
            links: Mutex::new(Vec::new()),
            arrived: Notify::new(),
            next: AtomicU64::new(0),
            turn: AtomicUsize::new(0),
            down: Mutex::new(HashMap::new()),
        })
    }

    /// The addresses agents attach from, now and after each new one.
    pub fn homes(&self) -> tokio::sync::watch::Receiver<Vec<std::net::IpAddr>> {
        self.homes.subscribe()
    }

    /// The register this hub reads.
    pub fn register(&self) -> &Register {
        &self.register
    }

    /// Whether the key with `pin` is enrolled.
    pub fn allows(&self, pin: &str) -> bool {
        self.agents.load().iter().any(|a| a.pin == pin)
    }

    /// Whether `ip` is an address an agent attached from (`homes.json`):
    /// banned, it may still bring the household's agent in.
    pub fn is_home(&self, ip: std::net::IpAddr) -> bool {
        let ip = crate::client_ip::normalise(ip);
        self.homes.borrow().contains(&ip)
    }

    /// The name of the enrolled agent whose key has `pin`.
    pub fn name_of(&self, pin: &str) -> Option<String> {
        self.agents
            .load()
            .iter()
            .find(|a| a.pin == pin)
            .map(|a| a.name.clone())
    }

    /// Reads the register again; connections of agents no longer in it
    /// close at once.
    pub fn reload(&self) {
        match self.register.agents() {
            Ok(agents) => {
                self.agents.store(Arc::new(agents));
                let links = self.links.lock().expect("hub lock");
                for link in links.iter().filter(|l| !self.allows(&l.pin)) {
                    tracing::info!(agent = link.name, from = %link.from, "agent removed; closing its tunnel connection");
                    link.close.cancel();
                }
                drop(links);
                // A removed agent's addresses leave the homes (`Register::remove`).
                self.homes.send_if_modified(|homes| {
                    let now = self.register.homes();
                    let changed = *homes != now;
                    *homes = now;
                    changed
                });
            }
            Err(error) => tracing::error!(%error, "cannot read the tunnel agents"),
        }
    }

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
            () = drained => {
                tracing::info!(agent = name, %from, "shutting down: tunnel connection closed, the agent will reconnect to the next start");
                kill.now();
            }
        }
        self.links.lock().expect("hub lock").retain(|l| l.id != id);
    }

    /// Sends `request` (its URI's authority names `service`) to agent
    /// `agent`, waiting up to `AGENT_WAIT` for one of its connections; the
    /// answer, and the pin of the agent that gave it.
    pub async fn send(
        &self,
        agent: &str,
        service: &str,
        request: Request<Body>,
    ) -> Result<(Response<Incoming>, String, StreamHold), HubError> {
        let waited = tokio::time::timeout(AGENT_WAIT, async {
            loop {
                let arrived = self.arrived.notified();
                tokio::pin!(arrived);
                arrived.as_mut().enable();
                if let Some(picked) = self.pick(agent, service) {
                    return picked;
                }
                arrived.await;
            }
        });
        let Ok(Picked {
            mut sender,
            pin,
            hold,
        }) = waited.await
        else {
            return Err(HubError::NotConnected(agent.to_string()));
        };
        match sender.send_request(request).await {
            Ok(response) => Ok((response, pin, hold)),
            Err(source) => Err(HubError::Exchange {
                agent: agent.to_string(),
                source,
            }),
        }
    }

    /// Notes that the agent whose key has `pin` could not reach `service`:
    /// for `DOWN_FOR` its connections take that service's requests only
    /// when no other agent of its name can.
    pub fn service_down(&self, pin: &str, service: &str) {
        let until = Instant::now() + DOWN_FOR;
        let mut down = self.down.lock().expect("hub lock");
        down.retain(|_, until| *until > Instant::now());
        down.insert((pin.to_string(), service.to_string()), until);
    }

    /// Whether a connection of `agent` can take `service`'s next request
    /// from an agent other than the one whose key has `pin`, not passed over.
    pub fn another_up(&self, agent: &str, service: &str, pin: &str) -> bool {
        let links = self.links.lock().expect("hub lock");
        let down = self.down.lock().expect("hub lock");
        links
            .iter()
            .any(|l| l.name == agent && l.pin != pin && l.takes(service, &down))
    }

    /// One of `agent`'s connections that can take a stream, in turn: of
    /// those whose agent reaches `service`, or of all when none does.
    fn pick(&self, agent: &str, service: &str) -> Option<Picked> {
        let links = self.links.lock().expect("hub lock");
        let down = self.down.lock().expect("hub lock");
        let ready: Vec<&Link> = links
            .iter()
            .filter(|l| l.name == agent && l.open())
            .collect();
        // Nothing passed over (the usual case): no second list.
        let choice = if down.is_empty() {
            ready
        } else {
            let up: Vec<&Link> = ready
                .iter()
                .copied()
                .filter(|l| l.takes(service, &down))
                .collect();
            if up.is_empty() {
                ready
            } else {
                up
            }
        };
        if choice.is_empty() {
            return None;
        }
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let link = choice[turn % choice.len()];
        Some(Picked {
            sender: link.sender.clone(),
            pin: link.pin.clone(),
            hold: StreamHold::new(&link.streams),
        })
    }

    /// Every enrolled agent and its connections.
    pub fn status(&self) -> Vec<AgentStatus> {
        let links = self.links.lock().expect("hub lock");
        let down = self.down.lock().expect("hub lock");
        let now = Instant::now();
        let unix = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        };
        self.agents
            .load()
            .iter()
            .map(|agent| AgentStatus {
                name: agent.name.clone(),
                pin: agent.pin.clone(),
                enrolled: agent.enrolled,
                connections: links
                    .iter()
                    .filter(|l| l.pin == agent.pin && !l.close.is_cancelled())
                    .map(|l| LinkStatus {
                        from: l.from.to_string(),
                        since: unix(l.since),
                        received: l.bytes.read.load(Ordering::Relaxed),
                        sent: l.bytes.written.load(Ordering::Relaxed),
                    })
                    .collect(),
                unreachable: down
                    .iter()
                    .filter(|((pin, _), until)| *pin == agent.pin && **until > now)
                    .map(|((_, service), _)| service.clone())
                    .collect(),
            })
            .collect()
    }
}

/// The switch that ends a link's socket from outside hyper's task: once
/// thrown, every read and write fails, and the reader waiting is woken.
#[derive(Debug, Default)]
struct Kill {
    thrown: std::sync::atomic::AtomicBool,
    reader: atomic_waker::AtomicWaker,
    writer: atomic_waker::AtomicWaker,
}

impl Kill {
    fn now(&self) {
        self.thrown.store(true, Ordering::Release);
        self.reader.wake();
        self.writer.wake();
    }

    fn check(&self, waker: &atomic_waker::AtomicWaker, cx: &Context<'_>) -> std::io::Result<()> {
        waker.register(cx.waker());
        if self.thrown.load(Ordering::Acquire) {
            return Err(std::io::ErrorKind::ConnectionAborted.into());
        }
        Ok(())
    }
}

/// An agent connection's IO, counting bytes for `tunnel list`, killed by
/// its `Kill`.
struct Counted<IO> {
    inner: IO,
    bytes: Arc<ByteCounts>,
    kill: Arc<Kill>,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Counted<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.kill.check(&self.kill.reader, cx)?;
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        self.bytes.read.fetch_add(read as u64, Ordering::Relaxed);
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Counted<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.kill.check(&self.kill.writer, cx)?;
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.bytes.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.kill.check(&self.kill.writer, cx)?;
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled {
            self.bytes.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
