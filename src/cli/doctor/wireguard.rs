//! `doctor` for a site through the router's own WireGuard: the peer is
//! registered, and, when drawbridge runs, heard from lately.

use drawbridge::config::{Config, SiteConfig};

use super::{bad, good, note, Finding};

/// A site through `wireguard:PEER/…`: the peer registered here and, when
/// drawbridge runs, up, with its last handshake and where it dials from.
pub(super) async fn wireguard_peer(config: &Config, site: &SiteConfig, peer: &str) -> Finding {
    let name = site.name();
    let registered = drawbridge::wireguard::register::Peers::new(&config.server.state_dir)
        .list()
        .unwrap_or_default();
    if !registered.iter().any(|p| p.name == peer) {
        return bad(
            format!("site {name}: upstream {}, but no WireGuard peer called `{peer}` is registered", site.upstream),
            format!("fix the name in `upstream`, or run `drawbridge wireguard add {peer}` and import what it prints on the router"),
        );
    }
    let port = config.wireguard.listen.port();
    let socket = drawbridge::admin::socket_path(&config.server.state_dir);
    match drawbridge::admin::request(&socket, &drawbridge::admin::Command::WireguardList).await {
        Ok(drawbridge::admin::Reply::Wireguard(peers)) => {
            let Some(status) = peers.iter().find(|p| p.name == peer) else {
                return bad(
                    format!("site {name}: the running drawbridge does not know peer `{peer}` yet"),
                    "reload it (`sudo systemctl reload drawbridge`)".into(),
                );
            };
            match (status.up, status.handshake_age) {
                (true, Some(age)) => good(format!(
                    "site {name}: WireGuard peer `{peer}` is up (last handshake {age} s ago, from {}); Jellyfin's Known proxies entry is {}",
                    status.endpoint.as_deref().unwrap_or("?"),
                    config.wireguard.address.addr()
                )),
                (_, None) => bad(
                    format!("site {name}: WireGuard peer `{peer}` has never completed a handshake with this edge"),
                    format!("import the config `wireguard add {peer}` printed on the router (a rotated key needs the new one), and open UDP port {port} in the VPS's firewall; `wg show` on the router says whether its handshakes are answered"),
                ),
                (_, Some(age)) => bad(
                    format!("site {name}: WireGuard peer `{peer}` is silent (last handshake {age} s ago, from {})", status.endpoint.as_deref().unwrap_or("?")),
                    "check the router is on and its WireGuard interface up, with PersistentKeepalive set as printed".into(),
                ),
            }
        }
        _ => note(format!(
            "site {name}: WireGuard peer `{peer}` is registered (drawbridge is not running: its handshakes were not checked)"
        )),
    }
}
