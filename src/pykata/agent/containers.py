"""Container operations: create, start, exec, signal, wait, stdio, terminal size, pause,
resume, update, list processes, stats, remove.

Checks ids and states through the registry, then does the work with the OCI runtime
adapter and the stdio pipes (or terminal). Operations that change runtime state run
shielded: a caller that goes away (the host disconnected) must not leave a container
half-created. Knows nothing of protobuf or ttrpc; errors are PykataErrors that the
handler table maps.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from pykata.agent.bundle import (
    prepare_process,
    prepare_spec,
    resolve_namespaces,
    wants_terminal,
)
from pykata.agent.config import AgentConfig
from pykata.agent.console import log
from pykata.agent.reaper import Reaper
from pykata.agent.registry import TRANSITIONS, Container, Event, Process, Registry, State, check_id
from pykata.agent.runtime import OciRuntime
from pykata.agent.stdio import MAX_READ, ProcessStdio, pipe_stdio
from pykata.agent.storage import MountPlan, Storage, System, plan_mount
from pykata.agent.sysctls import apply_sysctls, take_vm_sysctls
from pykata.domain.errors import BadValue, DuplicateId, StateError

if TYPE_CHECKING:
    from pykata.agent.cgroups import CgroupStats

_MAX_SIGNAL = 64
_MAX_WINDOW = 0xFFFF
# After `delete --force` the init dies at once; don't hang removal if it does not.
_KILL_GRACE_S = 5.0

# Runs the runtime's create or exec with these stdio fds, or with a console socket path;
# returns the new process's pid.
Launch = Callable[[Sequence[int], str | None], Awaitable[int]]


class Containers:
    def __init__(self, config: AgentConfig, reaper: Reaper, runtime: OciRuntime,
                 system: System) -> None:
        self._config, self._reaper, self._runtime, self._system = config, reaper, runtime, system
        self.registry = Registry()
        self._seq = itertools.count()

    def _bundle(self, cid: str) -> str:
        return os.path.join(self._config.state_dir, "containers", cid)

    async def create(self, cid: str, spec_json: bytes, storages: Sequence[Storage]) -> None:
        check_id("container_id", cid)
        spec = prepare_spec(cid, spec_json, self._config.shared_root)
        source = f"container {cid!r} spec"
        resolve_namespaces(source, spec, self._init_pid)
        sysctls = take_vm_sysctls(spec, source, root=self._config.sysctl_root)
        plans = [plan_mount(s) for s in storages]
        container = self.registry.reserve(cid, self._bundle(cid))
        await asyncio.shield(self._create(container, spec, plans, sysctls))

    def _init_pid(self, cid: str) -> int:
        """The init of a container whose namespaces another joins: it must be running."""
        c = self.registry.get(cid)
        if c.init is None or c.init.exit.done():
            raise StateError(f"container {cid!r}: join its namespaces", c.state.value,
                             "created or running")
        return c.init.pid

    async def _create(self, c: Container, spec: dict[str, Any], plans: list[MountPlan],
                      sysctls: dict[str, str]) -> None:
        created = False

        async def create(stdio: Sequence[int], console: str | None) -> int:
            nonlocal created
            pid = await self._runtime.create(c.id, c.bundle, os.path.join(c.bundle, "init.pid"),
                                             stdio, console)
            created = True
            return pid

        try:
            os.makedirs(c.bundle, exist_ok=True)
            _write_json(os.path.join(c.bundle, "config.json"), spec)
            for plan in plans:
                self._system.mount(plan)
                c.mounts.append(plan.target)
            if not os.path.isdir(spec["root"]["path"]):
                raise BadValue("root.path", spec["root"]["path"],
                               f"container {c.id!r}: no such directory")
            apply_sysctls(sysctls, f"container {c.id!r} spec", self._config.sysctl_root)
            pid, stdio = await self._launch(create, wants_terminal(spec["process"]))
        except BaseException:
            if created:  # the terminal never arrived: the runtime must forget the container
                await _quietly(self._runtime.delete(c.id, c.bundle), f"container {c.id}")
            self._forget(c)
            raise
        c.init = Process("", pid, stdio, self._reaper.watch(pid))
        c.cgroup = _cgroup_of(pid)
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
        path = os.path.join(c.bundle, f"exec-{exec_id}.json")

        def run(stdio: Sequence[int], console: str | None) -> Awaitable[int]:
            return self._runtime.exec(c.id, c.bundle, path,
                                      os.path.join(c.bundle, f"exec-{exec_id}.pid"),
                                      stdio, console)

        try:
            _write_json(path, process)
            pid, stdio = await self._launch(run, wants_terminal(process))
        except BaseException:
            c.execs.pop(exec_id, None)
            raise
        c.execs[exec_id] = Process(exec_id, pid, stdio, self._reaper.watch(pid))

    def remove_process(self, cid: str, exec_id: str) -> None:
        """Forgets an exec that has exited: its stdio and its files. Execs are kept until
        then (their output drained, their status waited for); without this, each would
        hold three fds for the container's life."""
        c = self.registry.get(cid)
        check_id("exec_id", exec_id)
        proc = c.process(exec_id)
        if not proc.exit.done():
            raise StateError(_describe(c, exec_id), "running", "exited")
        proc.stdio.close()
        del c.execs[exec_id]
        for suffix in ("json", "pid"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(c.bundle, f"exec-{exec_id}.{suffix}"))

    async def _launch(self, run: Launch, terminal: bool) -> tuple[int, ProcessStdio]:
        """Runs create or exec with three pipes, or with a pty whose master the runtime
        sends to a console socket."""
        if not terminal:
            stdio = pipe_stdio()
            try:
                pid = await run(stdio.child_fds, None)
            except BaseException:
                stdio.close()
                raise
            stdio.release_child_fds()
            return pid, stdio
        from pykata.agent import terminal as tty

        # Not in the bundle: a socket path must fit in 108 bytes, and ids may be 128.
        console = tty.ConsoleSocket(os.path.join(self._config.state_dir,
                                                 f"console-{next(self._seq)}.sock"))
        try:
            pid = await run((), console.path)
            try:
                return pid, tty.terminal_stdio(console.receive())
            except BaseException:
                # Not reaped yet, so not reused: no process may run without its stdio.
                os.kill(pid, signal.SIGKILL)
                raise
        finally:
            console.close()

    async def signal(self, cid: str, exec_id: str, signum: int, all_: bool = False) -> None:
        """Signals the process, or with `all_` every process of the container."""
        if not 0 < signum <= _MAX_SIGNAL:
            raise BadValue("signal", signum, f"must be 1-{_MAX_SIGNAL}")
        c = self.registry.get(cid)
        proc = c.process(exec_id)
        if all_ or not exec_id:
            c.require("signal")
        if all_:
            await self._runtime.kill_all(c.id, c.bundle, signum)
            return
        if proc.exit.done():
            raise StateError(_describe(c, exec_id), "exited", "running")
        # We alone reap this pid, and it is not reaped yet: it cannot have been reused.
        os.kill(proc.pid, signum)

    def resize(self, cid: str, exec_id: str, rows: int, columns: int) -> None:
        """Sets a terminal's window size; a process without a terminal has none to size,
        so that is a no-op (as in containerd's runc shim)."""
        for key, value in (("row", rows), ("column", columns)):
            if not 0 <= value <= _MAX_WINDOW:
                raise BadValue(key, value, f"must be 0-{_MAX_WINDOW}")
        stdio = self.registry.get(cid).process(exec_id).stdio
        if stdio.tty is not None and not stdio.stdout.closed:
            from pykata.agent.terminal import set_window_size

            set_window_size(stdio.tty, rows, columns)

    async def pause(self, cid: str) -> None:
        c = self.registry.get(cid)
        c.advance(Event.PAUSE)
        await asyncio.shield(self._freeze(c, self._runtime.pause, State.PAUSED,
                                          Event.PAUSE_FAILED))

    async def resume(self, cid: str) -> None:
        c = self.registry.get(cid)
        c.advance(Event.RESUME)
        await asyncio.shield(self._freeze(c, self._runtime.resume, State.RUNNING,
                                          Event.RESUME_FAILED))

    async def _freeze(self, c: Container, op: Callable[[str, str], Awaitable[None]],
                      state: State, failed: Event) -> None:
        try:
            await op(c.id, c.bundle)
        except BaseException:
            if c.state is state:  # else the init exited meanwhile: STOPPED stands
                c.advance(failed)
            raise

    async def list_processes(self, cid: str) -> list[int]:
        c = self.registry.get(cid)
        c.require("list processes")
        return await self._runtime.pids(c.id, c.bundle)

    async def update(self, cid: str, resources_json: bytes) -> None:
        """Applies an OCI LinuxResources document with the runtime's `update`."""
        c = self.registry.get(cid)
        try:
            resources = json.loads(resources_json)
        except ValueError as exc:
            raise BadValue("resources_json", resources_json[:40], f"not JSON: {exc}") from None
        if not isinstance(resources, dict):
            raise BadValue("resources_json", resources_json[:40], "must be a JSON object")
        c.require("update")
        await asyncio.shield(self._update(c, resources))

    async def _update(self, c: Container, resources: dict[str, Any]) -> None:
        path = os.path.join(c.bundle, f"resources-{next(self._seq)}.json")
        _write_json(path, resources)
        try:
            await self._runtime.update(c.id, c.bundle, path)
        finally:
            os.unlink(path)

    def stats(self, cid: str) -> CgroupStats:
        """The container cgroup's statistics (cgroup v2 only)."""
        from pykata.agent import cgroups

        c = self.registry.get(cid)
        c.require("stats")
        if c.cgroup is None:
            assert c.init is not None  # a live container has its init
            c.cgroup = cgroups.find_cgroup(c.init.pid, f"container {cid!r}: stats")
        return cgroups.read_stats(c.cgroup)

    async def wait(self, cid: str, exec_id: str) -> int:
        proc = self.registry.get(cid).process(exec_id)
        return await asyncio.shield(proc.exit)

    def oom_killed(self, cid: str) -> bool:
        """Whether the OOM killer has killed a process of the container (cgroup v2's
        memory.events; False where the container has no v2 cgroup)."""
        from pykata.agent.cgroups import oom_kills

        c = self.registry.get(cid)
        return c.cgroup is not None and oom_kills(c.cgroup) > 0

    async def read(self, cid: str, exec_id: str, stream: str, size: int) -> bytes:
        if size <= 0:
            raise BadValue("len", size, "must be at least 1")
        stdio = self.registry.get(cid).process(exec_id).stdio
        reader = stdio.stdout if stream == "stdout" else stdio.stderr
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
        """The process reads EOF. On a terminal, which has no end of input, this only
        stops input: nothing is written, the terminal stays up for output, and later
        writes fail."""
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


def _cgroup_of(pid: int) -> str | None:
    """The container's cgroup v2 directory, looked up while its init lives (the OOM count
    is read after it exited); None on a v1 or hybrid host."""
    from pykata.agent import cgroups

    try:
        return cgroups.find_cgroup(pid, f"pid {pid}")
    except (OSError, StateError):
        return None


async def _quietly(call: Awaitable[None], what: str) -> None:
    """For cleanup after a failure: logs an error of its own instead of raising it."""
    try:
        await call
    except Exception as exc:
        log(f"{what}: {exc}")


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
