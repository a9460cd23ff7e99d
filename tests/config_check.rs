//! `drawbridge check`: every error with file:line:col in one run, suggestions
//! for misspelt keys, a summary and exit 0 for a good file; and `run`'s start
//! errors, each cause said once and naming the file at fault.

use std::process::Command;

use crate::support::binary;

fn check(text: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drawbridge.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(binary())
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).replace(&path.display().to_string(), "F");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    )
}

#[test]
fn reports_every_error_with_line_and_column() {
    let text = r#"[server]
https = ["127.0.0.1:8443", "not-an-address"]
state_dirr = "/tmp/x"

[[site]]
host = "jelly.test"
upstream = "ftp://127.0.0.1:8096"
tls = "internal"

[[site]]
hots = "music.test"
upstream = "http://127.0.0.1:8097"

[[site]]
host = "jelly.test"
upstream = "http://127.0.0.1:8098"
tls = "internal"
max_body = "20 lightyears"
"#;
    let (ok, _, stderr) = check(text);
    assert!(!ok, "exit 1");
    let expected = [
        "F:3:1: unknown key `state_dirr` in [server]; did you mean `state_dir`?",
        "F:7:12: upstream `ftp://127.0.0.1:8096` must start with http://",
        "F:11:1: unknown key `hots` in [[site]]; did you mean `host`?",
        "F:18:12: unknown size unit `lightyears`",
    ];
    for line in expected {
        assert!(stderr.contains(line), "missing {line:?} in:\n{stderr}");
    }
    assert!(
        stderr.contains("errors; the config is not valid"),
        "{stderr}"
    );
}

#[test]
fn semantic_errors_are_all_reported() {
    let text = "[server]\nhttps = [\"127.0.0.1:8443\", \"nowhere\"]\n\n[limits]\nheader_timeout = \"10 fortnights\"\n\n[[site]]\nhost = \"a.test\"\nupstream = \"http://127.0.0.1:1\"\ntls = \"internal\"\n\n[[site]]\nhost = \"a.test\"\nupstream = \"http://127.0.0.1:2/jellyfin\"\ntls = \"internal\"\n\n[acme]\nca_roots = \"/nonexistent/roots.pem\"\ndns_hook = \"/nonexistent/hook\"\n";
    let (ok, _, stderr) = check(text);
    assert!(!ok);
    for line in [
        "F:2:28: `nowhere` is not a listen address",
        "F:5:18: unknown duration unit `fortnights`",
        "F:13:8: host `a.test` is named by another site already",
        "F:14:12: upstream `http://127.0.0.1:2/jellyfin` must not have a path",
        "F:18:12: `/nonexistent/roots.pem` is not a readable PEM file",
        "F:19:12: `/nonexistent/hook` is not a file drawbridge can run",
    ] {
        assert!(stderr.contains(line), "missing {line:?} in:\n{stderr}");
    }
}

#[test]
fn public_names_default_to_acme_and_wildcards_need_dns01() {
    let (ok, stdout, stderr) =
        check("[[site]]\nhost = \"jelly.example.com\"\nupstream = \"http://10.0.0.2:8096\"\n");
    assert!(ok, "{stderr}");
    assert!(stdout.contains("(tls: ACME;"), "{stdout}");
    assert!(stdout.contains("acme:            https://acme-v02.api.letsencrypt.org/directory via tls-alpn-01, http-01"), "{stdout}");
    let (ok, _, stderr) =
        check("[[site]]\nhosts = [\"*.example.com\"]\nupstream = \"http://10.0.0.2:8096\"\n");
    assert!(!ok);
    assert!(
        stderr.contains("F:1:1: a wildcard name can only be validated by DNS-01"),
        "{stderr}"
    );
    let (ok, _, stderr) = check("[acme]\nchallenges = [\"dns-01\", \"smoke-signals\"]\nstaging = true\n\n[[site]]\nhost = \"a.example.com\"\nupstream = \"http://10.0.0.2:8096\"\n");
    assert!(!ok);
    assert!(
        stderr.contains("F:2:15: dns-01 needs [acme] dns_hook"),
        "{stderr}"
    );
    assert!(
        stderr.contains("F:2:25: unknown challenge `smoke-signals`"),
        "{stderr}"
    );
}

#[test]
fn a_valid_config_prints_a_summary() {
    let (ok, stdout, stderr) = check(
        "[server]\nhttp = [\"127.0.0.1:8080\"]\nhttps = [\"127.0.0.1:8443\"]\n\n[[site]]\nhosts = [\"localhost\", \"*.home.lan\"]\nupstream = \"http://127.0.0.1:8096\"\n",
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("the config is valid"), "{stdout}");
    assert!(stdout.contains("site localhost, *.home.lan -> http://127.0.0.1:8096 (tls: local CA; plain http: redirected to https; login limit: on; edge cache: on; side-door gate: enforce)"), "{stdout}");
    assert!(
        stdout.contains(
            "open without credentials: /, /favicon.ico, /web, /web/**, /System/Info/Public,"
        ),
        "the public list in force: {stdout}"
    );
    assert!(!stdout.contains("the site's own"), "{stdout}");
}

