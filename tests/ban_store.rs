//! The stored bans survive what a busy server and its admin do to them: many
//! bans at once (each save with its own temporary file, bursts folded into
//! few writes), a `kill -9` in the middle of them, a file drawbridge cannot
//! read (refuse to start rather than serve banned clients), and root editing
//! the file for a service that runs as another user.

use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::Duration;

use tokio::net::TcpSocket;

use crate::support::origin::Origin;
use crate::support::{bans_cli, binary, config_file, site, Process};

/// Three failed logins from `from`, at once, over plain HTTP to `http`.
async fn three_failures(from: String, http: std::net::SocketAddr) {
    for _ in 0..3 {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
        let Ok(mut tcp) = socket.connect(http).await else {
            return;
        };
        let request = "POST /Users/AuthenticateByName HTTP/1.1\r\nHost: jelly.test\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
        crate::support::exchange(&mut tcp, request.as_bytes(), Duration::from_secs(5)).await;
    }
}

fn config(dir: &std::path::Path, origin: std::net::SocketAddr) -> std::path::PathBuf {
    let site = site(
        "jelly.test",
        origin,
        "login_rate = \"off\"\nhttps_redirect = false",
    );
    config_file(
        dir,
        &format!(
            "[guard]\nmax_connections_per_ip = 10000\n{}\n{site}",
            crate::support::BAN_LOOPBACK
        ),
    )
}

fn stored_bans(dir: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("state/bans.json")).unwrap();
    let file: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("bans.json is damaged ({e}): {} bytes", text.len()));
    file["bans"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_hundred_and_fifty_bans_at_once_are_all_stored_and_survive_kill_9() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), origin.addr);
    let process = Process::start(&path);
    let mut attackers = tokio::task::JoinSet::new();
    for i in 0..150 {
        attackers.spawn(three_failures(format!("127.0.6.{}", i + 1), process.http));
    }
    while attackers.join_next().await.is_some() {}
    let mut stored = 0;
    for _ in 0..100 {
        stored = stored_bans(dir.path()).len();
        if stored == 150 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stored, 150, "every ban reached the file");
    let log = process.log.lock().unwrap().join("\n");
    assert!(!log.contains("cannot store"), "a save failed:\n{log}");
    drop(process);

    // kill -9 while another 150 bans are being written.
    let process = Process::start(&path);
    let mut attackers = tokio::task::JoinSet::new();
    for i in 0..150 {
        attackers.spawn(three_failures(format!("127.0.7.{}", i + 1), process.http));
    }
    // Waits without blocking the attackers' tasks.
    let mut banning = false;
    for _ in 0..200 {
        banning = process
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("ban 127.0.7."));
        if banning {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(banning, "no ban before the kill");
    let mut process = process;
    process.child.kill().unwrap();
    process.child.wait().unwrap();
    attackers.abort_all();
    assert!(
        stored_bans(dir.path()).len() >= 150,
        "the earlier bans are kept whole"
    );
    let process = Process::start(&path);
    let log = process.log.lock().unwrap().join("\n");
    assert!(!log.contains("damaged"), "{log}");
    let leftovers: Vec<String> = std::fs::read_dir(dir.path().join("state"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[tokio::test]
async fn an_unreadable_bans_file_stops_the_start_and_says_why() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), origin.addr);
    // Unreadable for drawbridge even as root: a folder in its place.
    std::fs::create_dir_all(dir.path().join("state/bans.json")).unwrap();
    let out = Command::new(binary())
        .args(["run", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success(), "started without its bans");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot read the bans file") && stderr.contains("bans.json"),
        "{stderr}"
    );
    assert!(
        dir.path().join("state/bans.json").is_dir(),
        "nothing was set aside or replaced"
    );
}

#[test]
fn the_cli_keeps_the_bans_files_owner() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), "127.0.0.1:9".parse().unwrap());
    let bans = dir.path().join("state/bans.json");
    std::fs::create_dir_all(bans.parent().unwrap()).unwrap();
    std::fs::write(
        &bans,
        r#"{"bans":[{"address":"203.0.113.9","until":99999999999,"offences":1}]}"#,
    )
    .unwrap();
    // The service's own user (tests run as root, which may give files away).
    std::os::unix::fs::chown(&bans, Some(65534), Some(65534)).unwrap();
    bans_cli(&path, &["remove", "203.0.113.9"]);
    let meta = std::fs::metadata(&bans).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (65534, 65534),
        "the file was taken over"
    );
    assert!(stored_bans(dir.path()).is_empty());
}

