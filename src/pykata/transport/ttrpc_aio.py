"""asyncio transport for ttrpc: a server for one connection and a client, thin over the codec.

Does: read bytes, feed `ttrpc.FrameDecoder`, run each request in its own task, write whole
frames under a lock, match responses to calls by stream id, turn deadlines into
DEADLINE_EXCEEDED. Must not: build or parse wire bytes itself (that is `ttrpc`), or know
any service; handlers arrive as a mapping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

from pykata.domain.errors import (
    DEADLINE_EXCEEDED,
    INVALID_ARGUMENT,
    OK,
    RESOURCE_EXHAUSTED,
    UNIMPLEMENTED,
    UNKNOWN,
    ProtocolError,
    RpcError,
)
from pykata.protocol.pb import ttrpc_pb2
from pykata.protocol.ttrpc import (
    MAX_DATA,
    Frame,
    FrameDecoder,
    FrameType,
    OversizedFrame,
    decode_request,
    decode_response,
    request_frame,
    response_frame,
    response_payload,
)

Handler = Callable[[bytes], Awaitable[bytes]]

_READ_SIZE = 1 << 18
_log = logging.getLogger(__name__)


async def _frames(reader: asyncio.StreamReader) -> AsyncIterator[Frame | OversizedFrame]:
    decoder = FrameDecoder()
    while True:
        try:
            chunk = await reader.read(_READ_SIZE)
        except ConnectionError:
            return  # a reset ends the stream like EOF does
        if not chunk:
            return
        for item in decoder.feed(chunk):
            yield item


class _FrameWriter:
    """Writes whole frames; the lock keeps concurrent senders from interleaving them."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._lock = asyncio.Lock()

    async def send(self, frame: bytes) -> None:
        async with self._lock:
            self._writer.write(frame)
            await self._writer.drain()

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()


