#!/usr/bin/env python3
"""The container image's size and startup (docs/performance.md, "The
container image"): builds the image from the release binary, profile-guided
as `packaging/container/build` builds it by default, with
`packaging/container/build`, then five times starts a container of it on a
fresh state folder and five times on the state it left, timing `podman
run` to the first answer over TLS on 127.0.0.1, beside the binary started
alone. Root, Podman and runc (the machine's containers.conf adjustments as
../shared/reference/containers-here.md gives them). Stops by itself."""
import os, pathlib, shutil, socket, ssl, statistics, subprocess, tempfile, time

ROOT = pathlib.Path(__file__).resolve().parent.parent
PORT = 18443
IMAGE = "localhost/drawbridge:bench"


def config(folder, state):
    (folder / "etc").mkdir(parents=True, exist_ok=True)
    (folder / "state").mkdir(parents=True, exist_ok=True)
    for sub in ("etc", "state"):
        os.chown(folder / sub, 10001, 10001)
    (folder / "etc/drawbridge.toml").write_text(
        f'[server]\nhttp = ["127.0.0.1:18080"]\nhttps = ["127.0.0.1:{PORT}"]\n'
        f'state_dir = "{state}"\n[[site]]\nhost = "localhost"\n'
        'upstream = "http://127.0.0.1:9"\ntls = "internal"\n')


def answered():
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection(("127.0.0.1", PORT), timeout=0.2) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                return tls.recv(100).startswith(b"HTTP/1.1")
    except OSError:
        return False


def timed(command, stop):
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = started + 30
    while not answered():
        if time.monotonic() > deadline:
            raise SystemExit(f"no answer within 30 s: {command}")
        time.sleep(0.005)
    took = time.monotonic() - started
    stop(process)
    return took


def main():
    work = pathlib.Path(tempfile.mkdtemp(prefix="container-bench-"))
    (work / "containers.conf").write_text(
        '[containers]\ndefault_ulimits = []\n[engine]\ncgroup_manager = "cgroupfs"\n')
    os.environ["CONTAINERS_CONF"] = str(work / "containers.conf")
    podman = ["podman", "--runtime", "runc"]
    # The binary as the image is built by default: profile-guided where
    # packaging/pgo can, else plainly.
    subprocess.run([ROOT / "packaging/pgo", "--or-plain"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    binary = ROOT / "target/release/drawbridge"
    subprocess.run([ROOT / "packaging/container/build", binary, IMAGE], check=True,
                   env=dict(os.environ, ENGINE_FLAGS="--runtime runc"), stdout=subprocess.DEVNULL)
    size = subprocess.run(podman + ["image", "inspect", IMAGE, "--format", "{{.Size}}"],
                          capture_output=True, text=True, check=True).stdout.strip()
    print(f"image {IMAGE}: {int(size) / 1e6:.1f} MB (binary {binary.stat().st_size / 1e6:.1f} MB)")
    try:
        for kind in ("first start (no state)", "again (its state kept)"):
            times = []
            for i in range(5):
                folder = work / f"run{i}"
                if kind.startswith("first"):
                    shutil.rmtree(folder, ignore_errors=True)
                    config(folder, "/var/lib/drawbridge")
                name = f"drawbridge-bench-{i}"

                def stop(process, name=name):
                    subprocess.run(podman + ["stop", "-t", "10", name],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    process.wait()

                times.append(timed(podman + [
                    "run", "--rm", "--name", name, "--network=host",
                    "-v", f"{folder}/etc:/etc/drawbridge", "-v", f"{folder}/state:/var/lib/drawbridge",
                    IMAGE], stop))
            print(f"container, {kind}: median {statistics.median(times):.3f} s to the first TLS answer "
                  f"({', '.join(f'{t:.3f}' for t in times)})")
        times = []
        for i in range(5):
            folder = work / f"bare{i}"
            config(folder, folder / "state")

            def stop(process):
                process.terminate()
                process.wait()

            times.append(timed([binary, "run", "-c", folder / "etc/drawbridge.toml"], stop))
        print(f"the binary alone: median {statistics.median(times):.3f} s "
              f"({', '.join(f'{t:.3f}' for t in times)})")
    finally:
        subprocess.run(podman + ["rmi", "-f", IMAGE], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
