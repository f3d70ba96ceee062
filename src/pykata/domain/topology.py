"""The host's NUMA topology as values: nodes (CPUs, memory, distances), PCI devices' nodes,
IOMMU groups. pykata.host.topology reads them from sysfs; pykata.plan.numa decides with them.

Pure: no I/O. A node with no CPUs (memory only, e.g. CXL or PMEM) and a device whose node the
firmware did not report (-1) are valid values here; what to do about them is the planner's call.
"""

from __future__ import annotations

from dataclasses import dataclass

from pykata.domain.cpuset import CpuSet
from pykata.domain.errors import TopologyError

UNKNOWN_NODE = -1  # what sysfs numa_node says when the firmware gave no proximity


@dataclass(frozen=True)
class HostNode:
    id: int
    cpus: CpuSet                 # empty for a memory-only node
    memory_mib: int              # nodeN/meminfo MemTotal
    distances: tuple[int, ...]   # nodeN/distance: one per node of the topology, in id order


@dataclass(frozen=True)
class PciDevice:
    bdf: str                     # "0000:9d:00.0"
    numa_node: int               # UNKNOWN_NODE when sysfs says -1 (or has no numa_node)


@dataclass(frozen=True)
class IommuGroup:
    group: int
    bdfs: tuple[str, ...]


@dataclass(frozen=True)
class HostTopology:
    nodes: tuple[HostNode, ...]          # online nodes, ascending id
    devices: tuple[PciDevice, ...] = ()  # ascending BDF
    iommu_groups: tuple[IommuGroup, ...] = ()

    def __post_init__(self) -> None:
        ids = [n.id for n in self.nodes]
        if ids != sorted(set(ids)):
            raise TopologyError("nodes", ",".join(map(str, ids)), "node ids must be unique "
                                "and ascending")
        for node in self.nodes:
            if len(node.distances) != len(self.nodes):
                raise TopologyError(f"node{node.id}/distance",
                                    " ".join(map(str, node.distances)),
                                    f"{len(node.distances)} distances for {len(self.nodes)} "
                                    "nodes")

    @property
    def node_ids(self) -> CpuSet:
        return CpuSet(n.id for n in self.nodes)

    def node(self, node_id: int) -> HostNode:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(node_id)

    def distance(self, a: int, b: int) -> int:
        """Host distance from node a to node b (both must exist)."""
        index = [n.id for n in self.nodes].index(b)
        return self.node(a).distances[index]

    def device_node(self, bdf: str) -> int | None:
        """The device's node (UNKNOWN_NODE when unreported), None when there is no such BDF."""
        for d in self.devices:
            if d.bdf == bdf:
                return d.numa_node
        return None

    def group_bdfs(self, group: int) -> tuple[str, ...] | None:
        for g in self.iommu_groups:
            if g.group == group:
                return g.bdfs
        return None
