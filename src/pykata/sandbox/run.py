"""`pykata run`: one container in a fresh sandbox, stdio relayed, its exit code returned."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from collections.abc import Awaitable, Callable

from pykata.domain.errors import PykataError
from pykata.domain.spec import Spec
from pykata.plan.sandbox import SandboxPlan
from pykata.sandbox.agent_client import AgentClient
from pykata.sandbox.sandbox import Sandbox

CONTAINER_ID = "run"
# After a forwarded signal, the container has this long to exit before the VM is killed.
STOP_GRACE_S = 10.0
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# After a process exits, output still in flight gets this long to drain (here and in the
# shim); a leftover background child holding stdout open must not hold up its exit.
DRAIN_TIMEOUT = 5.0


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


async def pump_out(read: Callable[[], Awaitable[bytes]], fd: int) -> None:
    while data := await read():
        write_all(fd, data)


def _stdin_reader(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[bytes], fd: int) -> None:
    # A daemon thread: a read blocked on a terminal must not hold up exit.
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:
            data = b""
        loop.call_soon_threadsafe(queue.put_nowait, data)
        if not data:
            return


async def pump_stdin(agent: AgentClient, cid: str, fd: int) -> None:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    thread = threading.Thread(target=_stdin_reader, args=(asyncio.get_running_loop(), queue, fd),
                              daemon=True)
    thread.start()
    while data := await queue.get():
        while data:
            data = data[await agent.write_stdin(cid, "", data):]
    await agent.close_stdin(cid)


class Signals:
    """SIGINT, SIGTERM and SIGHUP, as `docker run` treats them. Before the container runs,
    one stops the run (teardown follows); while it runs, the first is forwarded to it and,
    if it has not exited within `grace` s, the VM is killed; a second kills it at once."""

    def __init__(self, grace: float = STOP_GRACE_S) -> None:
        self._loop = asyncio.get_running_loop()
        self._grace = grace
        self._work: asyncio.Future[int] | None = None
        self._agent: AgentClient | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.status: int | None = None  # what pykata exits with when a signal ended the run
        self._forwards: set[asyncio.Task[None]] = set()
        for signum in FORWARDED:
            self._loop.add_signal_handler(signum, self._received, signum)

    def watch(self, work: asyncio.Future[int]) -> None:
        """The run a signal ends (no handler runs before this: it is set up first)."""
        self._work = work

    def forward_to(self, agent: AgentClient) -> None:
        self._agent = agent

    def _received(self, signum: int) -> None:
        assert self._work is not None
        if self._agent is None or self.status is not None:
            self.status = 128 + (signum if self.status is None else signal.SIGKILL)
            self._work.cancel()
            return
        self.status = 128 + signal.SIGKILL  # unless the container exits in time
        task = self._loop.create_task(self._forward(self._agent, signum))
        self._forwards.add(task)
        task.add_done_callback(self._forwards.discard)
        self._timer = self._loop.call_later(self._grace, self._work.cancel)

    async def _forward(self, agent: AgentClient, signum: int) -> None:
        with contextlib.suppress(PykataError, OSError):
            await agent.signal_process(CONTAINER_ID, "", signum)

    def close(self) -> None:
        for signum in FORWARDED:
            self._loop.remove_signal_handler(signum)
        if self._timer is not None:
            self._timer.cancel()
        for task in self._forwards:
            task.cancel()


async def run_container(
    plan: SandboxPlan, spec: Spec, rootfs: str, stdin: bool,
    on_warning: Callable[[str], None], fds: tuple[int, int, int] = (0, 1, 2),
) -> int:
    """Runs `plan` (one container for the VM's whole life: `resizable=False`) with the
    container `spec` in `rootfs`; returns its exit status. The plan's warnings were shown."""
    sandbox = Sandbox(plan)
    signals = Signals()
    work = asyncio.ensure_future(_start_and_relay(sandbox, spec, rootfs, stdin, fds,
                                                  on_warning, signals))
    signals.watch(work)
    try:
        return await _await_work(work, signals)
    finally:
        try:
            await sandbox.stop()
        finally:  # a signal during teardown changes nothing: it runs to its end
            signals.close()


async def _await_work(work: asyncio.Future[int], signals: Signals) -> int:
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if signals.status is None or (task is not None and task.cancelling()):
            raise  # cancelled from outside, not by a signal: that propagates
        return signals.status


async def _start_and_relay(sandbox: Sandbox, spec: Spec, rootfs: str, stdin: bool,
                           fds: tuple[int, int, int], on_warning: Callable[[str], None],
                           signals: Signals) -> int:
    await sandbox.start()
    for warning in await sandbox.create_container(CONTAINER_ID, spec, rootfs):
        on_warning(warning)
    return await _relay(sandbox.agent, stdin, fds, signals)


async def _relay(agent: AgentClient, stdin: bool, fds: tuple[int, int, int],
                 signals: Signals) -> int:
    cid = CONTAINER_ID
    pumps = [asyncio.ensure_future(pump_out(lambda: agent.read_stdout(cid), fds[1])),
             asyncio.ensure_future(pump_out(lambda: agent.read_stderr(cid), fds[2]))]
    feeder = asyncio.ensure_future(pump_stdin(agent, cid, fds[0]) if stdin
                                   else agent.close_stdin(cid))
    try:
        await agent.start_container(cid)
        signals.forward_to(agent)
        status = await agent.wait_process(cid)
        await asyncio.wait_for(asyncio.gather(*pumps), DRAIN_TIMEOUT)
        return status
    finally:
        for task in (*pumps, feeder):
            task.cancel()
        # return_exceptions: the pumps' own cancellation is expected; ours still propagates.
        await asyncio.gather(*pumps, feeder, return_exceptions=True)
