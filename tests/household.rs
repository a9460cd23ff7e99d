//! The path a household walks, as README.md and docs/operations.md tell it:
//! the package installed, every command run with `sudo` and without `-c`,
//! the enrol command the edge prints pasted at home as it is, the service
//! and the agent then started as their user — and what the household sees
//! afterwards (`check`, `doctor`, `bans`, `cache purge`).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::origin::Origin;
use crate::support::tunnel::{cli, cli_fails};
use crate::support::{binary, server_block, site, Process};

/// As root, in a throw-away root (an overlay over this machine's, in mount
/// and network namespaces of its own, as `packaging.rs` installs the
/// package): every command the docs give, with `sudo` and no `-c`, then the
/// unit's `check` and `run` as the `drawbridge` user, and the agent enrolled
/// both documented ways and run as that user, serving through the tunnel.
#[test]
fn every_command_run_with_sudo_leaves_files_the_service_reads() {
    if !crate::support::as_root("the household's sudo path was not walked") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let deb = crate::packaging::build_package(dir.path());
    for sub in ["upper", "work", "merged"] {
        std::fs::create_dir(dir.path().join(sub)).unwrap();
    }
    // A PID namespace too: when the walk ends, the kernel ends everything
    // it started (the edge, the agents, the fake Jellyfin).
    let out = Command::new("unshare")
        .args([
            "--mount", "--net", "--pid", "--fork", "sh", "-e", "-c", OVERLAY,
        ])
        .arg("overlay")
        .arg(dir.path())
        .arg(&deb)
        .arg(WALK)
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    for line in [
        "check as root: valid",
        "access.log drawbridge",
        "tokens.json drawbridge",
        "bans.json drawbridge",
        "peers.json drawbridge 600",
        "edge.key drawbridge 600",
        "router file printed",
        "the service reads the routers",
        "the unit's check: valid",
        "edge serving",
        "agent.pem drawbridge 600",
        "agent.toml drawbridge 600",
        "root-enrolled agent: answer 200",
        "enrolled as the service's user",
        "user-enrolled agent: answer 200",
        "banned at start: 203.0.113.9",
    ] {
        assert!(said.contains(line), "no `{line}` in:\n{said}");
    }
}

/// Run in `unshare --mount --net`: $1 the scratch folder, $2 the package,
/// $3 the walk to run inside the overlay's root.
const OVERLAY: &str = r#"
D=$1
mount -t overlay overlay -o lowerdir=/,upperdir=$D/upper,workdir=$D/work $D/merged
mount -t proc proc $D/merged/proc
mount --bind /dev $D/merged/dev
cp "$2" $D/merged/tmp/drawbridge.deb
exec chroot $D/merged sh -e -c "$3"
"#;

/// The household's walk, inside the throw-away root.
const WALK: &str = r#"
dpkg -i /tmp/drawbridge.deb >/dev/null 2>&1
ip link set lo up
as_service() { setpriv --reuid=drawbridge --regid=drawbridge --init-groups \
  --inh-caps=-all,+net_bind_service --ambient-caps=-all,+net_bind_service \
  --bounding-set=-all,+net_bind_service "$@"; }
as_agent() { HOME=/var/lib/drawbridge setpriv --reuid=drawbridge --regid=drawbridge --init-groups "$@"; }
wait_for() { for i in $(seq 150); do grep -q "$1" "$2" 2>/dev/null && return 0; sleep 0.1; done; echo "never: $1 in $2"; cat "$2"; return 1; }
mkdir -p /tmp/jellyfin/web && echo 'jellyfin web' > /tmp/jellyfin/web/index.html
(cd /tmp/jellyfin && exec python3 -m http.server 8096 --bind 127.0.0.1 >/dev/null 2>&1) &
for i in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:8096/web/index.html && break; sleep 0.1; done
cat > /etc/drawbridge/drawbridge.toml <<'EOF'
[server]
http = ["127.0.0.1:80"]
https = ["127.0.0.1:443"]
quic = []
admin_listen = "off"

[log]
access = "/var/log/drawbridge/access.log"

