"""A pod's network namespace, from the host: read its links and routes, create the taps and
tc redirects a NetworkPlan names, and remove them again.

Each call runs in a thread of its own that enters the namespace (setns(2) is per thread)
and ends with the call, so no thread of the caller ever changes namespace. Netlink goes
through pyroute2; netlink errors become NetworkError naming the namespace and device.
Carries plans out; decides nothing.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import struct
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pykata.domain.errors import NetworkError
from pykata.domain.network import IpAddress
from pykata.plan.network import INGRESS_HANDLE, HostLink, HostRoute, Nic

T = TypeVar("T")

_CLONE_NEWNET = 0x40000000
_TUNSETIFF = 0x400454CA
_IFF_TAP, _IFF_NO_PI, _IFF_VNET_HDR = 0x0002, 0x1000, 0x4000
_ETH_P_ALL = 0x0003
_ARPHRD_ETHER, _ARPHRD_LOOPBACK = 1, 772
_RT_SCOPE_UNIVERSE = 0


def _setns(fd: int) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def in_netns(path: str, fn: Callable[[], T]) -> T:
    """`fn()` run in a fresh thread inside the network namespace at `path`."""
    result: list[T] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                raise NetworkError("network namespace", path, "does not exist") from None
            try:
                _setns(fd)
            except OSError as exc:
                why = ("is not a network namespace" if exc.errno == errno.EINVAL
                       else f"cannot enter: {exc.strerror}")
                raise NetworkError("network namespace", path, why) from None
            finally:
                os.close(fd)
            result.append(fn())
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=target, name=f"netns {path}", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def _ipr() -> Any:
    from pyroute2 import IPRoute  # ~0.3 s to import: only sandboxes with a network pay it

    return IPRoute()


def _netlink_errno(exc: BaseException) -> int | None:
    from pyroute2.netlink.exceptions import NetlinkError

    return exc.code if isinstance(exc, NetlinkError) else None


def set_loopback_up() -> None:
    """In the calling thread's network namespace."""
    with _ipr() as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")


def read_namespace() -> tuple[list[HostLink], list[HostRoute]]:
    """The links (with their global addresses) and routes of the current namespace."""
    with _ipr() as ipr:
        addrs: dict[int, list[IpAddress]] = {}
        for a in ipr.get_addr():
            if a["scope"] == _RT_SCOPE_UNIVERSE:  # link-local ones the guest makes itself
                addrs.setdefault(a["index"], []).append(
                    IpAddress(a.get_attr("IFA_ADDRESS"), a["prefixlen"]))
        links = [_link(lk, addrs.get(lk["index"], [])) for lk in ipr.get_links()]
        names = {lk.index: lk.name for lk in links}
        routes = [HostRoute(
            dest=f"{r.get_attr('RTA_DST')}/{r['dst_len']}" if r.get_attr("RTA_DST") else "",
            gateway=r.get_attr("RTA_GATEWAY") or "",
            device=names.get(r.get_attr("RTA_OIF") or 0, ""),
            family=4 if r["family"] == socket.AF_INET else 6,
            scope=r["scope"], protocol=r["proto"],
            table=r.get_attr("RTA_TABLE") or r["table"], type=r["type"])
            for r in ipr.get_routes(family=socket.AF_UNSPEC)
            if r["family"] in (socket.AF_INET, socket.AF_INET6)]
    return links, routes


def _link(lk: Any, addresses: list[IpAddress]) -> HostLink:
    info = lk.get_attr("IFLA_LINKINFO")
    return HostLink(
        index=lk["index"], name=lk.get_attr("IFLA_IFNAME"),
        mac=(lk.get_attr("IFLA_ADDRESS") or "").lower(), mtu=lk.get_attr("IFLA_MTU") or 1500,
        kind=(info.get_attr("IFLA_INFO_KIND") or "") if info is not None else "",
        ether=lk["ifi_type"] == _ARPHRD_ETHER, loopback=lk["ifi_type"] == _ARPHRD_LOOPBACK,
        addresses=tuple(addresses))


def open_tap(name: str) -> int:
    """A tap device `name` in the current namespace, alive while its fd is open (not
    persistent: a killed QEMU takes it along). vnet headers on: QEMU uses offloads."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, _TUNSETIFF,
                    struct.pack("16sH", name.encode(), _IFF_TAP | _IFF_NO_PI | _IFF_VNET_HDR))
    except OSError as exc:
        os.close(fd)
        raise NetworkError("tap device", name, f"cannot create: {exc.strerror}") from None
    return fd


def create_taps(nics: Sequence[Nic]) -> list[int]:
    """For each NIC: its tap (up, the link's MTU) and both redirects. Returns the taps'
    fds. On failure, removes what it added and raises."""
    fds: list[int] = []
    try:
        with _ipr() as ipr:
            for nic in nics:
                fds.append(open_tap(nic.tap))
                tap = _index(ipr, nic.tap)
                ipr.link("set", index=tap, mtu=nic.interface.mtu, state="up")
                for redirect in nic.redirects:
                    _redirect(ipr, redirect.src, redirect.dst)
    except BaseException:
        for fd in fds:
            os.close(fd)
        remove_redirects([n.link for n in nics], [n.tap for n in nics])
        raise
    return fds


def _index(ipr: Any, name: str) -> int:
    found = ipr.link_lookup(ifname=name)
    if not found:
        raise NetworkError("interface", name, "not found in the pod's network namespace")
    return int(found[0])


def _redirect(ipr: Any, src: str, dst: str) -> None:
    src_index, dst_index = _index(ipr, src), _index(ipr, dst)
    try:
        ipr.tc("add", "ingress", src_index, INGRESS_HANDLE)
    except Exception as exc:
        if _netlink_errno(exc) == errno.EEXIST:
            raise NetworkError("interface", src, "already has an ingress qdisc (is another "
                               "sandbox using this network namespace?)") from None
        raise NetworkError("interface", src, f"cannot add an ingress qdisc: {exc}") from None
    try:
        ipr.tc("add-filter", "u32", src_index, parent=INGRESS_HANDLE, protocol=_ETH_P_ALL,
               target=0x1, keys=["0x0/0x0+0"],
               action={"kind": "mirred", "direction": "egress", "action": "redirect",
                       "ifindex": dst_index})
    except Exception as exc:
        raise NetworkError("interface", src, f"cannot add a redirect to {dst}: {exc}") from None


def remove_redirects(links: Sequence[str], taps: Sequence[str]) -> list[str]:
    """Removes the ingress qdiscs (and so their filters) of `links` and the `taps`; what
    is already gone is fine. Returns what it removed."""
    done = []
    with _ipr() as ipr:
        for name in [*links, *taps]:
            found = ipr.link_lookup(ifname=name)
            if not found:
                continue
            if name in taps:
                with contextlib.suppress(Exception):  # it may vanish as QEMU exits
                    ipr.link("del", index=found[0])
                    done.append(f"removed tap {name}")
                continue
            try:
                ipr.tc("del", "ingress", found[0], INGRESS_HANDLE)
                done.append(f"removed the ingress qdisc of {name}")
            except Exception as exc:
                if _netlink_errno(exc) not in (errno.EINVAL, errno.ENOENT):
                    raise NetworkError("interface", name,
                                       f"cannot remove its ingress qdisc: {exc}") from None
    return done
