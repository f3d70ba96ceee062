"""Decide where each vCPU thread may run: pinned one-to-one onto the pod's CPUs, or spread over
the pod's cpuset (within its guest node's host CPUs when the VM has NUMA nodes).

Pure: the vCPUs present, the containers' cpusets and the NUMA plan arrive as values; applying
the result (`sched_setaffinity`) is pykata.host.affinity's. Rules (FACTS.md §5, issue 7):
- The pod's cpuset is the sorted union of its containers' `linux.resources.cpu.cpus`.
- Pinning on and as many vCPUs as CPUs in that union: vCPU i (in index order) gets the i-th
  CPU. With guest NUMA nodes each node's vCPUs take the union's CPUs on that node's host
  nodes, so pinning never moves a vCPU off its node; when the per-node counts differ, no pin.
- Otherwise every vCPU may run on the whole union (or, with no cpuset, on every host CPU),
  narrowed to its guest node's host CPUs with NUMA. So a VM whose vCPU count drifted from
  the cpuset (hotplug, a container removed or updated) has no thread stuck on one core.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from pykata.domain.cpuset import CpuSet
from pykata.domain.errors import SpecError
from pykata.plan.numa import NumaPlan


@dataclass(frozen=True)
class PinPlan:
    affinity: Mapping[int, CpuSet]    # vCPU index -> host CPUs its thread may run on
    pinned: bool                      # one CPU per vCPU, one-to-one
    reason: str

    def to_json(self) -> dict[str, object]:
        return {"pinned": self.pinned, "reason": self.reason,
                "affinity": {str(v): str(c) for v, c in sorted(self.affinity.items())}}


def plan_pinning(vcpus: Iterable[int], cpusets: Sequence[CpuSet], host_cpus: CpuSet,
                 enabled: bool, numa: NumaPlan | None = None) -> PinPlan:
    """`vcpus`: the vCPU indices the VM has now; `cpusets`: its containers' cpusets."""
    present = sorted(vcpus)
    union = CpuSet(c for cpus in cpusets for c in cpus)
    node_cpus = _node_cpus(numa)
    if not enabled:
        why = "pinning off (enable_vcpus_pinning)"
    elif not union:
        why = "no container sets a cpuset (linux.resources.cpu.cpus)"
    elif len(present) != len(union):
        why = (f"{len(present)} vCPUs, {len(union)} CPUs in the pod's cpuset {union}: "
               "counts differ")
    else:
        pins = _pin(present, union, node_cpus)
        if isinstance(pins, dict):
            return PinPlan(pins, True, f"{len(present)} vCPUs on the {len(union)} CPUs of the "
                           f"pod's cpuset {union}, one each")
        why = pins
    base = union or host_cpus
    affinity = {v: _within(base, node_cpus.get(v)) for v in present}
    scope = f"the pod's cpuset {union}" if union else f"every host CPU ({host_cpus})"
    numa_note = ", each within its guest node's host CPUs" if node_cpus else ""
    return PinPlan(affinity, False, f"not pinned: {why}; vCPUs may run on {scope}{numa_note}")


def _node_cpus(numa: NumaPlan | None) -> dict[int, CpuSet]:
    if numa is None:
        return {}
    return {v: node.host_cpus for node in numa.nodes for v in node.vcpus}


def _within(base: CpuSet, node: CpuSet | None) -> CpuSet:
    """`base` narrowed to the node's CPUs; the node's CPUs when they do not meet."""
    if node is None:
        return base
    return (base & node) or node


def _pin(present: list[int], union: CpuSet, node_cpus: dict[int, CpuSet]
         ) -> dict[int, CpuSet] | str:
    """vCPU -> one CPU, or why that cannot keep every vCPU on its node."""
    cpus = list(union)
    if not node_cpus:
        return {v: CpuSet([c]) for v, c in zip(present, cpus, strict=True)}
    groups: dict[CpuSet, list[int]] = {}
    for v in present:
        groups.setdefault(node_cpus[v], []).append(v)
    pins: dict[int, CpuSet] = {}
    for host, members in groups.items():
        mine = list(union & host)
        if len(mine) != len(members):
            return (f"the pod's cpuset has {len(mine)} CPUs on host CPUs {host}, where "
                    f"{len(members)} vCPUs belong (guest NUMA node)")
        pins.update({v: CpuSet([c]) for v, c in zip(members, mine, strict=True)})
    if len(CpuSet(c for cpus in pins.values() for c in cpus)) != len(union):
        return (f"the pod's cpuset {union} does not split one-to-one over the guest nodes' "
                "host CPUs (nodes that share some of them)")
    return pins


def check_cpusets(cpuset: CpuSet, mems: CpuSet, host_cpus: CpuSet, host_nodes: CpuSet,
                  source: str) -> None:
    """A container's cpuset must name CPUs and nodes the host has (SpecError otherwise)."""
    field = "linux.resources.cpu."
    if not cpuset <= host_cpus:
        raise SpecError(source, field + "cpus", f"{cpuset}: CPUs {cpuset - host_cpus} are not "
                        f"on this host (it has {host_cpus})")
    if host_nodes and not mems <= host_nodes:
        raise SpecError(source, field + "mems", f"{mems}: NUMA nodes {mems - host_nodes} are "
                        f"not on this host (it has {host_nodes})")


def host_cpu_set(online_cpus: int, node_cpus: Sequence[CpuSet] = ()) -> CpuSet:
    """The host's CPUs: its NUMA nodes' CPUs, else 0 .. online_cpus - 1."""
    return CpuSet(c for cpus in node_cpus for c in cpus) or CpuSet(range(online_cpus))
