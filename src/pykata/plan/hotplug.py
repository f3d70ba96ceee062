"""Plan the QMP steps that take a running VM from its current size to a ResizeTarget.

Pure: the VM's state (CPU slots from `query-hotpluggable-cpus`, DIMMs and the virtio-mem
size from `query-memory-devices`, the guest's memory block size) arrives as values; the
answer is a list of QMP commands to send, in order, and the size the VM has after them.
Follows Kata (FACTS.md §5): CPUs go into free slots (those without a `qom-path`) and leave
newest first; pc-dimm memory only grows, one DIMM per resize, rounded up to the guest's
memory block; virtio-mem moves both ways by its `requested-size`. Boot CPUs and boot memory
never go. Anything the plan cannot do is said in `reasons`, never silently dropped.

With guest NUMA nodes hot-plugged memory gets a `node` so the guest stays balanced as it
grows: new memory is dealt block by block to the node furthest below its share (shares as
the boot memory's), a DIMM per node that gets some, its backend bound to the node's host
nodes; with virtio-mem each guest node has a device of its own, sized the same way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from pykata.domain.errors import HotplugError
from pykata.plan.numa import NumaPlan
from pykata.plan.sizing import HOTPLUG_BLOCK_MIB, ResizeTarget, SizingPlan

MIB = 1 << 20
VIRTIO_MEM_PREFIX = "virtiomem"       # virtiomem<guest node>
VIRTIO_MEM_ID = f"{VIRTIO_MEM_PREFIX}0"
# Hot-added CPUs are ours when their QOM path names a peripheral we created: cpu-<n>.
CPU_ID = re.compile(r"cpu-([0-9]+)\Z")
# QEMU's boot RAM backend is "mem0" (plan/vm.py); DIMM slots count from 1 so that
# mem<slot> never collides with it.
FIRST_DIMM_SLOT = 1


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
    virtio_mem: tuple[tuple[str, int], ...]  # per virtio-mem device: (id, requested MiB)
    block_mib: int                      # the guest's memory block size
    dimm_nodes: tuple[int, ...] = ()    # each DIMM's guest node, as `dimms` (empty: 0)

    @property
    def vcpus(self) -> int:
        return sum(1 for s in self.cpu_slots if s.qom_path)

    @property
    def virtio_mem_mib(self) -> int:
        """What all virtio-mem devices have plugged."""
        return sum(mib for _, mib in self.virtio_mem)


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


def plan_hotplug(sizing: SizingPlan, state: HotplugState, target: ResizeTarget,
                 numa: NumaPlan | None = None) -> HotplugPlan:
    """The steps from `state` to `target`. A static VM gets none."""
    if sizing.static:
        return HotplugPlan((), state.vcpus, memory_now(sizing, state), ("static: no hotplug",))
    if state.block_mib <= 0:
        raise HotplugError(f"guest memory block size {state.block_mib} MiB: must be more "
                           "than 0")
    reasons: list[str] = []
    cpu_steps, vcpus = plan_cpus(state, target.vcpus, reasons, sizing.cpu_unplug)
    if sizing.memory_hotplug == "virtio-mem":
        mem_steps, memory = plan_virtio_mem(sizing, state, target.memory_mib, reasons, numa)
    elif sizing.memory_hotplug == "pc-dimm":
        mem_steps, memory = plan_dimm(sizing, state, target.memory_mib, reasons, numa)
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


def plan_dimm(sizing: SizingPlan, state: HotplugState, want: int, reasons: list[str],
              numa: NumaPlan | None = None) -> tuple[list[QmpStep], int]:
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
    free = sizing.memory_slots - len(state.dimms)
    if free <= 0:
        raise HotplugError(f"cannot add {size} MiB: all {sizing.memory_slots} memory slots "
                           "hold a DIMM (memory_slots)")
    if have + size != want:
        reasons.append(f"memory {have + size} MiB: {want - have} MiB more, in whole "
                       f"{state.block_mib} MiB guest memory blocks, within max_memory")
    parts = _dimm_parts(size, state, numa, free, reasons)
    taken = {d for d, _ in state.dimms}
    free_slots = (s for s in range(FIRST_DIMM_SLOT, FIRST_DIMM_SLOT + len(taken) + len(parts))
                  if f"dimm{s}" not in taken)
    steps = []
    for (node, mib), slot in zip(parts, free_slots, strict=False):
        # The same backend as boot RAM: a shared memfd, which virtiofsd must be able to map.
        backend: dict[str, object] = {"qom-type": "memory-backend-memfd", "id": f"mem{slot}",
                                      "size": mib * MIB, "share": True}
        device: dict[str, object] = {"driver": "pc-dimm", "id": f"dimm{slot}",
                                     "memdev": f"mem{slot}"}
        if numa is not None:
            backend |= {"host-nodes": list(numa.nodes[node].host_nodes), "policy": "bind"}
            device["node"] = node
        steps += [QmpStep("object-add", backend), QmpStep("device_add", device)]
    return steps, have + size


def _dimm_parts(size: int, state: HotplugState, numa: NumaPlan | None, free: int,
                reasons: list[str]) -> list[tuple[int, int]]:
    """(guest node, MiB) of each DIMM to add: one, or with NUMA one per node that gets some
    of the new blocks (at most `free` of them)."""
    if numa is None:
        return [(0, size)]
    have = [n.memory_mib for n in numa.nodes]
    nodes = state.dimm_nodes or (0,) * len(state.dimms)
    for (_, mib), node in zip(state.dimms, nodes, strict=True):
        if node < len(have):
            have[node] += mib
    blocks = deal_blocks(size // state.block_mib, [n.memory_mib for n in numa.nodes], have,
                         state.block_mib)
    parts = sorted(((g, b * state.block_mib) for g, b in enumerate(blocks) if b),
                   key=lambda p: -p[1])
    if len(parts) > free:
        reasons.append(f"{len(parts)} guest nodes are due memory but {free} memory slots are "
                       f"free: nodes {[g for g, _ in parts[free:]]} get theirs on node "
                       f"{parts[0][0]}")
        first = (parts[0][0], parts[0][1] + sum(m for _, m in parts[free:]))
        parts = [first, *parts[1:free]]
    return sorted(parts)


def deal_blocks(blocks: int, weights: list[int], have: list[int], block_mib: int,
                caps: list[int] | None = None) -> list[int]:
    """Deal `blocks` memory blocks one at a time to the node furthest below its share
    (`weights`) of the memory so far (`have`, MiB, plus what is dealt); ties: lower node.
    `caps`: the most blocks a node may take."""
    total = sum(weights)
    got = [0] * len(weights)
    for _ in range(blocks):
        mem = sum(have) + sum(got) * block_mib + block_mib
        open_nodes = [i for i in range(len(weights)) if caps is None or got[i] < caps[i]]
        if not open_nodes:
            break
        best = max(open_nodes, key=lambda i: (mem * weights[i] - total * (
            have[i] + got[i] * block_mib), -i))
        got[best] += 1
    return got


@dataclass(frozen=True)
class VirtioMemDevice:
    id: str
    region_mib: int                 # the most it can plug
    node: int | None                # its guest node; None without guest NUMA
    host_nodes: tuple[int, ...]     # what its backend is bound to (none: unbound)

    @property
    def path(self) -> str:
        return f"/machine/peripheral/{self.id}"


def virtio_mem_devices(sizing: SizingPlan, numa: NumaPlan | None, block_mib: int
                       ) -> tuple[VirtioMemDevice, ...]:
    """The virtio-mem devices the VM boots with: one for the whole hotplug region, or with
    NUMA one per guest node, the region split as the boot memory is (whole blocks)."""
    region = sizing.max_memory_mib - sizing.memory_mib
    if numa is None:
        return (VirtioMemDevice(VIRTIO_MEM_ID, region, None, ()),)  # the id of node 0's
    weights = [n.memory_mib for n in numa.nodes]
    blocks = deal_blocks(region // block_mib, weights, [0] * len(weights), block_mib)
    return tuple(VirtioMemDevice(f"{VIRTIO_MEM_PREFIX}{n.guest_node}", b * block_mib,
                                 n.guest_node,
                                 tuple(n.host_nodes))
                 for n, b in zip(numa.nodes, blocks, strict=True) if b)


def plan_virtio_mem(sizing: SizingPlan, state: HotplugState, want: int, reasons: list[str],
                    numa: NumaPlan | None = None) -> tuple[list[QmpStep], int]:
    devices = virtio_mem_devices(sizing, numa, HOTPLUG_BLOCK_MIB)
    region = sum(d.region_mib for d in devices)
    extra = _round_up(max(0, want - sizing.memory_mib), state.block_mib)
    if extra > region:
        extra = region // state.block_mib * state.block_mib
        reasons.append(f"virtio-mem {extra} MiB: its region holds {region} MiB")
    if sizing.memory_mib + extra != want:
        reasons.append(f"memory {sizing.memory_mib + extra} MiB: boot memory "
                       f"{sizing.memory_mib} MiB plus whole {state.block_mib} MiB blocks")
    weights = [n.memory_mib for n in numa.nodes if any(d.node == n.guest_node
                                                       for d in devices)] if numa else [1]
    blocks = deal_blocks(extra // state.block_mib, weights, [0] * len(devices),
                         state.block_mib, [d.region_mib // state.block_mib for d in devices])
    now = dict(state.virtio_mem)
    steps = [QmpStep("qom-set", {"path": d.path, "property": "requested-size",
                                 "value": b * state.block_mib * MIB})
             for d, b in zip(devices, blocks, strict=True)
             if now.get(d.id, 0) != b * state.block_mib]
    if not steps:
        return [], memory_now(sizing, state)
    return steps, sizing.memory_mib + extra
