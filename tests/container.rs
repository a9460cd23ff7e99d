//! drawbridge's container image (`packaging/container`), as a household runs
//! it: built by `packaging/container/build` with Podman from Debian's
//! packages (no registry), the edge in one container of it and the agent in
//! another, the fake Jellyfin behind the agent. The edge's config and state
//! are the image's volumes; the token comes from `tunnel add` run inside the
//! edge's container, the agent is enrolled by one `agent enroll` in its own,
//! which learns where Jellyfin is from `DRAWBRIDGE_JELLYFIN` as a compose
//! file sets it. Podman runs here as the reference says containers run on
//! these machines: Debian's Podman with runc and a `containers.conf` of the
//! test's own; both containers share the host's network, so the edge
//! listens on 127.0.0.1 on ports it picks and the fake Jellyfin stays on
//! 127.0.0.1.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use crate::support::origin::Origin;
use crate::support::tunnel::{client_for, count, token_in, wait_until, websocket_at, Agent};
use crate::support::{binary, Process};

/// The uid and gid the image runs as (its /etc/passwd).
const IMAGE_USER: u32 = 10001;

/// Podman with runc and the test's own `containers.conf`; what it built and
/// started is removed when dropped.
struct Podman {
    conf: tempfile::TempDir,
    image: String,
    names: std::cell::RefCell<Vec<String>>,
}

impl Podman {
    /// Podman, if this machine can run containers the way the reference
    /// says (root, Podman and runc installed).
    fn here() -> Option<Podman> {
        let found = |program: &str| {
            Command::new(program)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !nix::unistd::geteuid().is_root() || !found("podman") || !found("runc") {
            return None;
        }
        let conf = tempfile::tempdir().unwrap();
        std::fs::write(
            conf.path().join("containers.conf"),
            "[containers]\ndefault_ulimits = []\n[engine]\ncgroup_manager = \"cgroupfs\"\n",
        )
        .unwrap();
        Some(Podman {
            conf,
            image: format!("localhost/drawbridge-test:{}", std::process::id()),
            names: Default::default(),
        })
    }

    fn conf(&self) -> PathBuf {
        self.conf.path().join("containers.conf")
    }

    /// `podman --runtime runc ARGS…`, not yet run.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("podman");
        command
            .env("CONTAINERS_CONF", self.conf())
            .args(["--runtime", "runc"])
            .args(args);
        command
    }

    /// `podman ARGS…`, run to its end.
    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Builds the image with the binary the tests use.
    fn build(&self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/container/build");
        let out = Command::new(script)
            .arg(binary())
            .arg(&self.image)
            .env("CONTAINERS_CONF", self.conf())
            .env("ENGINE_FLAGS", "--runtime runc")
            .env("CONTAINER_ENGINE", "podman")
            .output()
            .unwrap();
        let stdout = succeeded(&out);
        assert_eq!(stdout.trim(), self.image, "the build prints the image");
    }

    /// `podman run --rm --name NAME --network=host VOLUMES… IMAGE ARGS…`,
    /// attached, not yet run.
    fn container(
        &self,
        name: &str,
        volumes: &[(&Path, &str)],
        env: &[&str],
        args: &[&str],
    ) -> Command {
        self.names.borrow_mut().push(name.to_string());
        let mut command = self.command(&["run", "--rm", "--name", name, "--network=host"]);
        for (host, inside) in volumes {
            command
                .arg("-v")
                .arg(format!("{}:{inside}", host.display()));
        }
        for pair in env {
            command.args(["-e", pair]);
        }
        command.arg(&self.image).args(args);
        command
    }

    /// The uid a running container's first process has, as this machine
    /// sees it.
    fn uid_of(&self, name: &str) -> u32 {
        let out = self.run(&["inspect", "--format", "{{.State.Pid}}", name]);
        let pid = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        for name in self.names.borrow().iter() {
            let _ = self.run(&["rm", "-f", "-t", "0", name]);
        }
        let _ = self.run(&["rmi", "-f", &self.image]);
    }
}

