#!/usr/bin/env python3
"""HTTP/3 beside HTTP/2: one large stream through drawbridge and through
Caddy (the peer here that serves HTTP/3), each pinned to CPU 0 with the
origin and the client on CPU 1, all on 127.0.0.1, bounded in time.

Rows: one stream's rate over HTTP/3 (ngtcp2's `gtlsclient`, Debian's
`ngtcp2-client`) and over HTTP/2 (curl), and each proxy's CPU seconds per
GiB streamed. Small requests per second over HTTP/3 are not measured:
Debian's h2load is built without QUIC, and no other HTTP/3 load generator
installs here (docs/performance.md says so).

    bench/run --http3            prints the table and writes it into
                                 docs/performance.md ("HTTP/3")
    bench/run --http3 --quick    shorter, prints only
"""

import os
import pathlib
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from bench import ORIGIN, ROOT, Bench, drawbridge_config, pinned, sh, wait_port  # noqa: E402

DRAWBRIDGE, CADDY = 18490, 18491
BINARY = ROOT / "target/release/drawbridge"


def start(bench):
    w = bench.work
    config = drawbridge_config(w, DRAWBRIDGE, f"http://127.0.0.1:{ORIGIN}", "h3-state")
    config = config.replace("quic = []\n", f'quic = ["127.0.0.1:{DRAWBRIDGE}"]\n')
    (w / "h3.toml").write_text(config)
    bench.spawn("drawbridge", f"{BINARY} run -c {w}/h3.toml", env={"TOKIO_WORKER_THREADS": "1"})
    (w / "Caddyfile").write_text(f"""{{
  admin off
  auto_https off
}}
https://localhost:{CADDY} {{
  tls {w}/cert.pem {w}/key.pem
  reverse_proxy 127.0.0.1:{ORIGIN} {{
    flush_interval -1
  }}
}}
""")
    bench.spawn("caddy", f"caddy run --config {w}/Caddyfile --adapter caddyfile",
                env={"GOMAXPROCS": "1", "XDG_DATA_HOME": str(w), "XDG_CONFIG_HOME": str(w)})
    wait_port(DRAWBRIDGE, "drawbridge")
    wait_port(CADDY, "caddy")
    time.sleep(0.5)  # Caddy opens its UDP socket after the TCP one


def h3_stream(bench, name, port, size_mib):
    """MiB/s of one HTTP/3 download of `size_mib`, and the proxy's CPU s/GiB."""
    out = bench.work / f"dl-{name}"
    out.mkdir(exist_ok=True)
    before = bench.cpu_seconds(name)
    started = time.monotonic()
    sh(pinned(1, f"gtlsclient --quiet --exit-on-all-streams-close --download {out} "
                 f"127.0.0.1 {port} https://localhost:{port}/big.bin"))
    seconds = time.monotonic() - started
    got = (out / "big.bin").stat().st_size
    (out / "big.bin").unlink()
    if got != 1 << 30:
        raise SystemExit(f"{name} over HTTP/3: {got} bytes of {1 << 30}")
    cpu = (bench.cpu_seconds(name) - before)
    return (got / (1 << 20)) / seconds, cpu * (1 << 30) / got


def h2_stream(bench, name, port):
    before = bench.cpu_seconds(name)
    out = sh(pinned(1, f"curl -s --http2 --cacert {bench.work}/ca.pem -o /dev/null "
                       f"-w '%{{speed_download}} %{{size_download}}' https://localhost:{port}/big.bin"))
    speed, got = out.split()
    cpu = bench.cpu_seconds(name) - before
    return float(speed) / (1 << 20), cpu * (1 << 30) / float(got)


def main(quick):
    os.sched_setaffinity(0, {1})
    work = tempfile.mkdtemp(prefix="drawbridge-h3-bench-")
    bench = Bench(work, quick)
    failed = True
    rows = []
    try:
        bench.certificates()
        bench.origin_files()
        bench.start_origin()
        wait_port(ORIGIN, "origin")
        start(bench)
        for name, port in [("drawbridge", DRAWBRIDGE), ("caddy", CADDY)]:
            h3 = max((h3_stream(bench, name, port, 1024) for _ in range(1 if quick else 2)), key=lambda r: r[0])
            h2 = max((h2_stream(bench, name, port) for _ in range(1 if quick else 2)), key=lambda r: r[0])
            rows.append((name, h3, h2))
        failed = False
    finally:
        bench.stop_all()
        if failed:
            print(f"kept {work} (*.out)", file=sys.stderr)
    table = "| proxy | one stream over HTTP/3 (MiB/s) | CPU s per GiB, HTTP/3 | one stream over HTTP/2 (MiB/s) | CPU s per GiB, HTTP/2 |\n|---|---|---|---|---|\n"
    table += "\n".join(f"| {n} | {h3[0]:.0f} | {h3[1]:.2f} | {h2[0]:.0f} | {h2[1]:.2f} |" for n, h3, h2 in rows)
    print(table)
    if not quick:
        write(table)


def write(table):
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    section = (f"## HTTP/3\n\nMeasured {stamp} by `bench/run --http3` (set-up in bench/http3.py): "
               "one 1 GiB download, the proxy on CPU 0, origin and client on CPU 1. "
               "Small requests per second over HTTP/3 are not measured: Debian's h2load has no QUIC, "
               "and no other HTTP/3 load generator installs here.\n\n" + table + "\n")
    (ROOT / "bench/HTTP3.md").write_text(section)
    path = ROOT / "docs/performance.md"
    text = path.read_text()
    at = text.find("\n## HTTP/3\n")
    if at >= 0:
        end = text.find("\n## ", at + 1)
        text = text[:at + 1] + section + (text[end + 1:] if end >= 0 else "")
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text)
    print(f"written to {path} and bench/HTTP3.md", file=sys.stderr)


if __name__ == "__main__":
    main("--quick" in sys.argv)
