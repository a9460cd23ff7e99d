#!/usr/bin/env python3
"""Side-by-side benchmark: drawbridge against nginx (4 KiB and 64 KiB proxy
buffers), Caddy and HAProxy, each set up as the same Jellyfin-style reverse
proxy (TLS with one certificate, HTTP/2, no response buffering, upstream
keep-alive, the same security and forwarded headers, no access log) in front of
one origin (nginx serving files). Every proxy runs pinned to CPU 0, every load
generator to CPU 1, all on 127.0.0.1, each case bounded in time.

    bench/run                 full run, writes docs/performance.md
    bench/run --quick         a few seconds per case, prints the table only
    bench/run --instructions  drawbridge and HAProxy under callgrind: instructions
                              per request, to compare a change with the last

Needs (Debian): nginx haproxy caddy wrk nghttp2-client curl openssl; the run
script installs them.
"""

import argparse
import datetime
import http.client
import math
import os
import pathlib
import platform
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
ORIGIN = 18100
# The origin's files served straight to the client by a second nginx pinned
# where the proxies run (CPU 0), plain and over TLS: the ceiling of the stream
# rows. (The origin itself shares CPU 1 with curl, which made "direct" slower
# than any proxy path.) It reads the file into 1 MiB buffers instead of
# sendfile, which is the slower of the two on loopback (docs/performance.md).
CEILING, CEILING_TLS = 18101, 18102
PROXIES = {
    # name: (https port, plain http port)
    "drawbridge": (18443, 18080),
    "nginx-4k": (18444, 18081),
    "nginx-64k": (18445, 18082),
    "caddy": (18446, 18083),
    "haproxy": (18447, 18084),
}
# drawbridge's `jellyfin` preset (src/filter/headers.rs), which every proxy
# adds to every answer; HSTS only over TLS, as drawbridge sends it. Checked
# against each proxy's answer before any measure (`same_headers`).
HEADERS = {
    "Permissions-Policy": "accelerometer=(), ambient-light-sensor=(), battery=(), bluetooth=(), camera=(), clipboard-read=(), display-capture=(), document-domain=(), encrypted-media=(), gamepad=(), geolocation=(), gyroscope=(), hid=(), idle-detection=(), interest-cohort=(), keyboard-map=(), local-fonts=(), magnetometer=(), microphone=(), payment=(), publickey-credentials-get=(), serial=(), sync-xhr=(), usb=(), xr-spatial-tracking=()",
    "Content-Security-Policy": "default-src https: data: blob:; img-src 'self' https://* data: blob:; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline' https://www.gstatic.com https://www.youtube.com blob:; worker-src 'self' blob:; connect-src 'self'; object-src 'none'; font-src 'self' data:; frame-ancestors 'self'; base-uri 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "SAMEORIGIN",
}
TLS_HEADERS = {"Strict-Transport-Security": "max-age=63072000"}


def security_headers(tls):
    """The headers every proxy adds on a TLS or a plain listener."""
    return {**HEADERS, **TLS_HEADERS} if tls else HEADERS


def built():
    """How bench/run built the drawbridge it measures (for the tables' headers)."""
    return os.environ.get("DRAWBRIDGE_BUILD", "by `cargo build --release`")


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=True, check=True, capture_output=True, text=True, **kw).stdout


def pinned(cpu, cmd):
    return f"taskset -c {cpu} {cmd}"


