//! What the Debian package installs, checked without installing it: the
//! systemd units pass `systemd-analyze verify` and stay well hardened, the
//! shipped config is valid, the man page and completions come from the CLI.

use std::path::Path;
use std::process::Command;

use crate::support::binary;

/// `unit` from packaging/ with the binary's path made this build's.
fn unit(dir: &Path, name: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("packaging")
            .join(name),
    )
    .unwrap();
    let path = dir.join(name);
    std::fs::write(
        &path,
        text.replace("/usr/bin/drawbridge", binary().to_str().unwrap()),
    )
    .unwrap();
    path
}

#[test]
fn the_units_verify_and_keep_their_hardening() {
    assert!(
        Command::new("systemd-analyze")
            .arg("--version")
            .output()
            .is_ok(),
        "systemd-analyze is installed (Debian package systemd; .ci/run installs it)"
    );
    let dir = tempfile::tempdir().unwrap();
    for name in ["drawbridge.service", "drawbridge-agent.service"] {
        let path = unit(dir.path(), name);
        let verify = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&verify.stderr);
        assert!(
            verify.status.success() && stderr.trim().is_empty(),
            "{name}: {stderr}"
        );
        let security = Command::new("systemd-analyze")
            .args(["security", "--offline=true"])
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&security.stdout);
        let level: f64 = text
            .lines()
            .find_map(|l| l.split("Overall exposure level for ").nth(1))
            .and_then(|rest| {
                rest.split(": ")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no exposure level for {name}:\n{text}"));
        assert!(
            level <= 2.0,
            "{name}: exposure {level} (docs/operations.md states 1.6 and 1.4)"
        );
    }
}

