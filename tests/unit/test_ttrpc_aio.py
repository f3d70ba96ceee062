"""The asyncio ttrpc transport over real unix socket pairs."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import pytest

from pykata.domain.errors import (
    DEADLINE_EXCEEDED,
    INVALID_ARGUMENT,
    NOT_FOUND,
    OK,
    RESOURCE_EXHAUSTED,
    UNIMPLEMENTED,
    UNKNOWN,
    ProtocolError,
    RpcError,
)
from pykata.protocol import ttrpc
from pykata.protocol.ttrpc import MAX_DATA, Frame, FrameDecoder, FrameType, OversizedFrame
from pykata.transport.ttrpc_aio import Handler, TtrpcClient, TtrpcServer

SVC = "test.v1.Svc"
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 5))


async def socket_pair() -> tuple[Streams, Streams]:
    a, b = socket.socketpair()
    return await asyncio.open_connection(sock=a), await asyncio.open_connection(sock=b)


class RawPeer:
    """The other end, speaking frames by hand."""

    def __init__(self, streams: Streams) -> None:
        self.reader, self.writer = streams
        self.decoder = FrameDecoder()
        self.backlog: list[Frame | OversizedFrame] = []

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def frames(self, n: int) -> list[Frame]:
        while len(self.backlog) < n:
            chunk = await self.reader.read(1 << 18)
            assert chunk, f"EOF after {len(self.backlog)} of {n} frames"
            self.backlog += self.decoder.feed(chunk)
        out, self.backlog = self.backlog[:n], self.backlog[n:]
        assert all(isinstance(f, Frame) for f in out)
        return [f for f in out if isinstance(f, Frame)]

    async def status(self, n: int) -> list[tuple[int, int, str, bytes]]:
        """(stream id, code, message, payload) of the next n response frames."""
        result = []
        for frame in await self.frames(n):
            assert frame.type == FrameType.RESPONSE
            resp = ttrpc.decode_response(frame.data)
            result.append((frame.stream_id, resp.status.code, resp.status.message, resp.payload))
        return result


class Handlers:
    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.done: list[str] = []

    async def echo(self, payload: bytes) -> bytes:
        self.done.append("echo")
        return payload

    async def gated(self, payload: bytes) -> bytes:
        await self.gate.wait()
        self.done.append("gated")
        return b"gated:" + payload

    async def hang(self, payload: bytes) -> bytes:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return b""

    async def not_found(self, payload: bytes) -> bytes:
        raise RpcError("/x/NotFound", NOT_FOUND, "container 'c9' not found")

    async def crash(self, payload: bytes) -> bytes:
        raise ValueError("bad value 7")

    async def huge(self, payload: bytes) -> bytes:
        return bytes(MAX_DATA)

    def services(self) -> dict[str, dict[str, Handler]]:
        methods: dict[str, Handler] = {
            "Echo": self.echo, "Gated": self.gated, "Hang": self.hang,
            "NotFound": self.not_found, "Crash": self.crash, "Huge": self.huge,
        }
        return {SVC: methods}


@contextlib.asynccontextmanager
async def served(handlers: Handlers) -> AsyncIterator[TtrpcClient]:
    client_side, server_side = await socket_pair()
    server = asyncio.create_task(TtrpcServer(handlers.services()).serve(*server_side))
    client = TtrpcClient(*client_side)
    try:
        yield client
    finally:
        await client.close()
        await asyncio.wait_for(server, 1)


@contextlib.asynccontextmanager
async def raw_client(handlers: Handlers) -> AsyncIterator[RawPeer]:
    client_side, server_side = await socket_pair()
    server = asyncio.create_task(TtrpcServer(handlers.services()).serve(*server_side))
    peer = RawPeer(client_side)
    try:
        yield peer
    finally:
        peer.writer.close()
        await asyncio.wait_for(server, 1)


@contextlib.asynccontextmanager
async def raw_server() -> AsyncIterator[tuple[TtrpcClient, RawPeer]]:
    client_side, server_side = await socket_pair()
    client = TtrpcClient(*client_side)
    peer = RawPeer(server_side)
    try:
        yield client, peer
    finally:
        await client.close()
        peer.writer.close()


def test_slow_call_does_not_block_a_fast_one() -> None:
    async def main() -> None:
        h = Handlers()
        async with served(h) as client:
            slow = asyncio.create_task(client.call(SVC, "Gated", b"1"))
            assert await client.call(SVC, "Echo", b"fast") == b"fast"
            assert not slow.done()
            h.gate.set()
            assert await slow == b"gated:1"
            assert h.done == ["echo", "gated"]
    run(main())


def test_server_answers_out_of_order_on_the_right_streams() -> None:
    async def main() -> None:
        h = Handlers()
        async with raw_client(h) as peer:
            await peer.send(ttrpc.request_frame(1, SVC, "Gated", b"a")
                            + ttrpc.request_frame(3, SVC, "Echo", b"b"))
            assert await peer.status(1) == [(3, OK, "", b"b")]
            h.gate.set()
            assert await peer.status(1) == [(1, OK, "", b"gated:a")]
    run(main())


def test_client_matches_out_of_order_responses_by_stream_id() -> None:
    async def main() -> None:
        async with raw_server() as (client, peer):
            calls = [asyncio.create_task(client.call(SVC, "Echo", bytes([i]))) for i in range(3)]
            requests = await peer.frames(3)
            assert [f.stream_id for f in requests] == [1, 3, 5]
            for frame in reversed(requests):
                payload = ttrpc.decode_request(frame.data).payload
                await peer.send(ttrpc.response_frame(frame.stream_id, b"r" + payload))
            assert await asyncio.gather(*calls) == [b"r\x00", b"r\x01", b"r\x02"]
    run(main())


@pytest.mark.parametrize(
    ("service", "method", "code", "message"),
    [
        (SVC, "NotFound", NOT_FOUND, "container 'c9' not found"),
        (SVC, "Crash", UNKNOWN, "bad value 7"),
        (SVC, "Nope", UNIMPLEMENTED, "service 'test.v1.Svc' has no method 'Nope'"),
        ("no.Such", "Echo", UNIMPLEMENTED, "service 'no.Such' is not served here"),
        (SVC, "Huge", RESOURCE_EXHAUSTED, "exceeds the ttrpc limit"),
    ],
    ids=["rpc-error", "exception", "unknown-method", "unknown-service", "huge-response"],
)
def test_error_status_mapping(service: str, method: str, code: int, message: str) -> None:
    async def main() -> None:
        async with served(Handlers()) as client:
            with pytest.raises(RpcError) as info:
                await client.call(service, method, b"")
            assert info.value.code == code
            assert message in info.value.message
            assert info.value.method == f"/{service}/{method}"
            assert await client.call(SVC, "Echo", b"still up") == b"still up"
    run(main())


def test_client_timeout_is_deadline_exceeded_and_connection_stays_usable() -> None:
    async def main() -> None:
        h = Handlers()
        async with served(h) as client:
            with pytest.raises(RpcError) as info:
                await client.call(SVC, "Hang", b"", timeout=0.05)
            assert info.value.code == DEADLINE_EXCEEDED
            assert await client.call(SVC, "Echo", b"after", timeout=1) == b"after"
    run(main())


def test_server_honours_timeout_nano() -> None:
    async def main() -> None:
        h = Handlers()
        async with raw_client(h) as peer:
            await peer.send(ttrpc.request_frame(1, SVC, "Hang", b"", timeout_nano=50_000_000))
            [(sid, code, message, _)] = await peer.status(1)
            assert (sid, code) == (1, DEADLINE_EXCEEDED)
            assert "/test.v1.Svc/Hang: deadline of 0.05s passed" in message
            assert h.cancelled.is_set()
    run(main())


@pytest.mark.parametrize(
    ("wire", "code", "message"),
    [
        (ttrpc.request_frame(2, SVC, "Echo", b""), INVALID_ARGUMENT, "stream id 2 is even"),
        (ttrpc.encode_frame(Frame(1, FrameType.REQUEST, 0, b"\xff")), INVALID_ARGUMENT,
         "malformed ttrpc request"),
    ],
    ids=["even-stream", "bad-protobuf"],
)
def test_server_rejects_bad_requests(wire: bytes, code: int, message: str) -> None:
    async def main() -> None:
        async with raw_client(Handlers()) as peer:
            await peer.send(wire + ttrpc.request_frame(3, SVC, "Echo", b"ok"))
            [first, second] = await peer.status(2)
            assert first[1] == code and message in first[2]
            assert second == (3, OK, "", b"ok")
    run(main())


def test_oversized_request_is_resource_exhausted_and_connection_survives() -> None:
    async def main() -> None:
        async with raw_client(Handlers()) as peer:
            size = MAX_DATA + 1
            await peer.send(struct.pack(">IIBB", size, 1, FrameType.REQUEST, 0) + bytes(size))
            await peer.send(ttrpc.request_frame(3, SVC, "Echo", b"next"))
            [(sid, code, message, _), second] = await peer.status(2)
            assert (sid, code) == (1, RESOURCE_EXHAUSTED)
            assert "4194305 bytes exceeds" in message
            assert second == (3, OK, "", b"next")
    run(main())


def test_largest_request_round_trips() -> None:
    async def main() -> None:
        overhead = len(ttrpc.encode_request(SVC, "Echo", bytes(MAX_DATA))) - MAX_DATA
        payload = bytes(range(256)) * ((MAX_DATA - overhead) // 256) + b"tail"
        payload = payload[: MAX_DATA - overhead]
        async with served(Handlers()) as client:
            assert await client.call(SVC, "Echo", payload) == payload
    run(main())


def test_oversized_client_request_fails_before_sending() -> None:
    async def main() -> None:
        async with raw_server() as (client, peer):
            with pytest.raises(ProtocolError, match="/test.v1.Svc/Echo: .*exceeds"):
                await client.call(SVC, "Echo", bytes(MAX_DATA))
            call = asyncio.create_task(client.call(SVC, "Echo", b"small"))
            [frame] = await peer.frames(1)
            assert frame.stream_id == 1  # nothing was sent, no stream id used
            await peer.send(ttrpc.response_frame(1, b"fine"))
            assert await call == b"fine"
    run(main())


def test_oversized_response_fails_that_call() -> None:
    async def main() -> None:
        async with raw_server() as (client, peer):
            call = asyncio.create_task(client.call(SVC, "Echo", b""))
            await peer.frames(1)
            size = MAX_DATA + 5
            await peer.send(struct.pack(">IIBB", size, 1, FrameType.RESPONSE, 0) + bytes(size))
            with pytest.raises(RpcError) as info:
                await call
            assert info.value.code == RESOURCE_EXHAUSTED
    run(main())


def test_connection_loss_fails_pending_and_later_calls() -> None:
    async def main() -> None:
        async with raw_server() as (client, peer):
            calls = [asyncio.create_task(client.call(SVC, "Echo", b"")) for _ in range(2)]
            await peer.frames(2)
            peer.writer.close()
            for call in calls:
                with pytest.raises(ProtocolError, match="connection closed"):
                    await call
            with pytest.raises(ProtocolError, match="connection closed"):
                await client.call(SVC, "Echo", b"")
    run(main())


def test_malformed_frame_from_server_fails_pending_calls() -> None:
    async def main() -> None:
        async with raw_server() as (client, peer):
            call = asyncio.create_task(client.call(SVC, "Echo", b""))
            await peer.frames(1)
            await peer.send(struct.pack(">IIBB", 0, 1, 9, 0))
            with pytest.raises(ProtocolError, match="unknown type 9"):
                await call
    run(main())


def test_malformed_frame_ends_serve_with_protocol_error() -> None:
    async def main() -> None:
        client_side, server_side = await socket_pair()
        serve = asyncio.create_task(TtrpcServer(Handlers().services()).serve(*server_side))
        client_side[1].write(struct.pack(">IIBB", 0, 1, 7, 0))
        with pytest.raises(ProtocolError, match="unknown type 7"):
            await serve
        assert await client_side[0].read() == b""  # the server closed its end
        client_side[1].close()
    run(main())


def test_closing_the_connection_cancels_in_flight_handlers() -> None:
    async def main() -> None:
        h = Handlers()
        async with served(h) as client:
            call = asyncio.create_task(client.call(SVC, "Hang", b""))
            await asyncio.sleep(0.01)
        assert h.cancelled.is_set()
        with pytest.raises(ProtocolError, match="closed by this client"):
            await call
    run(main())


def test_connect_unix(tmp_path: Path) -> None:
    async def main() -> None:
        path = str(tmp_path / "agent.sock")
        server = await asyncio.start_unix_server(TtrpcServer(Handlers().services()).serve, path)
        async with server:
            client = await TtrpcClient.connect_unix(path)
            assert await client.call(SVC, "Echo", b"hi") == b"hi"
            await client.close()
    run(main())
