"""containerd's stdio endpoints: real FIFOs and files in tmp_path, no containerd."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from pykata.domain.errors import StdioError
from pykata.shim import stdio
from pykata.shim.stdio import open_sink, open_source


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 5))


def fifo(tmp_path: Path, name: str) -> str:
    path = str(tmp_path / name)
    os.mkfifo(path)
    return path


def read_all(fd: int) -> bytes:
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return b"".join(chunks)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def test_sink_on_a_fifo_with_a_reader(tmp_path: Path) -> None:
    path = fifo(tmp_path, "stdout")
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)

    async def body() -> None:
        sink = await open_sink(path)
        await sink.write(b"hello ")
        await sink.write(b"world\n")
        assert read_all(reader) == b"hello world\n"
        sink.close()
        await asyncio.sleep(0)  # the transport closes its end on the next turn
        sink.close()  # twice is harmless
    try:
        run(body())
        assert os.read(reader, 10) == b""  # the writer end is closed: EOF
    finally:
        os.close(reader)


def test_sink_on_a_fifo_nobody_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stdio, "_OPEN_RETRY_S", 0.03)
    path = fifo(tmp_path, "stdout")

    async def body() -> None:
        with pytest.raises(StdioError, match=f"cannot open output FIFO {path}"):
            await open_sink(path)
    run(body())


def test_sink_survives_its_reader_going_away(tmp_path: Path) -> None:
    path = fifo(tmp_path, "stdout")
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)

    async def body() -> None:
        sink = await open_sink(path)
        await sink.write(b"seen")
        assert os.read(reader, 10) == b"seen"
        os.close(reader)
        for _ in range(10):  # EPIPE, then a closed transport: neither raises
            await sink.write(b"x" * 70_000)
        sink.close()
    run(body())


def test_sink_on_a_file_uri_appends(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "c1.log"

    async def body() -> None:
        for line in (b"one\n", b"two\n"):
            sink = await open_sink(f"file://{path}")
            await sink.write(line)
            sink.close()
    run(body())
    assert path.read_bytes() == b"one\ntwo\n"


def test_sink_on_empty_discards() -> None:
    async def body() -> None:
        sink = await open_sink("")
        await sink.write(b"into the void")
        sink.close()
    run(body())


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        pytest.param("plain", lambda p: p.write_bytes(b""), "not a FIFO", id="regular-file"),
        pytest.param("dir", lambda p: p.mkdir(), "not a FIFO", id="directory"),
        pytest.param("missing", lambda p: None, "No such file", id="missing"),
    ],
)
def test_stdio_path_must_be_a_fifo(tmp_path: Path, name: str, make: Any, message: str) -> None:
    path = tmp_path / name
    make(path)

    async def body() -> None:
        with pytest.raises(StdioError, match=f"stdio {path}: {message}"):
            await open_sink(str(path))
        with pytest.raises(StdioError, match=f"stdio {path}: {message}"):
            await open_source(str(path))
    run(body())


@pytest.mark.parametrize("uri", ["binary:///usr/bin/logger?x=1", "fifo:///x", "tcp://h:1"])
def test_sink_refuses_other_uris(uri: str) -> None:
    async def body() -> None:
        with pytest.raises(StdioError, match="only FIFO paths and file:// are supported") as e:
            await open_sink(uri)
        assert repr(uri) in str(e.value)
    run(body())


def test_source_on_empty_is_none() -> None:
    async def body() -> None:
        assert await open_source("") is None
    run(body())


async def _read_until_eof(source: stdio.Source) -> bytes:
    out = b""
    while chunk := await source.read():
        out += chunk
    return out


def test_source_reads_everything_then_eof_after_close(tmp_path: Path) -> None:
    path = fifo(tmp_path, "stdin")
    data = bytes(range(256)) * 200  # 51200 bytes: fits the pipe, more than one read

    async def body() -> None:
        source = await open_source(path)
        assert source is not None
        client = os.open(path, os.O_WRONLY)
        os.write(client, data)
        os.close(client)  # the client's end closes: no EOF yet, the shim holds a writer
        got = b""
        while len(got) < len(data):
            got += await source.read()
        assert got == data
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(source.read(), 0.02)
        source.close()  # CloseIO: now EOF
        assert await asyncio.wait_for(source.read(), 1) == b""
        source.abort()
    run(body())


def test_source_close_before_the_data_is_read_loses_nothing(tmp_path: Path) -> None:
    path = fifo(tmp_path, "stdin")

    async def body() -> None:
        source = await open_source(path)
        assert source is not None
        client = os.open(path, os.O_WRONLY)
        os.write(client, b"last words\n")
        source.close()
        source.close()  # twice is harmless
        # The client still holds its end: no EOF until it closes too.
        assert await asyncio.wait_for(source.read(), 1) == b"last words\n"
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(source.read(), 0.02)
        os.write(client, b"more\n")
        os.close(client)
        assert await asyncio.wait_for(_read_until_eof(source), 1) == b"more\n"
        source.abort()
    run(body())


def test_source_survives_clients_coming_and_going(tmp_path: Path) -> None:
    path = fifo(tmp_path, "stdin")

    async def body() -> None:
        source = await open_source(path)
        assert source is not None
        for word in (b"a", b"b", b"c"):
            client = os.open(path, os.O_WRONLY)
            os.write(client, word)
            os.close(client)
        source.close()
        assert await asyncio.wait_for(_read_until_eof(source), 1) == b"abc"
        source.abort()
    run(body())
