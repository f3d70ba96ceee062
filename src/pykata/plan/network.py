"""Plan a pod's network: which interfaces of its namespace reach the VM, through which tap
devices and tc redirects, and the QEMU options for them.

The tcfilter model (Kata's default): for each interface (the CNI plugin's veth) a tap device
in the same namespace, an ingress qdisc on each with a u32 match-all filter whose action
`mirred egress redirect`s every frame to the other. The VM's virtio-net device on the tap
carries the interface's MAC, and the guest gets the interface's addresses and routes.
Pure: the namespace's links and routes arrive as facts; nothing here touches the host.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pykata.domain.errors import NetworkError
from pykata.domain.network import Interface, IpAddress, Route

MODELS = ("tcfilter", "none")
TAP_PREFIX = "tap"
TAP_SUFFIX = "_pykata"
INGRESS_HANDLE = 0xFFFF0000  # "ffff:"
# rtnetlink constants the plan filters routes by.
RT_TABLE_MAIN = 254
RTPROT_KERNEL = 2
RTN_UNICAST = 1
RT_SCOPE_LINK = 253


@dataclass(frozen=True)
class HostLink:
    """A link as the pod's namespace shows it."""

    index: int
    name: str
    mac: str
    mtu: int
    kind: str            # rtnetlink IFLA_INFO_KIND: "veth", "tun", "" (none)
    ether: bool          # ARPHRD_ETHER: has a MAC a virtio-net device can take
    loopback: bool = False
    addresses: tuple[IpAddress, ...] = ()


@dataclass(frozen=True)
class HostRoute:
    """A route as the pod's namespace shows it (any table, any protocol)."""

    dest: str            # "" for default
    gateway: str
    device: str          # the output interface's name ("" if none)
    family: int
    scope: int
    protocol: int
    table: int
    type: int


@dataclass(frozen=True)
class TcRedirect:
    """An ingress qdisc on `src` and a u32 match-all filter redirecting to `dst`'s egress."""

    src: str
    dst: str

    def describe(self) -> str:
        return (f"tc qdisc add dev {self.src} ingress; tc filter add dev {self.src} parent "
                f"ffff: protocol all u32 match u32 0 0 action mirred egress redirect "
                f"dev {self.dst}")


@dataclass(frozen=True)
class Nic:
    """One interface of the pod reaching the VM."""

    link: str            # the CNI plugin's interface (left alone but for its ingress qdisc)
    tap: str             # created by pykata, removed at teardown
    netdev_id: str
    device_id: str
    interface: Interface  # what the guest configures: the link's name, MAC, MTU, addresses

    @property
    def redirects(self) -> tuple[TcRedirect, TcRedirect]:
        return TcRedirect(self.link, self.tap), TcRedirect(self.tap, self.link)


@dataclass(frozen=True)
class NetworkPlan:
    netns: str
    nics: tuple[Nic, ...]
    routes: tuple[Route, ...]
    skipped: tuple[str, ...] = ()   # interfaces left out, each with why


@dataclass(frozen=True)
class NetworkRequest:
    """What a sandbox's spec asks of the network: its namespace, hostname, DNS file."""

    netns: str
    hostname: str = ""
    resolv_conf: str = ""   # host file bind-mounted at /etc/resolv.conf, if any


def network_namespace(doc: Mapping[str, Any]) -> str | None:
    """The path of the spec's network namespace, or None (no entry, or one without a
    path: a new namespace, no network)."""
    linux = doc.get("linux")
    for ns in (linux.get("namespaces") or []) if isinstance(linux, Mapping) else []:
        if isinstance(ns, Mapping) and ns.get("type") == "network" and ns.get("path"):
            path = ns["path"]
            if not isinstance(path, str) or not path.startswith("/"):
                raise NetworkError("network namespace path", path, "must be an absolute path")
            return path
    return None


