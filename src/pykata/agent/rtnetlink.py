"""A small rtnetlink client for the guest agent: set a link's name, MTU and state, add an
address, add a route. Stdlib only (the agent ships no netlink library).

Encoders are pure (arguments in, message bytes out) and tested with byte vectors; `Netlink`
is the one socket: it sends a request and waits for the kernel's ack. Decides nothing.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from collections.abc import Iterator

NETLINK_ROUTE = 0
NLMSG_ERROR = 2
RTM_NEWLINK, RTM_NEWADDR, RTM_NEWROUTE = 16, 20, 24
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
IFF_UP = 0x1
IFLA_IFNAME, IFLA_MTU = 3, 4
IFA_ADDRESS, IFA_LOCAL = 1, 2
IFA_F_NODAD = 0x02
RTA_DST, RTA_OIF, RTA_GATEWAY = 1, 4, 5
RT_TABLE_MAIN, RTPROT_BOOT, RTN_UNICAST = 254, 3, 1
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK = 0, 253

_HEADER = struct.Struct("=IHHII")      # nlmsghdr: len, type, flags, seq, pid
_IFINFO = struct.Struct("=BxHiII")     # ifinfomsg: family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")      # ifaddrmsg: family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")   # rtmsg: family, dst_len, src_len, tos, table,
#                                        protocol, scope, type, flags


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def attr(kind: int, payload: bytes) -> bytes:
    """One rtattr: length (header + payload, unpadded), type, payload padded to 4."""
    return _pad(struct.pack("=HH", 4 + len(payload), kind) + payload)


def message(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    return _HEADER.pack(_HEADER.size + len(body), kind, flags, seq, 0) + body


def set_link(seq: int, index: int, up: bool | None = None, mtu: int | None = None,
             name: str | None = None) -> bytes:
    """RTM_NEWLINK on an existing link: rename (only while down), MTU, up or down."""
    flags = IFF_UP if up else 0
    change = IFF_UP if up is not None else 0
    body = _IFINFO.pack(socket.AF_UNSPEC, 0, index, flags, change)
    if name is not None:
        body += attr(IFLA_IFNAME, name.encode() + b"\0")
    if mtu is not None:
        body += attr(IFLA_MTU, struct.pack("=I", mtu))
    return message(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq, body)


def _family(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> int:
    return socket.AF_INET if ip.version == 4 else socket.AF_INET6


def add_address(seq: int, index: int, address: str, prefix_len: int) -> bytes:
    """RTM_NEWADDR; IPv6 without duplicate address detection (the address is the pod's,
    and DAD would keep it tentative, unusable, for a second or more)."""
    ip = ipaddress.ip_address(address)
    flags = IFA_F_NODAD if ip.version == 6 else 0
    body = _IFADDR.pack(_family(ip), prefix_len, flags, RT_SCOPE_UNIVERSE, index)
    body += attr(IFA_LOCAL, ip.packed) + attr(IFA_ADDRESS, ip.packed)
    return message(RTM_NEWADDR, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, seq,
                   body)


def add_route(seq: int, oif: int, dest: str, gateway: str, family: int,
              scope_link: bool = False) -> bytes:
    """RTM_NEWROUTE in the main table; `dest` "" is the default route. Replaces a route
    already there (so a retried setup does not fail on its own routes)."""
    net = ipaddress.ip_network(dest or ("0.0.0.0/0" if family == 4 else "::/0"),
                               strict=False)
    af = socket.AF_INET if family == 4 else socket.AF_INET6
    scope = RT_SCOPE_LINK if scope_link else RT_SCOPE_UNIVERSE
    body = _RTMSG.pack(af, net.prefixlen, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, scope,
                       RTN_UNICAST, 0)
    if net.prefixlen:
        body += attr(RTA_DST, net.network_address.packed)
    if gateway:
        body += attr(RTA_GATEWAY, ipaddress.ip_address(gateway).packed)
    body += attr(RTA_OIF, struct.pack("=I", oif))
    return message(RTM_NEWROUTE, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
                   seq, body)


def acks(data: bytes) -> Iterator[tuple[int, int]]:
    """(seq, errno) of each NLMSG_ERROR in `data` (errno 0: an ack)."""
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, kind, _, seq, _ = _HEADER.unpack_from(data, offset)
        if length < _HEADER.size:
            raise ValueError(f"netlink message length {length} at offset {offset}")
        if kind == NLMSG_ERROR:
            (error,) = struct.unpack_from("=i", data, offset + _HEADER.size)
            yield seq, -error
        offset += (length + 3) & ~3


class Netlink:
    """One NETLINK_ROUTE socket; `request` sends a message built with sequence number
    `next_seq()` and raises OSError with the kernel's errno when it refuses."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        self._sock.bind((0, 0))
        self._seq = 0

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def request(self, msg: bytes, what: str) -> None:
        (seq,) = struct.unpack_from("=I", msg, 8)
        self._sock.send(msg)
        while True:
            for got, err in acks(self._sock.recv(65536)):
                if got == seq:
                    if err:
                        raise OSError(err, f"{what}: {os.strerror(err)}")
                    return

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