class TtrpcServer:
    """Answers ttrpc requests from `services[service][method]` handlers."""

    def __init__(self, services: Mapping[str, Mapping[str, Handler]]) -> None:
        self._services = services

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serves one connection until EOF, then closes it and cancels in-flight calls.

        Raises ProtocolError (after closing) when the peer breaks the framing.
        """
        out = _FrameWriter(writer)
        tasks: set[asyncio.Task[None]] = set()
        try:
            async for item in _frames(reader):
                task = asyncio.create_task(self._answer(out, item))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        finally:
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks)
            await out.close()

    async def _answer(self, out: _FrameWriter, item: Frame | OversizedFrame) -> None:
        if item.type != FrameType.REQUEST:
            return  # nothing answers a response sent to a server; ttrpc ignores it too
        if isinstance(item, OversizedFrame):
            frame = response_frame(
                item.stream_id, code=RESOURCE_EXHAUSTED,
                message=f"request of {item.length} bytes exceeds the limit of {MAX_DATA}",
            )
        else:
            frame = await self._respond(item)
        with contextlib.suppress(ConnectionError):  # the peer left; serve() is ending
            await out.send(frame)

    async def _respond(self, frame: Frame) -> bytes:
        sid = frame.stream_id
        if sid % 2 == 0:
            return response_frame(
                sid, code=INVALID_ARGUMENT, message=f"stream id {sid} is even; clients use odd"
            )
        try:
            req = decode_request(frame.data)
        except ProtocolError as exc:
            return response_frame(sid, code=INVALID_ARGUMENT, message=str(exc))
        code, message, payload = await self._call(req)
        try:
            return response_frame(sid, payload, code, message)
        except ProtocolError as exc:
            name = f"/{req.service}/{req.method}"
            return response_frame(sid, code=RESOURCE_EXHAUSTED, message=f"{name}: {exc}")

    async def _call(self, req: ttrpc_pb2.Request) -> tuple[int, str, bytes]:
        """Runs the handler: (status code, message, payload)."""
        service = self._services.get(req.service)
        if service is None:
            return UNIMPLEMENTED, f"service {req.service!r} is not served here", b""
        handler = service.get(req.method)
        if handler is None:
            return UNIMPLEMENTED, f"service {req.service!r} has no method {req.method!r}", b""
        seconds = req.timeout_nano / 1e9 if req.timeout_nano > 0 else None
        deadline = asyncio.timeout(seconds)
        try:
            async with deadline:
                payload = await handler(req.payload)
        except RpcError as exc:
            return exc.code, exc.message, b""
        except Exception as exc:
            name = f"/{req.service}/{req.method}"
            if deadline.expired():
                return DEADLINE_EXCEEDED, f"{name}: deadline of {seconds}s passed", b""
            _log.warning("ttrpc handler %s failed", name, exc_info=True)
            return UNKNOWN, str(exc) or type(exc).__name__, b""
        return OK, "", payload


class TtrpcClient:
    """Makes unary ttrpc calls over one connection; many may be in flight at once."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._out = _FrameWriter(writer)
        self._writer = writer
        self._next_id = 1
        self._pending: dict[int, tuple[str, asyncio.Future[bytes]]] = {}
        self._closed: str | None = None
        self._receiver = asyncio.create_task(self._receive(reader))

    @classmethod
    async def connect_unix(cls, path: str) -> TtrpcClient:
        """Raises OSError when nothing listens at `path` (callers may retry)."""
        reader, writer = await asyncio.open_unix_connection(path)
        return cls(reader, writer)

    async def call(
        self, service: str, method: str, payload: bytes, timeout: float | None = None
    ) -> bytes:
        """Raises RpcError for a non-OK status or a missed deadline, ProtocolError when
        the request is too big or the connection is gone."""
        name = f"/{service}/{method}"
        if self._closed is not None:
            raise ProtocolError(f"{name}: connection closed ({self._closed})")
        sid = self._next_id
        nanos = 0 if timeout is None else max(1, int(timeout * 1e9))
        try:
            frame = request_frame(sid, service, method, payload, nanos)
        except ProtocolError as exc:
            raise ProtocolError(f"{name}: {exc}") from exc
        self._next_id += 2
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[sid] = (name, future)
        try:
            async with asyncio.timeout(timeout):
                await self._out.send(frame)
                return await future
        except TimeoutError:
            raise RpcError(name, DEADLINE_EXCEEDED, f"no answer within {timeout}s") from None
        except ConnectionError as exc:
            raise ProtocolError(f"{name}: connection closed ({exc})") from exc
        finally:
            del self._pending[sid]

    async def close(self) -> None:
        if self._closed is None:
            self._closed = "closed by this client"
        self._receiver.cancel()
        await asyncio.wait([self._receiver])
        await self._out.close()

    async def _receive(self, reader: asyncio.StreamReader) -> None:
        reason = "closed by peer"
        try:
            async for item in _frames(reader):
                self._deliver(item)
        except ProtocolError as exc:
            reason = str(exc)
        finally:
            self._closed = self._closed or reason
            for name, future in self._pending.values():
                if not future.done():
                    future.set_exception(
                        ProtocolError(f"{name}: connection closed ({self._closed})")
                    )
            self._writer.close()

    def _deliver(self, item: Frame | OversizedFrame) -> None:
        entry = self._pending.get(item.stream_id)
        if entry is None or entry[1].done() or item.type != FrameType.RESPONSE:
            return  # a late answer to a call that gave up, or a frame no call waits for
        name, future = entry
        if isinstance(item, OversizedFrame):
            future.set_exception(RpcError(
                name, RESOURCE_EXHAUSTED,
                f"response of {item.length} bytes exceeds the limit of {MAX_DATA}",
            ))
            return
        try:
            future.set_result(response_payload(name, decode_response(item.data)))
        except RpcError as exc:
            future.set_exception(exc)
        except ProtocolError as exc:
            future.set_exception(ProtocolError(f"{name}: {exc}"))
