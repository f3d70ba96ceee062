"""The pod network plan: which interfaces get a tap and redirects, which routes the guest
gets, what the spec asks for, and the QEMU options (golden strings)."""

from __future__ import annotations

from typing import Any

import pytest

from pykata.domain.errors import NetworkError
from pykata.domain.network import Interface, IpAddress, Route
from pykata.plan.guest_spec import plan_guest_spec
from pykata.plan.network import (
    HostLink,
    HostRoute,
    NetworkPlan,
    NetworkRequest,
    TcRedirect,
    nic_options,
    plan_network,
    plan_network_request,
    plan_routes,
)
from pykata.plan.qemu import build_argv, format_argv

NS = "/var/run/netns/pod"
V4 = IpAddress("10.213.1.2", 24)
LO = HostLink(1, "lo", "00:00:00:00:00:00", 65536, "", False, loopback=True)
ETH0 = HostLink(2, "eth0", "AA:BB:CC:00:00:01", 1450, "veth", True, addresses=(V4,))
ETH1 = HostLink(3, "eth1", "aa:bb:cc:00:00:02", 1500, "macvlan", True)
TAP = HostLink(4, "tap0_pykata", "aa:bb:cc:00:00:09", 1500, "tun", True)
IPIP = HostLink(5, "tunl0", "", 1480, "ipip", False)


def _plan(*links: HostLink) -> NetworkPlan:
    return plan_network(NS, links, [])


@pytest.mark.parametrize("links, expected, skipped", [
    pytest.param([LO], [], 0, id="loopback-only"),
    pytest.param([LO, ETH0], [("eth0", "tap0_pykata")], 0, id="one-veth"),
    pytest.param([ETH1, LO, ETH0], [("eth0", "tap0_pykata"), ("eth1", "tap1_pykata")], 0,
                 id="two-in-index-order"),
    pytest.param([LO, ETH0, TAP], [("eth0", "tap1_pykata")], 1, id="tap-name-taken"),
    pytest.param([LO, IPIP, ETH0], [("eth0", "tap0_pykata")], 1, id="not-ethernet"),
])
def test_which_interfaces_get_a_tap(links: list[HostLink], expected: list[tuple[str, str]],
                                    skipped: int) -> None:
    plan = _plan(*links)
    assert [(n.link, n.tap) for n in plan.nics] == expected
    assert len(plan.skipped) == skipped


def test_nic_carries_the_interface() -> None:
    [nic] = _plan(LO, ETH0).nics
    assert nic.interface == Interface("eth0", "aa:bb:cc:00:00:01", 1450, (V4,))
    assert nic.redirects == (TcRedirect("eth0", "tap0_pykata"), TcRedirect("tap0_pykata", "eth0"))
    assert nic.redirects[0].describe() == (
        "tc qdisc add dev eth0 ingress; tc filter add dev eth0 parent ffff: protocol all u32 "
        "match u32 0 0 action mirred egress redirect dev tap0_pykata")


def _route(dest: str, gw: str = "", dev: str = "eth0", family: int = 4, scope: int = 0,
           proto: int = 4, table: int = 254, type: int = 1) -> HostRoute:
    return HostRoute(dest, gw, dev, family, scope, proto, table, type)


def test_routes_kept_and_ordered() -> None:
    routes = [
        _route("", "10.213.1.1", proto=3),                          # default: kept, last
        _route("10.213.1.0/24", scope=253, proto=2),                # kernel's: dropped
        _route("10.213.1.2/32", table=255, type=2, proto=2),        # local table: dropped
        _route("10.9.0.0/16", scope=253, proto=3),                  # on-link: kept, first
        _route("", "fd00::1", family=6, proto=3),
        _route("10.8.0.0/16", "10.213.1.1", dev="eth9"),           # not a planned NIC
    ]
    assert plan_routes(routes, {"eth0"}) == (
        Route("10.9.0.0/16", "", "eth0", 4, True),
        Route("", "10.213.1.1", "eth0", 4, False),
        Route("", "fd00::1", "eth0", 6, False),
    )


GOLDEN_X86 = ("qemu -netdev tap,id=net0,fd=9,vhost=off -device virtio-net-pci,id=nic0,"
              "netdev=net0,mac=aa:bb:cc:00:00:01,host_mtu=1450,romfile= -netdev "
              "tap,id=net1,fd=10,vhost=off -device virtio-net-pci,id=nic1,netdev=net1,"
              "mac=aa:bb:cc:00:00:02,host_mtu=1500,romfile=")


def test_qemu_options_golden() -> None:
    plan = _plan(LO, ETH0, ETH1)
    assert format_argv(build_argv("qemu", nic_options(plan, [9, 10]))) == GOLDEN_X86
    s390 = format_argv(build_argv("qemu", nic_options(_plan(ETH0), [5], bus="ccw")))
    assert s390 == ("qemu -netdev tap,id=net0,fd=5,vhost=off -device virtio-net-ccw,id=nic0,"
                    "netdev=net0,mac=aa:bb:cc:00:00:01,host_mtu=1450")
    with pytest.raises(ValueError, match="2 NICs need as many tap fds, got 1"):
        nic_options(plan, [9])


def _doc(namespaces: list[dict[str, str]], **extra: Any) -> dict[str, Any]:
    return {"linux": {"namespaces": namespaces}, **extra}


@pytest.mark.parametrize("doc, model, expected", [
    pytest.param({}, "tcfilter", None, id="no-linux"),
    pytest.param(_doc([{"type": "network"}]), "tcfilter", None, id="new-namespace"),
    pytest.param(_doc([{"type": "pid"}, {"type": "network", "path": NS}], hostname="h1"),
                 "tcfilter", NetworkRequest(NS, "h1"), id="path"),
    pytest.param(_doc([{"type": "network", "path": NS}], mounts=[
        {"destination": "/etc/resolv.conf", "source": "/x/resolv.conf", "type": "bind"}]),
                 "tcfilter", NetworkRequest(NS, "", "/x/resolv.conf"), id="resolv-conf"),
    pytest.param(_doc([{"type": "network", "path": NS}]), "none", None, id="model-none"),
])
def test_network_request(doc: dict[str, Any], model: str,
                         expected: NetworkRequest | None) -> None:
    assert plan_network_request(doc, model) == expected


@pytest.mark.parametrize("doc, model, message", [
    pytest.param(_doc([{"type": "network", "path": "netns/x"}]), "tcfilter",
                 "network namespace path 'netns/x': must be an absolute path", id="relative"),
    pytest.param({}, "macvtap", "internetworking_model 'macvtap': must be one of",
                 id="bad-model"),
])
def test_network_request_errors(doc: dict[str, Any], model: str, message: str) -> None:
    with pytest.raises(NetworkError, match=message.replace("(", r"\(")):
        plan_network_request(doc, model)


SPEC = {"root": {"path": "rootfs"}, "linux": {"namespaces": [
    {"type": "pid"}, {"type": "network", "path": NS}, {"type": "uts"}]}}


def test_guest_spec_shares_the_vm_namespace_with_a_network() -> None:
    guest = plan_guest_spec(SPEC, "c1", vm_netns=True)
    assert guest.doc["linux"]["namespaces"] == [{"type": "pid"}, {"type": "uts"}]
    assert guest.warnings == []


def test_guest_spec_without_a_network_gets_a_new_namespace() -> None:
    guest = plan_guest_spec(SPEC, "c1")
    assert {"type": "network"} in guest.doc["linux"]["namespaces"]
    assert any("network" in w for w in guest.warnings)
