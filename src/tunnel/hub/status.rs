//! What `drawbridge tunnel list`, `status` and the dashboard show of the
//! agents: each one's links, their bytes, the services it cannot reach.

use std::sync::atomic::Ordering;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::Hub;

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
    /// Its last round trip to the agent and back, microseconds (0: not
    /// timed yet).
    #[serde(default)]
    pub rtt_us: u64,
}

impl Hub {
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
                        rtt_us: l.rtt.load(Ordering::Relaxed),
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