/// The stdout of a command that must have succeeded.
fn succeeded(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A folder the image's user owns.
fn owned_folder(path: &Path) -> PathBuf {
    std::fs::create_dir_all(path).unwrap();
    let id = Some(nix::unistd::Uid::from_raw(IMAGE_USER));
    nix::unistd::chown(path, id, Some(nix::unistd::Gid::from_raw(IMAGE_USER))).unwrap();
    path.to_path_buf()
}

/// The edge and the agent, each a container of the image, in front of the
/// fake Jellyfin: a request and a WebSocket reach it through the tunnel;
/// both run as the image's user, not root; the edge's health check passes
/// and SIGHUP reloads it; each stops on SIGTERM within the shutdown grace,
/// exiting 0.
#[tokio::test]
async fn the_edge_and_the_agent_run_as_containers_of_the_image() {
    let Some(podman) = Podman::here() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must be able to run containers (root, podman, runc: .ci/run installs them)"
        );
        eprintln!("skipped: containers need root, podman and runc");
        return;
    };
    podman.build();
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    // The edge's volumes: its config (written by the household), its state.
    let etc = owned_folder(&dir.path().join("etc"));
    let state = owned_folder(&dir.path().join("state"));
    std::fs::write(
        etc.join("drawbridge.toml"),
        "[server]\nhttp = [\"127.0.0.1:0\"]\nhttps = [\"127.0.0.1:0\"]\n\
         state_dir = \"/var/lib/drawbridge\"\nshutdown_grace = \"5s\"\n\n\
         [log]\naccess = \"off\"\n\n[guard]\nban_own_addresses = true\n\n\
         [[site]]\nhost = \"jelly.test\"\nupstream = \"tunnel:home/jellyfin\"\n\
         tls = \"internal\"\nhttps_redirect = false\ngate = \"off\"\n",
    )
    .unwrap();
    let edge_name = format!("drawbridge-edge-{}", std::process::id());
    let edge = Process::start_command(podman.container(
        &edge_name,
        &[(&etc, "/etc/drawbridge"), (&state, "/var/lib/drawbridge")],
        &[],
        &[],
    ));
    // The token, from inside the edge's container (it finds its config).
    let https = edge.https.to_string();
    let token = token_in(&succeeded(&podman.run(&[
        "exec",
        &edge_name,
        "drawbridge",
        "tunnel",
        "add",
        "home",
        "--edge",
        &https,
    ])));
    // Enrolled in the agent's container, as a compose file runs it: where
    // Jellyfin is comes from the environment.
    let home = owned_folder(&dir.path().join("home"));
    let jellyfin = format!("DRAWBRIDGE_JELLYFIN=http://{}", origin.addr);
    let agent_name = format!("drawbridge-agent-{}", std::process::id());
    // A Jellyfin address the agent could not use is said before the token
    // is spent.
    let mistaken = podman
        .container(
            &format!("{agent_name}-mistaken"),
            &[(&home, "/etc/drawbridge")],
            &["DRAWBRIDGE_JELLYFIN=jellyfin:8096"],
            &["agent", "enroll", &token],
        )
        .output()
        .unwrap();
    let why = String::from_utf8_lossy(&mistaken.stderr).into_owned();
    assert!(!mistaken.status.success());
    assert!(
        why.contains("DRAWBRIDGE_JELLYFIN=jellyfin:8096 is not where"),
        "{why}"
    );
    let enrolled = podman
        .container(
            &format!("{agent_name}-enroll"),
            &[(&home, "/etc/drawbridge")],
            &[&jellyfin],
            &["agent", "enroll", &token],
        )
        .output()
        .unwrap();
    let said = succeeded(&enrolled);
    assert!(
        said.contains("then run: the agent's container (its command: `agent`)"),
        "{said}"
    );
    let config = std::fs::read_to_string(home.join("agent.toml")).unwrap();
    assert!(
        config.contains(&format!("jellyfin = \"http://{}\"", origin.addr)),
        "{config}"
    );
    let mut agent = Agent::start_command(podman.container(
        &agent_name,
        &[(&home, "/etc/drawbridge")],
        &[],
        &["agent"],
    ));
    wait_until(
        || count(&edge, "agent connected") >= 2,
        Duration::from_secs(20),
        "the agent's two connections",
    )
    .await;

    // A request and a WebSocket reach Jellyfin through the tunnel.
    let client = client_for(dir.path(), edge.https, false);
    let info = client
        .get(format!(
            "https://jelly.test:{}/System/Info/Public",
            edge.https.port()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(info.status(), 200);
    assert!(info.text().await.unwrap().contains("ServerName"));
    let ca = std::fs::read(state.join("ca/root.pem")).unwrap();
    drop(websocket_at(edge.https, &ca).await);
    // The Known proxies hint names the address Jellyfin sees the agent at.
    wait_until(
        || agent.count("add 127.0.0.1 to Jellyfin's Known proxies") == 1,
        Duration::from_secs(10),
        "the agent's Known proxies hint",
    )
    .await;

    // Not root, either of them; the edge's health check passes.
    assert_eq!(podman.uid_of(&edge_name), IMAGE_USER);
    assert_eq!(podman.uid_of(&agent_name), IMAGE_USER);
    succeeded(&podman.run(&["healthcheck", "run", &edge_name]));
    // SIGHUP to the container (drawbridge is its PID 1) reloads the config.
    succeeded(&podman.run(&["kill", "--signal", "HUP", &edge_name]));
    wait_until(
        || count(&edge, "config reloaded") == 1,
        Duration::from_secs(10),
        "the edge's reload",
    )
    .await;

    // SIGTERM (`podman stop`) ends each within the grace, cleanly (a kill
    // after podman's own timeout would be 137).
    let mut edge = edge;
    for (name, child) in [
        (&agent_name, &mut agent.child),
        (&edge_name, &mut edge.child),
    ] {
        let asked = Instant::now();
        succeeded(&podman.run(&["stop", "-t", "20", name]));
        let status = child.wait().unwrap();
        let took = asked.elapsed();
        assert_eq!(
            status.code(),
            Some(0),
            "{name} exited {status:?} after {took:?}"
        );
        assert!(
            took < Duration::from_secs(10),
            "{name} took {took:?} to stop"
        );
    }
}

/// The compose files name what the image and the binary read: the agent's
/// command and `DRAWBRIDGE_JELLYFIN` (as the test above sets them), the
/// sysctl the edge's ports need, the volumes the image declares, a stop
/// timeout longer than the default shutdown grace.
#[test]
fn the_compose_files_name_what_the_image_reads() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |path: &str| std::fs::read_to_string(root.join(path)).unwrap();
    let (home, edge, image) = (
        read("examples/compose/home.yml"),
        read("examples/compose/edge.yml"),
        read("packaging/container/Containerfile"),
    );
    for needed in [
        "command: [\"agent\"]",
        "DRAWBRIDGE_JELLYFIN: http://jellyfin:8096",
        ":/etc/drawbridge",
        "agent enroll <token>",
    ] {
        assert!(home.contains(needed), "home.yml lacks {needed}");
    }
    for needed in [
        "net.ipv4.ip_unprivileged_port_start: 0",
        "443:443/udp",
        "/etc/drawbridge/drawbridge.toml:ro",
        ":/var/lib/drawbridge",
        "stop_grace_period: 40s",
    ] {
        assert!(edge.contains(needed), "edge.yml lacks {needed}");
    }
    for needed in [
        "VOLUME [\"/etc/drawbridge\", \"/var/lib/drawbridge\"]",
        &format!("USER {IMAGE_USER}:{IMAGE_USER}"),
        "ENV DRAWBRIDGE_IN_CONTAINER=1",
        "HEALTHCHECK",
    ] {
        assert!(image.contains(needed), "the Containerfile lacks {needed}");
    }
}
