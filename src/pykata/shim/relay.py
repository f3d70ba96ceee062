"""One process's plumbing between containerd and the agent: output pumps, the stdin feeder
and the exit watcher.

The exit is recorded only after the output pumps finished (or a drain timeout passed), so
that when containerd hears of the exit, all output is already in its FIFOs. A lost agent
(the VM died) ends every pump and records exit status 255.

Stdin is opened only when the process starts, as Kata's shim does: `ctr` sends the CloseIO
that ends stdin only if its input ends after Create returned (containerd#4489). A FIFO
opened during Create, which boots the VM, takes `echo data | ctr run ... cat`'s input at
once, and that CloseIO was always lost: `cat` waited forever.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from pykata.domain.errors import PykataError
from pykata.sandbox.agent_client import AgentClient
from pykata.sandbox.run import DRAIN_TIMEOUT
from pykata.shim.stdio import Sink, Source, open_sink, open_source
from pykata.shim.tasks import Proc

log = logging.getLogger(__name__)

VM_LOST_STATUS = 255


class Relay:
    """Started once the agent knows the process (created, or exec started)."""

    def __init__(self, agent: AgentClient, proc: Proc,
                 on_exit: Callable[[Proc], None]) -> None:
        self.agent, self.proc, self._on_exit = agent, proc, on_exit
        self.source: Source | None = None
        self._sinks: list[Sink] = []
        self._stdin_closed = False  # CloseIO may come before the process starts

    async def open(self) -> None:
        """Opens the output FIFOs; raises StdioError (closing what it opened) if one cannot be."""
        stdio = self.proc.stdio
        try:
            self._sinks.append(await open_sink(stdio.stdout))
            self._sinks.append(await open_sink("" if stdio.terminal else stdio.stderr))
        except BaseException:
            self.close()
            raise

    def start(self) -> None:
        """Pumps the output and watches for the exit (from Create on: Kill and Wait work on
        a created process)."""
        cid, eid = self.proc.task_id, self.proc.exec_id
        pumps = [asyncio.create_task(self._pump(lambda: self.agent.read_stdout(cid, eid),
                                                self._sinks[0]))]
        if not self.proc.stdio.terminal:
            pumps.append(asyncio.create_task(
                self._pump(lambda: self.agent.read_stderr(cid, eid), self._sinks[1])))
        watcher = asyncio.create_task(self._watch(pumps))
        self.proc.workers += [*pumps, watcher]

    async def start_stdin(self) -> None:
        """Opens the stdin FIFO and feeds it to the process (when it starts); raises
        StdioError."""
        self.source = await open_source(self.proc.stdio.stdin)
        if self._stdin_closed:
            self.close_stdin()
        self.proc.workers.append(asyncio.create_task(self._feed()))

    async def _pump(self, read: Callable[[], Awaitable[bytes]], sink: Sink) -> None:
        try:
            while data := await read():
                await sink.write(data)
        except PykataError as exc:  # the agent is gone: the output ends here
            log.debug("%s: output ended: %s", self.proc.name, exc)
        finally:
            sink.close()

    async def _feed(self) -> None:
        cid, eid = self.proc.task_id, self.proc.exec_id
        try:
            if self.source is not None:
                while data := await self.source.read():
                    while data:
                        data = data[await self.agent.write_stdin(cid, eid, data):]
            await self.agent.close_stdin(cid, eid)
        except PykataError as exc:
            log.debug("%s: stdin ended: %s", self.proc.name, exc)
        finally:
            if self.source is not None:
                self.source.abort()

    async def _watch(self, pumps: list[asyncio.Task[None]]) -> None:
        try:
            status, self.proc.oom_killed = await self.agent.wait_exit(self.proc.task_id,
                                                                      self.proc.exec_id)
        except PykataError as exc:
            log.warning("%s: lost the agent (%s); exit status %d", self.proc.name, exc,
                        VM_LOST_STATUS)
            status = VM_LOST_STATUS
        done, _ = await asyncio.wait(pumps, timeout=DRAIN_TIMEOUT)
        if len(done) < len(pumps):
            log.warning("%s: output still open %g s after exit; dropped", self.proc.name,
                        DRAIN_TIMEOUT)
        async with self.proc.starting:
            if self.proc.record_exit(status):
                self._on_exit(self.proc)

    def close_stdin(self) -> None:
        self._stdin_closed = True
        if self.source is not None:
            self.source.close()

    def close(self) -> None:
        for sink in self._sinks:
            sink.close()
        if self.source is not None:
            self.source.abort()


async def stop_workers(proc: Proc) -> None:
    for worker in proc.workers:
        worker.cancel()
    await asyncio.gather(*proc.workers, return_exceptions=True)
    proc.workers.clear()
