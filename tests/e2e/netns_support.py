"""Network namespaces for end-to-end tests and benchmarks: a pod namespace whose `eth0` is
one end of a veth pair, the other end (`peer0`) in a peer namespace standing in for the
host side. Names carry this process's pid; `remove()` deletes both namespaces (which takes
the veth pair along). Commands enter a namespace with nsenter (not `ip netns exec`, which
remounts /sys and hides the cgroup mounts).
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

NETNS_DIR = Path("/var/run/netns")
_serial = itertools.count()


def missing_reason() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nsenter", "tc"):
        if not shutil.which(tool):
            return f"{tool} is not installed (apt-get install iproute2 util-linux)"
    if not os.path.exists("/dev/net/tun"):
        return "no /dev/net/tun"
    return None


def _run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30).stdout


@dataclass
class PodNet:
    """A pod namespace (`pod`) and a peer namespace (`peer`) joined by a veth pair."""

    pod: str
    peer: str
    subnet: int          # 10.213.<subnet>.0/24: peer .1, pod .2
    mac: str = ""

    @property
    def pod_path(self) -> str:
        return str(NETNS_DIR / self.pod)

    @property
    def pod_ip(self) -> str:
        return f"10.213.{self.subnet}.2"

    @property
    def peer_ip(self) -> str:
        return f"10.213.{self.subnet}.1"

    @property
    def pod_ip6(self) -> str:
        return f"fd00:213:{self.subnet}::2"

    def in_peer(self, *argv: str) -> list[str]:
        return ["nsenter", f"--net={NETNS_DIR / self.peer}", *argv]

    def in_pod(self, *argv: str) -> list[str]:
        return ["nsenter", f"--net={self.pod_path}", *argv]

    def pod_state(self) -> str:
        """Links, qdiscs and filters of the pod namespace, as text (for leftover checks)."""
        return (_run(*self.in_pod("ip", "-o", "link")) + _run(*self.in_pod("tc", "qdisc"))
                + _run(*self.in_pod("tc", "filter", "show", "dev", "eth0", "ingress")))

    def remove(self) -> None:
        for name in (self.pod, self.peer):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


def make_pod_net(subnet: int | None = None, mtu: int = 1500,
                 routes: Sequence[str] = ()) -> PodNet:
    """The pod side gets 10.213.N.2/24 and fd00:213:N::2/64, a default route via the peer
    (10.213.N.1), and `routes` (each `ip route add` arguments)."""
    n = next(_serial)
    tag = f"{os.getpid()}-{n}"
    net = PodNet(f"pkpod-{tag}", f"pkpeer-{tag}", subnet if subnet is not None else 100 + n)
    try:
        _run("ip", "netns", "add", net.pod)
        _run("ip", "netns", "add", net.peer)
        _run("ip", "link", "add", "eth0", "netns", net.pod, "mtu", str(mtu), "type", "veth",
             "peer", "name", "peer0", "netns", net.peer, "mtu", str(mtu))
        _run(*net.in_peer("ip", "addr", "add", f"{net.peer_ip}/24", "dev", "peer0"))
        _run(*net.in_peer("ip", "addr", "add", f"fd00:213:{net.subnet}::1/64", "dev", "peer0",
                          "nodad"))
        _run(*net.in_peer("ip", "link", "set", "peer0", "up"))
        _run(*net.in_peer("ip", "link", "set", "lo", "up"))
        _run(*net.in_pod("ip", "addr", "add", f"{net.pod_ip}/24", "dev", "eth0"))
        _run(*net.in_pod("ip", "addr", "add", f"{net.pod_ip6}/64", "dev", "eth0", "nodad"))
        _run(*net.in_pod("ip", "link", "set", "eth0", "up"))
        _run(*net.in_pod("ip", "route", "add", "default", "via", net.peer_ip))
        for route in routes:
            _run(*net.in_pod("ip", "route", "add", *route.split()))
        # Not /sys/class/net: nsenter keeps the host's /sys mount, which shows the host's.
        link = _run(*net.in_pod("ip", "-o", "link", "show", "eth0")).split()
        net.mac = link[link.index("link/ether") + 1]
    except BaseException:
        net.remove()
        raise
    return net
