//! Kernel bans (`[guard] nftables = true`): every ban is also put into an
//! nftables set, so the kernel drops a banned address's packets to
//! drawbridge's ports before they reach the process — what fail2ban's
//! nftables action does, without fail2ban. drawbridge owns one table,
//! `inet drawbridge`: made at start (replacing one a crash left behind),
//! its two sets rewritten in one transaction at every change of the ban
//! list (an IPv6 ban is its /64, as in the guard), each element timing out
//! with its ban, and removed at exit. The addresses the home agent attaches
//! from are left out: the kernel cannot tell the agent's tunnel from a
//! client, and one household member's mistyped passwords must not cut it
//! (drawbridge itself lets the tunnel through and refuses the rest — see
//! `Guard::admit_agent`). It needs CAP_NET_ADMIN and the `nft`
//! command (Debian's `nftables`); without them drawbridge says so once and
//! bans in the process only, as without the setting.

use std::fmt::Write as _;
use std::time::SystemTime;

use std::net::IpAddr;

use ipnet::IpNet;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::ban::StoredBan;

/// drawbridge's table.
pub const TABLE: &str = "inet drawbridge";

/// The ports banned addresses are dropped on: the listeners' TCP ports and
/// the QUIC UDP ports. Other services of the machine (SSH) are left alone.
#[derive(Debug, Clone, Default)]
pub struct Ports {
    /// HTTP and HTTPS listeners.
    pub tcp: Vec<u16>,
    /// QUIC endpoints.
    pub udp: Vec<u16>,
}

/// The table with its sets and drop rules, replacing any earlier one.
pub fn ruleset(ports: &Ports) -> String {
    let list = |ports: &[u16]| {
        let mut ports = ports.to_vec();
        ports.sort_unstable();
        ports.dedup();
        ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut rules = String::new();
    for (proto, ports) in [("tcp", &ports.tcp), ("udp", &ports.udp)] {
        if ports.is_empty() {
            continue;
        }
        let ports = list(ports);
        let _ = writeln!(
            rules,
            "    ip saddr @banned4 {proto} dport {{ {ports} }} drop"
        );
        let _ = writeln!(
            rules,
            "    ip6 saddr @banned6 {proto} dport {{ {ports} }} drop"
        );
    }
    format!(
        "table {TABLE} {{}}\n\
         delete table {TABLE}\n\
         table {TABLE} {{\n  \
           set banned4 {{ type ipv4_addr; flags timeout; }}\n  \
           set banned6 {{ type ipv6_addr; flags interval, timeout; }}\n  \
           chain input {{\n    \
             type filter hook input priority filter - 10; policy accept;\n\
         {rules}  }}\n\
         }}\n"
    )
}

/// The sets' new contents: every ban in force at `now` (Unix seconds), with
/// the seconds it has left, but for those covering one of `homes` (the
/// agents' addresses). Addresses that are not IP addresses or /64s (never
/// written by drawbridge) are left out.
pub fn elements(bans: &[StoredBan], homes: &[IpAddr], now: u64) -> String {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for ban in bans.iter().filter(|b| b.until > now) {
        let left = ban.until - now;
        let net = match ban.address.parse::<IpNet>() {
            Ok(net) => net,
            Err(_) => match ban.address.parse::<IpAddr>() {
                Ok(ip) => IpNet::from(ip),
                Err(_) => continue,
            },
        };
        if homes
            .iter()
            .any(|home| net.contains(&crate::client_ip::normalise(*home)))
        {
            continue;
        }
        match net {
            IpNet::V6(net) => v6.push(format!("{net} timeout {left}s")),
            IpNet::V4(net) => v4.push(format!("{} timeout {left}s", net.addr())),
        }
    }
    let mut script = format!("flush set {TABLE} banned4\nflush set {TABLE} banned6\n");
    for (set, items) in [("banned4", v4), ("banned6", v6)] {
        if !items.is_empty() {
            let _ = writeln!(
                script,
                "add element {TABLE} {set} {{ {} }}",
                items.join(", ")
            );
        }
    }
    script
}

/// Keeps the kernel's sets equal to `bans` until `shutdown`, then removes
/// the table. Returns at once, said in the log, when the table cannot be
/// made.
pub async fn mirror(
    mut bans: watch::Receiver<Vec<StoredBan>>,
    mut homes: watch::Receiver<Vec<IpAddr>>,
    ports: Ports,
    shutdown: CancellationToken,
) {
    if let Err(error) = nft(&ruleset(&ports)).await {
        tracing::error!(
            "kernel bans are off: could not make the nftables table {TABLE}: {error} \
             (it needs CAP_NET_ADMIN and Debian's nftables; bans still hold in drawbridge)"
        );
        return;
    }
    tracing::info!(tcp = ?ports.tcp, udp = ?ports.udp, "kernel bans on: nftables table {TABLE}");
    loop {
        let current = bans.borrow_and_update().clone();
        let agents = homes.borrow_and_update().clone();
        if let Err(error) = nft(&elements(&current, &agents, unix_now())).await {
            tracing::error!("could not copy the bans into nftables: {error}");
        }
        tokio::select! {
            changed = bans.changed() => if changed.is_err() { break },
            changed = homes.changed() => if changed.is_err() { break },
            () = shutdown.cancelled() => break,
        }
    }
    match nft(&format!("delete table {TABLE}\n")).await {
        Ok(()) => tracing::info!("kernel bans removed: nftables table {TABLE}"),
        Err(error) => tracing::warn!("could not remove the nftables table {TABLE}: {error}"),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Runs `script` through `nft -f -` (one transaction: all of it or none).
async fn nft(script: &str) -> Result<(), String> {
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run nft: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().await.map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::{elements, ruleset, Ports};
    use crate::guard::ban::StoredBan;

    fn ban(address: &str, until: u64) -> StoredBan {
        StoredBan {
            address: address.to_string(),
            until,
            offences: 1,
            site: "s".into(),
            failures: 3,
            since: 0,
            reason: String::new(),
        }
    }

    #[test]
    fn the_sets_hold_each_ban_in_force_with_its_time_left_but_the_agents() {
        let script = elements(
            &[
                ban("192.0.2.7", 1_100),
                ban("2001:db8:1:2::/64", 4_600),
                ban("198.51.100.1", 999),
                ban("not an address", 2_000),
                ban("203.0.113.9", 2_000),
                ban("2001:db8:9:9::/64", 2_000),
            ],
            &[
                "203.0.113.9".parse().unwrap(),
                "2001:db8:9:9::1".parse().unwrap(),
            ],
            1_000,
        );
        assert_eq!(
            script,
            "flush set inet drawbridge banned4\nflush set inet drawbridge banned6\n\
             add element inet drawbridge banned4 { 192.0.2.7 timeout 100s }\n\
             add element inet drawbridge banned6 { 2001:db8:1:2::/64 timeout 3600s }\n"
        );
        assert_eq!(
            elements(&[], &[], 0),
            "flush set inet drawbridge banned4\nflush set inet drawbridge banned6\n"
        );
    }

    #[test]
    fn only_drawbridges_ports_are_closed_to_banned_addresses() {
        let rules = ruleset(&Ports {
            tcp: vec![443, 80, 443],
            udp: vec![],
        });
        assert!(rules.starts_with("table inet drawbridge {}\ndelete table inet drawbridge\n"));
        assert!(rules.contains("ip saddr @banned4 tcp dport { 80, 443 } drop\n"));
        assert!(rules.contains("ip6 saddr @banned6 tcp dport { 80, 443 } drop\n"));
        assert!(!rules.contains("udp"), "{rules}");
    }
}
