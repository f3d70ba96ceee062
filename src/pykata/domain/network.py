"""Pod network value types: an interface with its addresses, a route, and NetworkError.

What the host reads from a pod's network namespace and what the guest agent is told to
configure are the same values, so both sides share these. Values only: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pykata.domain.errors import NetworkError

_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}\Z")


@dataclass(frozen=True)
class IpAddress:
    """An interface address with its prefix: "10.0.0.2", 24."""

    address: str
    prefix_len: int

    @property
    def family(self) -> int:
        import ipaddress  # deferred: the guest agent imports this module at boot

        return ipaddress.ip_address(self.address).version

    def __str__(self) -> str:
        return f"{self.address}/{self.prefix_len}"


@dataclass(frozen=True)
class Route:
    """A route of the main table. `dest` is "" for the default route; `device` names the
    interface as the pod's namespace names it; `scope_link` for on-link routes."""

    dest: str          # "10.1.0.0/16" or ""
    gateway: str       # "" for on-link routes
    device: str
    family: int        # 4 or 6
    scope_link: bool = False


@dataclass(frozen=True)
class Interface:
    name: str
    mac: str           # lower case, colon separated
    mtu: int
    addresses: tuple[IpAddress, ...] = ()


def check_interface(iface: Interface, where: str) -> None:
    """Raises NetworkError naming what is malformed (the guest checks what it is told)."""
    if not 1 <= len(iface.name) <= 15 or "/" in iface.name or iface.name in (".", ".."):
        raise NetworkError(f"{where} interface name", iface.name, "must be 1-15 characters, "
                           "no '/'")
    if not _MAC.match(iface.mac):
        raise NetworkError(f"{where} interface {iface.name} mac", iface.mac,
                           "must be six hex pairs like 02:42:ac:11:00:02")
    if not 68 <= iface.mtu <= 65535:
        raise NetworkError(f"{where} interface {iface.name} mtu", iface.mtu, "must be 68-65535")
    for addr in iface.addresses:
        check_address(addr, f"{where} interface {iface.name} address")


def check_address(addr: IpAddress, where: str) -> None:
    import ipaddress

    try:
        ip = ipaddress.ip_address(addr.address)
    except ValueError:
        raise NetworkError(where, addr.address, "not an IP address") from None
    if not 0 <= addr.prefix_len <= ip.max_prefixlen:
        raise NetworkError(where, str(addr), f"prefix must be 0-{ip.max_prefixlen}")


def check_route(route: Route, where: str) -> None:
    import ipaddress

    if route.family not in (4, 6):
        raise NetworkError(f"{where} family", route.family, "must be 4 or 6")
    try:
        if route.dest:
            net = ipaddress.ip_network(route.dest, strict=False)
            if net.version != route.family:
                raise ValueError("family")
        if route.gateway and ipaddress.ip_address(route.gateway).version != route.family:
            raise ValueError("family")
    except ValueError:
        raise NetworkError(where, f"{route.dest or 'default'} via {route.gateway or '-'}",
                           f"not a valid IPv{route.family} route") from None