[[site]]
host = "jelly.test"
upstream = "tunnel:home/jellyfin"
tls = "internal"
EOF
# The admin's shell is in their home folder: no -c, as the docs write it.
cd /root
drawbridge check >/tmp/check.txt 2>&1 && echo "check as root: valid"
stat -c "access.log %U" /var/log/drawbridge/access.log
drawbridge tunnel add home --edge 127.0.0.1:443 >/tmp/add.txt
stat -c "tokens.json %U" /var/lib/drawbridge/tunnel/tokens.json
drawbridge bans add 203.0.113.9 >/dev/null 2>&1
stat -c "bans.json %U" /var/lib/drawbridge/bans.json
drawbridge wireguard add cabin >/tmp/cabin.conf 2>/tmp/cabin.txt
stat -c "peers.json %U %a" /var/lib/drawbridge/wireguard/peers.json
stat -c "edge.key %U %a" /var/lib/drawbridge/wireguard/edge.key
grep -q "^Endpoint = jelly.test:51820" /tmp/cabin.conf && echo "router file printed"
as_service drawbridge wireguard list -c /etc/drawbridge/drawbridge.toml 2>/dev/null | grep -q "^cabin" && echo "the service reads the routers"
# The unit: ExecStartPre's check, then run, as its user.
as_service drawbridge check -c /etc/drawbridge/drawbridge.toml >/dev/null 2>&1 && echo "the unit's check: valid"
as_service drawbridge run -c /etc/drawbridge/drawbridge.toml 2>/tmp/edge.log &
wait_for "listening listener=127.0.0.1:443" /tmp/edge.log && echo "edge serving"
# At home: the line the edge printed, pasted as it is, with sudo.
enroll=$(sed -n 's/^ *\(drawbridge agent enroll .*\)$/\1/p' /tmp/add.txt)
$enroll >/tmp/enroll.txt 2>&1 || { cat /tmp/enroll.txt; exit 1; }
stat -c "agent.pem %U %a" /etc/drawbridge/agent.pem
stat -c "agent.toml %U %a" /etc/drawbridge/agent.toml
as_agent drawbridge agent 2>/tmp/agent.log &
agent=$!
wait_for "agent connected" /tmp/edge.log
ca=/var/lib/drawbridge/ca/root.pem
get() { curl -s -o /dev/null -w "%{http_code}" --cacert $ca --resolve jelly.test:443:127.0.0.1 https://jelly.test/web/index.html; }
echo "root-enrolled agent: answer $(get)"
kill $agent; wait $agent || true
# The other documented way: enrolled as the service's user.
rm -f /etc/drawbridge/agent.toml /etc/drawbridge/agent.pem
drawbridge tunnel add home --edge 127.0.0.1:443 >/tmp/add2.txt
token=$(sed -n 's/^ *drawbridge agent enroll //p' /tmp/add2.txt)
as_agent drawbridge agent enroll "$token" -c /etc/drawbridge/agent.toml >/tmp/enroll2.txt 2>&1 \
  && echo "enrolled as the service's user" || cat /tmp/enroll2.txt
: >/tmp/edge-mark
as_agent drawbridge agent -c /etc/drawbridge/agent.toml 2>/tmp/agent2.log &
for i in $(seq 150); do [ "$(grep -c 'agent connected' /tmp/edge.log)" -ge 3 ] && break; sleep 0.1; done
echo "user-enrolled agent: answer $(get)"
drawbridge bans list | grep -q 203.0.113.9 && echo "banned at start: 203.0.113.9"
"#;

/// The enrol command `tunnel add` prints, pasted at home as it is (no
/// `-c`: a bare `agent.toml` in the current folder), works — and works
/// again when run twice (a lost answer, a failed write); `run --pid-file`
/// with a bare name writes it. Without `-c`, the edge's commands find
/// `DRAWBRIDGE_CONFIG`, and say every place they looked when nothing is found.
#[tokio::test]
async fn the_printed_enrol_command_works_at_home_and_twice() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let edge_config = dir.path().join("drawbridge.toml");
    std::fs::write(
        &edge_config,
        crate::support::tunnel::edge_config(dir.path(), ""),
    )
    .unwrap();
    let edge = Process::start(&edge_config);
    let vps = tempfile::tempdir().unwrap();
    // On the VPS, in some other folder, with the config named by the variable.
    let add = Command::new(binary())
        .args(["tunnel", "add", "home", "--edge", &edge.https.to_string()])
        .current_dir(vps.path())
        .env("DRAWBRIDGE_CONFIG", &edge_config)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&add.stdout).into_owned();
    assert!(add.status.success(), "{printed}");
    assert!(printed.contains("It serves jelly.test here."), "{printed}");
    let enroll: Vec<String> = printed
        .lines()
        .find_map(|l| l.trim().strip_prefix("drawbridge "))
        .unwrap()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    // Nothing found where it looked: every place named.
    let lost = Command::new(binary())
        .args(["tunnel", "list"])
        .current_dir(vps.path())
        .env_remove("DRAWBRIDGE_CONFIG")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&lost.stderr);
    assert!(!lost.status.success());
    assert!(
        said.contains("looked for drawbridge.toml and /etc/drawbridge/drawbridge.toml")
            && said.contains("DRAWBRIDGE_CONFIG"),
        "{said}"
    );
    if Path::new("/etc/drawbridge").exists() {
        eprintln!("skipped the bare agent.toml half: /etc/drawbridge exists on this machine");
        return;
    }
    let home = tempfile::tempdir().unwrap();
    for attempt in ["first", "second"] {
        let out = Command::new(binary())
            .args(&enroll)
            .current_dir(home.path())
            .env_remove("DRAWBRIDGE_AGENT_CONFIG")
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{attempt} time: {said}");
        assert!(
            said.contains("the agent's config is agent.toml") && said.contains("drawbridge agent"),
            "{said}"
        );
    }
    assert!(home.path().join("agent.toml").exists());
    assert!(home.path().join("agent.pem").exists());
    let (list, _) = cli(&["tunnel", "list", "-c", edge_config.to_str().unwrap()]);
    assert_eq!(list.matches("home\t").count(), 1, "one agent: {list}");
    // The agent, started in that folder without -c, attaches and serves.
    crate::support::tunnel::set_services(&home.path().join("agent.toml"), origin.addr, 1);
    let mut agent = Command::new(binary())
        .arg("agent")
        .current_dir(home.path())
        .env_remove("DRAWBRIDGE_AGENT_CONFIG")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(edge.wait_for_log("agent connected", Duration::from_secs(10)));
    let _ = agent.kill();
    let _ = agent.wait();
    // A pid file by a bare name, as `run --pid-file db.pid`.
    let config = home.path().join("pid.toml");
    std::fs::write(
        &config,
        format!(
            "{}{}",
            server_block(home.path()),
            site("jelly.test", origin.addr, "")
        ),
    )
    .unwrap();
    let mut run = Command::new(binary())
        .args(["run", "-c", "pid.toml", "--pid-file", "db.pid"])
        .current_dir(home.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid_file = home.path().join("db.pid");
    crate::support::poll_until(|| pid_file.exists(), "the pid file").await;
    let written = std::fs::read_to_string(&pid_file).unwrap();
    assert_eq!(written.trim(), run.id().to_string());
    let _ = run.kill();
    let _ = run.wait();
}

/// A refused enrolment tells the person at home why in words, never the
/// edge's own file paths.
#[tokio::test]
async fn a_refused_enrolment_shows_no_path_of_the_edge() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("drawbridge.toml");
    std::fs::write(&config, crate::support::tunnel::edge_config(dir.path(), "")).unwrap();
    let edge = Process::start(&config);
    let token = crate::support::tunnel::add_token(&config, "home", edge.https);
    // The edge can no longer store its agents (a folder where the file goes).
    std::fs::create_dir_all(dir.path().join("state/tunnel/agents.json/x")).unwrap();
    let home = dir.path().join("home/agent.toml");
    std::fs::create_dir_all(home.parent().unwrap()).unwrap();
    let said = cli_fails(&["agent", "enroll", &token, "-c", home.to_str().unwrap()]);
    assert!(said.contains("the edge refused"), "{said}");
    assert!(
        !said.contains(&dir.path().display().to_string()) && !said.contains("tokens.json"),
        "{said}"
    );
}