#[test]
fn the_shipped_config_is_valid_and_the_cli_makes_the_man_page_and_completions() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/drawbridge.toml"),
    )
    .unwrap();
    let config = dir.path().join("drawbridge.toml");
    let here = dir.path().display().to_string();
    std::fs::write(
        &config,
        shipped
            .replace("/var/lib/drawbridge", &format!("{here}/state"))
            .replace("/var/log/drawbridge", &here),
    )
    .unwrap();
    let check = Command::new(binary())
        .args(["check", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let assets = dir.path().join("assets");
    let out = Command::new(binary())
        .arg("assets")
        .arg(&assets)
        .output()
        .unwrap();
    assert!(out.status.success());
    let man = std::fs::read_to_string(assets.join("drawbridge.1")).unwrap();
    assert!(
        man.contains(".TH drawbridge") && man.contains("tunnel"),
        "{man}"
    );
    // A page for every subcommand, each option on its page (the hidden
    // `assets` command has none).
    for (page, options) in [
        (
            "drawbridge-run.1",
            &["\\-\\-config", "\\-\\-pid\\-file"][..],
        ),
        ("drawbridge-check.1", &["\\-\\-config"][..]),
        ("drawbridge-status.1", &["\\-\\-json"][..]),
        ("drawbridge-doctor.1", &["\\-\\-jellyfin\\-api\\-key"][..]),
        ("drawbridge-bans-list.1", &["\\-\\-json"][..]),
        ("drawbridge-bans-add.1", &["\\-\\-for"][..]),
        ("drawbridge-bans-remove.1", &[][..]),
        ("drawbridge-cache-purge.1", &[][..]),
        (
            "drawbridge-tunnel-add.1",
            &["\\-\\-edge", "\\-\\-expires"][..],
        ),
        ("drawbridge-tunnel-list.1", &[][..]),
        ("drawbridge-tunnel-remove.1", &[][..]),
        ("drawbridge-agent.1", &["\\-\\-config"][..]),
        ("drawbridge-agent-enroll.1", &[][..]),
    ] {
        let text = std::fs::read_to_string(assets.join(page))
            .unwrap_or_else(|_| panic!("no man page {page}"));
        for option in options {
            assert!(text.contains(option), "{page} lacks {option}:\n{text}");
        }
    }
    assert!(!assets.join("drawbridge-assets.1").exists());
    for file in ["drawbridge.bash", "_drawbridge", "drawbridge.fish"] {
        let text = std::fs::read_to_string(assets.join(file)).unwrap();
        assert!(text.contains("tunnel") && text.contains("agent"), "{file}");
    }
}

/// The package itself, built by cargo-deb from this build's binary (the
/// release build is the same code with other optimisation) and opened as
/// `dpkg` would: every file in its place with its mode, the conffile
/// declared, the units and the user in the maintainer scripts, the binary
/// runnable from where it lands; `lintian` finds nothing. (.ci/run installs
/// cargo-deb and lintian; without them this test fails and says so.)
#[test]
fn the_package_holds_everything_in_place_and_lintian_is_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let deb = build_package(dir.path());
    let dpkg = |args: &[&str]| {
        let out = Command::new("dpkg-deb").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let listing = dpkg(&["--contents", &deb]);
    for (mode, path) in [
        ("-rwxr-xr-x", "./usr/bin/drawbridge"),
        ("-rw-r--r--", "./usr/lib/systemd/system/drawbridge.service"),
        (
            "-rw-r--r--",
            "./usr/lib/systemd/system/drawbridge-agent.service",
        ),
        ("-rw-r--r--", "./etc/drawbridge/drawbridge.toml"),
        ("-rw-r--r--", "./etc/logrotate.d/drawbridge"),
        ("-rw-r--r--", "./usr/share/man/man1/drawbridge.1.gz"),
        (
            "-rw-r--r--",
            "./usr/share/bash-completion/completions/drawbridge",
        ),
        ("-rw-r--r--", "./usr/share/doc/drawbridge/copyright"),
    ] {
        assert!(
            listing
                .lines()
                .any(|l| l.starts_with(mode) && l.ends_with(path)),
            "{path} {mode} missing:\n{listing}"
        );
    }
    let control = dir.path().join("control");
    dpkg(&["--control", &deb, control.to_str().unwrap()]);
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap();
    assert!(conffiles.contains("/etc/drawbridge/drawbridge.toml"));
    let fields = std::fs::read_to_string(control.join("control")).unwrap();
    assert!(fields.contains("Depends: adduser"), "{fields}");
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
    assert!(
        postinst.contains("adduser --system")
            && postinst.contains("chmod 0640 /etc/drawbridge/drawbridge.toml")
    );
    assert!(
        !postinst.contains("#DEBHELPER#"),
        "the units' snippets were put in"
    );
    for script in ["postinst", "postrm", "prerm"] {
        let syntax = Command::new("sh")
            .arg("-n")
            .arg(control.join(script))
            .status()
            .unwrap();
        assert!(syntax.success(), "{script} is not valid sh");
    }
    let root = dir.path().join("root");
    dpkg(&["--extract", &deb, root.to_str().unwrap()]);
    let version = Command::new(root.join("usr/bin/drawbridge"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("drawbridge "));
    match Command::new("lintian")
        .args(["--tag-display-limit", "0", &deb])
        .output()
    {
        Err(_) => panic!("lintian is installed (.ci/run installs it)"),
        Ok(out) => {
            let tags: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .chain(String::from_utf8_lossy(&out.stderr).lines())
                .filter(|l| l.starts_with("E:") || l.starts_with("W:") || l.starts_with("I:"))
                .map(str::to_string)
                .collect();
            assert!(tags.is_empty(), "lintian: {tags:#?}");
        }
    }
}

/// The package built by cargo-deb into `dir` from this build's binary (the
/// release build is the same code with other optimisation). Fails when
/// cargo-deb is not installed (.ci/run installs it).
pub fn build_package(dir: &Path) -> String {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(
        Command::new("cargo-deb").arg("--version").output().is_ok(),
        "cargo-deb is installed (.ci/run installs it, pinned)"
    );
    // As packaging/build-deb makes them: where cargo-deb's `target/release/`
    // points for this profile, man pages compressed.
    let folder = binary().parent().unwrap().join("assets");
    let _ = std::fs::remove_dir_all(&folder);
    let assets = Command::new(binary())
        .arg("assets")
        .arg(&folder)
        .output()
        .unwrap();
    assert!(assets.status.success());
    let gzip = Command::new("sh")
        .arg("-c")
        .arg("gzip -9nf \"$1\"/*.1")
        .arg("sh")
        .arg(&folder)
        .status()
        .unwrap();
    assert!(gzip.success());
    let built = Command::new("cargo-deb")
        .args(["--profile", "dev", "--no-build", "--strip", "--fast", "-o"])
        .arg(dir)
        .current_dir(manifest)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&built.stderr);
    assert!(built.status.success(), "{said}");
    String::from_utf8_lossy(&built.stdout).trim().to_string()
}

/// What `dpkg -i`, the unit's user and capability, and `dpkg --purge` do,
/// in a throw-away root: an overlay over this machine's root in a mount
/// namespace of its own, and a network namespace of its own, so the
/// package's user, units and files, and ports 80 and 443, never reach the
/// machine running the tests. drawbridge runs there as the `drawbridge`
/// user with `CAP_NET_BIND_SERVICE` alone (as the unit's
/// `AmbientCapabilities` gives it), binds 80 and 443 and answers; the purge
/// leaves no user, state or binary behind. Root only (CI runs so).
#[test]
fn the_package_installs_serves_as_its_user_with_one_capability_and_purges_cleanly() {
    if !crate::support::as_root("the package was not installed") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let deb = build_package(dir.path());
    for sub in ["upper", "work", "merged"] {
        std::fs::create_dir(dir.path().join(sub)).unwrap();
    }
    let out = Command::new("unshare")
        .args(["--mount", "--net", "sh", "-e", "-c", INSTALL])
        .arg("install")
        .arg(dir.path())
        .arg(&deb)
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    for line in [
        "config root:drawbridge 640",
        "state drawbridge:drawbridge 700",
        "answer 308",
        "default listeners: 308 308",
        "CapEff:\t0000000000000400",
        "CapPrm:\t0000000000000400",
        "user gone",
        "state gone",
        "binary gone",
    ] {
        assert!(said.contains(line), "no `{line}` in:\n{said}");
    }
    let uid = said
        .lines()
        .find_map(|l| l.strip_prefix("uid="))
        .and_then(|rest| rest.split('(').next())
        .unwrap_or_else(|| panic!("no drawbridge user made:\n{said}"));
    assert_ne!(uid, "0");
    assert!(
        said.contains(&format!("Uid:\t{uid}\t{uid}\t{uid}\t{uid}")),
        "{said}"
    );
}

/// Run by `the_package_installs…` inside `unshare --mount --net`: $1 the
/// scratch folder, $2 the package.
const INSTALL: &str = r#"
D=$1
mount -t overlay overlay -o lowerdir=/,upperdir=$D/upper,workdir=$D/work $D/merged
mount -t proc proc $D/merged/proc
mount --bind /dev $D/merged/dev
cp "$2" $D/merged/tmp/drawbridge.deb
exec chroot $D/merged sh -e -c '
dpkg -i /tmp/drawbridge.deb >/dev/null 2>&1
id drawbridge
stat -c "config %U:%G %a" /etc/drawbridge/drawbridge.toml
stat -c "state %U:%G %a" /var/lib/drawbridge
ip link set lo up
# drawbridge run -c $1 as the unit runs it (its user, CAP_NET_BIND_SERVICE
# alone), its log in $2, once it answers on 127.0.0.1:80.
serve() {
  setpriv --reuid=drawbridge --regid=drawbridge --init-groups \
    --inh-caps=-all,+net_bind_service --ambient-caps=-all,+net_bind_service \
    --bounding-set=-all,+net_bind_service \
    drawbridge run -c "$1" 2>"$2" &
  pid=$!
  for i in $(seq 100); do curl -s -o /dev/null http://127.0.0.1/ && break; sleep 0.1; done
}
printf "%s\n" "[server]" "http = [\"127.0.0.1:80\"]" "https = [\"127.0.0.1:443\"]" \
  "admin_listen = \"off\"" "[[site]]" "host = \"jelly.test\"" \
  "upstream = \"http://127.0.0.1:8096\"" "tls = \"internal\"" > /etc/drawbridge/ports.toml
serve /etc/drawbridge/ports.toml /tmp/run.log
echo "answer $(curl -s -o /dev/null -w "%{http_code}" -H "Host: jelly.test" http://127.0.0.1/)"
grep -E "^(Uid|CapEff|CapPrm):" /proc/$pid/status || cat /tmp/run.log
kill $pid
wait $pid || true
# The shipped listeners (every address, IPv4 and IPv6, HTTP/3 on the
# HTTPS ports too) in this namespace of the test'"'"'s own.
printf "%s\n" "[server]" "admin_listen = \"off\"" "[[site]]" "host = \"jelly.test\"" \
  "upstream = \"http://127.0.0.1:8096\"" "tls = \"internal\"" > /etc/drawbridge/defaults.toml
serve /etc/drawbridge/defaults.toml /tmp/defaults.log
v4=$(curl -s -o /dev/null -w "%{http_code}" -H "Host: jelly.test" http://127.0.0.1/)
v6=$(curl -s -o /dev/null -w "%{http_code}" -H "Host: jelly.test" "http://[::1]/")
echo "default listeners: $v4 $v6"
kill $pid
wait $pid || cat /tmp/defaults.log
dpkg --purge drawbridge >/dev/null 2>&1
id drawbridge 2>/dev/null || echo "user gone"
test -e /var/lib/drawbridge || echo "state gone"
test -e /usr/bin/drawbridge || echo "binary gone"
'
"#;