def plan_network_request(doc: Mapping[str, Any], model: str) -> NetworkRequest | None:
    """None when the VM gets no network: no namespace path in the spec, or model "none"."""
    if model not in MODELS:
        raise NetworkError("internetworking_model", model, f"must be one of {MODELS}")
    netns = network_namespace(doc)
    if netns is None or model == "none":
        return None
    resolv = ""
    for m in doc.get("mounts") or []:
        if isinstance(m, Mapping) and m.get("destination") == "/etc/resolv.conf":
            resolv = str(m.get("source") or "")
    hostname = doc.get("hostname")
    return NetworkRequest(netns, hostname if isinstance(hostname, str) else "", resolv)


def _free_tap_names(taken: set[str], count: int) -> list[str]:
    names: list[str] = []
    i = 0
    while len(names) < count:
        name = f"{TAP_PREFIX}{i}{TAP_SUFFIX}"
        if name not in taken:
            names.append(name)
        i += 1
    return names


def plan_network(netns: str, links: Sequence[HostLink],
                 routes: Sequence[HostRoute]) -> NetworkPlan:
    """A tap and two redirects per Ethernet interface (not lo, not a tap); the routes of
    the main table through those interfaces that the kernel does not add by itself."""
    skipped: list[str] = []
    chosen: list[HostLink] = []
    for link in sorted(links, key=lambda lk: lk.index):
        if link.loopback:
            continue
        if link.kind == "tun":
            skipped.append(f"{link.name}: a tap device, not a pod interface")
        elif not link.ether:
            skipped.append(f"{link.name}: not an Ethernet interface (no MAC to give the VM)")
        else:
            chosen.append(link)
    taps = _free_tap_names({lk.name for lk in links}, len(chosen))
    nics = tuple(
        Nic(link=lk.name, tap=tap, netdev_id=f"net{i}", device_id=f"nic{i}",
            interface=Interface(lk.name, lk.mac.lower(), lk.mtu, lk.addresses))
        for i, (lk, tap) in enumerate(zip(chosen, taps, strict=True)))
    return NetworkPlan(netns, nics, plan_routes(routes, {n.link for n in nics}),
                       tuple(skipped))


def plan_routes(routes: Sequence[HostRoute], devices: set[str]) -> tuple[Route, ...]:
    """Main-table unicast routes through `devices`, without those the guest kernel adds
    when an address goes up (protocol kernel); on-link routes first, so that gateways are
    reachable when the routes through them are added."""
    kept = [Route(r.dest, r.gateway, r.device, r.family, r.scope == RT_SCOPE_LINK)
            for r in routes
            if r.table == RT_TABLE_MAIN and r.type == RTN_UNICAST
            and r.protocol != RTPROT_KERNEL and r.device in devices]
    return tuple(sorted(kept, key=lambda r: (bool(r.gateway), r.family)))


# ---- QEMU options -------------------------------------------------------------------------


@dataclass(frozen=True)
class TapNetdev:
    """A tap backend on a tap fd QEMU inherits. vhost off: it needs /dev/vhost-net."""

    id: str
    fd: int

    def args(self) -> list[str]:
        return ["-netdev", f"tap,id={self.id},fd={self.fd},vhost=off"]


@dataclass(frozen=True)
class VirtioNet:
    id: str
    netdev: str
    mac: str
    mtu: int
    bus: str = "pci"

    def args(self) -> list[str]:
        # romfile=: no PXE option ROM (direct kernel boot never uses it; ipxe may be absent).
        rom = ",romfile=" if self.bus == "pci" else ""
        return ["-device", f"virtio-net-{self.bus},id={self.id},netdev={self.netdev},"
                f"mac={self.mac},host_mtu={self.mtu}{rom}"]


def nic_options(plan: NetworkPlan, fds: Sequence[int],
                bus: str = "pci") -> list[TapNetdev | VirtioNet]:
    """QEMU options for `plan`'s NICs; `fds[i]` is the open tap of `plan.nics[i]`."""
    if len(fds) != len(plan.nics):
        raise ValueError(f"{len(plan.nics)} NICs need as many tap fds, got {len(fds)}")
    options: list[TapNetdev | VirtioNet] = []
    for nic, fd in zip(plan.nics, fds, strict=True):
        options += [TapNetdev(nic.netdev_id, fd),
                    VirtioNet(nic.device_id, nic.netdev_id, nic.interface.mac,
                              nic.interface.mtu, bus)]
    return options
