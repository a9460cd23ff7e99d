#!/usr/bin/env python3
"""The router's own WireGuard measured: a home router (Debian's wireguard-go,
configured with the file `drawbridge wireguard add` prints, `wg-quick up`)
dials the edge; the edge reaches the origin (nginx, standing in for
Jellyfin) on the router's LAN through it, with the kernel's TCP over
drawbridge's TUN. Beside it, the same edge's direct path to the same origin.
Network namespaces made here: `edge` (drawbridge, CPU 0) and `router`
(wireguard-go, CPU 1); the client and the origin in this namespace (CPU 1).

Rows: one stream's throughput, direct and through WireGuard; CPU seconds per
GiB at the edge on each path and at the router; one stream over an 80 ms
round trip (a UDP relay in the edge's namespace delays each direction by
40 ms) with the router's uplink capped at 50 Mbit/s by a token bucket (tc
tbf) — it should reach the cap; and the edge's memory per registered peer.

    bench/run --wireguard          prints the table and writes it into
                                   docs/performance.md ("The router's own WireGuard")
    bench/run --wireguard --quick  shorter, prints only
"""

import asyncio
import os
import pathlib
import re
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from bench import ROOT, Bench, built, sh, write_section  # noqa: E402

BINARY = ROOT / "target/release/drawbridge"
EDGE_NS, ROUTER_NS = "dbbench-edge", "dbbench-router"
CLIENT, EDGE = "198.18.226.1", "198.18.226.2"
EDGE_WAN, ROUTER_WAN = "198.18.225.1", "198.18.225.2"
LAN_ORIGIN, ROUTER_LAN = "192.168.225.10", "192.168.225.1"
ORIGIN_PORT, EDGE_PORT, RELAY_PORT = 18600, 8080, 51821
DELAY = 0.040
CAP_MBIT = 50


def run(cmd):
    subprocess.run(cmd, shell=True, check=True)


