"""The event Publisher against a real in-process ttrpc Events service on a unix socket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import pytest

from pykata.protocol.pb import events_pb2 as ev
from pykata.shim import events
from pykata.shim.events import EVENTS_SERVICE, Publisher
from pykata.transport.ttrpc_aio import TtrpcServer


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 5))


class EventSink:
    """containerd's side: Events/Forward, recording (topic, event) in arrival order."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str, ev.Envelope]] = []
        self.stall = False  # answer nothing (a hung containerd)
        self.arrived = asyncio.Event()

    async def forward(self, payload: bytes) -> bytes:
        env = ev.ForwardRequest.FromString(payload).envelope
        if self.stall:
            await asyncio.Event().wait()
        self.received.append((env.topic, env.event.type_url, env))
        self.arrived.set()
        return b""  # google.protobuf.Empty

    @property
    def topics(self) -> list[str]:
        return [topic for topic, _, _ in self.received]


@contextlib.asynccontextmanager
async def events_server(path: Path) -> AsyncIterator[EventSink]:
    sink = EventSink()
    ttrpc = TtrpcServer({EVENTS_SERVICE: {"Forward": sink.forward}})
    connections: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        connections.add(task)
        await ttrpc.serve(reader, writer)

    server = await asyncio.start_unix_server(serve, str(path))
    try:
        yield sink
    finally:
        server.close()
        await server.wait_closed()
        # The publisher has closed its connection: let each one end on its own.
        if connections:
            await asyncio.wait(connections, timeout=1)


def _exit(cid: str, status: int) -> ev.TaskExit:
    return ev.TaskExit(container_id=cid, id=cid, pid=1, exit_status=status)


def test_events_arrive_in_publish_order(tmp_path: Path) -> None:
    async def body() -> None:
        async with events_server(tmp_path / "ttrpc.sock") as sink:
            pub = Publisher(str(tmp_path / "ttrpc.sock"), "k8s.io")
            pub.publish("/tasks/create", ev.TaskCreate(container_id="c1"))
            pub.publish("/tasks/start", ev.TaskStart(container_id="c1"))
            for i in range(20):
                pub.publish("/tasks/exec-added",
                            ev.TaskExecAdded(container_id="c1", exec_id=f"e{i}"))
            pub.publish("/tasks/exit", _exit("c1", 7))
            pub.publish("/tasks/delete", ev.TaskDelete(container_id="c1", exit_status=7))
            await pub.close()
            assert sink.topics == ["/tasks/create", "/tasks/start",
                                   *["/tasks/exec-added"] * 20, "/tasks/exit", "/tasks/delete"]
            execs = [ev.TaskExecAdded.FromString(env.event.value).exec_id
                     for topic, _, env in sink.received if topic == "/tasks/exec-added"]
            assert execs == [f"e{i}" for i in range(20)]
            topic, type_url, env = sink.received[-2]
            assert type_url == "containerd.events.TaskExit"
            assert env.namespace == "k8s.io"
            assert ev.TaskExit.FromString(env.event.value) == _exit("c1", 7)
    run(body())


def test_server_down_logs_and_drops(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events, "_RETRY_FOR", 0.1)

    async def body() -> None:
        pub = Publisher(str(tmp_path / "nobody.sock"), "default")
        pub.publish("/tasks/create", ev.TaskCreate(container_id="c1"))
        pub.publish("/tasks/start", ev.TaskStart(container_id="c1"))
        await asyncio.wait_for(pub.close(), 1)
    with caplog.at_level(logging.WARNING, logger="pykata.shim.events"):
        run(body())
    dropped = [r.getMessage() for r in caplog.records]
    assert len(dropped) == 2
    assert dropped[0].startswith("event /tasks/create not delivered")
    assert dropped[1].startswith("event /tasks/start not delivered")


def test_an_event_waits_for_the_server_to_come_back(tmp_path: Path) -> None:
    """containerd restarting: what was published meanwhile arrives, in order."""
    async def body() -> None:
        path = tmp_path / "ttrpc.sock"
        pub = Publisher(str(path), "default")
        pub.publish("/tasks/create", ev.TaskCreate(container_id="c1"))
        await asyncio.sleep(0.3)  # a few failed tries
        async with events_server(path) as sink:
            pub.publish("/tasks/start", ev.TaskStart(container_id="c1"))
            await pub.close()
            assert sink.topics == ["/tasks/create", "/tasks/start"]
    run(body())


def test_a_hung_server_costs_one_timeout_per_event(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events, "_SEND_TIMEOUT", 0.05)
    monkeypatch.setattr(events, "_RETRY_FOR", 0.01)

    async def body() -> None:
        async with events_server(tmp_path / "ttrpc.sock") as sink:
            pub = Publisher(str(tmp_path / "ttrpc.sock"), "default")
            sink.stall = True
            pub.publish("/tasks/create", ev.TaskCreate(container_id="c1"))
            await asyncio.wait_for(pub._queue.join(), 1)
            sink.stall = False
            pub.publish("/tasks/start", ev.TaskStart(container_id="c1"))
            await pub.close()
            assert sink.topics == ["/tasks/start"]
    run(body())


def test_close_flushes_the_queue(tmp_path: Path) -> None:
    async def body() -> None:
        async with events_server(tmp_path / "ttrpc.sock") as sink:
            pub = Publisher(str(tmp_path / "ttrpc.sock"), "default")
            for i in range(50):
                pub.publish("/tasks/exit", _exit(f"c{i}", i))
            assert sink.received == []  # nothing sent until the loop runs the sender
            await pub.close()
            assert [ev.TaskExit.FromString(env.event.value).exit_status
                    for _, _, env in sink.received] == list(range(50))
    run(body())


def test_close_gives_up_after_its_timeout(tmp_path: Path) -> None:
    async def body() -> None:
        async with events_server(tmp_path / "ttrpc.sock") as sink:
            sink.stall = True
            pub = Publisher(str(tmp_path / "ttrpc.sock"), "default")
            pub.publish("/tasks/exit", _exit("c1", 0))
            await asyncio.wait_for(pub.close(timeout=0.05), 1)
            assert sink.received == []
    run(body())


def test_no_address_publishes_nothing() -> None:
    async def body() -> None:
        pub = Publisher("", "default")
        pub.publish("/tasks/create", ev.TaskCreate(container_id="c1"))
        assert pub._queue.empty()
        await pub.close()
    run(body())
