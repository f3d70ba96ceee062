"""Resize a running sandbox VM to its containers' limits: plan, hot-plug, have the guest see it.

One resize at a time per sandbox (a lock): each reads the VM's hotplug state from QEMU,
plans the steps (pykata.plan.hotplug), sends them, then asks the agent to online the new
CPUs and memory and to wait until the guest sees the new size. A static VM never hotplugs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from pykata.domain.contract import SHRINK_SLACK_BYTES
from pykata.domain.errors import HotplugError
from pykata.domain.limits import Limits
from pykata.plan.hotplug import MIB, plan_hotplug
from pykata.plan.numa import NumaPlan
from pykata.plan.sizing import HOTPLUG_BLOCK_MIB, ResizeTarget, SizingPlan, plan_resize
from pykata.sandbox.agent_client import AgentClient
from pykata.sandbox.owner_stats import OwnerStats, resize_kind
from pykata.vmm import hotplug

log = logging.getLogger(__name__)

# How long the guest may take to see hot-plugged CPUs and memory (TCG onlines slowly).
GUEST_WAIT = 30.0
SHRINK_SLACK = SHRINK_SLACK_BYTES


@dataclass
class Resizer:
    sizing: SizingPlan
    size: ResizeTarget          # what the VM has now
    numa: NumaPlan | None = None  # guest nodes: hot-plugged memory gets one
    block_mib: int = 0          # the guest's memory block size, asked at the first resize
    # (VM memory MiB, guest MemTotal bytes) at the last look: the guest keeps some memory
    # for itself, so the MemTotal to wait for is the last one seen plus the change.
    seen: tuple[int, int] = (0, 0)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    stats: OwnerStats = field(default_factory=OwnerStats)  # the sandbox's, for the monitor

    async def resize(self, qmp: hotplug.Qmp, agent: AgentClient,
                     containers: Sequence[Limits]) -> ResizeTarget:
        target = plan_resize(self.sizing, containers)
        async with self.lock:
            if self.sizing.static:
                return target
            if (target.vcpus, target.memory_mib) == (self.size.vcpus, self.size.memory_mib):
                return self.size
            return await self._resize(qmp, agent, target)

    async def grow(self, qmp: hotplug.Qmp, agent: AgentClient,
                   target: ResizeTarget) -> ResizeTarget:
        """Straight to `target` (a clone's boot size), whatever the containers ask; also
        for a VM sized statically from then on."""
        async with self.lock:
            return await self._resize(qmp, agent, target, static_ok=True)

    async def _resize(self, qmp: hotplug.Qmp, agent: AgentClient,
                      target: ResizeTarget, static_ok: bool = False) -> ResizeTarget:
        if not self.block_mib:
            details = await agent.guest_details()
            self.block_mib = (details.mem_block_size_bytes // MIB) or HOTPLUG_BLOCK_MIB
            self.seen = (self.size.memory_mib, details.mem_total_bytes)
        state = await hotplug.read_state(qmp, self.block_mib)
        sizing = dataclasses.replace(self.sizing, static=False) if static_ok else self.sizing
        plan = plan_hotplug(sizing, state, target, self.numa)
        reasons = target.reasons + plan.reasons
        if not plan.steps:
            self.size = ResizeTarget(plan.vcpus, plan.memory_mib, reasons)
            return self.size
        log.info("resize to %d vCPUs, %d MiB: %s", plan.vcpus, plan.memory_mib,
                 "; ".join(map(str, plan.steps)))
        started, before = time.monotonic(), (self.size.vcpus, self.size.memory_mib)
        try:
            await hotplug.apply_steps(qmp, plan.steps)
        finally:
            # QEMU's state may have changed even when a step failed: start over from it.
            self.size = ResizeTarget(plan.vcpus, plan.memory_mib, reasons)
        mem_before, total_before = self.seen
        shrink = plan.memory_mib < mem_before
        # MemTotal drifts by a few MiB on its own (CPU hotplug moves per-CPU memory):
        # growth waits for the change less that slack; an unchanged size waits for none.
        want = total_before + (plan.memory_mib - mem_before) * MIB
        ask = 0 if plan.memory_mib == mem_before else want if shrink else want - SHRINK_SLACK
        got = await agent.online_cpu_mem(plan.vcpus, ask, GUEST_WAIT)
        self.seen = (plan.memory_mib, got.mem_total_bytes)
        short = _shortfall(plan.vcpus, ask, shrink, got.online_cpus, got.mem_total_bytes)
        if short:
            raise HotplugError(f"resize to {plan.vcpus} vCPUs, {plan.memory_mib} MiB: after "
                               f"{GUEST_WAIT:g} s the guest sees {short}")
        self.stats.resized(*resize_kind(self.sizing.memory_hotplug, before,
                                        (plan.vcpus, plan.memory_mib)),
                           time.monotonic() - started)
        return self.size


def _shortfall(cpus: int, mem: int, shrink: bool, got_cpus: int, got_mem: int) -> str:
    """What the guest does not see yet, "" when all is there. A shrink counts as done
    within the slack both sides accept (`pykata.domain.contract.SHRINK_SLACK_BYTES`)."""
    problems = []
    if got_cpus != cpus:
        problems.append(f"{got_cpus} CPUs online, not {cpus}")
    if mem and ((got_mem > mem + SHRINK_SLACK) if shrink else (got_mem < mem)):
        problems.append(f"MemTotal {got_mem // MIB} MiB, wanted {mem // MIB} MiB")
    return "; ".join(problems)
