//! Running under a supervisor: systemd's readiness protocol (READY, RELOADING,
//! STOPPING, STATUS), a pid file, `run` naming what it serves, and a bind
//! failure that says what to do.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{binary, config_file, site};

/// A child process killed when the test ends, passed or failed.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn systemd_hears_ready_reloading_and_stopping_and_the_pid_file_comes_and_goes() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        dir.path(),
        &site("jelly.test", "127.0.0.1:9".parse().unwrap(), ""),
    );
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let pid_file = dir.path().join("drawbridge.pid");
    let mut child = Reaped(
        Command::new(binary())
            .args(["run", "-c"])
            .arg(&config)
            .arg("--pid-file")
            .arg(&pid_file)
            .env("NOTIFY_SOCKET", &socket_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let next = || {
        let mut buf = [0u8; 256];
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    // A reload sent the moment the process can be found (its pid file)
    // reloads it: the signals are its own before then.
    let pid = loop {
        match std::fs::read_to_string(&pid_file) {
            Ok(pid) if pid.ends_with('\n') => break pid.trim().parse::<u32>().unwrap(),
            _ => std::thread::yield_now(),
        }
    };
    assert_eq!(pid, child.0.id());
    // At once: spawning `kill` would take longer than the gap it tries.
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    let signal = |name: &str| {
        assert!(Command::new("kill")
            .arg(format!("-{name}"))
            .arg(child.0.id().to_string())
            .status()
            .unwrap()
            .success());
    };
    let ready = next();
    assert!(
        ready.starts_with("READY=1\nSTATUS=serving 1 sites"),
        "{ready}"
    );
    // A command run the moment the service is up reaches the process, not
    // the stored bans behind its back.
    assert!(
        dir.path().join("state/admin.sock").exists(),
        "the admin socket is open before readiness is told"
    );
    assert_eq!(next(), "RELOADING=1");
    assert!(next().starts_with("READY=1"));
    signal("TERM");
    assert_eq!(next(), "STOPPING=1");
    assert!(child.0.wait().unwrap().success());
    assert!(!pid_file.exists(), "the pid file is removed at exit");
}

#[test]
fn run_names_each_site_and_a_taken_port_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        dir.path(),
        &site("jelly.test", "127.0.0.1:9".parse().unwrap(), ""),
    );
    let process = crate::support::Process::start(&config);
    // The site's line names its certificate's expiry (the local CA's leaf
    // lasts weeks).
    assert!(process.wait_for_log(
        "site jelly.test -> http://127.0.0.1:9",
        Duration::from_secs(5)
    ));
    let line = process
        .log
        .lock()
        .unwrap()
        .iter()
        .find(|l| l.contains("site jelly.test -> "))
        .cloned()
        .unwrap();
    let days: u64 = line
        .split("; certificate: ")
        .nth(1)
        .and_then(|rest| rest.strip_suffix(" days left")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no certificate expiry in {line}"));
    assert!((20..=31).contains(&days), "{line}");
    // The same address again: refused, with the reason in plain words.
    let taken = process.https;
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "https = [\"127.0.0.1:0\"]",
        &format!("https = [\"{taken}\"]"),
    );
    let other = tempfile::tempdir().unwrap();
    let second = other.path().join("drawbridge.toml");
    std::fs::write(
        &second,
        text.replace(
            &dir.path().display().to_string(),
            &other.path().display().to_string(),
        ),
    )
    .unwrap();
    let out = Command::new(binary())
        .args(["run", "-c"])
        .arg(&second)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {taken}"))
            && stderr.contains("already listens there"),
        "{stderr}"
    );
}

