"""Port-forward into the VM without containerd: what containerd's CRI PortForward does (dial
localhost:<port> inside the pod's network namespace on the host) reaches a server listening
on localhost in the guest, for any port, both ways, several streams at once; nothing is
left in the namespace afterwards. tests/e2e/test_cri.py does the same through real CRI.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
from pathlib import Path

import pytest
from e2e_support import Pykata
from netns_support import PodNet

from pykata.domain.spec import default_spec, parse_spec
from pykata.host.config_files import load_config
from pykata.host.facts import read_host_facts
from pykata.host.netns import in_netns
from pykata.plan.network import NetworkRequest
from pykata.sandbox.sandbox import Sandbox

pytestmark = pytest.mark.e2e

# Two stream servers (busybox nc listens on every address): one upper-cases (`tr`), one
# counts bytes; and an HTTP server on guest loopback only.
SERVERS = ("nc -ll -p 8080 -e tr a-z A-Z & nc -ll -p 9090 -e wc -c & "
           "httpd -f -p 127.0.0.1:8000 -h /etc & wait")


def _dial(pod_net: PodNet, port: int) -> socket.socket:
    """As containerd does: a connection made inside the pod's namespace on the host."""
    return in_netns(pod_net.pod_path, lambda: socket.create_connection(("127.0.0.1", port), 10))


def _exchange(sock: socket.socket, data: bytes) -> bytes:
    sock.settimeout(30)
    sock.sendall(data)
    sock.shutdown(socket.SHUT_WR)  # the server sees end of file, answers, and closes
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    sock.close()
    return out


async def _serve_and_dial(pykata: Pykata, pod_net: PodNet, tmp_path: Path) -> None:
    cfg = load_config(str(pykata.config))
    sandbox = Sandbox.from_parts(cfg, read_host_facts(), network=NetworkRequest(pod_net.pod_path),
                      port_forward=True)
    spec = default_spec(["sh", "-c", SERVERS])
    spec["linux"]["namespaces"] = [ns for ns in spec["linux"]["namespaces"]
                                   if ns["type"] != "network"]
    spec["linux"]["namespaces"].append({"type": "network", "path": pod_net.pod_path})
    try:
        await sandbox.start()
        await sandbox.create_container("c1", parse_spec(spec, "test"),
                                       str(pykata.image_dir / "rootfs" / "busybox"))
        await sandbox.agent.start_container("c1")
        await asyncio.sleep(1)  # the servers listen
        big = bytes(range(97, 123)) * 40000  # 1 MB of a-z
        upper, count, second = await asyncio.gather(
            asyncio.to_thread(lambda: _exchange(_dial(pod_net, 8080), big)),
            asyncio.to_thread(lambda: _exchange(_dial(pod_net, 9090), big)),
            asyncio.to_thread(lambda: _exchange(_dial(pod_net, 8080), b"hello\n")))
        assert upper == big.upper()
        assert count.strip() == str(len(big)).encode()
        assert second == b"HELLO\n"
        page = await asyncio.to_thread(
            lambda: _exchange(_dial(pod_net, 8000), b"GET /passwd HTTP/1.0\r\n\r\n"))
        assert page.startswith(b"HTTP/1.1 200 OK") and b"root:x:0:0" in page, page
        # A port nothing listens on: the connection is accepted, then closed at once.
        assert await asyncio.to_thread(lambda: _exchange(_dial(pod_net, 7070), b"x")) == b""
    finally:
        await sandbox.stop()


def test_localhost_in_the_pods_namespace_reaches_the_guest(pykata: Pykata, pod_net: PodNet,
                                                           tmp_path: Path) -> None:
    asyncio.run(_serve_and_dial(pykata, pod_net, tmp_path))
    rules = subprocess.run(pod_net.in_pod("nft", "list", "ruleset"), capture_output=True,
                           text=True, timeout=30, check=True).stdout
    assert "pykata" not in rules, rules
    listening = subprocess.run(pod_net.in_pod("ss", "-ltn"), capture_output=True, text=True,
                               timeout=30).stdout
    assert "127.0.0.1" not in listening, listening
