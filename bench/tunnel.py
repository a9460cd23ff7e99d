#!/usr/bin/env python3
"""The home leg measured: drawbridge's direct path against the tunnel
(edge → reversed HTTP/2 over TLS 1.3 → agent → origin), and nginx over an SSH
reverse tunnel (`ssh -R`, the usual way out without a port forward) as the
closest peer that runs here. Edge, agent, sshd and ssh on CPU 0, load
generators and the origin on CPU 1, all on 127.0.0.1, each case bounded in time.

Rows: one stream's throughput, small answers per second (wrk, HTTP/1.1
over TLS, 64 connections) with each end's CPU per request, memory per idle
tunnel connection, and one stream through a relay that delays each direction
by 40 ms (80 ms round trip) and caps the rate at 120 Mbit/s — a 4K film over
a long home uplink: it should reach the cap, not a flow-control window.

    bench/run --tunnel          prints the table and writes it into
                                docs/performance.md ("The home leg")
    bench/run --tunnel --quick  shorter, prints only
"""

import asyncio
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from bench import ORIGIN, ROOT, Bench, built, drawbridge_config, pinned, sh, wait_port, write_section  # noqa: E402

DIRECT, TUNNELED, RELAY, SSH_NGINX, SSHD, SSH_FORWARD = 18460, 18461, 18462, 18463, 18464, 18465
BINARY = ROOT / "target/release/drawbridge"
DELAY = 0.040
RATE = 120e6 / 8


def start_edges(bench):
    w = bench.work
    (w / "direct.toml").write_text(drawbridge_config(w, DIRECT, f"http://127.0.0.1:{ORIGIN}", "direct-state"))
    (w / "tunnel.toml").write_text(drawbridge_config(w, TUNNELED, "tunnel:home/origin", "tunnel-state"))
    env = {"TOKIO_WORKER_THREADS": "1"}
    bench.spawn("direct", f"{BINARY} run -c {w}/direct.toml", env=env)
    bench.spawn("edge", f"{BINARY} run -c {w}/tunnel.toml", env=env)
    wait_port(DIRECT, "direct")
    wait_port(TUNNELED, "edge")


def enroll(bench, name, edge_port):
    """An agent config under work/name, enrolled at the edge on `edge_port`."""
    w = bench.work
    out = sh(f"{BINARY} tunnel add {name} --edge 127.0.0.1:{TUNNELED} -c {w}/tunnel.toml")
    token = re.search(r"drawbridge agent enroll (\S+)", out).group(1)
    home = w / name
    home.mkdir()
    sh(f"{BINARY} agent enroll {token} -c {home}/agent.toml")
    text = (home / "agent.toml").read_text()
    text = text.replace("jellyfin = \"http://127.0.0.1:8096\"", f"origin = \"http://127.0.0.1:{ORIGIN}\"")
    text = text.replace(f"127.0.0.1:{TUNNELED}", f"127.0.0.1:{edge_port}")
    (home / "agent.toml").write_text(text)
    return home / "agent.toml"


def wait_log(bench, name, needle, count=1, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (bench.work / f"{name}.out").read_text().count(needle) >= count:
            return
        time.sleep(0.05)
    raise SystemExit(f"{name}: no '{needle}' within {timeout} s")


class Relay(threading.Thread):
    """TCP relay from RELAY to the edge: each direction delayed by DELAY and
    paced to RATE bytes per second (a long, capped home uplink)."""

    def __init__(self, target):
        super().__init__(daemon=True)
        self.target = target

    def run(self):
        os.sched_setaffinity(0, {1})
        asyncio.run(self.serve())

    async def serve(self):
        server = await asyncio.start_server(self.client, "127.0.0.1", RELAY)
        async with server:
            await server.serve_forever()

    async def client(self, reader, writer):
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        await asyncio.gather(self.pipe(reader, up_writer), self.pipe(up_reader, writer), return_exceptions=True)

    async def pipe(self, reader, writer):
        queue = asyncio.Queue()

        async def later():
            sent_until = time.monotonic()
            while True:
                due, data = await queue.get()
                if data is None:
                    writer.close()
                    return
                now = time.monotonic()
                if due > now:
                    await asyncio.sleep(due - now)
                # Paced: the line carries RATE bytes a second, no more. Credit
                # lost to a late timer is kept for 20 ms, so the relay's own
                # sleeps do not lower the rate below the cap.
                sent_until = max(sent_until, time.monotonic() - 0.02) + len(data) / RATE
                writer.write(data)
                await writer.drain()
                wait = sent_until - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)

        task = asyncio.ensure_future(later())
        while True:
            data = await reader.read(64 * 1024)
            await queue.put((time.monotonic() + DELAY, data or None))
            if not data:
                break
        await task