/// A site's own public paths are shown beside Jellyfin's; a site without
/// the gate lists none.
#[test]
fn check_shows_the_public_list_in_force() {
    let (ok, stdout, stderr) = check(
        "[[site]]\nhost = \"localhost\"\nupstream = \"http://127.0.0.1:8096\"\ngate_public = [\"/sso/OID/**\"]\n\n[[site]]\nhost = \"other.localhost\"\nupstream = \"http://127.0.0.1:8097\"\ngate = \"off\"\n",
    );
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("/QuickConnect/Connect; the site's own: /sso/OID/**"),
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("open without credentials").count(),
        1,
        "{stdout}"
    );
    assert!(stdout.contains("side-door gate: off)"), "{stdout}");
}

#[test]
fn bundled_configs_are_valid() {
    for example in ["quickstart.toml", "compose/drawbridge.toml"] {
        let path = format!("{}/examples/{example}", env!("CARGO_MANIFEST_DIR"));
        let out = Command::new(binary())
            .args(["check", "-c", &path])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{example}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `drawbridge run` on `text` (its state under `dir`), expected to stop at
/// once; its stderr.
fn run_fails(dir: &std::path::Path, text: &str) -> String {
    let path = dir.join("drawbridge.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(binary())
        .args(["run", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success(), "it started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_start_error_says_its_cause_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stderr = run_fails(
        dir.path(),
        &format!(
            "[server]\nhttp = [\"{}\"]\nhttps = [\"127.0.0.1:0\"]\nstate_dir = \"{}\"\n[[site]]\nhost = \"jelly.test\"\nupstream = \"http://127.0.0.1:9\"\ntls = \"internal\"\n",
            taken.local_addr().unwrap(),
            dir.path().join("state").display()
        ),
    );
    let line = stderr
        .lines()
        .find(|l| l.starts_with("drawbridge:"))
        .unwrap_or_default();
    assert!(line.contains("cannot listen on"), "{stderr}");
    assert_eq!(line.matches("Address already in use").count(), 1, "{line}");
}

#[test]
fn a_damaged_local_ca_key_is_named_once() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("state/ca");
    std::fs::create_dir_all(&ca).unwrap();
    std::fs::write(
        ca.join("root.key"),
        "-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    std::fs::write(ca.join("root.pem"), "not a certificate").unwrap();
    let stderr = run_fails(
        dir.path(),
        &format!(
            "[server]\nhttp = [\"127.0.0.1:0\"]\nhttps = [\"127.0.0.1:0\"]\nstate_dir = \"{}\"\n[[site]]\nhost = \"jelly.test\"\nupstream = \"http://127.0.0.1:9\"\ntls = \"internal\"\n",
            dir.path().join("state").display()
        ),
    );
    let line = stderr
        .lines()
        .find(|l| l.starts_with("drawbridge:"))
        .unwrap_or_default();
    assert!(
        line.contains("root.key") && line.contains("damaged"),
        "{stderr}"
    );
    let causes: Vec<&str> = line.split(": ").collect();
    let mut unique = causes.clone();
    unique.dedup();
    assert_eq!(causes, unique, "a cause said twice: {line}");
}

#[test]
fn what_run_would_refuse_check_refuses_first() {
    let (ok, _, stderr) = check(
        "[server]\nhttp = [\"0.0.0.0:8080\"]\nhttps = [\"127.0.0.1:8080\"]\n\n[[site]]\nhost = \"a.example.com\"\nupstream = \"http://10.0.0.2:8096\"\n",
    );
    assert!(!ok);
    assert!(
        stderr.contains(":3:10:") && stderr.contains("cannot be listened on beside `0.0.0.0:8080`"),
        "{stderr}"
    );
    let (ok, _, stderr) = check("[log]\nlevel = \"verbose\"\n\n[[site]]\nhost = \"a.example.com\"\nupstream = \"http://10.0.0.2:8096\"\n");
    assert!(!ok);
    assert!(
        stderr.contains(":2:9:") && stderr.contains("`verbose` is not a log level"),
        "{stderr}"
    );
    assert!(!stderr.contains('\u{1b}'), "no colour codes: {stderr:?}");
    let (ok, _, stderr) = check("[log]\nlevel = \"drawbridge=debug,info\"\n\n[[site]]\nhost = \"a.example.com\"\nupstream = \"http://10.0.0.2:8096\"\n");
    assert!(ok, "{stderr}");
    let (ok, _, stderr) =
        check("[[site]]\nhost = \"a.example.com\"\nupstream = \"http://jellyfin\"\n");
    assert!(!ok);
    assert!(
        stderr.contains("has no port") && stderr.contains("8096"),
        "{stderr}"
    );
}

#[test]
fn check_tries_the_log_files_and_the_state_folder_as_run_would() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a-file"), "").unwrap();
    let text = format!(
        "[server]\nhttp = [\"127.0.0.1:0\"]\nhttps = [\"127.0.0.1:0\"]\nstate_dir = \"{0}/a-file/state\"\n\n[log]\nerror = \"{0}/missing/dir/error.log\"\n\n[[site]]\nhost = \"a.example.com\"\nupstream = \"http://10.0.0.2:8096\"\n",
        dir.path().display()
    );
    let (ok, stdout, stderr) = check(&text);
    assert!(!ok, "{stdout}");
    assert!(
        stderr.contains("cannot open the error log") && stderr.contains("missing/dir/error.log"),
        "{stderr}"
    );
    assert!(
        stderr.contains("state_dir") && stderr.contains("cannot be made or written"),
        "{stderr}"
    );
    assert!(
        stderr.contains("`run` would refuse to start (2 problems)"),
        "{stderr}"
    );
    assert!(!stdout.contains("the config is valid"));
}

#[test]
fn messages_use_a_users_words_in_file_order() {
    // One type error does not hide the rest of its table: `ban_time` after
    // the bad `window` is still read and checked, and so is `max_headers`'s
    // neighbour.
    let (ok, _, stderr) = check("[guard]\nwindow = 12\nban_time = \"1w\"\nmax_failures = \"5\"\n\n[limits]\nmax_headers = \"3\"\nheader_timeout = \"soon\"\n\n[[site]]\nhost = \"a.example.com\"\nupstream = \"http://10.0.0.2:8096\"\nmax_body_size = \"20MiB\"\n");
    assert!(!ok);
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines[0].contains(":2:10: expected text in quotes, found the number 12"),
        "{stderr}"
    );
    assert!(
        lines[1].contains(":3:12: unknown duration unit `w`"),
        "{stderr}"
    );
    assert!(
        lines[2].contains(":4:16: expected a whole number, found the text \"5\""),
        "{stderr}"
    );
    assert!(
        lines[3].contains(":7:15: expected a whole number, found the text \"3\""),
        "{stderr}"
    );
    assert!(
        lines[4].contains(":8:18:") && lines[4].contains("soon"),
        "{stderr}"
    );
    assert!(
        lines[5]
            .contains(":13:1: unknown key `max_body_size` in [[site]]; did you mean `max_body`?"),
        "{stderr}"
    );
    let (ok, _, stderr) = check("[[site]]\nhost = \"https://jellyfin.example.com\"\nupstream = \"http://10.0.0.2:8096\"\nconnect_timeout = \"1.5m\"\n");
    assert!(!ok);
    assert!(
        stderr.contains("is a URL; a host is the name alone: write \"jellyfin.example.com\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("whole numbers only") && stderr.contains("\"90s\""),
        "{stderr}"
    );
}

/// Kernel bans need CAP_NET_ADMIN for as long as drawbridge runs, which
/// `[server] user` gives up: the pair is refused at the setting, with the
/// way out.
#[test]
fn kernel_bans_and_dropping_to_a_user_are_refused_together() {
    let site = "[[site]]\nhost = \"jelly.test\"\nupstream = \"http://127.0.0.1:8096\"\ntls = \"internal\"\n";
    let (ok, _, stderr) = check(&format!(
        "[server]\nuser = \"drawbridge\"\n\n[guard]\nnftables = true\n\n{site}"
    ));
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("F:5:12: kernel bans need CAP_NET_ADMIN")
            && stderr.contains("without `user`"),
        "{stderr}"
    );
    let (_, _, stderr) = check(&format!("[guard]\nnftables = \"yes\"\n\n{site}"));
    assert!(
        stderr.contains("F:2:12:"),
        "a type error at the value: {stderr}"
    );
}

/// One run of `check` says every problem, each at its place: a listener
/// clash (invalid) does not hide the log file `run` could not open, which
/// is said at the line of `[log] error`.
#[test]
fn one_check_says_every_problem_each_at_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[server]\nhttps = [\"0.0.0.0:8443\", \"127.0.0.1:8443\"]\nstate_dir = \"{0}/state\"\n\n[log]\nerror = \"{0}/missing/error.log\"\n\n[[site]]\nhost = \"a.example.com\"\nupstream = \"http://10.0.0.2:8096\"\n",
        dir.path().display()
    );
    let (ok, _, stderr) = check(&text);
    assert!(!ok);
    assert!(
        stderr.contains("F:2:") && stderr.contains("cannot be listened on beside"),
        "{stderr}"
    );
    assert!(
        stderr.contains("F:6:9: cannot open the error log") && stderr.contains("missing/error.log"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "1 error; the config is not valid, and `run` would also refuse to start (1 problem)"
        ),
        "{stderr}"
    );
    // In file order.
    let clash = stderr.find("F:2:").unwrap();
    let log = stderr.find("F:6:9").unwrap();
    assert!(clash < log, "{stderr}");
}

