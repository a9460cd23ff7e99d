//! `drawbridge doctor`: each check's ✓, and each ✗ with the line saying
//! what to do — a name that does not resolve, an upstream that is down, one
//! that is not Jellyfin.

use std::process::Command;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::origin::Origin;
use crate::support::{binary, closed_addr, config_file};

fn doctor(config: &std::path::Path) -> (bool, String) {
    let out = Command::new(binary())
        .args(["doctor", "-c"])
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// An HTTP server that answers everything with `200 {}`: not Jellyfin.
async fn not_jellyfin() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf).await;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
                .await;
        }
    });
    addr
}

#[tokio::test]
async fn each_failed_check_says_what_to_do() {
    let origin = Origin::start().await;
    let down = closed_addr().await;
    let other = not_jellyfin().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        dir.path(),
        &format!(
            "[[site]]\nhost = \"localhost\"\nupstream = \"http://{}\"\ntls = \"internal\"\n\n[[site]]\nhost = \"nx.invalid\"\nupstream = \"http://{down}\"\ntls = \"internal\"\n\n[[site]]\nhost = \"other.localhost\"\nupstream = \"http://{other}\"\ntls = \"internal\"\n",
            origin.addr
        ),
    );
    let (ok, text) = tokio::task::spawn_blocking(move || doctor(&config))
        .await
        .unwrap();
    assert!(!ok, "failed checks make it exit non-zero:\n{text}");
    assert!(text.contains("✓ state_dir"), "{text}");
    assert!(
        text.contains("✓ localhost resolves to this machine"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "✓ site localhost: upstream http://{} is Jellyfin Server 10.11.0",
            origin.addr
        )),
        "{text}"
    );
    assert!(text.contains("✗ nx.invalid does not resolve"), "{text}");
    assert!(
        text.contains("→ add A (and AAAA) records for nx.invalid"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "✗ site nx.invalid: upstream http://{down} cannot be reached"
        )),
        "{text}"
    );
    assert!(
        text.contains("→ start Jellyfin, or fix the address"),
        "{text}"
    );
    assert!(text.contains("answers, but not as Jellyfin"), "{text}");
    assert!(
        text.contains("→ point `upstream` at Jellyfin itself"),
        "{text}"
    );
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    assert_eq!(text.contains("✗ running as root"), root, "{text}");
}
