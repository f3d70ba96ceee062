"""A pod's port-forward on the host: the listening sockets in its network namespace, the
nft redirect to them, and the port a redirected connection dialled.

Carries out what `pykata.plan.portforward` decides; decides nothing.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import struct
import subprocess

from pykata.domain.errors import NetworkError
from pykata.host.netns import in_netns, set_loopback_up

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h; IP6T_SO_ORIGINAL_DST has the same number
_NFT_TIMEOUT = 10.0


def open_listeners(netns: str) -> list[socket.socket]:
    """Listening TCP sockets on 127.0.0.1 and, where the namespace has IPv6, [::1], on one
    free port, created inside the namespace (a socket keeps the namespace it was made in)."""

    def make() -> list[socket.socket]:
        set_loopback_up()  # CNI's loopback plugin does it; a bare namespace has it down
        v4 = socket.create_server(("127.0.0.1", 0), backlog=128)
        socks = [v4]
        # No IPv6 loopback there: fine, containerd tries it only after IPv4.
        with contextlib.suppress(OSError):
            socks.append(socket.create_server(("::1", v4.getsockname()[1]),
                                              family=socket.AF_INET6, backlog=128))
        return socks

    return in_netns(netns, make)


def original_port(sock: socket.socket) -> int:
    """The port a connection redirected by nat dialled (from conntrack)."""
    if sock.family == socket.AF_INET6:
        raw = sock.getsockopt(socket.IPPROTO_IPV6, SO_ORIGINAL_DST, 28)
    else:
        raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port: int = struct.unpack_from("!H", raw, 2)[0]
    return port


def apply_nft(netns: str, script: str) -> None:
    """Runs an nft script inside the network namespace."""
    nft = shutil.which("nft", path="/usr/sbin:/sbin:/usr/bin:/bin")
    if nft is None:
        raise NetworkError("network namespace", netns,
                           "port-forward needs nft (apt-get install nftables)")
    try:
        proc = subprocess.run(["nsenter", f"--net={netns}", nft, "-f", "-"],
                              input=script.encode(), capture_output=True,
                              timeout=_NFT_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetworkError("network namespace", netns, f"nft: {exc}") from None
    if proc.returncode != 0:
        why = proc.stderr.decode(errors="replace").strip().splitlines()
        raise NetworkError("network namespace", netns, f"nft: {why[-1] if why else proc}")