class Bench:
    def __init__(self, work, quick):
        self.work = pathlib.Path(work)
        self.quick = quick
        # name: a command prefix (valgrind, for --instructions)
        self.wrappers = {}
        self.procs = {}

    # ---------------------------------------------------------------- setup
    def certificates(self):
        w = self.work
        sh(f"openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {w}/ca.key -out {w}/ca.pem -days 2 -subj /CN=bench-ca")
        sh(f"openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {w}/key.pem -out {w}/leaf.csr -subj /CN=localhost")
        (w / "ext.cnf").write_text("subjectAltName=DNS:localhost\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n")
        sh(f"openssl x509 -req -in {w}/leaf.csr -CA {w}/ca.pem -CAkey {w}/ca.key -CAcreateserial -out {w}/cert.pem -days 2 -extfile {w}/ext.cnf")
        (w / "combined.pem").write_text((w / "cert.pem").read_text() + (w / "key.pem").read_text())

    def origin_files(self):
        # nginx's workers run as another user: they must be able to read these.
        os.chmod(self.work, 0o755)
        www = self.work / "www"
        www.mkdir(mode=0o755)
        # mkdir's mode passes through the umask: set it after, for nginx's
        # workers (another user) to write uploads there.
        for folder in (www / "upload", self.work / "origin-body"):
            folder.mkdir()
            os.chmod(folder, 0o777)
        (self.work / "upload.bin").write_bytes(os.urandom(20 << 20))
        (www / "small.json").write_text('{"ServerName":"bench","pad":"' + "x" * 990 + '"}')
        (www / "image.jpg").write_bytes(os.urandom(100 * 1024))
        with open(www / "big.bin", "wb") as f:
            f.truncate(1 << 30)

    def nginx_conf(self, name, body):
        prefix = self.work / name
        (prefix / "logs").mkdir(parents=True)
        conf = prefix / "nginx.conf"
        conf.write_text(f"""
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
daemon off;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  client_body_temp_path {prefix}/body; proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fcgi; uwsgi_temp_path {prefix}/uwsgi; scgi_temp_path {prefix}/scgi;
  keepalive_requests 100000;
  {body}
}}""")
        return conf

    def start_origin(self):
        conf = self.nginx_conf("origin", f"""
  sendfile on; tcp_nopush on;
  server {{ listen 127.0.0.1:{ORIGIN}; root {self.work}/www; location / {{ add_header Cache-Control "public, max-age=60"; }}
    # Jellyfin's answer to the side-door gate's check of a good token; each
    # check is a line in checks.log, so checks under load can be counted.
    # Uploads land in a file (WebDAV PUT): nginx answers once the whole
    # body is in, so an upload's time is until home has all of it.
    location /upload/ {{ dav_methods PUT; client_max_body_size 64m; client_body_temp_path {self.work}/origin-body; root {self.work}/www; }}
    location = /Users/Me {{ access_log {self.work}/checks.log; default_type application/json; return 200 '{{"Name":"bench"}}'; }} }}""")
        self.spawn("origin", f"nginx -c {conf}", cpu=1, env={})

    def start_ceiling(self):
        w = self.work
        conf = self.nginx_conf("ceiling", f"""
  sendfile off; output_buffers 2 1m;
  server {{ listen 127.0.0.1:{CEILING}; root {w}/www; }}
  server {{ listen 127.0.0.1:{CEILING_TLS} ssl; server_name localhost; root {w}/www;
    ssl_certificate {w}/cert.pem; ssl_certificate_key {w}/key.pem; ssl_protocols TLSv1.2 TLSv1.3; }}""")
        self.spawn("ceiling", f"nginx -c {conf}", cpu=0, env={})

    def start_all(self, timeout=10):
        w = self.work
        self.start_origin()
        self.start_ceiling()

        def adds(tls):
            return "\n".join(f"add_header {k} \"{v}\" always;" for k, v in security_headers(tls).items())
        for name, buf in (("nginx-4k", "proxy_buffer_size 4k;"), ("nginx-64k", "proxy_buffer_size 64k; proxy_buffers 8 64k; proxy_busy_buffers_size 128k;")):
            tls, plain = PROXIES[name]
            location = lambda tls: f"""location / {{
      proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host $host; proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header X-Forwarded-For $remote_addr; proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $http_host;
      proxy_buffering off; {buf} client_max_body_size 20M;
      {adds(tls)}
    }}"""
            conf = self.nginx_conf(name, f"""
  upstream origin {{ server 127.0.0.1:{ORIGIN}; keepalive 64; }}
  server {{ listen 127.0.0.1:{tls} ssl http2; server_name localhost;
    ssl_certificate {w}/cert.pem; ssl_certificate_key {w}/key.pem; ssl_protocols TLSv1.2 TLSv1.3;
    {location(True)} }}
  server {{ listen 127.0.0.1:{plain}; server_name localhost; {location(False)} }}""")
            self.spawn(name, f"nginx -c {conf}")

        tls, plain = PROXIES["caddy"]
        def site(tls):
            hdr = "\n".join(f'    {k} "{v}"' for k, v in security_headers(tls).items())
            return f"""reverse_proxy 127.0.0.1:{ORIGIN} {{
    flush_interval -1
    header_up X-Real-IP {{remote_host}}
  }}
  header {{
{hdr}
  }}"""
        caddyfile = w / "Caddyfile"
        caddyfile.write_text(f"""{{
  admin off
  auto_https off
}}
https://localhost:{tls} {{
  tls {w}/cert.pem {w}/key.pem
  {site(True)}
}}
http://localhost:{plain} {{
  {site(False)}
}}
""")
        self.spawn("caddy", f"caddy run --config {caddyfile} --adapter caddyfile", env={"GOMAXPROCS": "1", "XDG_DATA_HOME": str(w), "XDG_CONFIG_HOME": str(w)})

        tls, plain = PROXIES["haproxy"]
        sets = "\n".join(
            [f'  http-response set-header {k} "{v}"' for k, v in HEADERS.items()]
            + [f'  http-response set-header {k} "{v}" if {{ ssl_fc }}' for k, v in TLS_HEADERS.items()]
        )
        cfg = w / "haproxy.cfg"
        cfg.write_text(f"""global
  nbthread 1
  maxconn 5000
defaults
  mode http
  timeout connect 3s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
frontend fe
  bind 127.0.0.1:{tls} ssl crt {w}/combined.pem alpn h2,http/1.1
  bind 127.0.0.1:{plain}
  option forwardfor
  http-request set-header X-Real-IP %[src]
  http-request set-header X-Forwarded-Proto https if {{ ssl_fc }}
{sets}
  default_backend origin
backend origin
  http-reuse always
  server o1 127.0.0.1:{ORIGIN}
""")
        self.spawn("haproxy", f"haproxy -f {cfg}")

        self.start_drawbridge()
        time.sleep(2)
        for name, (tls, plain) in PROXIES.items():
            for port in (tls, plain):
                wait_port(port, name, timeout)
        wait_port(ORIGIN, "origin")
        wait_port(CEILING, "ceiling")
        wait_port(CEILING_TLS, "ceiling")

    def same_headers(self):
        """Refuses to measure unless every proxy adds exactly the benchmark's
        security headers over TLS: the same job for everyone."""
        context = ssl.create_default_context(cafile=str(self.work / "ca.pem"))
        want = {k.lower(): v for k, v in security_headers(True).items()}
        for name, (tls, _) in PROXIES.items():
            conn = http.client.HTTPSConnection("localhost", tls, context=context, timeout=10)
            conn.request("GET", "/small.json")
            answer = conn.getresponse()
            answer.read()
            conn.close()
            got = {k.lower(): answer.headers.get_all(k) for k in want}
            wrong = {k: v for k, v in got.items() if v != [want[k]]}
            if answer.status != 200 or wrong:
                raise SystemExit(f"{name} does not answer as the others do: status {answer.status}, headers {wrong}")

    def start_drawbridge(self):
        w = self.work
        tls, plain = PROXIES["drawbridge"]
        toml = w / "drawbridge.toml"
        toml.write_text(drawbridge_config(w, tls, f"http://127.0.0.1:{ORIGIN}", "drawbridge-state", plain))
        binary = ROOT / "target/release/drawbridge"
        self.spawn("drawbridge", f"{binary} run -c {toml}", env={"TOKIO_WORKER_THREADS": "1"})

    def instructions(self, name, h1, count=3000, header=""):
        """User-space instructions per request of a proxy running under
        callgrind (all its processes): reproducible where timings on a shared
        machine are not. Counts neither the kernel's work nor waiting.
        `header`: one more request header (`name: value`) on every request."""
        port = PROXIES[name][0]
        flag = "--h1 " if h1 else ""
        if header:
            flag += f"-H '{header}' "
        load = pinned(1, f"h2load {flag}-c 16 -m 4 -n {{}} https://localhost:{port}/small.json")
        sh(load.format(1000))  # warm: connections, pools, caches
        group = self.procs[name].pid
        traced = {}
        for p in sh(f"pgrep -g {group}").split():
            try:  # a process of the group may end while it is looked at
                if "callgrind" in pathlib.Path(f"/proc/{p}/exe").resolve().name:
                    traced[p] = int(open(f"/proc/{p}/stat").read().split(") ")[1].split()[1])
            except (FileNotFoundError, ProcessLookupError):
                pass
        # The serving processes: nginx's worker, not its master.
        serving = [p for p in traced if str(p) not in map(str, traced.values())]
        for pid in serving:
            self.callgrind_control(f"-z {pid}", PROXIES[name][1])
        out = sh(load.format(count))
        if f"{count} succeeded" not in out:
            raise SystemExit(f"h2load against {name} under callgrind: not every request succeeded:\n{out}")
        before = set(self.work.glob("callgrind.out.*"))
        for pid in serving:
            self.callgrind_control(f"-d {pid}", PROXIES[name][1])
        total = 0
        for dump in set(self.work.glob("callgrind.out.*")) - before:
            total += int(re.search(r"^summary:\s+(\d+)", dump.read_text(), re.M).group(1))
        return total / count

    @staticmethod
    def callgrind_control(args, port):
        """Valgrind takes a command only while the program runs: a process
        asleep in epoll is woken by a request now and then (one request in
        thousands, within the count's precision)."""
        control = subprocess.Popen(f"callgrind_control {args}", shell=True, stdout=subprocess.DEVNULL)
        while control.poll() is None:
            subprocess.run(f"curl -s -o /dev/null http://localhost:{port}/small.json", shell=True)
            time.sleep(0.3)

    def spawn(self, name, cmd, cpu=0, env=None):
        cmd = self.wrappers.get(name, "") + cmd
        full_env = dict(os.environ, **(env or {}))
        log = open(self.work / f"{name}.out", "w")
        self.procs[name] = subprocess.Popen(pinned(cpu, cmd), shell=True, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def stop_all(self):
        for proc in self.procs.values():
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        time.sleep(0.5)
        for proc in self.procs.values():
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def rss(self, name):
        """Resident memory (KiB) of a proxy's whole process group."""
        pgid = self.procs[name].pid
        total = 0
        for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid:  # process group id
                    status = (stat.parent / "status").read_text()
                    total += int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
            except (OSError, AttributeError, ValueError, IndexError):
                continue
        return total

    def cpu_seconds(self, name):
        """User + system CPU time (s) of a proxy's whole process group."""
        pgid = self.procs[name].pid
        ticks = 0
        for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid:
                    ticks += int(fields[11]) + int(fields[12])  # utime, stime
            except (OSError, ValueError, IndexError):
                continue
        return ticks / os.sysconf("SC_CLK_TCK")

    # ------------------------------------------------------------- measures
    def seconds(self):
        """Length of one measure; the rate cases are measured `rounds()` times."""
        return 3 if self.quick else 6

    def rounds(self):
        return 1 if self.quick else 3

    def wrk(self, port, extra="", path="/small.json"):
        out = sh(pinned(1, f"wrk -t1 -c64 -d{self.seconds()}s --latency {extra} https://localhost:{port}{path}"))
        check_wrk(out, port)
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        lat = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M))
        return rps, to_ms(lat.get("50")), to_ms(lat.get("99")), wrk_count(out)

    def h2load(self, port):
        log = self.work / "h2load.log"
        out = sh(pinned(1, f"h2load -c 64 -m 10 -D {self.seconds()} --log-file={log} https://localhost:{port}/small.json"))
        codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
        if not codes or int(codes.group(3)) + int(codes.group(4)) > 0:
            raise SystemExit(f"h2load on {port}: not every answer was a success:\n{out}")
        rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))
        durations = sorted(int(line.split()[2]) for line in log.read_text().splitlines() if line.strip())
        pct = lambda p: durations[min(len(durations) - 1, int(len(durations) * p))] / 1000.0
        done = int(re.search(r"requests: \d+ total, \d+ started, (\d+) done", out).group(1))
        return rps, pct(0.50), pct(0.99), done

    def images(self, port):
        """100 KiB answers (posters) over HTTP/1.1+TLS, 64 connections."""
        return self.wrk(port, path="/image.jpg")

    def handshakes(self, port):
        out = sh(pinned(1, f"wrk -t1 -c32 -d{self.seconds()}s -H 'Connection: close' https://localhost:{port}/small.json"))
        check_wrk(out, port)
        return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), wrk_count(out)

    def resumed(self, port):
        """Sequential TLS connections, each resuming the session the one
        before left (TLS 1.3 tickets are single-use) and making one small
        request: connections/s (bound by this Python client), the share
        resumed, and the count."""
        context = ssl.create_default_context(cafile=str(self.work / "ca.pem"))
        context.set_alpn_protocols(["http/1.1"])
        session, count, reused = None, 0, 0
        start = time.monotonic()
        while time.monotonic() < start + self.seconds():
            with socket.create_connection(("127.0.0.1", port)) as raw:
                with context.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
                    tls.sendall(b"GET /small.json HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                    read_response(tls)
                    reused += tls.session_reused
                    session = tls.session
            count += 1
        return count / (time.monotonic() - start), reused / count, count

    def stream(self, url):
        size = (128 if self.quick else 512) << 20
        ca = f"--cacert {self.work}/ca.pem"
        out = sh(pinned(1, f"curl -s --http1.1 {ca} -o /dev/null -r 0-{size - 1} -w '%{{speed_download}} %{{size_download}} %{{http_code}}' {url}"))
        speed, size_got, code = out.split()
        if int(size_got) != size or code != "206":
            raise SystemExit(f"stream from {url}: HTTP {code}, {size_got} of {size} bytes")
        return float(speed) / (1 << 20)

    def upload(self, url):
        """Seconds a 20 MiB upload (curl -T, HTTP/1.1) takes from its first
        byte until home has stored all of it and answered: the better of
        three tries."""
        ca = f"--cacert {self.work}/ca.pem"
        best = float("inf")
        for attempt in range(3):
            out = sh(pinned(1, f"curl -s --http1.1 {ca} -o /dev/null -T {self.work}/upload.bin -w '%{{time_total}} %{{http_code}} %{{size_upload}}' {url}/upload/{attempt}.bin"))
            seconds, code, size = out.split()
            if code not in ("201", "204") or int(float(size)) != 20 << 20:
                raise SystemExit(f"upload to {url}: HTTP {code}, {size} bytes sent")
            best = min(best, float(seconds))
        return best

    def slow_stream_rss(self, name, port):
        size = (128 if self.quick else 512) << 20
        rate = "32M" if self.quick else "64M"
        before = self.rss(name)
        peak = before
        curl = subprocess.Popen(pinned(1, f"curl -sf --http1.1 --cacert {self.work}/ca.pem --limit-rate {rate} -o /dev/null -r 0-{size - 1} https://localhost:{port}/big.bin"), shell=True)
        while curl.poll() is None:
            peak = max(peak, self.rss(name))
            time.sleep(0.1)
        if curl.returncode != 0:
            raise SystemExit(f"slow stream through {name}: curl failed ({curl.returncode})")
        return before, peak - before

    def idle_connections(self, name, port, http2=False, count=1000, plain=False):
        """RSS before and growth after `count` idle keep-alive connections
        (TLS, or `plain` HTTP/1.1 on the plain port), each having made one
        request; the connections are returned open."""
        context = ssl.create_default_context(cafile=str(self.work / "ca.pem"))
        context.set_alpn_protocols(["h2" if http2 else "http/1.1"])
        time.sleep(0.5)
        before = self.rss(name)
        conns = []
        for _ in range(count):
            raw = socket.create_connection(("127.0.0.1", port))
            tls = raw if plain else context.wrap_socket(raw, server_hostname="localhost")
            if http2:
                h2_get(tls)
            else:
                tls.sendall(b"GET /small.json HTTP/1.1\r\nHost: localhost\r\n\r\n")
                read_response(tls)
            conns.append(tls)
        # Long enough for every proxy to settle idle connections (drawbridge
        # parks a keep-alive connection after 250 ms of quiet).
        time.sleep(2)
        after = self.rss(name)
        return (before, after - before), conns


def drawbridge_config(work, tls, upstream, state, plain=None, gate="off"):
    """drawbridge as the benchmark runs it: one site on `tls` (and `plain`)
    in front of `upstream`, the guard's caps and the upstream cap lifted
    (the peers have neither), no access log, no cache, the side-door gate
    off unless `gate` says otherwise (the peers have none); the admin listener
    closed (requests are counted for the metrics all the same); no HTTP/3
    (the peers are run without it, and its Alt-Svc header would set
    drawbridge's answers apart)."""
    http = f'"127.0.0.1:{plain}"' if plain else ""
    return f"""[server]
http = [{http}]
https = ["127.0.0.1:{tls}"]
state_dir = "{work}/{state}"
admin_listen = "off"
quic = []

[guard]
max_connections = 50000
max_connections_per_ip = 50000

[log]
access = "off"

[[site]]
host = "localhost"
upstream = "{upstream}"
tls = {{ cert = "{work}/cert.pem", key = "{work}/key.pem" }}
https_redirect = false
cache = false
login_rate = "off"
gate = "{gate}"
# One load-generator address with up to 640 streams, and the peers have no
# upstream cap either: lifted like the guard's connection caps above.
upstream_max_conns = 1024
upstream_max_conns_per_client = 1024
"""


def h2_frame(kind, flags, stream, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def h2_get(tls):
    """One GET /small.json over HTTP/2 on stream 1, read to its end; the
    server's SETTINGS acknowledged, as a browser would."""
    if tls.selected_alpn_protocol() != "h2":
        raise SystemExit("HTTP/2 idle connections: the proxy did not choose h2")
    path, authority = b"/small.json", b"localhost"
    # HPACK: GET and https from the static table, :path and :authority literal.
    block = b"\x82\x87\x04" + bytes([len(path)]) + path + b"\x01" + bytes([len(authority)]) + authority
    tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + h2_frame(4, 0, 0) + h2_frame(1, 5, 1, block))
    data = b""
    while True:
        while len(data) < 9 or len(data) < 9 + int.from_bytes(data[:3], "big"):
            chunk = tls.recv(65536)
            if not chunk:
                raise SystemExit("HTTP/2 idle connections: closed before the answer ended")
            data += chunk
        length, kind, flags = int.from_bytes(data[:3], "big"), data[3], data[4]
        stream = int.from_bytes(data[5:9], "big") & 0x7FFFFFFF
        data = data[9 + length:]
        if kind == 4 and not flags & 1:
            tls.sendall(h2_frame(4, 1, 0))
        if stream == 1 and kind in (0, 1) and flags & 1:
            return


def median_round(measures):
    """One proxy's rounds of a case, each (figures..., requests) with its CPU
    seconds: the median of each figure, and CPU per request (µs) over all
    rounds together."""
    figures = [result[:-1] for result, _, _ in measures]
    medians = tuple(statistics.median(column) for column in zip(*figures))
    requests = sum(result[-1] for result, _, _ in measures)
    cpu = sum(seconds for _, seconds, _ in measures)
    return medians + (requests,), cpu * 1e6 / requests


def cpu_ticks():
    """(busy, total) ticks of CPU 0 and CPU 1 so far, from /proc/stat."""
    ticks = []
    for line in open("/proc/stat"):
        if line.startswith(("cpu0 ", "cpu1 ")):
            fields = [int(f) for f in line.split()[1:]]
            idle = fields[3] + fields[4]  # idle, iowait
            ticks.append((sum(fields[:8]) - idle, sum(fields[:8])))
    return ticks


def busy_since(before):
    """The share of time CPU 0 and CPU 1 were busy since `before`."""
    return tuple(
        (busy - busy0) / max(1, total - total0)
        for (busy, total), (busy0, total0) in zip(cpu_ticks(), before)
    )


def busy_over(measures):
    """CPU 0's and CPU 1's busy share, averaged over a case's rounds."""
    return tuple(statistics.mean(column) for column in zip(*(busy for _, _, busy in measures)))


def wrk_count(out):
    return int(re.search(r"(\d+) requests in", out).group(1))


def check_wrk(out, port):
    """A case counts only if every answer was a success."""
    if "Non-2xx or 3xx responses" in out or "Socket errors" in out and "Connection: close" not in out:
        raise SystemExit(f"wrk on {port}: not every answer was a success:\n{out}")
    if "Non-2xx or 3xx responses" in out:
        raise SystemExit(f"wrk on {port}: errors:\n{out}")


def read_response(tls):
    data = b""
    while b"\r\n\r\n" not in data:
        data += tls.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
    while len(body) < length:
        body += tls.recv(65536)


def to_ms(text):
    if not text:
        return float("nan")
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def ports_free():
    """Refuses to start while an earlier run's servers still hold the ports:
    the run would measure them, with the wrong certificate."""
    ports = [ORIGIN, CEILING, CEILING_TLS] + [port for pair in PROXIES.values() for port in pair]
    for port in ports:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                raise SystemExit(f"port {port} is already in use (a server left from an earlier run?); stop it and run again")


def wait_port(port, name, timeout=10):
    for _ in range(timeout * 10):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{name} did not listen on {port}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few seconds per case; print only")
    parser.add_argument("--write", action="store_true", help="write docs/performance.md even in quick mode")
    parser.add_argument("--instructions", action="store_true",
                        help="drawbridge and HAProxy only, under callgrind: instructions per request (needs valgrind)")
    parser.add_argument("--no-pgo", action="store_true",
                        help="(bench/run's) drawbridge built without a profile")
    args = parser.parse_args()
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if os.cpu_count() < 2:
        raise SystemExit("needs 2 CPUs: proxies on CPU 0, load generators on CPU 1")
    # This process is a load generator too (idle connections, resumed
    # sessions); what it starts on CPU 0 is pinned there explicitly.
    os.sched_setaffinity(0, {1})
    work = tempfile.mkdtemp(prefix="drawbridge-bench-")
    bench = Bench(work, args.quick)
    if args.instructions:
        return count_instructions(bench, work)
    ports_free()
    results = {name: {} for name in PROXIES}
    failed = True
    try:
        bench.certificates()
        bench.origin_files()
        bench.start_all()
        bench.same_headers()
        results["origin"] = {}
        # One case at a time across all proxies (interleaved), so a noisy
        # moment hurts every proxy alike.
        # Memory first, on fresh processes: after the loads every heap has
        # room to spare, and growth would say more about that than about
        # what a connection or a stream costs.
        for name, (tls, _) in PROXIES.items():
            results[name]["rest_kib"] = bench.rss(name)
        for name, (tls, plain) in PROXIES.items():
            # Each kind measured while the others stay open, so that none
            # reuses memory another freed on closing.
            results[name]["idle_plain"], clear = bench.idle_connections(name, plain, plain=True)
            results[name]["idle"], h1 = bench.idle_connections(name, tls)
            results[name]["idle_h2"], h2 = bench.idle_connections(name, tls, http2=True)
            for conn in clear + h1 + h2:
                conn.close()
            print(f"idle {name}: {results[name]['idle_plain'][1]} KiB plain, {results[name]['idle'][1]} KiB HTTP/1.1, {results[name]['idle_h2'][1]} KiB HTTP/2", file=sys.stderr)
        for name, (tls, _) in PROXIES.items():
            results[name]["stream_rss"] = bench.slow_stream_rss(name, tls)
            print(f"slow stream {name}: {results[name]['stream_rss'][1]} KiB", file=sys.stderr)
        def measured(name, run):
            """A case's result, the proxy's CPU seconds during it, and how
            busy each CPU was meanwhile."""
            before, ticks = bench.cpu_seconds(name), cpu_ticks()
            result = run()
            return result, bench.cpu_seconds(name) - before, busy_since(ticks)

        # The rate cases run in rounds, each proxy's turn rotating, and
        # report each proxy's median round: one noisy moment on this shared
        # machine then moves a figure only if it hits most of the rounds.
        cases = (
            ("h1", "h1_cpu", bench.wrk),
            ("h2", "h2_cpu", bench.h2load),
            ("images", "images_cpu", bench.images),
            ("handshakes", "hs_cpu", bench.handshakes),
            ("resumed", "resumed_cpu", bench.resumed),
        )
        for key, cpu_key, run in cases:
            rounds = {name: [] for name in PROXIES}
            for turn in range(bench.rounds()):
                names = list(PROXIES)
                for name in names[turn:] + names[:turn]:
                    rounds[name].append(measured(name, lambda: run(PROXIES[name][0])))
                    print(f"{key} round {turn + 1} {name}: {rounds[name][-1]}", file=sys.stderr)
            for name, measures in rounds.items():
                results[name][key], results[name][cpu_key] = median_round(measures)
                results[name][key + "_busy"] = busy_over(measures)
        # The origin's file read once first: the proxy measured first would
        # otherwise pay for filling the page cache (a third of its rate).
        sh(f"cat {work}/www/big.bin > /dev/null")
        for name, (tls, plain) in PROXIES.items():
            results[name]["plain"] = bench.stream(f"http://localhost:{plain}/big.bin")
            results[name]["tls"] = bench.stream(f"https://localhost:{tls}/big.bin")
            print(f"stream {name}: {results[name]['plain']:.0f} / {results[name]['tls']:.0f} MiB/s", file=sys.stderr)
        for name, (tls, _) in PROXIES.items():
            results[name]["upload"] = bench.upload(f"https://localhost:{tls}")
            print(f"upload {name}: {results[name]['upload']:.3f} s", file=sys.stderr)
        # After the proxies (the file is in the page cache by then), the
        # better of two tries: a ceiling must not be lowered by a cold read.
        results["origin"]["plain"] = max(bench.stream(f"http://127.0.0.1:{CEILING}/big.bin") for _ in range(2))
        results["origin"]["tls"] = max(bench.stream(f"https://localhost:{CEILING_TLS}/big.bin") for _ in range(2))
        print(f"stream ceiling: {results['origin']['plain']:.0f} / {results['origin']['tls']:.0f} MiB/s", file=sys.stderr)
        failed = False
    finally:
        bench.stop_all()
        if failed:
            print(f"kept {work} for a look at the proxies' output (*.out)", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    table = render(results, args.quick)
    print(table)
    if not args.quick or args.write:
        (ROOT / "docs/performance.md").write_text(document(table, args.quick))
        print(f"written to {ROOT / 'docs/performance.md'}", file=sys.stderr)


# The proxies whose instructions are counted: drawbridge, to compare a
# change with the one before it, and HAProxy beside it. (Caddy, a Go
# program, does not run under valgrind; nginx's worker, running as `nobody`,
# never takes callgrind_control's commands.)
COUNTED = ("drawbridge", "haproxy")


def count_instructions(bench, work):
    callgrind = f"valgrind --tool=callgrind --trace-children=yes --callgrind-out-file={work}/callgrind.out.%p "
    bench.wrappers = {name: callgrind for name in COUNTED}
    rows = []
    try:
        bench.certificates()
        bench.origin_files()
        bench.start_all(timeout=60)
        for label, h1 in (("HTTP/1.1+TLS", True), ("HTTP/2", False)):
            counts = {name: bench.instructions(name, h1) for name in COUNTED}
            rows.append((label, counts))
        checks = gated_instructions(bench, rows)
    finally:
        bench.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    for label, counts in rows:
        for name, count in counts.items():
            print(f"{name}, {label}: {count:,.0f} instructions per small request (user space, callgrind)")
    for label in ("HTTP/1.1+TLS", "HTTP/2"):
        off = dict(rows)[f"{label}, a token, gate off"]["drawbridge"]
        on = dict(rows)[f"{label}, a token, gate on"]["drawbridge"]
        print(f"the gate with a remembered token, {label}: {100 * (on - off) / off:+.1f} % instructions per request (the same requests, gate off)")
    print(f"checks Jellyfin answered during the gated loads: {checks[0]} for one token over {checks[1]:.0f} s "
          f"(remember_good 1m: at most one per started minute)")


# The token the gated rows send: the origin's /Users/Me says yes to anything.
BENCH_TOKEN = 'authorization: MediaBrowser Client="bench", Device="h2load", DeviceId="1", Version="1", Token="0123456789abcdef0123456789abcdef"'


def gated_instructions(bench, rows):
    """The same loads with every request carrying one good token, first
    with the gate off, then on (drawbridge reloaded with `gate =
    "enforce"`): what the gate costs a request whose token it remembers.
    Returns (checks made, seconds)."""
    for label, h1 in (("HTTP/1.1+TLS", True), ("HTTP/2", False)):
        counts = {name: bench.instructions(name, h1, header=BENCH_TOKEN) for name in ("drawbridge",)}
        rows.append((f"{label}, a token, gate off", counts))
    w = bench.work
    tls, plain = PROXIES["drawbridge"]
    toml = w / "drawbridge.toml"
    toml.write_text(drawbridge_config(w, tls, f"http://127.0.0.1:{ORIGIN}", "drawbridge-state", plain, gate="enforce"))
    log = w / "drawbridge.out"
    reloads = log.read_text().count("config reloaded")
    group = bench.procs["drawbridge"].pid
    for pid in sh(f"pgrep -g {group}").split():
        try:
            if "callgrind" in pathlib.Path(f"/proc/{pid}/exe").resolve().name:
                os.kill(int(pid), signal.SIGHUP)
        except (FileNotFoundError, ProcessLookupError):
            pass
    deadline = time.time() + 60
    while log.read_text().count("config reloaded") == reloads:
        if time.time() > deadline:
            raise SystemExit("drawbridge did not reload with the gate on")
        # Valgrind takes a signal only while the program runs: wake it.
        subprocess.run(f"curl -s -o /dev/null http://localhost:{plain}/small.json", shell=True)
        time.sleep(0.3)
    checks_log = w / "checks.log"
    before = len(checks_log.read_text().splitlines()) if checks_log.exists() else 0
    started = time.time()
    for label, h1 in (("HTTP/1.1+TLS", True), ("HTTP/2", False)):
        counts = {name: bench.instructions(name, h1, header=BENCH_TOKEN) for name in ("drawbridge",)}
        rows.append((f"{label}, a token, gate on", counts))
    checks = len(checks_log.read_text().splitlines()) - before
    return checks, time.time() - started


def render(r, quick):
    names = list(PROXIES)
    best_nginx = lambda key, f=max: f(r["nginx-4k"][key], r["nginx-64k"][key])
    rows = []

    def row(label, values, unit, nginx, higher=True, fmt="{:.0f}"):
        cells = []
        for v in values:
            if math.isnan(v):
                cells.append("n/a")
                continue
            ratio = f"{v / nginx:.2f}×" if nginx and not math.isnan(nginx) else "n/a"
            cells.append(f"{fmt.format(v)} {unit} ({ratio})")
        rows.append(f"| {label} | " + " | ".join(cells) + f" | {'higher' if higher else 'lower'} is better |")

    row("HTTP/1.1+TLS small requests/s", [r[n]["h1"][0] for n in names], "", max(r["nginx-4k"]["h1"][0], r["nginx-64k"]["h1"][0]))
    row("HTTP/1.1+TLS p50 latency", [r[n]["h1"][1] for n in names], "ms", min(r["nginx-4k"]["h1"][1], r["nginx-64k"]["h1"][1]), False, "{:.2f}")
    row("HTTP/1.1+TLS p99 latency", [r[n]["h1"][2] for n in names], "ms", min(r["nginx-4k"]["h1"][2], r["nginx-64k"]["h1"][2]), False, "{:.2f}")
    row("HTTP/2 small requests/s", [r[n]["h2"][0] for n in names], "", max(r["nginx-4k"]["h2"][0], r["nginx-64k"]["h2"][0]))
    row("HTTP/2 p50 latency", [r[n]["h2"][1] for n in names], "ms", min(r["nginx-4k"]["h2"][1], r["nginx-64k"]["h2"][1]), False, "{:.2f}")
    row("HTTP/2 p99 latency", [r[n]["h2"][2] for n in names], "ms", min(r["nginx-4k"]["h2"][2], r["nginx-64k"]["h2"][2]), False, "{:.2f}")
    row("100 KiB images/s (HTTP/1.1+TLS)", [r[n]["images"][0] for n in names], "", max(r["nginx-4k"]["images"][0], r["nginx-64k"]["images"][0]))
    row("full TLS handshakes/s", [r[n]["handshakes"][0] for n in names], "", max(r["nginx-4k"]["handshakes"][0], r["nginx-64k"]["handshakes"][0]))
    row("proxy CPU per HTTP/1.1 request", [r[n]["h1_cpu"] for n in names], "µs", min(r["nginx-4k"]["h1_cpu"], r["nginx-64k"]["h1_cpu"]), False)
    row("proxy CPU per HTTP/2 request", [r[n]["h2_cpu"] for n in names], "µs", min(r["nginx-4k"]["h2_cpu"], r["nginx-64k"]["h2_cpu"]), False)
    row("proxy CPU per 100 KiB image", [r[n]["images_cpu"] for n in names], "µs", min(r["nginx-4k"]["images_cpu"], r["nginx-64k"]["images_cpu"]), False)
    row("proxy CPU per full TLS handshake", [r[n]["hs_cpu"] for n in names], "µs", min(r["nginx-4k"]["hs_cpu"], r["nginx-64k"]["hs_cpu"]), False)
    # A proxy that did not resume most sessions did full handshakes instead: no figure.
    resumed_cpu = [r[n]["resumed_cpu"] if r[n]["resumed"][1] >= 0.9 else float("nan") for n in names]
    nginx_resumed = [v for n, v in zip(names, resumed_cpu) if n.startswith("nginx") and not math.isnan(v)]
    row("proxy CPU per resumed TLS connection (one request each)", resumed_cpu, "µs", min(nginx_resumed, default=float("nan")), False)
    # Streams: ratios are fractions of the direct path (the ceiling), not of nginx.
    row("large stream, plain (× the direct path)", [r[n]["plain"] for n in names], "MiB/s", r["origin"]["plain"])
    row("large stream, TLS (× the direct path over TLS)", [r[n]["tls"] for n in names], "MiB/s", r["origin"]["tls"])
    row("20 MiB upload until home has it, TLS", [r[n]["upload"] * 1000 for n in names], "ms", min(r["nginx-4k"]["upload"], r["nginx-64k"]["upload"]) * 1000, False)
    # nginx's workers allocate up front: their growth is often 0, where a ratio says nothing.
    row("RSS growth during a slow stream", [r[n]["stream_rss"][1] for n in names], "KiB", min(r["nginx-4k"]["stream_rss"][1], r["nginx-64k"]["stream_rss"][1]), False, "{:.0f}")
    row("memory at rest", [r[n]["rest_kib"] / 1024 for n in names], "MiB", min(r["nginx-4k"]["rest_kib"], r["nginx-64k"]["rest_kib"]) / 1024, False, "{:.1f}")
    row("memory per 1,000 idle plain HTTP/1.1 keep-alive connections", [r[n]["idle_plain"][1] / 1024 for n in names], "MiB", min(r["nginx-4k"]["idle_plain"][1], r["nginx-64k"]["idle_plain"][1]) / 1024, False, "{:.1f}")
    row("memory per 1,000 idle HTTP/1.1 TLS keep-alive connections", [r[n]["idle"][1] / 1024 for n in names], "MiB", min(r["nginx-4k"]["idle"][1], r["nginx-64k"]["idle"][1]) / 1024, False, "{:.1f}")
    row("memory per 1,000 idle HTTP/2 TLS connections", [r[n]["idle_h2"][1] / 1024 for n in names], "MiB", min(r["nginx-4k"]["idle_h2"][1], r["nginx-64k"]["idle_h2"][1]) / 1024, False, "{:.1f}")
    # Which side bounds a rate: a CPU near 100 % busy is the limit. With the
    # load generators' CPU 1 saturated, the rate says more about them than
    # about the proxy, and the CPU rows above are the comparison.
    for label, key in (("HTTP/1.1", "h1_busy"), ("HTTP/2", "h2_busy"), ("full-handshake", "handshakes_busy")):
        cells = [f"{100 * r[n][key][0]:.0f} / {100 * r[n][key][1]:.0f} %" for n in names]
        rows.append(f"| CPU 0 (proxy) / CPU 1 (load, origin) busy during the {label} case | " + " | ".join(cells) + " | which side was the limit |")
    head = "| case | " + " | ".join(names) + " | |\n|---|" + "---|" * len(names) + "---|"
    origin = f"\nThe origin's files served directly by nginx on the proxies' CPU (the ceiling of the stream rows, whose ratios are fractions of it): {r['origin']['plain']:.0f} MiB/s plain, {r['origin']['tls']:.0f} MiB/s over TLS.\n"
    mode = "quick mode (3 s per case, 128 MiB streams)" if quick else "full mode (the median of 3 rounds of 6 s for the request, latency, handshake and resumption rows, in turn order rotated each round; 512 MiB streams)"
    pinning = "Proxies pinned to CPU 0; load generators and the origin to CPU 1."
    return f"{head}\n" + "\n".join(rows) + f"\n{origin}\nRatios in parentheses are against the better of the two nginx settings; {mode}. {pinning}\n"


def document(table, quick):
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    versions = "; ".join(
        v.strip().splitlines()[0]
        for v in (
            subprocess.run("nginx -v 2>&1", shell=True, capture_output=True, text=True).stdout,
            subprocess.run("caddy version", shell=True, capture_output=True, text=True).stdout,
            subprocess.run("haproxy -v", shell=True, capture_output=True, text=True).stdout,
        )
        if v.strip()
    )
    notes = [ROOT / "bench/METHOD.md", ROOT / "bench/FINDINGS.md", ROOT / "bench/TUNNEL.md", ROOT / "bench/WIREGUARD.md", ROOT / "bench/HTTP3.md"]
    method = "\n".join(p.read_text() for p in notes if p.exists())
    return f"""# Performance

Measured {now} on {os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()},
by `bench/run{' --quick' if quick else ''}`; drawbridge built {built()}. Peers: {versions}.

{table}
{method}
"""



def write_section(heading, note, section):
    """`section` (starting with `## heading`) into bench/`note` (which the
    full run includes in docs/performance.md) and into docs/performance.md
    now, in place of the section of that heading or at the end."""
    (ROOT / "bench" / note).write_text(section)
    path = ROOT / "docs/performance.md"
    text = path.read_text()
    # The heading on a line of its own: "### The home leg, read" (prose
    # about a section) must not be taken for the section itself.
    at = text.find(f"\n## {heading}\n")
    if at >= 0:
        end = text.find("\n## ", at + 1)
        rest = "\n" + text[end + 1:] if end >= 0 else ""
        text = text[:at + 1] + section.rstrip("\n") + "\n" + rest
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text)
    print(f"written to {path} and bench/{note}", file=sys.stderr)

if __name__ == "__main__":
    main()
