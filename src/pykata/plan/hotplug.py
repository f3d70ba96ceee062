"""Plan the QMP steps that take a running VM from its current size to a ResizeTarget.

Pure: the VM's state (CPU slots from `query-hotpluggable-cpus`, DIMMs and the virtio-mem
size from `query-memory-devices`, the guest's memory block size) arrives as values; the
answer is a list of QMP commands to send, in order, and the size the VM has after them.
Follows Kata (FACTS.md §5): CPUs go into free slots (those without a `qom-path`) and leave
newest first; pc-dimm memory only grows, one DIMM per resize, rounded up to the guest's
memory block; virtio-mem moves both ways by its `requested-size`. Boot CPUs and boot memory
never go. Anything the plan cannot do is said in `reasons`, never silently dropped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from pykata.domain.errors import PykataError
from pykata.plan.sizing import ResizeTarget, SizingPlan

MIB = 1 << 20
VIRTIO_MEM_ID = "virtiomem0"
VIRTIO_MEM_PATH = f"/machine/peripheral/{VIRTIO_MEM_ID}"
# Hot-added CPUs are ours when their QOM path names a peripheral we created: cpu-<n>.
CPU_ID = re.compile(r"cpu-([0-9]+)\Z")
# QEMU's boot RAM backend is "mem0" (plan/vm.py); DIMM slots count from 1 so that
# mem<slot> never collides with it.
FIRST_DIMM_SLOT = 1


class HotplugError(PykataError):
    """A resize cannot be planned: no free slot, no DIMM slot left, bad VM state."""


@dataclass(frozen=True)
class CpuSlot:
    """One entry of `query-hotpluggable-cpus`."""

    driver: str                       # its "type", e.g. "qemu64-x86_64-cpu"
    props: tuple[tuple[str, int], ...]  # socket-id, core-id, thread-id (and die-id, node-id)
    qom_path: str = ""                # "": free

    @property
    def device_id(self) -> str:
        """The id we gave it ("cpu-3"), "" for a boot CPU or a free slot."""
        name = self.qom_path.rsplit("/", 1)[-1]
        return name if self.qom_path.startswith("/machine/peripheral/") and \
            CPU_ID.match(name) else ""


@dataclass(frozen=True)
class HotplugState:
    cpu_slots: tuple[CpuSlot, ...]
    dimms: tuple[tuple[str, int], ...]  # (device id, MiB), as QEMU lists them
    virtio_mem_mib: int                 # virtio-mem's requested size
    block_mib: int                      # the guest's memory block size

    @property
    def vcpus(self) -> int:
        return sum(1 for s in self.cpu_slots if s.qom_path)


@dataclass(frozen=True)
class QmpStep:
    command: str
    arguments: Mapping[str, object]

    def __str__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.arguments.items())
        return f"{self.command}({args})"


@dataclass(frozen=True)
class HotplugPlan:
    steps: tuple[QmpStep, ...]
    vcpus: int            # what the VM has once the steps are done
    memory_mib: int
    reasons: tuple[str, ...] = ()


def memory_now(sizing: SizingPlan, state: HotplugState) -> int:
    """Boot memory plus what is hot-plugged, in MiB."""
    return sizing.memory_mib + sum(m for _, m in state.dimms) + state.virtio_mem_mib


def plan_hotplug(sizing: SizingPlan, state: HotplugState, target: ResizeTarget) -> HotplugPlan:
    """The steps from `state` to `target`. A static VM gets none."""
    if sizing.static:
        return HotplugPlan((), state.vcpus, memory_now(sizing, state), ("static: no hotplug",))
    if state.block_mib <= 0:
        raise HotplugError(f"guest memory block size {state.block_mib} MiB: must be more "
                           "than 0")
    reasons: list[str] = []
    cpu_steps, vcpus = plan_cpus(state, target.vcpus, reasons, sizing.cpu_unplug)
    if sizing.memory_hotplug == "virtio-mem":
        mem_steps, memory = plan_virtio_mem(sizing, state, target.memory_mib, reasons)
    elif sizing.memory_hotplug == "pc-dimm":
        mem_steps, memory = plan_dimm(sizing, state, target.memory_mib, reasons)
    else:
        mem_steps, memory = [], memory_now(sizing, state)
        if target.memory_mib != memory:
            reasons.append(f"memory stays {memory} MiB: no memory hotplug")
    return HotplugPlan(tuple(cpu_steps + mem_steps), vcpus, memory, tuple(reasons))


def plan_cpus(state: HotplugState, want: int, reasons: list[str],
              unplug: bool = True) -> tuple[list[QmpStep], int]:
    have = state.vcpus
    ours = sorted((s.device_id for s in state.cpu_slots if s.device_id),
                  key=lambda d: int(d[4:]))
    if want < have and not unplug:
        reasons.append(f"vcpus stay {have}: no vCPU unplug under TCG")
        return [], have
    if want < have:
        removable = min(have - want, len(ours))
        if removable < have - want:
            reasons.append(f"vcpus stay {have - removable}: boot CPUs cannot be unplugged")
        gone = ours[len(ours) - removable:][::-1]  # newest first
        return [QmpStep("device_del", {"id": d}) for d in gone], have - removable
    free = sorted((s for s in state.cpu_slots if not s.qom_path), key=lambda s: s.props)
    if want - have > len(free):
        reasons.append(f"vcpus {have + len(free)}: only {len(free)} free CPU slots")
    used = {int(d[4:]) for d in ours}
    steps = []
    n = 0
    for slot in free[:max(0, want - have)]:
        while n in used:
            n += 1
        used.add(n)
        steps.append(QmpStep("device_add", {"driver": slot.driver, "id": f"cpu-{n}",
                                            **dict(slot.props)}))
    return steps, have + len(steps)


def _round_up(mib: int, block: int) -> int:
    return -(-mib // block) * block


def plan_dimm(sizing: SizingPlan, state: HotplugState, want: int,
              reasons: list[str]) -> tuple[list[QmpStep], int]:
    have = memory_now(sizing, state)
    if want <= have:
        if want < have:
            reasons.append(f"memory stays {have} MiB: pc-dimm cannot shrink")
        return [], have
    room = (sizing.max_memory_mib - have) // state.block_mib * state.block_mib
    size = min(_round_up(want - have, state.block_mib), room)
    if size <= 0:
        reasons.append(f"memory stays {have} MiB: less than one {state.block_mib} MiB block "
                       f"below max_memory {sizing.max_memory_mib} MiB")
        return [], have
    if len(state.dimms) >= sizing.memory_slots:
        raise HotplugError(f"cannot add {size} MiB: all {sizing.memory_slots} memory slots "
                           "hold a DIMM (memory_slots)")
    if have + size != want:
        reasons.append(f"memory {have + size} MiB: {want - have} MiB more, in whole "
                       f"{state.block_mib} MiB guest memory blocks, within max_memory")
    taken = {d for d, _ in state.dimms}
    slot = next(s for s in range(FIRST_DIMM_SLOT, FIRST_DIMM_SLOT + len(taken) + 1)
                if f"dimm{s}" not in taken)
    # The same backend as boot RAM: a shared memfd, which virtiofsd must be able to map.
    backend = {"qom-type": "memory-backend-memfd", "id": f"mem{slot}", "size": size * MIB,
               "share": True}
    device = {"driver": "pc-dimm", "id": f"dimm{slot}", "memdev": f"mem{slot}"}
    return [QmpStep("object-add", backend), QmpStep("device_add", device)], have + size


def plan_virtio_mem(sizing: SizingPlan, state: HotplugState, want: int,
                    reasons: list[str]) -> tuple[list[QmpStep], int]:
    region = sizing.max_memory_mib - sizing.memory_mib
    extra = _round_up(max(0, want - sizing.memory_mib), state.block_mib)
    if extra > region:
        extra = region // state.block_mib * state.block_mib
        reasons.append(f"virtio-mem {extra} MiB: its region holds {region} MiB")
    if sizing.memory_mib + extra != want:
        reasons.append(f"memory {sizing.memory_mib + extra} MiB: boot memory "
                       f"{sizing.memory_mib} MiB plus whole {state.block_mib} MiB blocks")
    if extra == state.virtio_mem_mib:
        return [], memory_now(sizing, state)
    step = QmpStep("qom-set", {"path": VIRTIO_MEM_PATH, "property": "requested-size",
                               "value": extra * MIB})
    return [step], sizing.memory_mib + extra
