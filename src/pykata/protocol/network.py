"""SetupNetworkRequest to and from the domain's Interface and Route values."""

from __future__ import annotations

from collections.abc import Sequence

from pykata.domain.network import Interface, IpAddress, Route
from pykata.protocol.pb import agent_pb2 as pb


def setup_network_request(interfaces: Sequence[Interface], routes: Sequence[Route],
                          hostname: str = "", resolv_conf: str = "") -> pb.SetupNetworkRequest:
    return pb.SetupNetworkRequest(
        interfaces=[pb.Interface(name=i.name, mac=i.mac, mtu=i.mtu, addresses=[
            pb.IPAddress(address=a.address, prefix_len=a.prefix_len) for a in i.addresses])
            for i in interfaces],
        routes=[pb.Route(dest=r.dest, gateway=r.gateway, device=r.device, family=r.family,
                         scope_link=r.scope_link) for r in routes],
        hostname=hostname, resolv_conf=resolv_conf)


def interfaces_of(req: pb.SetupNetworkRequest) -> list[Interface]:
    return [Interface(i.name, i.mac, i.mtu,
                      tuple(IpAddress(a.address, a.prefix_len) for a in i.addresses))
            for i in req.interfaces]


def routes_of(req: pb.SetupNetworkRequest) -> list[Route]:
    return [Route(r.dest, r.gateway, r.device, r.family, r.scope_link) for r in req.routes]
