"""Where the agent listens: the virtio-serial port, vsock port 1024, or a unix socket.

Finds the port by its name in /sys/class/virtio-ports, opens it and serves ttrpc on it;
when the host side goes away (EOF) it reopens the port and serves again. A port whose
host side is not connected reads as EOF at once, hence the short pause between tries.
Serving is `TtrpcServer.serve`; nothing here knows a service.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable

from pykata.agent.console import log, mark
from pykata.domain.errors import ProtocolError

Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

_PORT_POLL_S = 0.02
_REOPEN_PAUSE_S = 0.05
_WAIT_NOTICE_S = 5.0


def find_port(name: str, sys_dir: str = "/sys/class/virtio-ports",
              dev_dir: str = "/dev") -> str | None:
    """/dev/vportNpM of the port named `name`, once the host has announced the name."""
    try:
        entries = sorted(os.listdir(sys_dir))
    except FileNotFoundError:
        return None
    for entry in entries:
        try:
            with open(os.path.join(sys_dir, entry, "name")) as f:
                if f.read().strip() != name:
                    continue
        except OSError:
            continue
        path = os.path.join(dev_dir, entry)
        if os.path.exists(path):
            return path
    return None


async def wait_for_port(name: str) -> str:
    """Polls: the port appears once virtio_console has probed and the host named it."""
    polls_before_notice = int(_WAIT_NOTICE_S / _PORT_POLL_S)
    while (path := find_port(name)) is None:
        polls_before_notice -= 1
        if polls_before_notice == 0:
            log(f"still waiting for virtio-serial port {name!r} (is virtio_console loaded?)")
        await asyncio.sleep(_PORT_POLL_S)
    return path


async def open_char_device(path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """asyncio streams over one open of a character device (read and write fds dup'ed)."""
    loop = asyncio.get_running_loop()
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        read_file = os.fdopen(os.dup(fd), "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise
    write_file = os.fdopen(fd, "wb", buffering=0)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), read_file)
    # A StreamReaderProtocol on the write side too: it gives StreamWriter its drain and
    # close waiters; its own reader is never fed.
    write_side = asyncio.StreamReaderProtocol(asyncio.StreamReader())
    transport, _ = await loop.connect_write_pipe(lambda: write_side, write_file)
    return reader, asyncio.StreamWriter(transport, write_side, reader, loop)


async def serve_connection(serve: Serve, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter, where: str) -> None:
    try:
        await serve(reader, writer)
    except (ProtocolError, ConnectionError) as exc:
        log(f"{where}: connection dropped: {exc}")


async def serve_virtio_port(serve: Serve, name: str) -> None:
    """Forever: find the port, serve one host session, pause, reopen."""
    path = await wait_for_port(name)
    mark("serving", f"serving on {path} ({name})")
    while True:
        try:
            reader, writer = await open_char_device(path)
        except OSError as exc:
            log(f"cannot open {path}: {exc}")
            path = await wait_for_port(name)
        else:
            await serve_connection(serve, reader, writer, path)
        await asyncio.sleep(_REOPEN_PAUSE_S)


async def serve_vsock(serve: Serve, port: int) -> None:
    sock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    try:
        sock.bind((socket.VMADDR_CID_ANY, port))
    except OSError:
        sock.close()
        raise
    server = await asyncio.start_server(
        lambda r, w: serve_connection(serve, r, w, f"vsock:{port}"), sock=sock)
    log(f"serving on vsock port {port}")
    async with server:
        await server.serve_forever()


async def serve_unix(serve: Serve, path: str) -> None:
    """Host mode (tests, debugging): a unix socket instead of the VM's ports."""
    server = await asyncio.start_unix_server(
        lambda r, w: serve_connection(serve, r, w, path), path=path)
    async with server:
        await server.serve_forever()
