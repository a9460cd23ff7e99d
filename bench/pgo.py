#!/usr/bin/env python3
"""The training run of a profile-guided build (packaging/pgo): an
instrumented drawbridge walked through the paths a household's requests
take, so that the compiler lays out and inlines the code those paths run.

    python3 bench/pgo.py BINARY PROFILES

BINARY is built with `-Cprofile-generate`; each drawbridge process it starts
writes its profile under PROFILES when it stops. On 127.0.0.1 only, every
load bounded in count, about a minute in all:

- the benchmark's site (bench.py's config): small answers over HTTP/2,
  HTTP/1.1 over TLS and plain HTTP/1.1, images, a stream each way, an
  upload, new connections (full handshakes);
- the same with the side-door gate enforcing, every request carrying a
  token the origin's /Users/Me accepts (the gate's check and its memory);
- the tunnel: an edge whose site is an agent's service, the agent enrolled
  with the commands drawbridge prints, small answers and a stream through it.

Paths it does not walk (the edge cache's fills, WebSockets, HTTP/3, ACME,
WireGuard) are compiled as code that rarely runs: correct, laid out away
from the hot paths, inlined less.
"""

import os
import pathlib
import signal
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import bench as B  # noqa: E402
import tunnel as T  # noqa: E402

SITE, GATED = 18480, 18481
PLAIN = 18482


def main(binary, profiles):
    binary = pathlib.Path(binary).resolve()
    profiles = pathlib.Path(profiles).resolve()
    profiles.mkdir(parents=True, exist_ok=True)
    # Every process of the binary (the edges, the agent, `tunnel add`,
    # `agent enroll`) writes its own profile here; the build's own
    # instrumented build scripts wrote theirs elsewhere.
    os.environ["LLVM_PROFILE_FILE"] = str(profiles / "drawbridge-%p-%m.profraw")
    T.BINARY = binary
    work = pathlib.Path(tempfile.mkdtemp(prefix="drawbridge-pgo-"))
    bench = B.Bench(work, True)
    try:
        bench.certificates()
        bench.origin_files()
        bench.start_origin()
        B.wait_port(B.ORIGIN, "origin")
        origin = f"http://127.0.0.1:{B.ORIGIN}"
        for name, port, gate, plain in (("site", SITE, "off", PLAIN), ("gated", GATED, "enforce", None)):
            toml = work / f"{name}.toml"
            toml.write_text(B.drawbridge_config(work, port, origin, f"{name}-state", plain, gate=gate))
            bench.spawn(name, f"{binary} run -c {toml}")
            B.wait_port(port, name)
        ca = f"--cacert {work}/ca.pem"

        def run(cmd):
            return B.sh(B.pinned(1, cmd))
        for port, header in ((SITE, ""), (GATED, f"-H '{B.BENCH_TOKEN}' ")):
            url = f"https://localhost:{port}"
            expect(run(f"h2load {header}-c 16 -m 4 -n 20000 {url}/small.json"), 20000)
            expect(run(f"h2load --h1 {header}-c 16 -n 20000 {url}/small.json"), 20000)
            expect(run(f"h2load {header}-c 8 -m 2 -n 2000 {url}/image.jpg"), 2000)
        expect(run(f"h2load --h1 -c 16 -n 20000 http://localhost:{PLAIN}/small.json"), 20000)
        run(f"curl -sf {ca} -o /dev/null -r 0-268435455 https://localhost:{SITE}/big.bin")
        run(f"curl -sf -o /dev/null -r 0-268435455 http://localhost:{PLAIN}/big.bin")
        run(f"curl -sf --http1.1 {ca} -o /dev/null -T {work}/upload.bin https://localhost:{SITE}/upload/pgo.bin")
        run(f"wrk -t1 -c16 -d2s -H 'Connection: close' https://localhost:{SITE}/small.json")
        # The tunnel (tunnel.py's edges: one direct, one whose site is the
        # agent's service), the agent enrolled with the printed commands.
        T.start_edges(bench)
        agent = T.enroll(bench, "home", T.TUNNELED)
        bench.spawn("agent", f"{binary} agent -c {agent}")
        T.wait_log(bench, "edge", "agent connected", count=2)
        url = f"https://localhost:{T.TUNNELED}"
        expect(run(f"h2load -c 16 -m 4 -n 10000 {url}/small.json"), 10000)
        expect(run(f"h2load --h1 -c 16 -n 10000 {url}/small.json"), 10000)
        run(f"curl -sf {ca} -o /dev/null -r 0-268435455 {url}/big.bin")
        # Stopped as systemd stops them: each writes its profile on the way out.
        for name in ("agent", "edge", "direct", "site", "gated"):
            stop(bench, name)
    finally:
        bench.stop_all()
    written = list(profiles.glob("drawbridge-*.profraw"))
    if not written:
        raise SystemExit(f"no profile written under {profiles}: was {binary} built with -Cprofile-generate?")
    print(f"{len(written)} profiles under {profiles}")


def stop(bench, name, timeout=60):
    """SIGTERM to `name`'s process group, then its end awaited: the shell
    that started it may go at once, drawbridge when it has shut down."""
    proc = bench.procs.pop(name)
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise SystemExit(f"{name} did not stop within {timeout} s")


def expect(out, count):
    if f"{count} succeeded" not in out:
        raise SystemExit(f"a training load failed:\n{out}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2])