def quiet(cmd):
    subprocess.run(cmd, shell=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def net_down():
    quiet(f"for p in $(ip netns pids {EDGE_NS} 2>/dev/null) $(ip netns pids {ROUTER_NS} 2>/dev/null); do kill -9 $p; done")
    quiet(f"ip netns del {EDGE_NS}; ip netns del {ROUTER_NS}; ip link del dbbc0; ip link del dbbl0")


def net_up():
    net_down()
    e, r = EDGE_NS, ROUTER_NS
    for step in [
        f"ip netns add {e}", f"ip netns add {r}",
        f"ip -n {e} link set lo up", f"ip -n {r} link set lo up",
        f"ip link add dbbc0 type veth peer name c0 netns {e}",
        f"ip addr add {CLIENT}/30 dev dbbc0", "ip link set dbbc0 up",
        f"ip -n {e} addr add {EDGE}/30 dev c0", f"ip -n {e} link set c0 up",
        f"ip -n {e} link add i0 type veth peer name i0 netns {r}",
        f"ip -n {e} addr add {EDGE_WAN}/24 dev i0", f"ip -n {e} link set i0 up",
        f"ip -n {r} addr add {ROUTER_WAN}/24 dev i0", f"ip -n {r} link set i0 up",
        f"ip link add dbbl0 type veth peer name l0 netns {r}",
        f"ip addr add {LAN_ORIGIN}/24 dev dbbl0", "ip link set dbbl0 up",
        f"ip -n {r} addr add {ROUTER_LAN}/24 dev l0", f"ip -n {r} link set l0 up",
        f"ip netns exec {r} sysctl -qw net.ipv4.ip_forward=1",
        f"ip route add 10.225.0.0/24 via {ROUTER_LAN} dev dbbl0",
    ]:
        run(step)


class Relay:
    """UDP relay, run in the edge's namespace (`--relay`): what the router
    sends to it (through its capped uplink) goes on to the edge's port 40 ms
    later, and the edge's answers back 40 ms later — the internet between a
    home and a VPS."""

    async def serve(self):
        loop = asyncio.get_running_loop()
        relay = self

        class Side(asyncio.DatagramProtocol):
            def __init__(self, from_home):
                self.from_home = from_home

            def datagram_received(self, data, addr):
                relay.later(data, addr, self.from_home)

        def sock(addr):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
            s.bind(addr)
            return s

        self.router = None
        self.loop = loop
        self.home, _ = await loop.create_datagram_endpoint(lambda: Side(True), sock=sock((EDGE_WAN, RELAY_PORT)))
        self.edge, _ = await loop.create_datagram_endpoint(lambda: Side(False), sock=sock(("127.0.0.1", 0)))
        await asyncio.Event().wait()

    def later(self, data, addr, from_home):
        if from_home:
            self.router = addr
            self.loop.call_later(DELAY, self.edge.sendto, data, ("127.0.0.1", 51820))
        elif self.router:
            self.loop.call_later(DELAY, self.home.sendto, data, self.router)


def edge_config(work, site_upstream_wg, site_upstream_direct):
    return f"""[server]
http = ["{EDGE}:{EDGE_PORT}"]
https = []
state_dir = "{work}/edge-state"
admin_listen = "127.0.0.1:18690"

[log]
access = "off"
level = "warn"

[wireguard]
listen = "0.0.0.0:51820"
address = "10.225.0.1/24"
endpoint = "{EDGE_WAN}:51820"
keepalive = "5s"

[[site]]
host = "wg.test"
upstream = "{site_upstream_wg}"
gate = "off"
https_redirect = false
preset = "none"

[[site]]
host = "direct.test"
upstream = "{site_upstream_direct}"
gate = "off"
https_redirect = false
preset = "none"
"""


def stream(bench, host, size_mib, names):
    """One stream's MiB/s and each of `names`' CPU seconds per GiB."""
    size = size_mib << 20
    before = {n: bench.cpu_seconds(n) for n in names}
    router_before = router_cpu()
    out = sh(f"taskset -c 1 curl -s -o /dev/null -H 'Host: {host}' -r 0-{size - 1} -w '%{{speed_download}} %{{size_download}} %{{http_code}}' http://{EDGE}:{EDGE_PORT}/big.bin")
    speed, got, code = out.split()
    if int(got) != size or code != "206":
        raise SystemExit(f"stream via {host}: HTTP {code}, {got} of {size} bytes")
    per_gib = {n: (bench.cpu_seconds(n) - before[n]) * 1024 / size_mib for n in names}
    per_gib["router"] = (router_cpu() - router_before) * 1024 / size_mib
    return float(speed) / (1 << 20), per_gib


def router_cpu():
    """CPU seconds of every process in the router's namespace (wireguard-go)."""
    ticks = 0
    for pid in subprocess.run(f"ip netns pids {ROUTER_NS}", shell=True, capture_output=True, text=True).stdout.split():
        try:
            fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
        except (OSError, ValueError, IndexError):
            continue
    return ticks / os.sysconf("SC_CLK_TCK")


def wait_up(config, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "\tup\t" in sh(f"{BINARY} wireguard -c {config} list"):
            return
        time.sleep(0.2)
    raise SystemExit("the router never came up")


def main(quick):
    os.sched_setaffinity(0, {1})
    work = pathlib.Path(tempfile.mkdtemp(prefix="drawbridge-wireguard-bench-"))
    bench = Bench(str(work), quick)
    rows = []
    failed = True
    try:
        net_up()
        bench.origin_files()
        conf = bench.nginx_conf("origin", f"""
  sendfile on; tcp_nopush on;
  server {{ listen {LAN_ORIGIN}:{ORIGIN_PORT}; listen {CLIENT}:{ORIGIN_PORT}; root {work}/www; }}""")
        bench.spawn("origin", f"nginx -c {conf}", cpu=1, env={})
        config = work / "edge.toml"
        config.write_text(edge_config(work, f"wireguard:home/http://{LAN_ORIGIN}:{ORIGIN_PORT}", f"http://{CLIENT}:{ORIGIN_PORT}"))
        home = work / "wgb0.conf"
        home.write_text(sh(f"{BINARY} wireguard -c {config} add home 2>/dev/null"))
        bench.spawn("edge", f"ip netns exec {EDGE_NS} {BINARY} run -c {config}", cpu=0, env={"TOKIO_WORKER_THREADS": "1"})
        time.sleep(1)
        idle = bench.rss("edge")
        run(f"ip netns exec {ROUTER_NS} taskset -c 1 wg-quick up {home} >/dev/null 2>&1")
        wait_up(config)
        size = 256 if quick else 1024
        best = lambda host: max((stream(bench, host, size, ["edge"]) for _ in range(3)), key=lambda r: r[0])
        direct, direct_gib = best("direct.test")
        wg, wg_gib = best("wg.test")
        # The long, capped uplink: the router dials the relay, its uplink
        # (toward the edge) through a 50 Mbit/s token bucket.
        run(f"ip netns exec {ROUTER_NS} wg-quick down {home} >/dev/null 2>&1")
        bench.spawn("relay", f"ip netns exec {EDGE_NS} python3 {pathlib.Path(__file__).resolve()} --relay", cpu=1, env={})
        time.sleep(0.5)
        home.write_text(home.read_text().replace(f"Endpoint = {EDGE_WAN}:51820", f"Endpoint = {EDGE_WAN}:{RELAY_PORT}"))
        run(f"ip netns exec {ROUTER_NS} tc qdisc add dev i0 root tbf rate {CAP_MBIT}mbit burst 64kb latency 200ms")
        run(f"ip netns exec {ROUTER_NS} taskset -c 1 wg-quick up {home} >/dev/null 2>&1")
        wait_up(config)
        # A fresh connection home for the far stream (a reload gives the
        # sites new pools): a kept one would carry the near path's round
        # trip in its congestion control's estimate for ten seconds.
        os.killpg(bench.procs["edge"].pid, 1)
        time.sleep(1)
        far_mib = 32 if quick else 128
        far, _ = stream(bench, "wg.test", far_mib, [])
        # Memory per registered peer (no handshake: what the register and
        # the device hold for each).
        before = bench.rss("edge")
        for i in range(100):
            sh(f"{BINARY} wireguard -c {config} add peer{i} >/dev/null 2>&1")
        time.sleep(1.5)
        per_peer = (bench.rss("edge") - before) / 100
        failed = False
    finally:
        bench.stop_all()
        net_down()
        if failed:
            print(f"kept {work} (*.out)", file=sys.stderr)
    cap = CAP_MBIT * 1e6 / 8 / (1 << 20)
    rows.append(("One stream (MiB/s), no delay", f"{direct:.0f}", f"{wg:.0f} ({wg / direct:.2f}×)"))
    rows.append(("CPU seconds per GiB at the edge", f"{direct_gib['edge']:.2f}", f"{wg_gib['edge']:.2f} ({wg_gib['edge'] / direct_gib['edge']:.2f}×)"))
    rows.append(("CPU seconds per GiB at the router (wireguard-go)", "–", f"{wg_gib['router']:.2f}"))
    # What the capped line can carry of a film at most: each 1,420-byte
    # packet holds 1,368 bytes of TCP payload (IP and TCP with timestamps)
    # and costs 1,494 on the veth (WireGuard's 32, UDP's 8, IP's 20 and
    # Ethernet's 14 around it), as the token bucket counts.
    ceiling = cap * 1368 / 1494
    rows.append((f"One stream over 80 ms RTT, uplink capped at {cap:.1f} MiB/s", "–",
                 f"{far:.1f} ({far / cap:.2f} of the cap; {far / ceiling:.2f} of the {ceiling:.1f} MiB/s of payload it can carry)"))
    rows.append(("Edge memory per registered peer (KiB)", "–", f"{per_peer:.1f} (edge at rest {idle} KiB)"))
    table = "| measure | direct | WireGuard |\n|---|---|---|\n" + "\n".join(f"| {' | '.join(r)} |" for r in rows)
    print(table)
    if not quick:
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        write_section("The router's own WireGuard", "WIREGUARD.md",
                      f"## The router's own WireGuard\n\nMeasured {stamp} by `bench/run --wireguard` (set-up in bench/wireguard.py); drawbridge built {built()}.\n\n{table}\n")


if __name__ == "__main__":
    if "--relay" in sys.argv:
        asyncio.run(Relay().serve())
    else:
        main("--quick" in sys.argv)