def start_ssh_peer(bench):
    """nginx (as the edge) in front of an SSH reverse tunnel: `ssh -R` from
    'home' to a local sshd forwards SSH_FORWARD to the origin."""
    w = bench.work
    ssh_dir = w / "ssh"
    ssh_dir.mkdir()
    sh(f"ssh-keygen -q -t ed25519 -N '' -f {ssh_dir}/host")
    sh(f"ssh-keygen -q -t ed25519 -N '' -f {ssh_dir}/client")
    (ssh_dir / "authorized_keys").write_text((ssh_dir / "client.pub").read_text())
    os.chmod(ssh_dir / "authorized_keys", 0o600)
    (ssh_dir / "sshd_config").write_text(f"""Port {SSHD}
ListenAddress 127.0.0.1
HostKey {ssh_dir}/host
AuthorizedKeysFile {ssh_dir}/authorized_keys
PasswordAuthentication no
PermitRootLogin prohibit-password
StrictModes no
PidFile {ssh_dir}/sshd.pid
UsePAM no
""")
    os.makedirs("/run/sshd", exist_ok=True)
    bench.spawn("sshd", f"$(command -v sshd || echo /usr/sbin/sshd) -D -e -f {ssh_dir}/sshd_config")
    wait_port(SSHD, "sshd")
    bench.spawn("ssh", f"ssh -N -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ExitOnForwardFailure=yes -i {ssh_dir}/client -p {SSHD} -R 127.0.0.1:{SSH_FORWARD}:127.0.0.1:{ORIGIN} root@127.0.0.1")
    wait_port(SSH_FORWARD, "ssh -R")
    conf = bench.nginx_conf("ssh-nginx", f"""
  upstream home {{ server 127.0.0.1:{SSH_FORWARD}; keepalive 64; }}
  server {{ listen 127.0.0.1:{SSH_NGINX} ssl; server_name localhost;
    ssl_certificate {w}/cert.pem; ssl_certificate_key {w}/key.pem;
    location / {{ proxy_pass http://home; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; }} }}""")
    bench.spawn("ssh-nginx", f"nginx -c {conf}")
    wait_port(SSH_NGINX, "nginx over ssh")


def stream(bench, port, size_mib, names=()):
    """One stream's MiB/s; with `names`, also each one's CPU seconds per GiB."""
    size = size_mib << 20
    before = {n: bench.cpu_seconds(n) for n in names}
    out = sh(pinned(1, f"curl -s --http1.1 --cacert {bench.work}/ca.pem -o /dev/null -r 0-{size - 1} -w '%{{speed_download}} %{{size_download}} %{{http_code}}' https://localhost:{port}/big.bin"))
    speed, got, code = out.split()
    if int(got) != size or code != "206":
        raise SystemExit(f"stream on {port}: HTTP {code}, {got} of {size} bytes")
    rate = float(speed) / (1 << 20)
    if names:
        return rate, {n: (bench.cpu_seconds(n) - before[n]) * 1024 / size_mib for n in names}
    return rate


def small(bench, port, names):
    """wrk on /small.json: requests/s and CPU µs per request of each of `names`."""
    before = {n: bench.cpu_seconds(n) for n in names}
    seconds = 3 if bench.quick else 8
    out = sh(pinned(1, f"wrk -t1 -c64 -d{seconds}s https://localhost:{port}/small.json"))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    count = int(re.search(r"(\d+) requests in", out).group(1))
    if "Non-2xx" in out:
        raise SystemExit(f"wrk on {port}: failures\n{out}")
    return rps, {n: (bench.cpu_seconds(n) - before[n]) / count * 1e6 for n in names}


