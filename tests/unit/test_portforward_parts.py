"""Port-forward: the nft redirect text (golden) and the agent's streams, against a real
TCP server on this host's loopback."""

from __future__ import annotations

import asyncio

import pytest

from pykata.agent.portforward import PortForwards
from pykata.domain.errors import BadValue, UnknownId
from pykata.plan.portforward import port_redirect_removal, port_redirect_ruleset


def test_ruleset_redirects_loopback_tcp_to_the_listener() -> None:
    assert port_redirect_ruleset(40000, ipv6=True) == (
        "table inet pykata_portforward\n"
        "delete table inet pykata_portforward\n"
        "table inet pykata_portforward {\n"
        "  chain output {\n"
        "    type nat hook output priority -100; policy accept;\n"
        "    ip daddr 127.0.0.1 meta l4proto tcp redirect to :40000\n"
        "    ip6 daddr ::1 meta l4proto tcp redirect to :40000\n"
        "  }\n"
        "}\n")
    assert "ip6" not in port_redirect_ruleset(1, ipv6=False)
    assert port_redirect_removal() == "delete table inet pykata_portforward\n"
    with pytest.raises(ValueError, match="70000"):
        port_redirect_ruleset(70000, ipv6=False)


async def _echo_upper(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(1024):
        writer.write(data.upper())
        await writer.drain()
    writer.write(b"<eof>")
    writer.close()


async def _streams() -> None:
    server = await asyncio.start_server(_echo_upper, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    forwards = PortForwards()
    try:
        a, b = await forwards.open(port), await forwards.open(port)
        assert a != b
        assert await forwards.write(a, b"hello") == 5
        assert await forwards.write(b, b"other") == 5
        assert await forwards.read(b, 100) == b"OTHER"
        assert await forwards.read(a, 100) == b"HELLO"
        await forwards.close(a, write_only=True)  # the server sees its end of file
        assert await forwards.read(a, 100) == b"<eof>"
        assert await forwards.read(a, 100) == b""
        await forwards.close(a, write_only=False)
        with pytest.raises(UnknownId):
            await forwards.read(a, 1)
        await forwards.close(b, write_only=False)
    finally:
        server.close()
        await server.wait_closed()


def test_agent_streams_both_ways_with_half_close() -> None:
    asyncio.run(_streams())


async def _refused() -> None:
    server = await asyncio.start_server(_echo_upper, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    forwards = PortForwards()
    with pytest.raises(BadValue, match=f"nothing accepts on localhost:{port} in the pod"):
        await forwards.open(port)
    for bad in (0, 65536):
        with pytest.raises(BadValue, match="must be 1-65535"):
            await forwards.open(bad)


def test_agent_names_a_port_nothing_listens_on() -> None:
    asyncio.run(_refused())
