"""Pod network benchmark: TCP throughput and round-trip latency from the host end of a
pod's veth to a server in the pod, through a pykata VM (tap + tc redirects + virtio-net)
vs through runc in the same kind of namespace; side by side, medians, with the ratio.

Each runtime gets a fresh pod namespace (tests/e2e/netns_support.py: a veth whose other
end is in a peer namespace, standing in for the host side). In the pod a busybox container
serves a sink (`nc -l > /dev/null`, for throughput) and an echo (`nc -l -e cat`, for TCP
round trips); the client is this process, in a thread inside the peer namespace. ICMP
round trips come from busybox ping in the peer namespace. Kata on bare metal with KVM:
0.70 ms ping, 55 Gb/s iperf3; under TCG pykata is far slower, so the ratio is the figure.

    python bench/net.py [--runs 3] [--mib 32] [--round-trips 200]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
from netns_support import NETNS_DIR, PodNet, make_pod_net

from pykata.domain.spec import default_spec
from pykata.host.netns import in_netns

ROOT = Path(__file__).resolve().parents[1]
SERVE = "nc -ll -p 5002 -e cat & while true; do nc -l -p 5001 > /dev/null; done"
READY_TIMEOUT = 120.0


def bundle(base: Path, rootfs: Path, net: PodNet) -> Path:
    spec: dict[str, Any] = default_spec(["sh", "-c", SERVE], root_path=str(rootfs))
    spec["linux"]["namespaces"] = [
        *(ns for ns in spec["linux"]["namespaces"] if ns["type"] != "network"),
        {"type": "network", "path": net.pod_path}]
    base.mkdir(parents=True, exist_ok=True)
    (base / "config.json").write_text(json.dumps(spec))
    return base


def connect(ip: str, port: int, timeout: float = READY_TIMEOUT) -> socket.socket:
    deadline = time.monotonic() + timeout
    while True:
        try:
            sock = socket.create_connection((ip, port), timeout=5)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def echo_once(ip: str) -> None:
    """Waits until the echo answers (the container is up)."""
    with connect(ip, 5002) as sock:
        sock.sendall(b"x")
        if sock.recv(1) != b"x":
            raise RuntimeError("echo server answered wrongly")


def throughput_mbit(ip: str, mib: int) -> float:
    chunk = b"\0" * (1 << 20)
    with connect(ip, 5001, 30) as sock:
        sock.settimeout(120)
        t0 = time.monotonic()
        for _ in range(mib):
            sock.sendall(chunk)
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(65536):  # the sink closes once it has read everything
            pass
        elapsed = time.monotonic() - t0
    return mib * 8 * 1.048576 / elapsed


def tcp_rtt_ms(ip: str, count: int) -> float:
    samples = []
    with connect(ip, 5002, 30) as sock:
        sock.settimeout(30)
        for _ in range(count):
            t0 = time.perf_counter()
            sock.sendall(b"p")
            if sock.recv(1) != b"p":
                raise RuntimeError("echo lost a byte")
            samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e3


def ping_ms(net: PodNet, count: int) -> float:
    out = subprocess.run(net.in_peer("busybox", "ping", "-c", str(count), "-q", net.pod_ip),
                         capture_output=True, text=True, timeout=120).stdout
    # busybox: "round-trip min/avg/max = 0.031/0.045/0.090 ms"
    return float(out.rsplit("=", 1)[1].split("/")[1])


def measure(net: PodNet, mib: int, round_trips: int) -> dict[str, float]:
    peer = str(NETNS_DIR / net.peer)
    in_netns(peer, lambda: echo_once(net.pod_ip))
    return {"mbit": in_netns(peer, lambda: throughput_mbit(net.pod_ip, mib)),
            "tcp_rtt_ms": in_netns(peer, lambda: tcp_rtt_ms(net.pod_ip, round_trips)),
            "ping_ms": ping_ms(net, 20)}


def run_pykata(base: Path, rootfs: Path, net: PodNet, conf: str | None,
               fn: Callable[[], dict[str, float]]) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    if conf:
        env["PYKATA_CONF_FILE"] = conf
    proc = subprocess.Popen([sys.executable, "-m", "pykata.cli.main", "run", "--bundle",
                             str(bundle(base, rootfs, net))], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        return fn()
    finally:
        proc.send_signal(signal.SIGINT)  # pykata tears the sandbox down in order
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_runc(base: Path, rootfs: Path, net: PodNet,
             fn: Callable[[], dict[str, float]]) -> dict[str, float]:
    state, cid = base / "runc-state", f"pknet-{os.getpid()}-{base.name}"
    runc = ["runc", "--root", str(state)]
    proc = subprocess.Popen([*runc, "run", "--bundle", str(bundle(base, rootfs, net)), cid],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        return fn()
    finally:
        subprocess.run([*runc, "kill", cid, "KILL"], capture_output=True)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        subprocess.run([*runc, "delete", "--force", cid], capture_output=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mib", type=int, default=32, help="MiB sent per throughput sample")
    ap.add_argument("--round-trips", type=int, default=200)
    ap.add_argument("--config", help="pykata configuration file (default: the usual one)")
    ap.add_argument("--image-dir", default="/var/lib/pykata",
                    help="where the busybox rootfs is (<dir>/rootfs/busybox)")
    args = ap.parse_args()
    rootfs = (Path(args.image_dir) / "rootfs" / "busybox").resolve()  # runc: no symlink
    results: dict[str, list[dict[str, float]]] = {"pykata": [], "runc": []}
    tmp = Path(tempfile.mkdtemp(prefix="pknet-"))
    try:
        for i in range(args.runs):
            for name in ("runc", "pykata") if i % 2 else ("pykata", "runc"):
                net = make_pod_net()
                try:
                    def fn(net: PodNet = net) -> dict[str, float]:
                        return measure(net, args.mib, args.round_trips)
                    base = tmp / f"{name}{i}"
                    r = (run_pykata(base, rootfs, net, args.config, fn) if name == "pykata"
                         else run_runc(base, rootfs, net, fn))
                finally:
                    net.remove()
                results[name].append(r)
                print(f"run {i + 1} {name}: {r['mbit']:.0f} Mbit/s, TCP RTT "
                      f"{r['tcp_rtt_ms']:.3f} ms, ping {r['ping_ms']:.3f} ms", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    med = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
           for name, rs in results.items()}
    print(f"\nmedians of {args.runs} (host end of the veth -> pod):")
    print(f"{'':24}{'pykata':>12}{'runc':>12}{'ratio':>10}")
    for key, label, ratio in (("mbit", "TCP throughput Mbit/s", med["pykata"]["mbit"]
                               / med["runc"]["mbit"]),
                              ("tcp_rtt_ms", "TCP round trip ms", med["pykata"]["tcp_rtt_ms"]
                               / med["runc"]["tcp_rtt_ms"]),
                              ("ping_ms", "ICMP ping ms", med["pykata"]["ping_ms"]
                               / med["runc"]["ping_ms"])):
        print(f"{label:24}{med['pykata'][key]:12.3f}{med['runc'][key]:12.3f}{ratio:9.3f}x")


if __name__ == "__main__":
    main()
