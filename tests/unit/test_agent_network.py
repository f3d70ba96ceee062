"""The agent's network setup: rtnetlink messages as byte vectors, the steps of
SetupNetwork against a recording netlink, its checks, and the files it writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from pykata.agent import rtnetlink
from pykata.agent.network import (
    apply_links,
    apply_routes,
    check_request,
    hosts_text,
    read_links,
    wait_links,
    write_files,
)
from pykata.domain.errors import NetworkError
from pykata.domain.network import Interface, IpAddress, Route
from pykata.protocol.network import interfaces_of, routes_of, setup_network_request


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


# Header: len type flags seq pid (native endian, little on every host pykata supports).
VECTORS = {
    "link-up-mtu": (
        rtnetlink.set_link(1, 2, up=True, mtu=1400),
        h("28000000 1000 0500 01000000 00000000"          # RTM_NEWLINK, REQUEST|ACK
          "00 00 0000 02000000 01000000 01000000"           # ifinfomsg: index 2, IFF_UP
          "0800 0400 78050000")),                           # IFLA_MTU 1400
    "link-rename": (
        rtnetlink.set_link(7, 3, name="eth0"),
        h("2c000000 1000 0500 07000000 00000000"
          "00 00 0000 03000000 00000000 00000000"           # no flag change
          "0900 0300 65746830 00 000000")),                 # IFLA_IFNAME "eth0\0", padded
    "addr-v4": (
        rtnetlink.add_address(2, 2, "10.213.1.2", 24),
        h("28000000 1400 0506 02000000 00000000"          # RTM_NEWADDR, |CREATE|EXCL
          "02 18 00 00 02000000"                            # AF_INET /24 scope global
          "0800 0200 0ad50102 0800 0100 0ad50102")),        # IFA_LOCAL, IFA_ADDRESS
    "addr-v6-nodad": (
        rtnetlink.add_address(3, 2, "fd00::2", 64),
        h("40000000 1400 0506 03000000 00000000"
          "0a 40 02 00 02000000"                            # AF_INET6 /64 IFA_F_NODAD
          "1400 0200 fd000000 00000000 00000000 00000002"
          "1400 0100 fd000000 00000000 00000000 00000002")),
    "route-default": (
        rtnetlink.add_route(4, 2, "", "10.213.1.1", 4),
        h("2c000000 1800 0505 04000000 00000000"          # RTM_NEWROUTE, |CREATE|REPLACE
          "02 00 00 00 fe 03 00 01 00000000"                # main, boot, universe, unicast
          "0800 0500 0ad50101 0800 0400 02000000")),        # RTA_GATEWAY, RTA_OIF
    "route-on-link": (
        rtnetlink.add_route(5, 2, "10.1.0.0/16", "", 4, scope_link=True),
        h("2c000000 1800 0505 05000000 00000000"
          "02 10 00 00 fe 03 fd 01 00000000"                # /16, scope link
          "0800 0100 0a010000 0800 0400 02000000")),        # RTA_DST, RTA_OIF
    "route-v6-default": (
        rtnetlink.add_route(6, 9, "", "fd00::1", 6),
        h("38000000 1800 0505 06000000 00000000"
          "0a 00 00 00 fe 03 00 01 00000000"
          "1400 0500 fd000000 00000000 00000000 00000001 0800 0400 09000000")),
}


@pytest.mark.parametrize("name", VECTORS)
def test_message_bytes(name: str) -> None:
    got, expected = VECTORS[name]
    assert got.hex() == expected.hex()


def test_acks_parse_errors_and_skip_other_messages() -> None:
    other = h("14000000 1000 0000 03000000 00000000 00000000")     # 20 bytes: padded to 20
    nack = h("24000000 0200 0000 04000000 00000000 efffffff") + h("10000000 1400 0506 04000000"
                                                                  "00000000")
    ack = h("24000000 0200 0000 05000000 00000000 00000000") + bytes(16)
    assert list(rtnetlink.acks(other + nack + ack)) == [(4, 17), (5, 0)]
    with pytest.raises(ValueError, match="length 2"):
        list(rtnetlink.acks(h("02000000 0200 0000 01000000 00000000")))


class RecordingNetlink:
    def __init__(self) -> None:
        self.seq = 0
        self.steps: list[str] = []
        self.messages: list[bytes] = []

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def request(self, msg: bytes, what: str) -> None:
        self.messages.append(msg)
        self.steps.append(what)


ETH0 = Interface("eth0", "aa:00:00:00:00:01", 1450,
                 (IpAddress("10.213.1.2", 24), IpAddress("fd00::2", 64)))
ETH1 = Interface("eth1", "aa:00:00:00:00:02", 1500, (IpAddress("10.9.0.2", 16),))
LO = ("00:00:00:00:00:00", (1, "lo"))


def test_links_swap_names_and_come_up() -> None:
    nl = RecordingNetlink()
    present = dict([LO, ("aa:00:00:00:00:01", (3, "eth1")), ("aa:00:00:00:00:02", (2, "eth0"))])
    indexes = apply_links(nl, [ETH0, ETH1], present)
    assert indexes == {"eth0": 3, "eth1": 2}
    assert nl.steps == [
        "link lo up", "rename eth0", "rename eth1", "rename eth0", "rename eth1",
        "mtu 1450 on eth0", "address 10.213.1.2/24 on eth0", "address fd00::2/64 on eth0",
        "eth0 up", "mtu 1500 on eth1", "address 10.9.0.2/16 on eth1", "eth1 up"]
    assert nl.messages[1] == rtnetlink.set_link(2, 3, name="pk3")
    assert nl.messages[3] == rtnetlink.set_link(4, 3, name="eth0")


def test_a_name_held_by_another_link_is_not_taken() -> None:
    nl = RecordingNetlink()
    present = dict([LO, ("aa:00:00:00:00:01", (3, "ens3")), ("ff:00:00:00:00:09", (2, "eth0"))])
    apply_links(nl, [ETH0], present)
    assert not any(s.startswith("rename") for s in nl.steps)


def test_routes_go_to_their_interface() -> None:
    nl = RecordingNetlink()
    apply_routes(nl, [Route("10.1.0.0/16", "", "eth1", 4, True),
                      Route("", "10.213.1.1", "eth0", 4)], {"eth0": 3, "eth1": 2})
    assert nl.steps == ["route 10.1.0.0/16 via - dev eth1", "route default via 10.213.1.1 dev eth0"]
    assert nl.messages[1] == rtnetlink.add_route(2, 3, "", "10.213.1.1", 4)


@pytest.mark.parametrize("interfaces, routes, message", [
    pytest.param([Interface("eth0", "aa:00:00:00:00:0g", 1500)], [], "mac 'aa:00:00:00:00:0g'",
                 id="bad-mac"),
    pytest.param([Interface("eth0", "aa:00:00:00:00:01", 20)], [], "mtu 20", id="bad-mtu"),
    pytest.param([Interface("a/b", "aa:00:00:00:00:01", 1500)], [], "name 'a/b'",
                 id="bad-name"),
    pytest.param([ETH0, ETH0], [], "name 'eth0': used twice", id="twice"),
    pytest.param([Interface("eth0", "aa:00:00:00:00:01", 1500, (IpAddress("10.0.0.300", 8),))],
                 [], "'10.0.0.300': not an IP address", id="bad-address"),
    pytest.param([Interface("eth0", "aa:00:00:00:00:01", 1500, (IpAddress("10.0.0.3", 33),))],
                 [], "prefix must be 0-32", id="bad-prefix"),
    pytest.param([ETH0], [Route("", "fd00::1", "eth0", 4)], "not a valid IPv4 route",
                 id="family-mismatch"),
    pytest.param([ETH0], [Route("", "10.0.0.1", "eth7", 4)], "device 'eth7'", id="no-device"),
])
def test_request_checks(interfaces: list[Interface], routes: list[Route], message: str) -> None:
    with pytest.raises(NetworkError, match=message.replace("(", r"\(")):
        check_request(interfaces, routes)


def test_links_by_mac_from_sysfs(tmp_path: Path) -> None:
    for name, mac, index in (("lo", "00:00:00:00:00:00", 1), ("eth0", "AA:00:00:00:00:01", 2)):
        d = tmp_path / "class/net" / name
        d.mkdir(parents=True)
        (d / "address").write_text(mac + "\n")
        (d / "ifindex").write_text(f"{index}\n")
    assert read_links(str(tmp_path)) == {"00:00:00:00:00:00": (1, "lo"),
                                         "aa:00:00:00:00:01": (2, "eth0")}
    with pytest.raises(NetworkError, match="'aa:00:00:00:00:02': no such network device"):
        wait_links(["aa:00:00:00:00:02"], str(tmp_path), timeout=0.05, interval=0.01)


def test_files(tmp_path: Path) -> None:
    assert hosts_text("pod1", [ETH0]) == (
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n10.213.1.2\tpod1\n")
    write_files(str(tmp_path / "etc"), "pod1", "hosts\n", "nameserver 10.0.0.10\n")
    assert sorted(p.name for p in (tmp_path / "etc").iterdir()) == ["hostname", "hosts",
                                                                   "resolv.conf"]
    assert (tmp_path / "etc/hostname").read_text() == "pod1\n"


def test_request_round_trip() -> None:
    routes = [Route("", "10.213.1.1", "eth0", 4), Route("10.1.0.0/16", "", "eth0", 4, True)]
    req = setup_network_request([ETH0, ETH1], routes, "h", "nameserver 1.1.1.1\n")
    req = type(req).FromString(req.SerializeToString())
    assert interfaces_of(req) == [ETH0, ETH1]
    assert routes_of(req) == routes
    assert (req.hostname, req.resolv_conf) == ("h", "nameserver 1.1.1.1\n")
