//! Kernel bans (`[guard] nftables = true`), in a network namespace of its
//! own with Debian's `nft`: three failed logins ban an address, and the
//! kernel then drops its packets to drawbridge's port (a connection times
//! out, where drawbridge itself would have closed it) while other addresses
//! are served; the address the home agent attaches from stays out of the
//! kernel's set (drawbridge refuses its clients itself); lifting the ban
//! lifts the kernel's too; at exit the table is gone. Root only (CI runs so).

use std::process::Command;

use crate::support::binary;

/// The scenario, run inside `unshare --net`: each step prints one line the
/// test reads back.
const SCENARIO: &str = r#"
set -u
ip link set lo up
python3 -c '
import http.server
class Jellyfin(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.send_response(401); self.send_header("Content-Length", "0"); self.end_headers()
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers()
        self.wfile.write(b"{}")
    def log_message(self, *args): pass
server = http.server.HTTPServer(("127.0.0.1", 0), Jellyfin)
print(server.server_port, flush=True)
server.serve_forever()
' > "$DIR/upstream.port" &
UPSTREAM=$!
until [ -s "$DIR/upstream.port" ]; do sleep 0.05; done
sed "s/UPSTREAM_PORT/$(cat "$DIR/upstream.port")/" "$DIR/template.toml" > "$DIR/drawbridge.toml"
"$DRAWBRIDGE" run -c "$DIR/drawbridge.toml" 2> "$DIR/run.log" &
RUN=$!
until grep -q "kernel bans on" "$DIR/run.log" || ! kill -0 $RUN 2>/dev/null; do sleep 0.05; done
PORT=$(grep 'tls=true' "$DIR/run.log" | sed -n 's/.*listener=127\.0\.0\.1:\([0-9]*\).*/\1/p' | head -1)
get() {
  curl -sk --interface "$1" --connect-timeout 2 --max-time 4 -o /dev/null \
    -w '%{http_code}' "https://localhost:$PORT/System/Info/Public"
  echo " exit=$?"
}
echo "before: $(get 127.0.0.66)"
for i in 1 2 3; do
  curl -sk --interface 127.0.0.66 --max-time 4 -o /dev/null -X POST -d '{}' \
    "https://localhost:$PORT/Users/AuthenticateByName"
done
until nft list set inet drawbridge banned4 2>/dev/null | grep -q 127.0.0.66; do
  kill -0 $RUN 2>/dev/null || break; sleep 0.05
done
"$DRAWBRIDGE" bans -c "$DIR/drawbridge.toml" add 127.0.0.77 > /dev/null
echo "set: $(nft list set inet drawbridge banned4 | tr -d '\n\t' )"
echo "home: $(get 127.0.0.77)"
echo "banned: $(get 127.0.0.66)"
echo "other: $(get 127.0.0.67)"
"$DRAWBRIDGE" bans -c "$DIR/drawbridge.toml" remove 127.0.0.66 > /dev/null
until ! nft list set inet drawbridge banned4 | grep -q 127.0.0.66; do sleep 0.05; done
echo "lifted: $(get 127.0.0.66)"
kill -TERM $RUN; wait $RUN
echo "exit: $?"
echo "tables: $(nft list tables | tr '\n' ' ')"
kill $UPSTREAM
"#;

#[test]
fn a_ban_is_dropped_by_the_kernel_and_lifted_with_it() {
    if !crate::support::as_root("no network namespace; skipped") {
        return;
    }
    assert!(
        Command::new("nft").arg("--version").output().is_ok(),
        "nft is installed (Debian's nftables; .ci/run installs it)"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("template.toml"),
        format!(
            "[server]\nhttp = [\"127.0.0.1:0\"]\nhttps = [\"127.0.0.1:0\"]\nquic = [\"127.0.0.1:0\"]\nstate_dir = \"{}\"\nadmin_listen = \"off\"\n\n[guard]\nnftables = true\nban_own_addresses = true\n\n[[site]]\nhost = \"localhost\"\nupstream = \"http://127.0.0.1:UPSTREAM_PORT\"\ntls = \"internal\"\n",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    // The home agent attached from 127.0.0.77 before (the edge notes it).
    std::fs::create_dir_all(dir.path().join("state/tunnel")).unwrap();
    std::fs::write(
        dir.path().join("state/tunnel/homes.json"),
        r#"["127.0.0.77"]"#,
    )
    .unwrap();
    let out = Command::new("timeout")
        .args(["60", "unshare", "--net", "sh", "-c", SCENARIO])
        .env("DIR", dir.path())
        .env("DRAWBRIDGE", binary())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    let log = std::fs::read_to_string(dir.path().join("run.log")).unwrap_or_default();
    let line = |step: &str| {
        said.lines()
            .find_map(|l| l.strip_prefix(&format!("{step}: ")))
            .unwrap_or_else(|| panic!("no `{step}` step:\n{said}\n{log}"))
            .to_string()
    };
    assert_eq!(line("before"), "200 exit=0", "served before the ban\n{log}");
    assert!(
        line("set").contains("127.0.0.66 timeout"),
        "the ban is in the kernel's set: {}",
        line("set")
    );
    assert!(
        !line("set").contains("127.0.0.77"),
        "the agent's address stays out of the kernel's set: {}",
        line("set")
    );
    // Not dropped by the kernel (that would time out, exit 28): drawbridge
    // itself lets a banned client from the agent's address no further than
    // the TLS handshake, and answers nothing (curl: empty reply, or the
    // HTTP/2 stream refused).
    let home = line("home");
    assert!(
        home.starts_with("000 ") && !home.ends_with("exit=28") && !home.ends_with("exit=0"),
        "drawbridge itself closes a banned visitor from the agent's address, unanswered: {home}"
    );
    assert!(
        line("banned").ends_with("exit=28"),
        "the kernel drops the banned address's packets (a timeout, not drawbridge closing): {}",
        line("banned")
    );
    assert_eq!(line("other"), "200 exit=0", "others are served");
    assert_eq!(line("lifted"), "200 exit=0", "unbanned in the kernel too");
    assert_eq!(line("exit"), "0", "{log}");
    assert!(
        !line("tables").contains("drawbridge"),
        "the table is removed at exit: {}",
        line("tables")
    );
    assert!(log.contains("kernel bans removed"), "{log}");
}
