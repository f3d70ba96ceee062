"""containerd's stdio endpoints for one process: FIFOs (or `file://` logs) on the host.

containerd (or `ctr`) creates the FIFOs and opens its ends before it asks the shim to
create or start the process. Output goes to a `Sink`; when nothing reads any more (the
client left) it is dropped, so the container never blocks on a full pipe. Stdin comes from
a `Source` that holds a writer of its own on the FIFO: containerd's client may open and
close its end whenever it likes, and only CloseIO ends stdin (as containerd's protocol
says), after everything already written has been read.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import stat

from pykata.domain.errors import StdioError

log = logging.getLogger(__name__)

_OPEN_RETRY_S = 2.0
_READ_SIZE = 1 << 16


class Sink:
    """Where a process's output goes: a FIFO, a file, or nowhere (an empty path)."""

    def __init__(self, fd: int | None, writer: asyncio.StreamWriter | None) -> None:
        self._fd, self._writer = fd, writer

    async def write(self, data: bytes) -> None:
        if self._writer is not None:
            if self._writer.is_closing():
                return
            self._writer.write(data)
            try:
                await self._writer.drain()
            except ConnectionError:
                log.debug("output reader went away; dropping output")
        elif self._fd is not None:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


async def open_sink(uri: str) -> Sink:
    if not uri:
        return Sink(None, None)
    if uri.startswith("file://"):
        path = uri[len("file://"):]
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        return Sink(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640),
                    None)
    if "://" in uri:
        raise StdioError(f"stdio URI {uri!r}: only FIFO paths and file:// are supported")
    fd = await _open_fifo_writer(uri)
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, os.fdopen(fd, "wb", buffering=0))
    return Sink(None, asyncio.StreamWriter(transport, protocol, None, loop))


async def _open_fifo_writer(path: str) -> int:
    _require_fifo(path)
    deadline = asyncio.get_running_loop().time() + _OPEN_RETRY_S
    while True:
        try:
            return os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            # ENXIO: no reader yet; containerd opens its end first, but allow a moment.
            if exc.errno != errno.ENXIO or asyncio.get_running_loop().time() > deadline:
                raise StdioError(f"cannot open output FIFO {path}: {exc.strerror}") from None
        await asyncio.sleep(0.01)


def _require_fifo(path: str) -> None:
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise StdioError(f"stdio {path}: {exc.strerror}") from None
    if not stat.S_ISFIFO(mode):
        raise StdioError(f"stdio {path}: not a FIFO")


class Source:
    """A stdin FIFO. `read()` returns b"" only after `close()` and the client's end closed."""

    def __init__(self, reader: asyncio.StreamReader, transport: asyncio.BaseTransport,
                 keeper: int) -> None:
        self._reader, self._transport, self._keeper = reader, transport, keeper

    async def read(self) -> bytes:
        return await self._reader.read(_READ_SIZE)

    def close(self) -> None:
        """containerd said stdin is done: let EOF through once its writer has closed."""
        if self._keeper >= 0:
            os.close(self._keeper)
            self._keeper = -1

    def abort(self) -> None:
        self.close()
        self._transport.close()


async def open_source(path: str) -> Source | None:
    if not path:
        return None
    _require_fifo(path)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        keeper = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        os.close(fd)
        raise
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    try:
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0))
    except BaseException:
        os.close(keeper)
        with contextlib.suppress(OSError):
            os.close(fd)
        raise
    return Source(reader, transport, keeper)
