"""SetupNetwork in the guest: the pod's interfaces, addresses, routes and name files.

The host gave each virtio-net device the MAC of a pod interface; here each interface is
found by that MAC, renamed to the pod's name, given its MTU and addresses and brought up
(with lo), then the routes are added, then /etc/hostname, /etc/hosts and /etc/resolv.conf
are written. Everything is checked before the first change. Netlink goes through
`rtnetlink`; the steps take it as an argument so tests can record them.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Protocol

from pykata.agent import rtnetlink
from pykata.agent.console import log
from pykata.domain.errors import NetworkError
from pykata.domain.network import Interface, Route, check_interface, check_route

LINK_WAIT = 10.0  # the NIC's driver may still be probing when the host asks


class NetlinkLike(Protocol):
    def next_seq(self) -> int: ...
    def request(self, msg: bytes, what: str) -> None: ...


def read_links(sys_root: str = "/sys") -> dict[str, tuple[int, str]]:
    """MAC -> (ifindex, name) of every link the guest has."""
    base = f"{sys_root}/class/net"
    found: dict[str, tuple[int, str]] = {}
    for name in os.listdir(base) if os.path.isdir(base) else ():
        try:
            with open(f"{base}/{name}/address") as f:
                mac = f.read().strip().lower()
            with open(f"{base}/{name}/ifindex") as f:
                index = int(f.read())
        except (OSError, ValueError):
            continue
        found.setdefault(mac, (index, name))
    return found


def wait_links(macs: Sequence[str], sys_root: str = "/sys", timeout: float = LINK_WAIT,
               interval: float = 0.05) -> dict[str, tuple[int, str]]:
    deadline = time.monotonic() + timeout
    while True:
        links = read_links(sys_root)
        missing = [m for m in macs if m not in links]
        if not missing:
            return links
        if time.monotonic() > deadline:
            raise NetworkError("interface mac", missing[0],
                               f"no such network device in the guest after {timeout:g} s "
                               f"(guest has {sorted(links)})")
        time.sleep(interval)


def check_request(interfaces: Sequence[Interface], routes: Sequence[Route]) -> None:
    names = set()
    for iface in interfaces:
        check_interface(iface, "SetupNetwork")
        if iface.name in names or iface.name == "lo":
            raise NetworkError("SetupNetwork interface name", iface.name, "used twice")
        names.add(iface.name)
    for route in routes:
        check_route(route, "SetupNetwork route")
        if route.device not in names:
            raise NetworkError("SetupNetwork route device", route.device,
                               f"names no interface of the request ({sorted(names)})")


def apply_links(nl: NetlinkLike, interfaces: Sequence[Interface],
                present: Mapping[str, tuple[int, str]]) -> dict[str, int]:
    """Names, MTU, addresses, up; lo up. Returns each interface's guest ifindex by name."""
    indexes = {i.name: present[i.mac][0] for i in interfaces}
    lo = present.get("00:00:00:00:00:00")
    if lo is not None:
        nl.request(rtnetlink.set_link(nl.next_seq(), lo[0], up=True), "link lo up")
    ours = {present[i.mac][1] for i in interfaces}
    others = {name for _, name in present.values()} - ours
    renames = [i for i in interfaces if present[i.mac][1] != i.name and i.name not in others]
    # Two steps, so that two NICs can swap names ("eth0" <-> "eth1").
    for iface in renames:
        nl.request(rtnetlink.set_link(nl.next_seq(), indexes[iface.name],
                                      name=f"pk{indexes[iface.name]}"), f"rename {iface.name}")
    for iface in renames:
        nl.request(rtnetlink.set_link(nl.next_seq(), indexes[iface.name], name=iface.name),
                   f"rename {iface.name}")
    for iface in interfaces:
        index = indexes[iface.name]
        nl.request(rtnetlink.set_link(nl.next_seq(), index, mtu=iface.mtu),
                   f"mtu {iface.mtu} on {iface.name}")
        for addr in iface.addresses:
            nl.request(rtnetlink.add_address(nl.next_seq(), index, addr.address,
                                             addr.prefix_len), f"address {addr} on {iface.name}")
        nl.request(rtnetlink.set_link(nl.next_seq(), index, up=True), f"{iface.name} up")
    return indexes


def apply_routes(nl: NetlinkLike, routes: Sequence[Route], indexes: Mapping[str, int]) -> None:
    for r in routes:
        nl.request(rtnetlink.add_route(nl.next_seq(), indexes[r.device], r.dest, r.gateway,
                                       r.family, r.scope_link),
                   f"route {r.dest or 'default'} via {r.gateway or '-'} dev {r.device}")


def hosts_text(hostname: str, interfaces: Sequence[Interface]) -> str:
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    first = next((a.address for i in interfaces for a in i.addresses), None)
    if hostname:
        lines.append(f"{first or '127.0.1.1'}\t{hostname}")
    return "\n".join(lines) + "\n"


def write_files(etc: str, hostname: str, hosts: str, resolv_conf: str) -> None:
    os.makedirs(etc, exist_ok=True)
    files = {"hosts": hosts}
    if hostname:
        files["hostname"] = hostname + "\n"
    if resolv_conf:
        files["resolv.conf"] = resolv_conf
    for name, text in files.items():
        tmp = f"{etc}/.{name}.pykata"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, f"{etc}/{name}")


def setup_network(interfaces: Sequence[Interface], routes: Sequence[Route], hostname: str,
                  resolv_conf: str, sys_root: str = "/sys", etc: str = "/etc") -> None:
    check_request(interfaces, routes)
    present = wait_links([i.mac for i in interfaces], sys_root)
    with rtnetlink.Netlink() as nl:
        indexes = apply_links(nl, interfaces, present)
        apply_routes(nl, routes, indexes)
    if hostname:
        socket.sethostname(hostname)
    write_files(etc, hostname, hosts_text(hostname, interfaces), resolv_conf)
    log(f"network: {', '.join(f'{i.name} {i.mac}' for i in interfaces) or 'lo only'}, "
        f"{len(routes)} routes")
