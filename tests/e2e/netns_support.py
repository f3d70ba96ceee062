"""Network namespaces for end-to-end tests and benchmarks: a pod namespace whose `eth0` is
one end of a veth pair, the other end (`peer0`) in a peer namespace standing in for the
host side; `add_veth` gives the pod namespace another veth with a peer namespace of its
own. Names carry this process's pid; `remove()` deletes both namespaces (which takes the
veth pair along). Commands enter a namespace with nsenter (not `ip netns exec`, which
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
    """A pod namespace (`pod`) and a peer namespace (`peer`) joined by a veth pair, `link`
    its end in the pod namespace."""

    pod: str
    peer: str
    subnet: int          # 10.213.<subnet>.0/24: peer .1, pod .2
    mac: str = ""
    link: str = "eth0"

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
                + _run(*self.in_pod("tc", "filter", "show", "dev", self.link, "ingress")))

    def remove(self) -> None:
        for name in (self.pod, self.peer):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


def make_pod_net(subnet: int | None = None, mtu: int = 1500,
                 routes: Sequence[str] = (), link: str = "eth0") -> PodNet:
    """The pod side (`link`) gets 10.213.N.2/24 and fd00:213:N::2/64, a default route via
    the peer (10.213.N.1), and `routes` (each `ip route add` arguments)."""
    n = next(_serial)
    tag = f"{os.getpid()}-{n}"
    net = PodNet(f"pkpod-{tag}", f"pkpeer-{tag}", subnet if subnet is not None else 100 + n,
                 link=link)
    try:
        _run("ip", "netns", "add", net.pod)
        _join(net, mtu)
        _run(*net.in_pod("ip", "route", "add", "default", "via", net.peer_ip))
        for route in routes:
            _run(*net.in_pod("ip", "route", "add", *route.split()))
    except BaseException:
        net.remove()
        raise
    return net


def add_veth(net: PodNet, link: str, subnet: int | None = None, mtu: int = 1500,
             routes: Sequence[str] = ()) -> PodNet:
    """Another veth in `net`'s pod namespace, named `link`, with a peer namespace of its
    own: 10.213.M.2/24 and fd00:213:M::2/64 on `link`, no default route; `routes` as in
    make_pod_net, with "{peer}" standing for the new peer's address and the route going
    through `link`. Its `remove()` also deletes the pod namespace."""
    n = next(_serial)
    extra = PodNet(net.pod, f"pkpeer-{os.getpid()}-{n}",
                   subnet if subnet is not None else 100 + n, link=link)
    try:
        _join(extra, mtu)
        for route in routes:
            _run(*extra.in_pod("ip", "route", "add", *route.format(peer=extra.peer_ip).split(),
                               "dev", link))
    except BaseException:
        subprocess.run(["ip", "netns", "del", extra.peer], capture_output=True, timeout=30)
        raise
    return extra


def _join(net: PodNet, mtu: int) -> None:
    """Makes `net.peer`, joins it to the existing pod namespace by a veth pair (`peer0`
    there, `net.link` in the pod), addresses both ends and records the pod end's MAC."""
    _run("ip", "netns", "add", net.peer)
    _run("ip", "link", "add", net.link, "netns", net.pod, "mtu", str(mtu), "type", "veth",
         "peer", "name", "peer0", "netns", net.peer, "mtu", str(mtu))
    _run(*net.in_peer("ip", "addr", "add", f"{net.peer_ip}/24", "dev", "peer0"))
    _run(*net.in_peer("ip", "addr", "add", f"fd00:213:{net.subnet}::1/64", "dev", "peer0",
                      "nodad"))
    _run(*net.in_peer("ip", "link", "set", "peer0", "up"))
    _run(*net.in_peer("ip", "link", "set", "lo", "up"))
    _run(*net.in_pod("ip", "addr", "add", f"{net.pod_ip}/24", "dev", net.link))
    _run(*net.in_pod("ip", "addr", "add", f"{net.pod_ip6}/64", "dev", net.link, "nodad"))
    _run(*net.in_pod("ip", "link", "set", net.link, "up"))
    # Not /sys/class/net: nsenter keeps the host's /sys mount, which shows the host's.
    shown = _run(*net.in_pod("ip", "-o", "link", "show", net.link)).split()
    net.mac = shown[shown.index("link/ether") + 1]
