"""Container operations: create, start, exec, signal, wait, stdio, remove.

Checks ids and states through the registry, then does the work with the OCI runtime
adapter and the stdio pipes. Operations that change runtime state run shielded: a caller
that goes away (the host disconnected) must not leave a container half-created. Knows
nothing of protobuf or ttrpc; errors are PykataErrors that the handler table maps.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from typing import Any

from pykata.agent.bundle import prepare_process, prepare_spec
from pykata.agent.config import AgentConfig
from pykata.agent.console import log
from pykata.agent.reaper import Reaper
from pykata.agent.registry import (
    TRANSITIONS,
    BadValue,
    Container,
    DuplicateId,
    Event,
    Process,
    Registry,
    State,
    check_id,
)
from pykata.agent.runtime import OciRuntime
from pykata.agent.stdio import MAX_READ, PipeReader, ProcessStdio
from pykata.agent.storage import MountPlan, Storage, System, plan_mount
from pykata.domain.errors import StateError

_MAX_SIGNAL = 64
# After `delete --force` the init dies at once; don't hang removal if it does not.
_KILL_GRACE_S = 5.0


class Containers:
    def __init__(self, config: AgentConfig, reaper: Reaper, runtime: OciRuntime,
                 system: System) -> None:
        self._config, self._reaper, self._runtime, self._system = config, reaper, runtime, system
        self.registry = Registry()

    def _bundle(self, cid: str) -> str:
        return os.path.join(self._config.state_dir, "containers", cid)

    async def create(self, cid: str, spec_json: bytes, storages: Sequence[Storage]) -> None:
        check_id("container_id", cid)
        spec = prepare_spec(cid, spec_json, self._config.shared_root)
        plans = [plan_mount(s) for s in storages]
        container = self.registry.reserve(cid, self._bundle(cid))
        await asyncio.shield(self._create(container, spec, plans))

    async def _create(self, c: Container, spec: dict[str, Any], plans: list[MountPlan]) -> None:
        stdio: ProcessStdio | None = None
        try:
            os.makedirs(c.bundle, exist_ok=True)
            _write_json(os.path.join(c.bundle, "config.json"), spec)
            for plan in plans:
                self._system.mount(plan)
                c.mounts.append(plan.target)
            if not os.path.isdir(spec["root"]["path"]):
                raise BadValue("root.path", spec["root"]["path"],
                               f"container {c.id!r}: no such directory")
            stdio = ProcessStdio()
            assert stdio.child_fds is not None
            pid = await self._runtime.create(c.id, c.bundle, os.path.join(c.bundle, "init.pid"),
                                             stdio.child_fds)
        except BaseException:
            if stdio is not None:
                stdio.close()
            self._forget(c)
            raise
        stdio.release_child_fds()
        c.init = Process("", pid, stdio, self._reaper.watch(pid))
        c.advance(Event.CREATED)
        c.init.exit.add_done_callback(lambda _: self._init_exited(c))
        log(f"container {c.id} created, init pid {pid}")

    def _init_exited(self, c: Container) -> None:
        if (c.state, Event.EXITED) in TRANSITIONS:
            c.advance(Event.EXITED)
        if c.init is not None:
            log(f"container {c.id} init exited with {c.init.exit.result()}")

    async def start(self, cid: str) -> None:
        c = self.registry.get(cid)
        c.advance(Event.START)
        await asyncio.shield(self._start(c))

    async def _start(self, c: Container) -> None:
        try:
            await self._runtime.start(c.id, c.bundle)
        except BaseException:
            if c.state is State.STARTING:
                c.advance(Event.START_FAILED)
            raise
        if c.state is State.STARTING:  # else the init already exited: STOPPED stands
            c.advance(Event.STARTED)

    async def exec(self, cid: str, exec_id: str, process_json: bytes) -> None:
        c = self.registry.get(cid)
        check_id("exec_id", exec_id)
        process = prepare_process(cid, exec_id, process_json)
        c.require("exec")
        if exec_id in c.execs:
            raise DuplicateId("exec", exec_id, f"container {cid!r}")
        c.execs[exec_id] = None  # reserved while the runtime works
        await asyncio.shield(self._exec(c, exec_id, process))

    async def _exec(self, c: Container, exec_id: str, process: dict[str, Any]) -> None:
        stdio: ProcessStdio | None = None
        try:
            path = os.path.join(c.bundle, f"exec-{exec_id}.json")
            _write_json(path, process)
            stdio = ProcessStdio()
            assert stdio.child_fds is not None
            pid = await self._runtime.exec(c.id, c.bundle, path,
                                           os.path.join(c.bundle, f"exec-{exec_id}.pid"),
                                           stdio.child_fds)
        except BaseException:
            if stdio is not None:
                stdio.close()
            c.execs.pop(exec_id, None)
            raise
        stdio.release_child_fds()
        c.execs[exec_id] = Process(exec_id, pid, stdio, self._reaper.watch(pid))

    def signal(self, cid: str, exec_id: str, signum: int) -> None:
        if not 0 < signum <= _MAX_SIGNAL:
            raise BadValue("signal", signum, f"must be 1-{_MAX_SIGNAL}")
        c = self.registry.get(cid)
        proc = c.process(exec_id)
        if not exec_id:
            c.require("signal")
        if proc.exit.done():
            raise StateError(_describe(c, exec_id), "exited", "running")
        # We alone reap this pid, and it is not reaped yet: it cannot have been reused.
        os.kill(proc.pid, signum)

    async def wait(self, cid: str, exec_id: str) -> int:
        proc = self.registry.get(cid).process(exec_id)
        return await asyncio.shield(proc.exit)

    async def read(self, cid: str, exec_id: str, stream: str, size: int) -> bytes:
        if size <= 0:
            raise BadValue("len", size, "must be at least 1")
        proc = self.registry.get(cid).process(exec_id)
        reader: PipeReader = getattr(proc.stdio, stream)
        return await reader.read(min(size, MAX_READ))

    async def write_stdin(self, cid: str, exec_id: str, data: bytes) -> int:
        c = self.registry.get(cid)
        proc = c.process(exec_id)
        try:
            return await proc.stdio.stdin.write(data)
        except BrokenPipeError:
            why = "closed" if proc.stdio.stdin.closed else "not read by anyone"
            raise StateError(f"stdin of {_describe(c, exec_id)}", why, "open") from None

    async def close_stdin(self, cid: str, exec_id: str) -> None:
        await self.registry.get(cid).process(exec_id).stdio.stdin.close()

    async def remove(self, cid: str, timeout_s: float) -> None:
        c = self.registry.get(cid)
        c.advance(Event.REMOVE)
        await asyncio.shield(self._remove(c, timeout_s))

    async def _remove(self, c: Container, timeout_s: float) -> None:
        init = c.init
        if init is not None and timeout_s > 0 and not init.exit.done():
            await asyncio.wait([init.exit], timeout=timeout_s)
        try:
            await self._runtime.delete(c.id, c.bundle)
        except BaseException:
            c.abort_remove()
            raise
        if init is not None:
            await asyncio.wait([init.exit], timeout=_KILL_GRACE_S)
        for proc in [init, *c.execs.values()]:
            if proc is not None:
                proc.stdio.close()
        self._forget(c)
        log(f"container {c.id} removed")

    def _forget(self, c: Container) -> None:
        for target in reversed(c.mounts):
            try:
                self._system.unmount(target)
            except OSError as exc:
                log(f"container {c.id}: {exc}")
        c.mounts.clear()
        _remove_flat_dir(c.bundle)
        self.registry.drop(c.id)

    async def remove_all(self) -> list[str]:
        """Best effort, for DestroySandbox: every failure is reported, none stops the rest."""
        failures = []
        for c in self.registry.all():
            try:
                await self.remove(c.id, 0)
            except (asyncio.CancelledError, KeyboardInterrupt):
                raise
            except Exception as exc:
                failures.append(f"container {c.id}: {exc}")
        return failures


def _describe(c: Container, exec_id: str) -> str:
    return f"exec {exec_id!r} in container {c.id!r}" if exec_id else f"container {c.id!r} init"


def _write_json(path: str, doc: dict[str, Any]) -> None:
    with open(path, "w") as f:
        json.dump(doc, f)


def _remove_flat_dir(path: str) -> None:
    try:
        entries = list(os.scandir(path))
    except FileNotFoundError:
        return
    for entry in entries:
        os.unlink(entry.path)
    os.rmdir(path)