#[tokio::test]
async fn status_shows_the_running_process() {
    let origin = crate::support::origin::Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        dir.path(),
        &site("jelly.test", origin.addr, "https_redirect = false"),
    );
    let process = crate::support::Process::start(&config);
    let client = reqwest::Client::builder()
        .resolve("jelly.test", process.http)
        .build()
        .unwrap();
    let poster = format!(
        "http://jelly.test:{}/Items/abc/Images/Primary?tag=s",
        process.http.port()
    );
    for _ in 0..2 {
        client
            .get(&poster)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
    }
    let status = |json: bool| {
        let mut command = Command::new(binary());
        command.args(["status", "-c"]).arg(&config);
        if json {
            command.arg("--json");
        }
        let out = command.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = status(false);
    assert!(text.contains("site jelly.test -> http://"), "{text}");
    let days: u64 = text
        .split("certificate: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no certificate days in {text}"));
    assert!(
        (20..=31).contains(&days),
        "the local CA's leaf lasts weeks: {days}"
    );
    assert!(text.contains("edge cache: 1 hits, 1 misses"), "{text}");
    assert!(text.contains("tunnel: no agents enrolled"), "{text}");
    assert!(text.contains("side doors: gate off"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&status(true)).unwrap();
    // Named fields, as docs/observability.md documents them.
    assert_eq!(json["cache"]["hits"], 1, "{json}");
    assert_eq!(json["cache"]["misses"], 1, "{json}");
    assert_eq!(json["certificates"][0]["site"], "jelly.test", "{json}");
    assert!(
        json["certificates"][0]["expires"].as_u64().is_some(),
        "{json}"
    );
    assert_eq!(json["sites"][0]["name"], "jelly.test", "{json}");
    assert_eq!(json["sites"][0]["upstream_up"], true, "{json}");
    assert_eq!(json["sites"][0]["gate"], "off", "{json}");
    assert_eq!(json["sites"][0]["gate_refused"], 0, "{json}");
    assert!(json["connections"].as_u64().is_some());
    drop(process);
    let stopped = Command::new(binary())
        .args(["status", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!stopped.status.success());
    assert!(String::from_utf8_lossy(&stopped.stderr).contains("drawbridge is not running"));
}

/// Started as root with `[server] user`: bound first, then the process is
/// that user in every thread, with no capability left, owns its state
/// folder and log file, and still serves. A user that does not exist stops
/// `check` and `run` before anything binds. (Only as root: CI runs so.)
#[test]
fn started_as_root_it_serves_as_the_configured_user() {
    if !crate::support::as_root("nothing to drop; skipped") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The way to the state folder must be open to the user, as /var/lib is.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = dir.path().join("error.log");
    let body = format!(
        "{}\n[log]\nerror = \"{}\"\n",
        site("jelly.test", "127.0.0.1:9".parse().unwrap(), ""),
        log.display()
    );
    let config = config_file(dir.path(), &body);
    let with_user = |user: &str| {
        let text = std::fs::read_to_string(&config).unwrap();
        let text = text.replacen("[server]\n", &format!("[server]\nuser = \"{user}\"\n"), 1);
        let path = dir.path().join(format!("{user}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    };

    let missing = with_user("no-such-user-here");
    let out = Command::new(binary())
        .args(["check", "-c"])
        .arg(&missing)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("[server] user `no-such-user-here` does not exist"),
        "{said}"
    );
    let out = Command::new(binary())
        .args(["run", "-c"])
        .arg(&missing)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr).into_owned()
        + &std::fs::read_to_string(&log).unwrap_or_default();
    assert!(said.contains("does not exist"), "{said}");
    assert!(!said.contains("listening"), "nothing binds: {said}");

    let nobody = with_user("nobody");
    let process = crate::support::Process::start_logging_to(&nobody, Some(&log));
    assert!(process.wait_for_log("root given up", Duration::from_secs(5)));
    let status = std::fs::read_to_string(format!("/proc/{}/status", process.child.id())).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        field("Uid:"),
        ["65534"; 4],
        "real, effective, saved, fs: {status}"
    );
    assert_eq!(field("Gid:"), ["65534"; 4], "{status}");
    assert_eq!(field("CapEff:"), ["0000000000000000"], "{status}");
    assert_eq!(field("CapPrm:"), ["0000000000000000"], "{status}");
    // Every thread, not only the main one.
    for task in std::fs::read_dir(format!("/proc/{}/task", process.child.id())).unwrap() {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        assert!(
            status.contains("Uid:\t65534\t65534\t65534\t65534"),
            "{status}"
        );
    }
    // It owns what it writes later, and still answers.
    use std::os::unix::fs::MetadataExt;
    let key = dir.path().join("state/ca/root.key");
    assert_eq!(std::fs::metadata(&key).unwrap().uid(), 65534);
    assert_eq!(std::fs::metadata(&log).unwrap().uid(), 65534);
    let mut stream = std::net::TcpStream::connect(process.http).unwrap();
    use std::io::{Read, Write};
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: jelly.test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 308"), "{answer}");
}
