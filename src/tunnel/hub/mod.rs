//! The edge's side of the tunnels: every agent connection that is up, as an
//! HTTP/2 client (the roles reversed: the agent dialled, the edge asks), and
//! the pins of the enrolled agents its handshakes accept.
//!
//! A request for `tunnel:NAME/service` goes out on one of NAME's connections
//! that can take a stream, in turn; with none up it waits up to
//! `AGENT_WAIT` for one to arrive, then fails (a 502 for the client). An
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
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::register::{Agent, Register};
use crate::body::Body;

mod counted;
mod link;
mod status;

use link::Link;
pub use link::StreamHold;
pub use status::{AgentStatus, LinkStatus};

/// How long a request waits for an agent connection when none is up.
pub const AGENT_WAIT: Duration = Duration::from_secs(5);

/// How long an agent that could not reach a service is passed over for
/// that service while another agent of its name can take the request.
const DOWN_FOR: Duration = Duration::from_secs(10);

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
}
