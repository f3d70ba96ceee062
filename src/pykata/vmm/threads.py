"""The VM's vCPU threads: QEMU's host thread id for each vCPU index, from QMP.

QEMU lists a hot-plugged vCPU in `query-cpus-fast` only once its thread runs, so the read is
retried with backoff until the expected count is there. Thin: what to do with the threads
(pinning, cgroups) is decided elsewhere.
"""

from __future__ import annotations

import asyncio

from pykata.domain.errors import VmmError
from pykata.vmm.hotplug import Qmp, execute

COMMAND = "query-cpus-fast"


def parse_cpus_fast(reply: object) -> dict[int, int]:
    """vCPU index -> host thread id."""
    if not isinstance(reply, list):
        raise VmmError(f"QMP {COMMAND}: unexpected reply: expected a list, got {reply!r}")
    threads: dict[int, int] = {}
    for entry in reply:
        index = entry.get("cpu-index") if isinstance(entry, dict) else None
        tid = entry.get("thread-id") if isinstance(entry, dict) else None
        if not isinstance(index, int) or not isinstance(tid, int) or tid <= 0:
            raise VmmError(f"QMP {COMMAND}: unexpected reply: entry {entry!r}")
        threads[index] = tid
    return threads


async def vcpu_threads(qmp: Qmp, expected: int, timeout: float = 5.0,
                       first_delay: float = 0.01) -> dict[int, int]:
    """Every vCPU's thread id once QEMU lists `expected` vCPUs (VmmError after `timeout` s)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = first_delay
    while True:
        threads = parse_cpus_fast(await execute(qmp, COMMAND))
        if len(threads) >= expected:
            return threads
        if loop.time() + delay > deadline:
            raise VmmError(f"QMP {COMMAND}: {len(threads)} of {expected} vCPUs listed after "
                           f"{timeout:g} s")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)
