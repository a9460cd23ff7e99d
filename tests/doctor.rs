//! `drawbridge doctor`: each check's ✓, and each ✗ with the line saying
//! what to do — a name that does not resolve, an upstream that is down, one
//! that is not Jellyfin — and whether each site's side-door gate is on.

use std::process::Command;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::origin::Origin;
use crate::support::{binary, closed_addr, config_file};

fn doctor(config: &std::path::Path) -> (bool, String) {
    doctor_with(config, &[])
}

fn doctor_with(config: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(binary())
        .args(["doctor", "-c"])
        .arg(config)
        .args(args)
        .env_remove("DRAWBRIDGE_JELLYFIN_API_KEY")
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
            "[[site]]\nhost = \"localhost\"\nupstream = \"http://{}\"\ntls = \"internal\"\n\n[[site]]\nhost = \"nx.invalid\"\nupstream = \"http://{down}\"\ntls = \"internal\"\n\n[[site]]\nhost = \"other.localhost\"\nupstream = \"http://{other}\"\ntls = \"internal\"\ngate = \"off\"\n",
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
    // Whether the side-door gate is on, site by site.
    assert!(
        text.contains("✓ localhost: the side-door gate is on"),
        "{text}"
    );
    assert!(
        text.contains("· other.localhost: the side-door gate is off (gate = \"off\")"),
        "{text}"
    );
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

/// Known proxies, read from Jellyfin's own settings with an API key: the
/// address drawbridge connects from listed (as an address, a network or a
/// name), not listed (with the fix), a refused key; without a key, what to
/// check by hand.
#[tokio::test]
async fn jellyfin_trusting_this_proxy_is_checked_with_an_api_key() {
    use crate::support::origin::TEST_API_KEY;
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        dir.path(),
        &format!(
            "[[site]]\nhost = \"localhost\"\nupstream = \"http://{}\"\ntls = \"internal\"\n",
            origin.addr
        ),
    );
    let run = |args: Vec<String>| {
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            doctor_with(&config, &args)
        })
    };
    let key = || vec!["--jellyfin-api-key".to_string(), TEST_API_KEY.to_string()];

    let (_, text) = run(vec![]).await.unwrap();
    assert!(
        text.contains("· site localhost: whether Jellyfin trusts this proxy was not checked")
            && text.contains("Known proxies lists 127.0.0.1"),
        "{text}"
    );

    *origin.seen.known_proxies.lock().unwrap() = vec!["10.9.9.9".into()];
    let (ok, text) = run(key()).await.unwrap();
    assert!(!ok, "{text}");
    assert!(
        text.contains("✗ site localhost: Jellyfin does not trust this proxy: 127.0.0.1 is not in its Known proxies (10.9.9.9)"),
        "{text}"
    );
    assert!(
        text.contains("→ in Jellyfin: Dashboard → Networking → Known proxies, add 127.0.0.1"),
        "{text}"
    );

    for listed in ["127.0.0.1", "127.0.0.0/8", "localhost"] {
        *origin.seen.known_proxies.lock().unwrap() = vec!["10.9.9.9".into(), listed.into()];
        let (_, text) = run(key()).await.unwrap();
        assert!(
            text.contains(
                "✓ site localhost: Jellyfin trusts this proxy (127.0.0.1 is in its Known proxies)"
            ),
            "{listed}: {text}"
        );
    }

    let (ok, text) = run(vec!["--jellyfin-api-key".into(), "wrong".into()])
        .await
        .unwrap();
    assert!(!ok);
    assert!(
        text.contains("✗ site localhost: Jellyfin refused the API key (401 Unauthorized)"),
        "{text}"
    );
    assert!(
        text.contains("→ create a key in Jellyfin's Dashboard → API Keys"),
        "{text}"
    );
}

/// Certificates from files: one that covers its site's names (✓ with the
/// days left), one for another name (✗, what to do); the clock compared
/// with the `Date` Jellyfin sends.
#[tokio::test]
async fn certificates_and_the_clock_are_checked() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    for (name, covers) in [("right", "localhost"), ("wrong", "elsewhere.test")] {
        let (cert, key) = crate::support::self_signed(covers);
        std::fs::write(dir.path().join(format!("{name}.pem")), cert).unwrap();
        std::fs::write(dir.path().join(format!("{name}.key")), key).unwrap();
    }
    let files = |name: &str| {
        let d = dir.path().display();
        format!("tls = {{ cert = \"{d}/{name}.pem\", key = \"{d}/{name}.key\" }}")
    };
    let config = config_file(
        dir.path(),
        &format!(
            "[[site]]\nhost = \"localhost\"\nupstream = \"http://{0}\"\n{1}\n\n[[site]]\nhost = \"other.localhost\"\nupstream = \"http://{0}\"\n{2}\n",
            origin.addr,
            files("right"),
            files("wrong"),
        ),
    );
    let (ok, text) = tokio::task::spawn_blocking(move || doctor(&config))
        .await
        .unwrap();
    assert!(!ok, "{text}");
    assert!(
        text.contains("✓ site localhost: certificate valid for ")
            && text.contains("more days, covering its names"),
        "{text}"
    );
    assert!(
        text.contains(
            "✗ site other.localhost: the certificate does not cover other.localhost (it names elsewhere.test)"
        ),
        "{text}"
    );
    assert!(
        text.contains("→ issue it for every name of the site"),
        "{text}"
    );
    assert!(
        text.contains("✓ the clock agrees with Jellyfin's within"),
        "{text}"
    );
}

/// A site through the tunnel whose agent name is mistyped is a ✗ with the
/// names enrolled, not a ✓; a `.localhost` site is never told to add DNS
/// records.
#[tokio::test]
async fn a_mistyped_agent_is_found_and_a_local_name_needs_no_records() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        dir.path(),
        "[[site]]\nhost = \"jelly.localhost\"\nupstream = \"tunnel:hmoe/jellyfin\"\ntls = \"internal\"\n",
    );
    crate::support::tunnel::cli(&[
        "tunnel",
        "add",
        "home",
        "--edge",
        "vps.test:443",
        "-c",
        config.to_str().unwrap(),
    ]);
    let (ok, text) = tokio::task::spawn_blocking(move || doctor(&config))
        .await
        .unwrap();
    assert!(!ok, "{text}");
    assert!(
        text.contains("✗ site jelly.localhost: upstream tunnel:hmoe/jellyfin, but no agent called `hmoe` is enrolled (enrolled: home)"),
        "{text}"
    );
    assert!(text.contains("→ fix the name in `upstream`"), "{text}");
    assert!(!text.contains("records for jelly.localhost"), "{text}");
    assert!(
        text.contains("jelly.localhost resolves to this machine")
            || text.contains("· jelly.localhost is a local name"),
        "{text}"
    );
}