#[test]
fn the_admin_socket_comes_back_when_the_state_folder_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), "127.0.0.1:9".parse().unwrap());
    let process = Process::start(&path);
    let socket = dir.path().join("state/admin.sock");
    // Within 10 s (the socket is bound by a task of its own, which may run
    // after the listeners say they listen).
    let appears = || {
        (0..200).any(|_| {
            let there = socket.exists();
            if !there {
                std::thread::sleep(Duration::from_millis(50));
            }
            there
        })
    };
    assert!(appears(), "no admin socket");
    std::fs::remove_dir_all(dir.path().join("state")).unwrap();
    assert!(appears(), "no new admin socket");
    let (_, stderr) = bans_cli(&path, &["list"]);
    assert!(
        !stderr.contains("not running"),
        "the command thought drawbridge had stopped: {stderr}"
    );
    drop(process);
}

/// The disk fails while bans are issued (here: a folder where `bans.json`
/// goes, as a full or read-only disk fails the write): the ban holds in the
/// process, is stored by itself once the disk works again, and — when the
/// disk comes back just before a shutdown, while the retries are far apart —
/// by the shutdown; after a restart every ban is there, and a ban lifted
/// during the fault stays lifted.
#[tokio::test]
async fn bans_are_stored_once_the_disk_works_again_and_at_shutdown() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), origin.addr);
    let bans_file = dir.path().join("state/bans.json");
    let block = || {
        let _ = std::fs::remove_file(&bans_file);
        std::fs::create_dir_all(bans_file.join("in-the-way")).unwrap();
    };
    let unblock = || std::fs::remove_dir_all(&bans_file).unwrap();
    let process = Process::start(&path);
    let bans = {
        let path = path.clone();
        move |args: &[&str]| {
            Command::new(binary())
                .args(["bans"])
                .args(args)
                .arg("-c")
                .arg(&path)
                .output()
                .unwrap()
        }
    };
    // Stored once first, then the disk fails.
    assert!(bans(&["add", "203.0.113.1"]).status.success());
    block();
    let refused = tokio::task::spawn_blocking({
        let bans = bans.clone();
        move || bans(&["add", "203.0.113.2"])
    })
    .await
    .unwrap();
    assert!(
        !refused.status.success(),
        "the command says it was not stored"
    );
    let lifted = tokio::task::spawn_blocking({
        let bans = bans.clone();
        move || bans(&["remove", "203.0.113.1"])
    })
    .await
    .unwrap();
    assert!(!lifted.status.success());
    assert!(
        process.wait_for_log("trying again until it can", Duration::from_secs(5)),
        "the failure is logged"
    );
    // The disk works again: stored by itself.
    unblock();
    crate::support::poll_until_async(
        || async {
            std::fs::read_to_string(&bans_file)
                .is_ok_and(|text| text.contains("203.0.113.2") && !text.contains("203.0.113.1"))
        },
        "the bans stored once the disk works again",
    )
    .await;
    assert!(process.wait_for_log("stored the bans", Duration::from_secs(5)));

    // Fails again, long enough for the retries to be seconds apart; comes
    // back, and the process stops before the next retry.
    block();
    let third = tokio::task::spawn_blocking({
        let bans = bans.clone();
        move || bans(&["add", "203.0.113.3"])
    })
    .await
    .unwrap();
    assert!(!third.status.success());
    tokio::time::sleep(Duration::from_secs(4)).await;
    unblock();
    process.signal("TERM");
    let mut process = process;
    process.child.wait().unwrap();
    let text = std::fs::read_to_string(&bans_file).expect("stored at shutdown");
    assert!(text.contains("203.0.113.3"), "{text}");
    let restarted = Process::start(&path);
    let listed = bans(&["list"]);
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(
        listed.contains("203.0.113.2") && listed.contains("203.0.113.3"),
        "{listed}"
    );
    assert!(
        !listed.contains("203.0.113.1"),
        "the lifted ban came back: {listed}"
    );
    drop(restarted);
}
