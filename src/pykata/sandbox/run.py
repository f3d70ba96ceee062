"""`pykata run`: one container in a fresh sandbox, stdio relayed, its exit code returned."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable

from pykata.domain.config import Config
from pykata.domain.host import HostFacts
from pykata.domain.spec import Spec
from pykata.plan.cgroups import spec_cgroups_path
from pykata.plan.network import plan_network_request
from pykata.plan.pci import vfio_groups
from pykata.plan.sizing import Limits
from pykata.plan.vm import NO_LIMITS
from pykata.sandbox.agent_client import AgentClient
from pykata.sandbox.sandbox import Sandbox

CONTAINER_ID = "run"
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


async def run_container(
    cfg: Config, facts: HostFacts, spec: Spec, rootfs: str, stdin: bool,
    on_warning: Callable[[str], None], fds: tuple[int, int, int] = (0, 1, 2),
    workload: Limits = NO_LIMITS,
) -> int:
    # One container for the VM's whole life: sized at boot, no hotplug headroom.
    network = plan_network_request(spec.doc, cfg.runtime.internetworking_model)
    sandbox = Sandbox(cfg, facts, workload=workload, resizable=False,
                      vfio_groups=vfio_groups(spec.doc, "config.json"),
                      cgroups_path=spec_cgroups_path(spec.doc, "config.json"),
                      network=network)
    for warning in sandbox.plan.sizing.warnings:
        on_warning(warning)
    try:
        await sandbox.start()
        for warning in await sandbox.create_container(CONTAINER_ID, spec, rootfs):
            on_warning(warning)
        return await _relay(sandbox.agent, stdin, fds)
    finally:
        await sandbox.stop()


async def _relay(agent: AgentClient, stdin: bool, fds: tuple[int, int, int]) -> int:
    cid = CONTAINER_ID
    pumps = [asyncio.ensure_future(pump_out(lambda: agent.read_stdout(cid), fds[1])),
             asyncio.ensure_future(pump_out(lambda: agent.read_stderr(cid), fds[2]))]
    feeder = asyncio.ensure_future(pump_stdin(agent, cid, fds[0]) if stdin
                                   else agent.close_stdin(cid))
    try:
        await agent.start_container(cid)
        status = await agent.wait_process(cid)
        await asyncio.wait_for(asyncio.gather(*pumps), DRAIN_TIMEOUT)
        return status
    finally:
        for task in (*pumps, feeder):
            task.cancel()
        # return_exceptions: the pumps' own cancellation is expected; ours still propagates.
        await asyncio.gather(*pumps, feeder, return_exceptions=True)
