#!/usr/bin/env python3
"""HTTP/3 beside HTTP/2: one large stream through drawbridge and through
Caddy (the peer here that serves HTTP/3), each pinned to CPU 0 with the
origin and the client on CPU 1, all on 127.0.0.1, bounded in time.

Rows: one stream's rate over HTTP/3 (ngtcp2's `gtlsclient`, Debian's
`ngtcp2-client`) and over HTTP/2 (curl), and each proxy's CPU seconds per
GiB streamed; small requests per second (1 KiB JSON) over HTTP/3 with
examples/h3load.rs (Debian's h2load is built without QUIC; h3load is
quinn + h3, the same client for both proxies) and over HTTP/2 with h2load,
the same shape (8 connections × 8 streams), with each proxy's CPU
microseconds per request.

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
from bench import ORIGIN, ROOT, Bench, built, drawbridge_config, pinned, sh, wait_port, write_section  # noqa: E402

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


H3LOAD = ROOT / "target/release/examples/h3load"
CONNECTIONS, STREAMS = 8, 8


def h3_small(bench, name, port):
    """Requests/s of small answers over HTTP/3, and the proxy's CPU µs per request."""
    seconds = 3 if bench.quick else 10
    before = bench.cpu_seconds(name)
    out = sh(pinned(1, f"{H3LOAD} 127.0.0.1:{port} localhost /small.json {bench.work}/ca.pem "
                       f"{CONNECTIONS} {STREAMS} {seconds}"))
    cpu = bench.cpu_seconds(name) - before
    done, failed, took = out.split()
    done, failed, took = int(done), int(failed), float(took)
    if failed or not done:
        raise SystemExit(f"h3load against {name}: {failed} failed of {done + failed}")
    return done / took, cpu * 1e6 / done


def h2_small(bench, name, port):
    """Requests/s of small answers over HTTP/2 (h2load), and CPU µs per request."""
    seconds = 3 if bench.quick else 10
    before = bench.cpu_seconds(name)
    out = sh(pinned(1, f"h2load -c {CONNECTIONS} -m {STREAMS} -D {seconds} "
                       f"https://localhost:{port}/small.json"))
    cpu = bench.cpu_seconds(name) - before
    line = next(l for l in out.splitlines() if l.startswith("requests:"))
    done = int(line.split()[7])  # "requests: N total, N started, N done, N succeeded, ..."
    if done == 0:
        raise SystemExit(f"h2load against {name}: nothing succeeded:\n{out}")
    took = float(next(l for l in out.splitlines() if l.startswith("finished in")).split()[2].rstrip("s,"))
    return done / took, cpu * 1e6 / done


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
            small3 = h3_small(bench, name, port)
            small2 = h2_small(bench, name, port)
            rows.append((name, h3, h2, small3, small2))
        failed = False
    finally:
        bench.stop_all()
        if failed:
            print(f"kept {work} (*.out)", file=sys.stderr)
    table = "| proxy | one stream over HTTP/3 (MiB/s) | CPU s per GiB, HTTP/3 | one stream over HTTP/2 (MiB/s) | CPU s per GiB, HTTP/2 |\n|---|---|---|---|---|\n"
    table += "\n".join(f"| {n} | {h3[0]:.0f} | {h3[1]:.2f} | {h2[0]:.0f} | {h2[1]:.2f} |" for n, h3, h2, _, _ in rows)
    table += ("\n\n| proxy | small requests/s, HTTP/3 | CPU µs per request, HTTP/3 | small requests/s, HTTP/2 | CPU µs per request, HTTP/2 |\n|---|---|---|---|---|\n")
    table += "\n".join(f"| {n} | {s3[0]:.0f} | {s3[1]:.0f} | {s2[0]:.0f} | {s2[1]:.0f} |" for n, _, _, s3, s2 in rows)
    print(table)
    if not quick:
        write(table)


def write(table):
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    section = (f"## HTTP/3\n\nMeasured {stamp} by `bench/run --http3` (set-up in bench/http3.py): "
               "one 1 GiB download, the proxy on CPU 0, origin and client on CPU 1; then small answers "
               f"(1 KiB JSON) for 10 s, {CONNECTIONS} connections × {STREAMS} streams: over HTTP/3 with "
               "examples/h3load.rs (quinn + h3; Debian's h2load has no QUIC), over HTTP/2 with h2load. "
               "On this 2-core machine the client shares CPU 1 with the origin and is often the limit: "
               f"read the CPU per request beside the rates. drawbridge built {built()}.\n\n" + table + "\n")
    write_section("HTTP/3", "HTTP3.md", section)


if __name__ == "__main__":
    main("--quick" in sys.argv)
