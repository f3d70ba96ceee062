"""Decide the guest's NUMA nodes: which host nodes back each guest node, which vCPU slots and
how much boot memory each gets, the guest distances, and each VFIO device's guest node.

Pure: the host topology arrives as a value. Rules (FACTS.md §5, issue 6):
- `enable_numa` off: no plan (None).
- `numa_mapping` given: one guest node per entry, bound to the entry's host nodes; no
  right-sizing.
- Otherwise a sandbox that fits one host node (its largest size, `max_vcpus`, within the node's
  CPUs and `memory_mib` within its memory) gets one guest node there: the node of its VFIO
  devices when they share one, else the lowest-numbered node that fits. A sandbox that does
  not fit spans every host node that has CPUs, one guest node each.
- Every vCPU slot up to `max_vcpus` is given a guest node at boot, so a hotplugged vCPU lands on
  its node. Slots are dealt in turn to the node furthest below its share (shares in proportion
  to the host nodes' CPUs), so the boot vCPUs and every later count stay balanced.
- Boot memory is split in the same proportion, in whole MiB that sum exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pykata.domain.cpuset import CpuSet
from pykata.domain.errors import CpuSetError, NumaError
from pykata.domain.topology import UNKNOWN_NODE, HostTopology
from pykata.plan import qemu

LOCAL_DISTANCE = 10
# Linux drops a guest SLIT whose remote distance is not above the local one (slit_valid), so
# guest nodes that share host nodes are still told apart by one.
MIN_REMOTE_DISTANCE = 11
# Linux (x86 NODE_MIN_SIZE) ignores a node with less memory than this.
MIN_NODE_MIB = 4


@dataclass(frozen=True)
class GuestNode:
    guest_node: int
    host_nodes: CpuSet       # host node ids its memory is bound to (policy=bind)
    host_cpus: CpuSet        # those nodes' CPUs: where its vCPU threads belong
    vcpus: tuple[int, ...]   # vCPU indices (boot and hotpluggable) placed on it
    memory_mib: int


@dataclass(frozen=True)
class NumaDevice:
    bdf: str
    host_node: int           # UNKNOWN_NODE (-1) when the host does not say
    guest_node: int
    bus: str                 # the pcie-root-port it is plugged into


@dataclass(frozen=True)
class NumaPlan:
    nodes: tuple[GuestNode, ...]
    distances: tuple[tuple[int, ...], ...]   # guest node x guest node
    devices: tuple[NumaDevice, ...] = ()
    reasons: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "nodes": [{"guest_node": n.guest_node, "host_nodes": list(n.host_nodes),
                       "vcpus": list(n.vcpus), "memory_mib": n.memory_mib}
                      for n in self.nodes],
            "devices": [{"bdf": d.bdf, "host_node": d.host_node, "guest_node": d.guest_node,
                         "bus": d.bus} for d in self.devices],
        }


@dataclass(frozen=True)
class _Device:
    bdf: str
    host_node: int           # as the host reports it
    near: int | None         # the host node with CPUs it is nearest to; None when unknown


def plan_numa(vcpus: int, max_vcpus: int, memory_mib: int, topology: HostTopology,
              enable_numa: bool, numa_mapping: tuple[str, ...] | list[str] = (),
              vfio_bdfs: tuple[str, ...] | list[str] = ()) -> NumaPlan | None:
    if not enable_numa:
        return None
    _check_sizes(vcpus, max_vcpus, memory_mib)
    if not any(n.cpus for n in topology.nodes):
        raise NumaError("enable_numa", True, "the host reports no NUMA node with CPUs "
                        "(no devices/system/node/online, or no node lists CPUs)")
    reasons: list[str] = []
    warnings: list[str] = []
    devices = [_device(bdf, topology, warnings) for bdf in vfio_bdfs]
    if numa_mapping:
        groups = [_mapping_entry(e, topology) for e in numa_mapping]
        reasons.append(f"numa_mapping {list(numa_mapping)}: {_count(len(groups), 'guest node')}"
                       " as configured (no right-sizing)")
    else:
        groups = _right_size(max_vcpus, memory_mib, topology, devices, reasons, warnings)
    groups = _at_most_one_node_per_vcpu(groups, max_vcpus, devices, warnings)
    weights = [len(_cpus(g, topology)) for g in groups]
    slots = _deal_slots(weights, max_vcpus)
    shares = _split_memory(memory_mib, weights)
    _check_memory(memory_mib, groups, shares, topology)
    nodes = tuple(GuestNode(i, g, _cpus(g, topology), tuple(slots[i]), shares[i])
                  for i, g in enumerate(groups))
    if vcpus < len(nodes):
        reasons.append(f"{_count(vcpus, 'boot vCPU')} for {len(nodes)} guest nodes: guest "
                       f"nodes {vcpus}-{len(nodes) - 1} get their first vCPU when one is "
                       "hotplugged")
    placed = _place_devices(devices, nodes, topology, warnings)
    return NumaPlan(nodes, _distances(groups, topology), placed, tuple(reasons),
                    tuple(warnings))


def _check_sizes(vcpus: int, max_vcpus: int, memory_mib: int) -> None:
    if vcpus < 1:
        raise NumaError("vcpus", vcpus, "a VM needs at least one vCPU")
    if max_vcpus < vcpus:
        raise NumaError("max_vcpus", max_vcpus, f"is below the boot vCPUs ({vcpus})")
    if memory_mib < 1:
        raise NumaError("memory_mib", memory_mib, "a VM needs memory")


def _device(bdf: str, topology: HostTopology, warnings: list[str]) -> _Device:
    node = topology.device_node(bdf)
    if node is None:
        raise NumaError("vfio device", bdf, "the host lists no such PCI device "
                        "(bus/pci/devices)")
    if node == UNKNOWN_NODE or node not in topology.node_ids:
        shown = "numa_node -1 (unknown)" if node == UNKNOWN_NODE else f"node {node}, not online"
        warnings.append(f"vfio device {bdf}: the host reports {shown}; its guest node is "
                        "chosen without it")
        return _Device(bdf, UNKNOWN_NODE, None)
    near = _nearest_with_cpus(node, topology)
    if near != node:
        warnings.append(f"vfio device {bdf}: host node {node} has no CPUs; it counts as on "
                        f"host node {near}, the nearest with CPUs (distance "
                        f"{topology.distance(node, near)})")
    return _Device(bdf, node, near)


def _nearest_with_cpus(node: int, topology: HostTopology) -> int:
    with_cpus = [n.id for n in topology.nodes if n.cpus]
    return min(with_cpus, key=lambda h: (topology.distance(node, h), h))


def _mapping_entry(entry: str, topology: HostTopology) -> CpuSet:
    try:
        nodes = CpuSet.parse(entry)
    except CpuSetError as exc:
        raise NumaError("numa_mapping entry", entry, f"{exc.why}; expected host node ids "
                        "like '1' or '0-1'") from None
    if not nodes:
        raise NumaError("numa_mapping entry", entry, "names no host node")
    if not nodes <= topology.node_ids:
        raise NumaError("numa_mapping entry", entry, f"host has nodes {topology.node_ids}")
    if not _cpus(nodes, topology):
        raise NumaError("numa_mapping entry", entry, "its host nodes have no CPUs (memory "
                        "only), so its vCPUs would have nowhere to run; add a node with CPUs")
    return nodes


def _right_size(max_vcpus: int, memory_mib: int, topology: HostTopology,
                devices: list[_Device], reasons: list[str], warnings: list[str]
                ) -> list[CpuSet]:
    with_cpus = [n for n in topology.nodes if n.cpus]
    size = f"{_count(max_vcpus, 'vCPU')} (at most) and {memory_mib} MiB"
    fits = [n.id for n in with_cpus
            if max_vcpus <= len(n.cpus) and memory_mib <= n.memory_mib]
    near = sorted({d.near for d in devices if d.near is not None})
    if len(with_cpus) == 1:
        reasons.append(f"one guest node on host node {with_cpus[0].id}: the only host node "
                       "with CPUs")
        return [CpuSet([with_cpus[0].id])]
    if len(near) == 1 and near[0] in fits:
        bdfs = ", ".join(d.bdf for d in devices if d.near == near[0])
        reasons.append(f"one guest node on host node {near[0]}: {size} fit it, and VFIO "
                       f"device {bdfs} is on it")
        return [CpuSet(near)]
    if fits and not near:
        node = topology.node(fits[0])
        reasons.append(f"one guest node on host node {node.id}: the lowest-numbered host node "
                       f"that fits {size} ({len(node.cpus)} CPUs, {node.memory_mib} MiB)")
        return [CpuSet([node.id])]
    why = (f"VFIO devices are near host nodes {CpuSet(near)}" if len(near) > 1 else
           f"{size} do not fit host node {near[0]}, nearest the VFIO devices" if near else
           f"{size} fit no single host node")
    reasons.append(f"one guest node per host node with CPUs "
                   f"({CpuSet(n.id for n in with_cpus)}): {why}")
    for n in topology.nodes:
        if not n.cpus:
            warnings.append(f"host node {n.id} has {n.memory_mib} MiB and no CPUs (memory "
                            "only): no guest node mirrors it")
    return [CpuSet([n.id]) for n in with_cpus]


def _at_most_one_node_per_vcpu(groups: list[CpuSet], max_vcpus: int, devices: list[_Device],
                               warnings: list[str]) -> list[CpuSet]:
    if max_vcpus >= len(groups):
        return groups
    # Keep the guest nodes nearest the VFIO devices first, then the lowest-numbered.
    near = CpuSet(d.near for d in devices if d.near is not None)
    keep = sorted(range(len(groups)), key=lambda i: (not groups[i] & near, i))[:max_vcpus]
    kept = [groups[i] for i in sorted(keep)]
    warnings.append(f"{_count(max_vcpus, 'vCPU')} (at most) for {len(groups)} guest nodes: a "
                    f"guest node needs a vCPU, so the guest gets {_count(max_vcpus, 'node')}, "
                    f"on host nodes {', '.join(str(g) for g in kept)}")
    return kept


def _deal_slots(weights: list[int], count: int) -> list[list[int]]:
    """Give vCPU 0, 1, ... in turn to the node furthest below its share of the vCPUs so far."""
    total = sum(weights)
    slots: list[list[int]] = [[] for _ in weights]
    for k in range(count):
        # (k + 1) * w / total - taken, scaled by total to stay in integers; ties: lower node.
        best = max(range(len(weights)),
                   key=lambda i: ((k + 1) * weights[i] - len(slots[i]) * total, -i))
        slots[best].append(k)
    return slots


def _split_memory(memory_mib: int, weights: list[int]) -> list[int]:
    """Whole MiB in proportion to `weights`, summing exactly (largest remainder first)."""
    total = sum(weights)
    shares = [memory_mib * w // total for w in weights]
    order = sorted(range(len(weights)), key=lambda i: (-(memory_mib * weights[i] % total), i))
    for i in order[:memory_mib - sum(shares)]:
        shares[i] += 1
    return shares


def _check_memory(memory_mib: int, groups: list[CpuSet], shares: list[int],
                  topology: HostTopology) -> None:
    if min(shares) < MIN_NODE_MIB:
        raise NumaError("memory_mib", memory_mib, f"does not split over {len(groups)} guest "
                        f"nodes: each needs at least {MIN_NODE_MIB} MiB (Linux ignores a "
                        "smaller node)")
    for group in dict.fromkeys(groups):
        bound = sum(s for g, s in zip(groups, shares, strict=True) if g == group)
        have = sum(topology.node(h).memory_mib for h in group)
        if bound > have:
            raise NumaError("memory_mib", memory_mib, f"does not split: {bound} MiB would be "
                            f"bound to host node(s) {group}, which have {have} MiB")


def _place_devices(devices: list[_Device], nodes: tuple[GuestNode, ...],
                   topology: HostTopology, warnings: list[str]) -> tuple[NumaDevice, ...]:
    placed: list[NumaDevice] = []
    for d in devices:
        guest, near = 0, d.near
        if near is not None:
            guest = min(range(len(nodes)), key=lambda g: (
                min(topology.distance(near, h) for h in nodes[g].host_nodes), g))
            if near not in nodes[guest].host_nodes:
                warnings.append(f"vfio device {d.bdf}: no guest node is bound to host node "
                                f"{near}; it goes on guest node {guest}, the nearest (its "
                                "DMA crosses host nodes)")
        taken = sum(p.guest_node == guest for p in placed)
        placed.append(NumaDevice(d.bdf, d.host_node, guest, f"rp-numa{guest}-{taken}"))
    return tuple(placed)


def _distances(groups: list[CpuSet], topology: HostTopology) -> tuple[tuple[int, ...], ...]:
    def between(i: int, j: int) -> int:
        if i == j:
            return LOCAL_DISTANCE
        pairs = [topology.distance(a, b) for a in groups[i] for b in groups[j]]
        return max(MIN_REMOTE_DISTANCE, (sum(pairs) + len(pairs) // 2) // len(pairs))

    return tuple(tuple(between(i, j) for j in range(len(groups))) for i in range(len(groups)))


def _cpus(nodes: CpuSet, topology: HostTopology) -> CpuSet:
    return CpuSet(c for h in nodes for c in topology.node(h).cpus)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def guest_mems(host_mems: CpuSet, plan: NumaPlan) -> CpuSet:
    """The guest nodes whose memory is bound to any of `host_mems` (a container's
    cpuset.mems, in host node ids)."""
    return CpuSet(n.guest_node for n in plan.nodes if n.host_nodes & host_mems)


def numa_options(plan: NumaPlan) -> list[qemu.QemuOption]:
    """Per guest node a bound memory backend and a -numa node; the distances between them."""
    options: list[qemu.QemuOption] = []
    for n in plan.nodes:
        mem = f"numa-mem{n.guest_node}"
        options += [qemu.NumaMemory(mem, n.memory_mib, tuple(n.host_nodes)),
                    qemu.NumaNode(n.guest_node, mem, n.vcpus)]
    if len(plan.nodes) > 1:
        options += [qemu.NumaDistance(i, j, d) for i, row in enumerate(plan.distances)
                    for j, d in enumerate(row) if i != j]
    return options
