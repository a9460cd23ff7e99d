//! The agent's config, `agent.toml`, written by `drawbridge agent enroll`:
//!
//! ```toml
//! edge = "vps.example.net:443"        # where the edge listens (from the token)
//! edge_name = "jelly.example.com"     # the site name its TLS is asked for (from the token)
//! edge_pin = "sha256/…"               # the edge's tunnel key (from the token)
//! key = "agent.pem"                   # the agent's own key, beside this file
//! connections = 2                     # tunnel connections kept up (1–8)
//!
//! [services]                          # what the edge may reach, and nothing else
//! jellyfin = "http://127.0.0.1:8096"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A validated agent config.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// `host:port` of the edge.
    pub edge: String,
    /// The name the agent asks the edge's TLS for: one of its sites.
    pub edge_name: String,
    /// The pin of the edge's tunnel key.
    pub edge_pin: String,
    /// The agent's key and certificate (PEM).
    pub key: PathBuf,
    /// How many tunnel connections to keep up.
    pub connections: usize,
    /// Service name → `host:port` of a local HTTP server.
    pub services: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    edge: String,
    edge_name: Option<String>,
    edge_pin: String,
    #[serde(default = "default_key")]
    key: PathBuf,
    #[serde(default = "default_connections")]
    connections: usize,
    #[serde(default)]
    services: BTreeMap<String, String>,
}

fn default_key() -> PathBuf {
    PathBuf::from("agent.pem")
}

fn default_connections() -> usize {
    2
}

/// The file name of the agent's key beside its config.
pub const KEY_FILE: &str = "agent.pem";

impl AgentConfig {
    /// Reads and checks `path`; errors as `file:line:col: message`.
    pub fn load(path: &Path) -> Result<AgentConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read the agent config: {e}", path.display()))?;
        Self::parse(path, &text)
    }

    /// Checks `text` as the agent config at `path`.
    pub fn parse(path: &Path, text: &str) -> Result<AgentConfig, String> {
        let at = |span: Option<std::ops::Range<usize>>, message: &str| {
            let (line, col) = span.map_or((1, 1), |span| {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let col = before.len() - before.rfind('\n').map_or(0, |n| n + 1) + 1;
                (line, col)
            });
            format!("{}:{line}:{col}: {message}", path.display())
        };
        let raw: Raw = toml::from_str(text).map_err(|e| at(e.span(), e.message()))?;
        let value_at = |key: &str| {
            text.find(&format!("{key} ="))
                .or_else(|| text.find(key))
                .map(|start| start..start + key.len())
        };
        if raw
            .edge
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .is_none()
        {
            return Err(at(
                value_at("edge"),
                "`edge` must be host:port, e.g. \"vps.example.net:443\"",
            ));
        }
        // Written by enrolments since the tunnel knocks at a site's name;
        // an older config's `edge` host is that name, unless an address.
        let host = raw.edge.rsplit_once(':').map_or("", |(host, _)| host);
        let edge_name = match raw.edge_name.clone() {
            Some(name) => name,
            None if host.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_err() => {
                host.to_string()
            }
            None => {
                return Err(at(
                    value_at("edge"),
                    "`edge` is an address: add `edge_name`, the edge's site name its TLS answers to (enrolling again writes it)",
                ))
            }
        };
        if !raw.edge_pin.starts_with("sha256/") {
            return Err(at(
                value_at("edge_pin"),
                "`edge_pin` must be a pin as the token gave it (sha256/…)",
            ));
        }
        if !(1..=8).contains(&raw.connections) {
            return Err(at(
                value_at("connections"),
                "`connections` must be between 1 and 8",
            ));
        }
        if raw.services.is_empty() {
            return Err(at(
                None,
                "no [services]: name at least one, e.g. jellyfin = \"http://127.0.0.1:8096\"",
            ));
        }
        let mut services = BTreeMap::new();
        for (name, url) in &raw.services {
            if name == crate::tunnel::protocol::PING_SERVICE {
                return Err(at(
                    value_at(name),
                    &format!("`{name}` is the tunnel's own: name the service otherwise"),
                ));
            }
            let authority = url
                .strip_prefix("http://")
                .map(|rest| rest.trim_end_matches('/'))
                .filter(|rest| !rest.is_empty() && !rest.contains('/') && !rest.contains('@'));
            let Some(authority) = authority else {
                return Err(at(
                    value_at(name),
                    &format!("service `{name}`: write it like \"http://127.0.0.1:8096\" (http, host and port, no path)"),
                ));
            };
            let authority = if authority
                .rsplit_once(':')
                .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
            {
                authority.to_string()
            } else {
                format!("{authority}:80")
            };
            services.insert(name.clone(), authority);
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        Ok(AgentConfig {
            edge: raw.edge,
            edge_name,
            edge_pin: raw.edge_pin,
            key: dir.join(raw.key),
            connections: raw.connections,
            services,
        })
    }
}

/// The text of a new agent config for the edge `edge`, asked for as
/// `name`, with key pin `pin`; Jellyfin at `jellyfin` (None: on this
/// machine, `http://127.0.0.1:8096`).
pub fn initial(edge: &str, name: &str, pin: &str, jellyfin: Option<&str>) -> String {
    let jellyfin = toml::Value::String(jellyfin.unwrap_or("http://127.0.0.1:8096").to_string());
    format!(
        "# Written by `drawbridge agent enroll`. Run: drawbridge agent -c <this file>\n\
         edge = \"{edge}\"\n\
         edge_name = \"{name}\"\n\
         edge_pin = \"{pin}\"\n\
         key = \"{KEY_FILE}\"\n\
         connections = 2\n\
         \n\
         # What the edge may reach through the tunnel, and nothing else.\n\
         [services]\n\
         jellyfin = {jellyfin}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::AgentConfig;
    use std::path::Path;

    #[test]
    fn a_config_reads_and_errors_point_at_their_place() {
        let path = Path::new("/etc/drawbridge/agent.toml");
        let good = super::initial("vps.test:443", "jelly.test", "sha256/abc", None);
        let config = AgentConfig::parse(path, &good).unwrap();
        assert_eq!(config.services["jellyfin"], "127.0.0.1:8096");
        assert_eq!(config.key, Path::new("/etc/drawbridge/agent.pem"));
        let bad = good.replace("connections = 2", "connections = 20");
        let error = AgentConfig::parse(path, &bad).unwrap_err();
        assert!(
            error.starts_with("/etc/drawbridge/agent.toml:6:1: `connections`"),
            "{error}"
        );
        let typo = good.replace("connections", "conections");
        let error = AgentConfig::parse(path, &typo).unwrap_err();
        assert!(
            error.contains(":6:1:") && error.contains("conections"),
            "{error}"
        );
        // A config from before `edge_name`: its `edge` host is the name,
        // unless it is an address.
        let older = good.replace("edge_name = \"jelly.test\"\n", "");
        assert_eq!(
            AgentConfig::parse(path, &older).unwrap().edge_name,
            "vps.test"
        );
        let by_address = older.replace("vps.test:443", "192.0.2.7:443");
        assert!(AgentConfig::parse(path, &by_address)
            .unwrap_err()
            .contains("add `edge_name`"));
        let taken = good.replace("jellyfin = ", "drawbridge-ping = ");
        assert!(AgentConfig::parse(path, &taken)
            .unwrap_err()
            .contains("`drawbridge-ping` is the tunnel's own"));
        let bad = good.replace("http://127.0.0.1:8096", "http://127.0.0.1:8096/jf");
        assert!(AgentConfig::parse(path, &bad)
            .unwrap_err()
            .contains("service `jellyfin`"));
    }
}
