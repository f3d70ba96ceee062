"""TCP streams to localhost ports in the VM's network namespace, for the host's port-forward.

Each stream is one connection the agent makes to 127.0.0.1:<port>, else [::1]:<port>, in
its own network namespace, which is the pod's (its containers share it). The host reads
and writes a stream by id, as it does a process's stdio. Knows nothing of protobuf.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools

from pykata.domain.errors import BadValue, StateError, UnknownId

MAX_STREAMS = 256
MAX_READ = 1 << 20
_Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class PortForwards:
    def __init__(self) -> None:
        self._streams: dict[int, _Stream] = {}
        self._ids = itertools.count(1)

    async def open(self, port: int) -> int:
        if not 0 < port < 65536:
            raise BadValue("port", port, "must be 1-65535")
        if len(self._streams) >= MAX_STREAMS:
            raise StateError("port forward", f"{MAX_STREAMS} streams open", "fewer")
        failures = []
        for host in ("127.0.0.1", "::1"):
            try:
                stream = await asyncio.open_connection(host, port)
            except OSError as exc:
                failures.append(f"{host}: {exc.strerror or exc}")
                continue
            sid = next(self._ids)
            self._streams[sid] = stream
            return sid
        raise BadValue("port", port, f"nothing accepts on localhost:{port} in the pod "
                                     f"({'; '.join(failures)})")

    def _get(self, sid: int) -> _Stream:
        stream = self._streams.get(sid)
        if stream is None:
            raise UnknownId("port forward stream", str(sid))
        return stream

    async def read(self, sid: int, size: int) -> bytes:
        """Waits for data; empty at the end of the stream (or when the peer reset it)."""
        if size <= 0:
            raise BadValue("len", size, "must be at least 1")
        reader, _ = self._get(sid)
        try:
            return await reader.read(min(size, MAX_READ))
        except ConnectionError:
            return b""

    async def write(self, sid: int, data: bytes) -> int:
        if not data:
            raise BadValue("data", data, "must not be empty")
        _, writer = self._get(sid)
        writer.write(data)
        await writer.drain()
        return len(data)

    async def close(self, sid: int, write_only: bool) -> None:
        _, writer = self._get(sid)
        if write_only:
            if not writer.is_closing():
                writer.write_eof()
            return
        del self._streams[sid]
        writer.close()
        with contextlib.suppress(ConnectionError):  # the peer reset it: closed all the same
            await writer.wait_closed()
