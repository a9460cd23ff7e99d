//! `drawbridge wireguard add|list|rotate|remove` on the edge: home routers
//! that speak WireGuard themselves, in the words a user reads.

use std::io::IsTerminal as _;

use clap::Subcommand;
use drawbridge::admin::{self, Reply};
use drawbridge::config::{Config, HostPattern, UpstreamTarget};
use drawbridge::wireguard::home_config::HomeConfig;
use drawbridge::wireguard::register::{HomePeer, Peers};
use drawbridge::wireguard::{keys, PeerStatus};

#[derive(Debug, Subcommand)]
pub enum WireguardAction {
    /// Make keys for a home router called NAME and print the config to import there.
    Add {
        /// The peer's name, as sites name it: upstream = "wireguard:NAME/http://192.168.1.10:8096".
        name: String,
        /// What the router dials, host:port (default: [wireguard] endpoint, else the first site's name and the listen port).
        #[arg(long)]
        endpoint: Option<String>,
    },
    /// Show the home peers, their last handshake and traffic.
    List,
    /// New keys for NAME: its old key stops working; print the new config.
    Rotate {
        /// The peer's name.
        name: String,
        /// As for `add`.
        #[arg(long)]
        endpoint: Option<String>,
    },
    /// A new key for the edge itself: every router must then be given its new public key.
    RotateEdge,
    /// End the peer called NAME: its key stops working at once.
    Remove {
        /// The peer's name.
        name: String,
    },
}

/// `drawbridge wireguard …` on the edge whose config is `config`.
pub fn command(config: &Config, action: &WireguardAction) -> anyhow::Result<()> {
    let peers = Peers::new(&config.server.state_dir);
    let socket = admin::socket_path(&config.server.state_dir);
    let runtime = super::current_thread()?;
    let tell_the_edge = || {
        runtime
            .block_on(admin::request(&socket, &admin::Command::WireguardReload))
            .is_ok()
    };
    match action {
        WireguardAction::Add { name, endpoint } => {
            let (peer, key) = peers.add(name, config.wireguard.address)?;
            print_home(config, &peers, &peer, &key, endpoint.as_deref())?;
            tell_the_edge();
        }
        WireguardAction::Rotate { name, endpoint } => {
            let (peer, key) = peers.rotate(name)?;
            print_home(config, &peers, &peer, &key, endpoint.as_deref())?;
            if tell_the_edge() {
                eprintln!("The old key of `{name}` no longer works.");
            }
        }
        WireguardAction::RotateEdge => {
            let key = peers.rotate_edge()?;
            tell_the_edge();
            let names: Vec<String> = peers.list()?.into_iter().map(|p| p.name).collect();
            println!("PublicKey = {}", keys::public_of(&key));
            eprintln!(
                "The edge has a new key. On each router ({}), set the [Peer]'s PublicKey to the line above; until then none can reach this edge.",
                if names.is_empty() { "none registered".to_string() } else { names.join(", ") }
            );
        }
        WireguardAction::Remove { name } => {
            if peers.remove(name)? {
                tell_the_edge();
                println!("WireGuard peer `{name}` removed; its key can no longer connect");
            } else {
                println!("no WireGuard peer called `{name}`");
            }
        }
        WireguardAction::List => {
            let list =
                match runtime.block_on(admin::request(&socket, &admin::Command::WireguardList)) {
                    Ok(Reply::Wireguard(list)) => list,
                    Ok(other) => anyhow::bail!("unexpected answer from drawbridge: {other:?}"),
                    Err(_) => {
                        eprintln!("(drawbridge is not running; showing the registered peers)");
                        peers
                            .list()?
                            .into_iter()
                            .map(|p| PeerStatus {
                                name: p.name,
                                public_key: p.public_key,
                                address: p.address.to_string(),
                                endpoint: None,
                                handshake_age: None,
                                received: 0,
                                sent: 0,
                                up: false,
                            })
                            .collect()
                    }
                };
            print_peers(&list);
        }
    }
    Ok(())
}

/// What the home router dials: `--endpoint`, `[wireguard] endpoint`, or
/// the first exact site name with the listen port.
fn endpoint(config: &Config, given: Option<&str>) -> Option<String> {
    if let Some(given) = given.or(config.wireguard.endpoint.as_deref()) {
        return Some(given.to_string());
    }
    let port = config.wireguard.listen.port();
    config.sites.iter().find_map(|site| {
        site.hosts.iter().find_map(|host| match host {
            HostPattern::Exact(name) => Some(format!("{name}:{port}")),
            HostPattern::Wildcard(_) => None,
        })
    })
}

fn print_home(
    config: &Config,
    peers: &Peers,
    peer: &HomePeer,
    key: &drawbridge::wireguard::keys::Secret,
    given: Option<&str>,
) -> anyhow::Result<()> {
    let edge_key = peers.edge_key()?;
    let endpoint = endpoint(config, given).ok_or_else(|| {
        anyhow::anyhow!(
            "no site has an exact name for the router to dial; give --endpoint host:port"
        )
    })?;
    let private_key = keys::encode(&key.to_bytes());
    let edge_public_key = keys::public_of(&edge_key);
    let home = HomeConfig {
        private_key: &private_key,
        address: peer.address,
        edge_public_key: &edge_public_key,
        edge: config.wireguard.address,
        endpoint: &endpoint,
        keepalive: config.wireguard.keepalive,
        mtu: config.wireguard.mtu,
    };
    let name = &peer.name;
    let served: Vec<String> = config
        .sites
        .iter()
        .filter(
            |site| matches!(&site.upstream, UpstreamTarget::Wireguard { peer, .. } if peer == name),
        )
        .map(|site| format!("{} ({})", site.name(), site.upstream))
        .collect();
    let next = if served.is_empty() {
        format!("Then point a site at Jellyfin's address at home through it, and reload:\n  upstream = \"wireguard:{name}/http://192.168.1.10:8096\"")
    } else {
        format!("It serves {} here.", served.join(", "))
    };
    let steps = format!(
        "Import this on the home router (its WireGuard page: \"import\" or \"add peer from file\"), or scan the code with its app. It holds the router's private key, which the edge does not keep: store it nowhere else.\nThe router must let {} reach Jellyfin (a firewall rule from its WireGuard interface to Jellyfin's address and port).\n{next}",
        peer.address
    );
    if std::io::stdout().is_terminal() {
        println!("{}\n", steps.lines().next().unwrap_or_default());
        println!("{}", home.text());
        if let Some(qr) = home.qr() {
            println!("{qr}");
        }
        for line in steps.lines().skip(1) {
            println!("{line}");
        }
    } else {
        // Piped or redirected: the file alone on stdout (`> home.conf`).
        print!("{}", home.text());
        eprintln!("{steps}");
    }
    Ok(())
}

fn print_peers(peers: &[PeerStatus]) {
    if peers.is_empty() {
        println!("no WireGuard peers; add one with `drawbridge wireguard add NAME`");
    }
    for peer in peers {
        let state = if peer.up { "up" } else { "down" };
        let handshake = peer
            .handshake_age
            .map_or("no handshake yet".to_string(), |age| {
                format!("last handshake {age} s ago")
            });
        println!(
            "{}\t{state}\t{}\t{handshake}\tfrom {}\t{} bytes in, {} bytes out\tkey {}",
            peer.name,
            peer.address,
            peer.endpoint.as_deref().unwrap_or("-"),
            peer.received,
            peer.sent,
            peer.public_key
        );
    }
}
