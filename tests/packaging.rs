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
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze is not installed; the units were not checked");
        return;
    }
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
    for file in ["drawbridge.bash", "_drawbridge", "drawbridge.fish"] {
        let text = std::fs::read_to_string(assets.join(file)).unwrap();
        assert!(text.contains("tunnel") && text.contains("agent"), "{file}");
    }
}