def main(quick):
    os.sched_setaffinity(0, {1})
    work = tempfile.mkdtemp(prefix="drawbridge-tunnel-bench-")
    bench = Bench(work, quick)
    rows = []
    failed = True
    try:
        bench.certificates()
        bench.origin_files()
        bench.start_origin()
        wait_port(ORIGIN, "origin")
        start_edges(bench)
        edge_idle = bench.rss("edge")
        agent_config = enroll(bench, "home", TUNNELED)
        bench.spawn("agent", f"{BINARY} agent -c {agent_config}", env={"TOKIO_WORKER_THREADS": "1"})
        wait_log(bench, "edge", "agent connected", count=2)
        time.sleep(1)
        per_conn = (bench.rss("edge") - edge_idle) / 2
        agent_rss = bench.rss("agent")
        try:
            start_ssh_peer(bench)
            peer = True
        except SystemExit as error:
            print(f"SSH peer not measured: {error}", file=sys.stderr)
            peer = False
        size = 256 if quick else 1024
        best = lambda port, names: max((stream(bench, port, size, names) for _ in range(3)), key=lambda r: r[0])
        direct_stream, direct_gib = best(DIRECT, ["direct"])
        tunnel_stream, tunnel_gib = best(TUNNELED, ["edge", "agent"])
        ssh_stream = best(SSH_NGINX, ["ssh-nginx"])[0] if peer else None
        direct_rps, direct_cpu = small(bench, DIRECT, ["direct"])
        tunnel_rps, tunnel_cpu = small(bench, TUNNELED, ["edge", "agent"])
        if peer:
            ssh_rps, ssh_cpu = small(bench, SSH_NGINX, ["ssh-nginx", "sshd", "ssh"])
        # The long uplink: a second agent whose connections go through the relay.
        Relay(TUNNELED).start()
        wait_port(RELAY, "relay")
        far = enroll(bench, "far", RELAY)
        far_text = far.read_text().replace("connections = 2", "connections = 1")
        far.write_text(far_text)
        edge_text = (bench.work / "tunnel.toml").read_text().replace("tunnel:home/origin", "tunnel:far/origin")
        (bench.work / "tunnel.toml").write_text(edge_text)
        os.killpg(bench.procs["edge"].pid, 1)  # SIGHUP: the site now goes to `far`
        wait_log(bench, "edge", "config reloaded")
        bench.spawn("far", f"{BINARY} agent -c {far}")
        wait_log(bench, "edge", "agent connected", count=3)
        far_mib = 64 if quick else 128
        far_stream = stream(bench, TUNNELED, far_mib)
        failed = False
    finally:
        bench.stop_all()
        if failed:
            print(f"kept {work} (*.out)", file=sys.stderr)
    cap = RATE / (1 << 20)
    rows.append(("One stream (MiB/s), loopback", f"{direct_stream:.0f}", f"{tunnel_stream:.0f} ({tunnel_stream / direct_stream:.2f}×)", f"{ssh_stream:.0f}" if peer else "n/a"))
    rows.append(("CPU seconds per GiB streamed", f"{direct_gib['direct']:.2f}",
                 f"edge {tunnel_gib['edge']:.2f} ({tunnel_gib['edge'] / direct_gib['direct']:.2f}×) + agent {tunnel_gib['agent']:.2f}", "–"))
    rows.append(("Small answers per second (wrk, 64 connections)", f"{direct_rps:.0f}", f"{tunnel_rps:.0f}", f"{ssh_rps:.0f}" if peer else "n/a"))
    tunnel_total = tunnel_cpu["edge"] + tunnel_cpu["agent"]
    rows.append(("CPU µs per small request", f"{direct_cpu['direct']:.0f}",
                 f"{tunnel_total:.0f} = edge {tunnel_cpu['edge']:.0f} + agent {tunnel_cpu['agent']:.0f} ({tunnel_total / direct_cpu['direct']:.2f}×)",
                 (f"{sum(ssh_cpu.values()):.0f} = nginx {ssh_cpu['ssh-nginx']:.0f} + sshd {ssh_cpu['sshd']:.0f} + ssh {ssh_cpu['ssh']:.0f}" if peer else "n/a")))
    rows.append(("Memory per idle tunnel connection (edge, KiB)", "–", f"{per_conn:.0f} (agent process {agent_rss} KiB)", "–"))
    rows.append((f"One stream over 80 ms RTT capped at {cap:.1f} MiB/s", "–", f"{far_stream:.1f} ({far_stream / cap:.2f} of the cap)", "–"))
    table = "| measure | direct | tunnel | nginx over ssh -R |\n|---|---|---|---|\n" + "\n".join(f"| {' | '.join(r)} |" for r in rows)
    print(table)
    if not quick:
        write(table)


def write(table):
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    # Loopback TCP pays for the receiver too, and BBR's pacing costs both
    # ends CPU per GiB there (docs/performance.md, "The home leg, read").
    cc = pathlib.Path("/proc/sys/net/ipv4/tcp_congestion_control").read_text().strip()
    section = (f"## The home leg\n\nMeasured {stamp} by `bench/run --tunnel` (set-up in bench/tunnel.py); "
               f"TCP congestion control `{cc}`; drawbridge built {built()}.\n\n{table}\n")
    write_section("The home leg", "TUNNEL.md", section)

if __name__ == "__main__":
    main("--quick" in sys.argv)
