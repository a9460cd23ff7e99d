//! The access log: nginx `combined` or JSON, one line per request, tokens never
//! written (in it or in the error log), reopened on SIGUSR1 for logrotate.

use std::time::Duration;

use crate::support::origin::Origin;
use crate::support::{server_block, site, Process, TestGateway};

async fn wait_for(path: &std::path::Path, needle: &str) -> String {
    for _ in 0..100 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} never contained {needle:?}", path.display());
}

#[tokio::test]
async fn combined_lines_without_tokens_and_reopen_on_sigusr1() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let access = dir.path().join("access.log");
    let closed = crate::support::closed_addr().await;
    let text = format!(
        "{}[log]\nlevel = \"debug\"\naccess = \"{}\"\n\n{}{}{}",
        server_block(dir.path()),
        access.display(),
        site("jelly.test", origin.addr, ""),
        site("quiet.test", origin.addr, "access_log = false"),
        site("down.test", closed, ""),
    );
    let path = dir.path().join("drawbridge.toml");
    std::fs::write(&path, text).unwrap();
    let process = Process::start(&path);
    let ca = std::fs::read(dir.path().join("state/ca/root.pem")).unwrap();
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .resolve("jelly.test", process.https)
        .resolve("quiet.test", process.https)
        .resolve("down.test", process.https)
        .http1_only()
        .build()
        .unwrap();
    let url = |host: &str, path: &str| format!("https://{host}:{}{path}", process.https.port());
    let video = client
        .get(url(
            "jelly.test",
            "/Videos/1/stream?api_key=SECRETONE&Static=true",
        ))
        .header(
            "authorization",
            "MediaBrowser Client=\"web\", Token=\"SECRETTWO\"",
        )
        .header("x-emby-token", "SECRETTHREE")
        .header("referer", "https://jelly.test/web/?ApiKey=SECRETFOUR")
        .header("user-agent", "TestAgent/1")
        .header("range", "bytes=0-9")
        .send()
        .await
        .unwrap();
    assert_eq!(video.bytes().await.unwrap().len(), 10);
    client
        .get(url("quiet.test", "/System/Info/Public"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        client
            .get(url("down.test", "/socket?api_key=SECRETFIVE"))
            .send()
            .await
            .unwrap()
            .status(),
        502
    );

    let log = wait_for(&access, "/socket").await;
    let line = log
        .lines()
        .find(|l| l.contains("/Videos/1/stream"))
        .expect("a line for the video");
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(line.contains("\"GET /Videos/1/stream?api_key=REDACTED&Static=true HTTP/1.1\" 206 10 \"https://jelly.test/web/?ApiKey=REDACTED\" \"TestAgent/1\""), "{line}");
    assert!(
        !log.contains("quiet.test") && !log.contains("/System/Info/Public"),
        "access_log = false is honoured"
    );
    assert!(
        log.contains("\"GET /socket?api_key=REDACTED HTTP/1.1\" 502"),
        "{log}"
    );
    assert!(
        process.wait_for_log(&closed.to_string(), Duration::from_secs(5)),
        "the error log names the upstream that failed"
    );
    let errors = process.log.lock().unwrap().join("\n");
    for secret in [
        "SECRETONE",
        "SECRETTWO",
        "SECRETTHREE",
        "SECRETFOUR",
        "SECRETFIVE",
    ] {
        assert!(!log.contains(secret), "{secret} in the access log");
        assert!(!errors.contains(secret), "{secret} in the error log");
    }

    std::fs::rename(&access, dir.path().join("access.log.1")).unwrap();
    process.signal("USR1");
    assert!(process.wait_for_log("log files reopened", Duration::from_secs(5)));
    client
        .get(url("jelly.test", "/System/Info/Public"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let fresh = wait_for(&access, "/System/Info/Public").await;
    assert_eq!(fresh.lines().count(), 1, "new lines go to the new file");
}

#[tokio::test]
async fn json_lines() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let access = dir.path().join("access.json");
    let rest = format!(
        "[log]\naccess = \"{}\"\nformat = \"json\"\n\n{}",
        access.display(),
        site("jelly.test", origin.addr, "")
    );
    let gw = TestGateway::start_in(dir, &rest).await;
    let client = gw.reqwest(&["jelly.test"], true);
    client
        .get(gw.url("jelly.test", "/Items/1/Images/Primary?ApiKey=SECRET"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let text = wait_for(&access, "Images").await;
    let value: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(value["status"], 200);
    assert_eq!(value["bytes"], 2048);
    assert_eq!(value["complete"], true);
    assert_eq!(value["version"], "HTTP/2.0");
    assert_eq!(value["target"], "/Items/1/Images/Primary?ApiKey=REDACTED");
    assert!(!text.contains("SECRET"));
}

#[tokio::test]
async fn the_error_log_goes_to_its_file_not_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let error_log = dir.path().join("error.log");
    let closed = crate::support::closed_addr().await;
    let text = format!(
        "{}[log]\nerror = \"{}\"\n\n{}",
        server_block(dir.path()),
        error_log.display(),
        site("down.test", closed, "https_redirect = false"),
    );
    let path = dir.path().join("drawbridge.toml");
    std::fs::write(&path, text).unwrap();
    // Its ports are read from the file: the start-up lines went there.
    let process = Process::start_logging_to(&path, Some(&error_log));
    let mut tcp = tokio::net::TcpStream::connect(process.http).await.unwrap();
    let (bytes, _) = crate::support::exchange(
        &mut tcp,
        b"GET /web/ HTTP/1.1\r\nHost: down.test\r\nConnection: close\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(crate::support::status_of(&bytes), 502);
    assert!(
        process.wait_for_log("upstream failure", Duration::from_secs(3)),
        "the 502's cause is in the file"
    );
    let line = process
        .log
        .lock()
        .unwrap()
        .iter()
        .find(|l| l.contains("upstream failure"))
        .cloned()
        .unwrap();
    // One line says which request failed, where it went, and for whom.
    for part in [
        "method=GET",
        "host=\"down.test\"",
        "path=\"/web/\"",
        "site=\"down.test\"",
        "client.ip=127.0.0.1",
        &closed.to_string(),
    ] {
        assert!(line.contains(part), "{part} missing from {line}");
    }
    let on_stderr: Vec<String> = process
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with("STDERR ") && !l.contains("\"GET /web/ HTTP/1.1\" 502"))
        .cloned()
        .collect();
    assert!(
        on_stderr.is_empty(),
        "only the access log (stderr by default) on stderr: {on_stderr:?}"
    );
    // logrotate moves the file and sends SIGUSR1: new lines go to a new file.
    let rotated = dir.path().join("error.log.1");
    std::fs::rename(&error_log, &rotated).unwrap();
    process.signal("USR1");
    let reopened = tokio::task::spawn_blocking({
        let error_log = error_log.clone();
        move || {
            (0..100).any(|_| {
                std::thread::sleep(Duration::from_millis(50));
                std::fs::read_to_string(&error_log).is_ok_and(|t| t.contains("log files reopened"))
            })
        }
    })
    .await
    .unwrap();
    assert!(reopened, "the error log reopened at its path");
    assert!(!std::fs::read_to_string(&rotated)
        .unwrap()
        .contains("log files reopened"));
}

/// Under systemd (standard error is the journal's stream, as
/// `JOURNAL_STREAM` says) every error-log line starts with its syslog
/// priority, so `journalctl -p warning` shows the warnings alone; a pipe
/// that is not the journal's gets plain lines.
#[test]
fn under_systemd_each_line_carries_its_priority_for_the_journal() {
    use std::io::{BufRead, BufReader};
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("drawbridge.toml");
    // Plain HTTP to a public address: a warning at start.
    std::fs::write(
        &config,
        format!(
            "{}[log]\naccess = \"off\"\n\n[[site]]\nhost = \"jelly.test\"\nupstream = \"http://203.0.113.5:8096\"\ntls = \"internal\"\n",
            server_block(dir.path())
        ),
    )
    .unwrap();
    for journal in [true, false] {
        let (read, write) = nix::unistd::pipe().unwrap();
        let meta = std::fs::metadata(format!("/proc/self/fd/{}", write.as_raw_fd())).unwrap();
        let stream = if journal {
            format!("{}:{}", meta.dev(), meta.ino())
        } else {
            "1:1".to_string()
        };
        let mut child = std::process::Command::new(crate::support::binary())
            .args(["run", "-c"])
            .arg(&config)
            .env("JOURNAL_STREAM", stream)
            .stderr(std::process::Stdio::from(write))
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = Vec::new();
        for line in BufReader::new(std::fs::File::from(read)).lines() {
            let line = line.unwrap();
            let done = line.contains("listening");
            lines.push(line);
            if done {
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        let warning = lines
            .iter()
            .find(|l| l.contains("plain HTTP to a public address"))
            .unwrap_or_else(|| panic!("no warning in {lines:#?}"));
        let listening = lines.iter().find(|l| l.contains("listening")).unwrap();
        if journal {
            assert!(warning.starts_with("<4>"), "{warning}");
            assert!(listening.starts_with("<6>"), "{listening}");
            assert!(!warning.contains("\u{1b}["), "no colours: {warning}");
            // The journal stamps entries itself.
            assert!(!warning.contains(" 20"), "no time of its own: {warning}");
        } else {
            assert!(!warning.starts_with('<'), "not the journal: {warning}");
        }
    }
}

/// `[log] error_format = "json"`: one JSON object a line, with the level
/// and the fields (for Loki, Elasticsearch, jq).
#[test]
fn the_error_log_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("drawbridge.toml");
    let log = dir.path().join("error.log");
    std::fs::write(
        &config,
        format!(
            "{}[log]\naccess = \"off\"\nerror = \"{}\"\nerror_format = \"json\"\n\n[[site]]\nhost = \"jelly.test\"\nupstream = \"http://203.0.113.5:8096\"\ntls = \"internal\"\n",
            server_block(dir.path()),
            log.display()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(crate::support::binary())
        .args(["run", "-c"])
        .arg(&config)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let listening = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("listening")
            .count()
            >= 2
    };
    for _ in 0..200 {
        if listening() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(listening(), "never listening");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let warning = lines
        .iter()
        .find(|l| l["level"] == "WARN")
        .unwrap_or_else(|| panic!("no warning in {lines:#?}"));
    assert!(
        warning["fields"]["message"]
            .as_str()
            .unwrap()
            .contains("plain HTTP"),
        "{warning}"
    );
    assert_eq!(warning["fields"]["site"], "jelly.test", "{warning}");
}
