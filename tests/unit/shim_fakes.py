"""Fakes for the shim's Task service tests: a scripted agent, a sandbox that is already
booted, a publisher that records, and a harness that runs one scenario per asyncio loop.

Imported by the test_shim_service*.py modules (pytest puts this directory on sys.path).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from google.protobuf.message import Message

from pykata.domain.errors import ProtocolError, PykataError, RpcError, StateError
from pykata.domain.limits import Limits
from pykata.domain.spec import Spec, default_spec
from pykata.plan.sizing import ResizeTarget
from pykata.protocol.pb import shim_pb2 as pb
from pykata.sandbox.sandbox import Sandbox
from pykata.sandbox.state import SandboxState
from pykata.shim.bundle import BootRequest
from pykata.shim.events import Publisher
from pykata.shim.service import TaskService

QEMU_PID = 4912


@dataclass
class FakeProcess:
    """One process in the fake guest: output to hand out once started, an exit to report."""
    stdout: list[bytes] = field(default_factory=list)
    stderr: list[bytes] = field(default_factory=list)
    stdin: bytearray = field(default_factory=bytearray)
    stdin_closed: bool = False
    started: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    status: int = 0
    oom_killed: bool = False
    waits_answered: int = 0


class FakeAgent:
    """Scripted stand-in for AgentClient. A process exists once the sandbox created it (or
    an exec started); it ends when the test calls `finish`, on SIGKILL/SIGTERM, or on
    removal. `lose()` is the connection dying: every call fails with ProtocolError."""

    def __init__(self) -> None:
        self.procs: dict[tuple[str, str], FakeProcess] = {}
        self.calls: list[tuple[Any, ...]] = []
        self.lost = False
        self.on_start: Callable[[str], Awaitable[None]] | None = None
        self.remove_errors: list[Exception] = []  # raised by the next RemoveContainer calls

    def proc(self, cid: str, eid: str = "") -> FakeProcess:
        return self.procs.setdefault((cid, eid), FakeProcess())

    def finish(self, cid: str, eid: str = "", status: int = 0) -> None:
        p = self.proc(cid, eid)
        if not p.done.is_set():
            p.status = status
            p.done.set()

    def lose(self) -> None:
        self.lost = True
        for p in self.procs.values():
            p.done.set()

    def _check(self, method: str) -> None:
        if self.lost:
            raise ProtocolError(f"agent {method}: connection closed")

    def _record(self, *call: Any) -> None:
        self._check(call[0])
        self.calls.append(call)

    def called(self, method: str) -> list[tuple[Any, ...]]:
        return [c[1:] for c in self.calls if c[0] == method]

    async def start_container(self, cid: str) -> None:
        self._record("start_container", cid)
        self.proc(cid).started.set()
        if self.on_start is not None:
            await self.on_start(cid)

    async def exec_process(self, cid: str, exec_id: str, process_json: bytes) -> None:
        self._record("exec_process", cid, exec_id, json.loads(process_json))
        if self.proc(cid, exec_id).done.is_set():  # an earlier exec of the same id
            del self.procs[(cid, exec_id)]
        self.proc(cid, exec_id).started.set()

    async def remove_container(self, cid: str) -> None:
        self._record("remove_container", cid)
        if self.remove_errors:
            raise self.remove_errors.pop(0)
        for (c, _), p in self.procs.items():
            if c == cid and not p.done.is_set():
                p.status = 128 + 9
                p.done.set()

    async def remove_process(self, cid: str, exec_id: str) -> None:
        self._record("remove_process", cid, exec_id)

    async def signal_process(self, cid: str, exec_id: str, signal: int,
                             all: bool = False) -> None:
        self._record("signal_process", cid, exec_id, signal, all)
        if signal in (9, 15):
            self.finish(cid, exec_id, 128 + signal)

    async def wait_process(self, cid: str, exec_id: str = "") -> int:
        return (await self.wait_exit(cid, exec_id))[0]

    async def wait_exit(self, cid: str, exec_id: str = "") -> tuple[int, bool]:
        p = self.proc(cid, exec_id)
        await p.done.wait()
        self._check("WaitProcess")
        p.waits_answered += 1
        return p.status, p.oom_killed

    async def _read(self, cid: str, exec_id: str, chunks: Callable[[FakeProcess], list[bytes]]
                    ) -> bytes:
        p = self.proc(cid, exec_id)
        waiters = [asyncio.ensure_future(e.wait()) for e in (p.started, p.done)]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
        self._check("ReadStream")
        if chunks(p):
            return chunks(p).pop(0)
        await p.done.wait()
        self._check("ReadStream")
        return b""

    async def read_stdout(self, cid: str, exec_id: str = "") -> bytes:
        return await self._read(cid, exec_id, lambda p: p.stdout)

    async def read_stderr(self, cid: str, exec_id: str = "") -> bytes:
        return await self._read(cid, exec_id, lambda p: p.stderr)

    async def write_stdin(self, cid: str, exec_id: str, data: bytes) -> int:
        self._check("WriteStdin")
        n = min(len(data), 5)  # short writes: the relay must loop
        self.proc(cid, exec_id).stdin += data[:n]
        return n

    async def close_stdin(self, cid: str, exec_id: str = "") -> None:
        self._check("CloseStdin")
        self.proc(cid, exec_id).stdin_closed = True

    async def tty_win_resize(self, cid: str, exec_id: str, rows: int, cols: int) -> None:
        self._record("tty_win_resize", cid, exec_id, rows, cols)

    async def pause_container(self, cid: str) -> None:
        self._record("pause_container", cid)

    async def resume_container(self, cid: str) -> None:
        self._record("resume_container", cid)

    async def list_processes(self, cid: str) -> list[int]:
        self._record("list_processes", cid)
        return [1, 7]

    async def stats_container(self, cid: str) -> Any:
        self._record("stats_container", cid)
        return SimpleNamespace(metrics=pb.ProcessInfo(pid=42))

    async def update_container(self, cid: str, resources_json: bytes) -> None:
        self._record("update_container", cid, json.loads(resources_json))


class FakeSandbox:
    """What TaskService uses of a Sandbox, already booted and running."""

    def __init__(self, sandbox_id: str, agent: FakeAgent) -> None:
        self.id, self._agent = sandbox_id, agent
        self.state = SandboxState.RUNNING
        self.containers: dict[str, str] = {}  # id -> rootfs
        self.vm = SimpleNamespace(qemu=SimpleNamespace(pid=QEMU_PID))
        self.create_error: Exception | None = None
        self.warnings: list[str] = []
        self.stops = 0
        self._vm_exit = asyncio.Event()
        self._vm_status = 0
        self.resizes: list[list[Limits]] = []

    @property
    def agent(self) -> FakeAgent:
        if self.state is not SandboxState.RUNNING:
            raise StateError("agent call", self.state.value, "running")
        return self._agent

    async def create_container(self, cid: str, spec: Spec, rootfs: str) -> list[str]:
        if self.create_error is not None:
            raise self.create_error
        self.containers[cid] = rootfs
        self._agent.proc(cid)
        return self.warnings

    async def remove_container(self, cid: str, in_guest: bool = True) -> None:
        if cid not in self.containers:
            if self.state is SandboxState.RUNNING:
                raise PykataError(f"no container {cid!r} in sandbox {self.id}")
            return
        try:
            if self.state is SandboxState.RUNNING and in_guest:
                await self._agent.remove_container(cid)
        finally:
            del self.containers[cid]

    async def resize(self, containers: Sequence[Limits]) -> ResizeTarget:
        if self.state is not SandboxState.RUNNING:
            raise StateError("resize", self.state.value, "running")
        self.resizes.append(list(containers))
        total = sum(containers, Limits())
        return ResizeTarget(1 + math.ceil(total.vcpus), 256 + total.memory_mib, ())

    async def wait_vm(self) -> str:
        await self._vm_exit.wait()
        return f"QEMU exited (status {self._vm_status})"

    def crash(self, status: int) -> None:
        """QEMU dies under a running sandbox."""
        self._vm_status = status
        self._vm_exit.set()

    async def stop(self) -> None:
        if self.state is SandboxState.STOPPED:
            return
        self.stops += 1
        self.state = SandboxState.STOPPED
        self.containers.clear()
        self._agent.lose()
        self._vm_exit.set()


class RecordingPublisher(Publisher):
    def __init__(self) -> None:
        super().__init__("", "default")
        self.published: list[tuple[str, Message]] = []

    def publish(self, topic: str, event: Message) -> None:
        self.published.append((topic, event))

    @property
    def topics(self) -> list[str]:
        return [topic for topic, _ in self.published]

    def of(self, topic: str) -> list[Any]:
        return [e for t, e in self.published if t == topic]

    def last(self, topic: str) -> Any:
        return self.of(topic)[-1]


class Shim:
    """A TaskService, its fakes and a directory for bundles."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.agent = FakeAgent()
        self.events = RecordingPublisher()
        self.boots: list[BootRequest] = []
        self.sandboxes: list[FakeSandbox] = []
        self.boot_error: Exception | None = None
        self.create_error: Exception | None = None  # for the sandboxes it boots
        self.service = TaskService("default", self.events, self._boot, "/etc/pykata.toml")

    async def _boot(self, req: BootRequest) -> Sandbox:
        self.boots.append(req)
        if self.boot_error is not None:
            raise self.boot_error
        self.sandboxes.append(FakeSandbox(req.role.sandbox_id, self.agent))
        self.sandbox.create_error = self.create_error
        return cast(Sandbox, self.sandboxes[-1])

    @property
    def sandbox(self) -> FakeSandbox:
        return self.sandboxes[-1]

    def bundle(self, task_id: str, annotations: dict[str, str] | None = None,
               resources: dict[str, Any] | None = None) -> str:
        path = self.root / task_id
        path.mkdir(exist_ok=True)
        doc = default_spec(["sh"])
        if annotations:
            doc["annotations"] = annotations
        if resources:
            doc["linux"]["resources"] = resources
        (path / "config.json").write_text(json.dumps(doc))
        return str(path)

    async def create(self, task_id: str, annotations: dict[str, str] | None = None,
                     resources: dict[str, Any] | None = None,
                     **stdio: Any) -> pb.CreateTaskResponse:
        return await self.service.Create(pb.CreateTaskRequest(
            id=task_id, bundle=self.bundle(task_id, annotations, resources), **stdio))

    async def start(self, task_id: str, exec_id: str = "") -> pb.StartResponse:
        return await self.service.Start(pb.StartRequest(id=task_id, exec_id=exec_id))

    async def wait(self, task_id: str, exec_id: str = "") -> pb.WaitResponse:
        return await self.service.Wait(pb.WaitRequest(id=task_id, exec_id=exec_id))

    async def delete(self, task_id: str, exec_id: str = "") -> pb.DeleteResponse:
        return await self.service.Delete(pb.DeleteRequest(id=task_id, exec_id=exec_id))

    async def state(self, task_id: str, exec_id: str = "") -> pb.StateResponse:
        return await self.service.State(pb.StateRequest(id=task_id, exec_id=exec_id))

    async def exec(self, task_id: str, exec_id: str, **fields: Any) -> None:
        spec = pb.ExecProcessRequest(id=task_id, exec_id=exec_id, **fields)
        spec.spec.type_url = "types.containerd.io/opencontainers/runtime-spec/1/Process"
        spec.spec.value = json.dumps({"args": ["ls"], "cwd": "/"}).encode()
        await self.service.Exec(spec)


Scenario = Callable[[Shim], Coroutine[Any, Any, None]]


def scenario(tmp_path: Path, body: Scenario) -> Shim:
    shim = Shim(tmp_path)

    async def run() -> None:
        try:
            await body(shim)
        finally:
            await shim.service.close()
    asyncio.run(asyncio.wait_for(run(), 5))
    return shim


async def rpc_error(code: int, call: Awaitable[Any], match: str = "") -> RpcError:
    try:
        await call
    except RpcError as exc:
        assert exc.code == code, exc
        assert match in exc.message, exc
        return exc
    raise AssertionError(f"expected an RpcError with code {code}")