/// Valid settings that would quietly not do what was meant get a warning
/// at their place: a tunnel to an agent nobody enrolled (with the name it
/// was probably meant to be), a certificate file for other names, and
/// ACME on ports the CA never connects to.
#[test]
fn quiet_mistakes_are_said_where_they_are_written() {
    let dir = tempfile::tempdir().unwrap();
    // An agent called `home` is enrolled (a token made for it).
    let edge = dir.path().join("drawbridge.toml");
    let state = dir.path().join("state");
    std::fs::write(
        &edge,
        format!(
            "[server]\nstate_dir = \"{}\"\n\n[[site]]\nhost = \"jelly.test\"\nupstream = \"tunnel:home/jellyfin\"\n",
            state.display()
        ),
    )
    .unwrap();
    crate::support::tunnel::cli(&[
        "tunnel",
        "add",
        "home",
        "--edge",
        "vps.test:443",
        "-c",
        edge.to_str().unwrap(),
    ]);
    let (cert, key) = crate::support::self_signed("other.example.com");
    std::fs::write(dir.path().join("cert.pem"), cert).unwrap();
    std::fs::write(dir.path().join("key.pem"), key).unwrap();
    let text = format!(
        "[server]\nhttp = [\"127.0.0.1:8080\"]\nhttps = [\"127.0.0.1:8443\"]\nstate_dir = \"{0}\"\n\n[[site]]\nhost = \"jelly.test\"\nupstream = \"tunnel:hmoe/jellyfin\"\ntls = \"internal\"\n\n[[site]]\nhost = \"files.example.com\"\nupstream = \"http://10.0.0.2:8096\"\ntls = {{ cert = \"{1}/cert.pem\", key = \"{1}/key.pem\" }}\n\n[[site]]\nhost = \"acme.example.com\"\nupstream = \"http://10.0.0.2:8096\"\n",
        state.display(),
        dir.path().display()
    );
    let path = dir.path().join("typo.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(binary())
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).replace(&path.display().to_string(), "F");
    assert!(out.status.success(), "warnings only: {stderr}");
    assert!(
        stderr.contains(
            "F:8:12: warning: no agent called `hmoe` is enrolled here; did you mean `home`?"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("F:14:7: warning: the certificate")
            && stderr.contains("names other.example.com, not files.example.com"),
        "{stderr}"
    );
    assert!(
        stderr.contains("F:16:1: warning: site acme.example.com: the CA checks HTTP-01 on port 80")
            && stderr.contains("8080, 8443"),
        "{stderr}"
    );
}

#[test]
fn wireguard_mistakes_are_said_at_their_place() {
    let text = "[wireguard]\nlisten = \"51820\"\naddress = \"10.99.0.0/24\"\nkeepalive = \"2h\"\nmtu = 9000\ninterface = \"a very long name for a tun\"\n\n[[site]]\nhost = \"a.test\"\nupstream = \"wireguard:home/http://jellyfin.lan:8096\"\ntls = \"internal\"\n\n[[site]]\nhost = \"b.test\"\nupstream = \"wireguard:Home Router/http://192.168.1.10:8096\"\ntls = \"internal\"\n\n[[site]]\nhost = \"c.test\"\nupstream = \"wireguard:home/http://[fd00::10]:8096\"\ntls = \"internal\"\n";
    let (ok, _, stderr) = check(text);
    assert!(!ok);
    for line in [
        "F:2:10: `51820` is not an address and port",
        "F:3:11: `10.99.0.0/24` is not the edge's tunnel address with its network",
        "F:4:13: keepalive must be between 1s and 1h",
        "F:5:7: must be between 1280 and 1500",
        "F:6:13: `a very long name for a tun` is not an interface name",
        "F:10:12: upstream `wireguard:home/http://jellyfin.lan:8096` names a host by name",
        "F:15:12: upstream `wireguard:Home Router/http://192.168.1.10:8096` is not a WireGuard target",
        "F:20:12: upstream `wireguard:home/http://[fd00::10]:8096` names an IPv6 address",
    ] {
        assert!(stderr.contains(line), "missing {line:?} in:\n{stderr}");
    }
}
