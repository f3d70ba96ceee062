"""Passthrough (VFIO) devices: which host PCI devices the sandbox gets, and where each sits on
the guest's PCI tree.

Pure. The OCI spec names IOMMU groups (`linux.devices` entries `/dev/vfio/<group>`); the host
topology says which devices each group holds. Without guest NUMA each device gets a
`pcie-root-port` of its own on the root bus. With guest NUMA a device's root port hangs off a
`pxb-pcie` expander whose `numa_node` is the device's guest node (pykata.plan.numa chose it),
so the guest's kernel sees the device on that node.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pykata.domain.errors import SpecError
from pykata.domain.topology import UNKNOWN_NODE, HostTopology
from pykata.plan.numa import NumaPlan

VFIO_DIR = "/dev/vfio/"
FIRST_PXB_BUS = 0x20   # bus numbers below are the root bus's; each pxb gets a range after it
MAX_BUS = 0xFF


@dataclass(frozen=True)
class Passthrough:
    bdf: str
    host_node: int           # UNKNOWN_NODE (-1) when the host does not say
    bus: str                 # the pcie-root-port it is plugged into
    guest_node: int | None   # None without guest NUMA

    @property
    def expander(self) -> str | None:
        """The pxb-pcie its root port is on: its guest node's; None (the root bus) without
        guest NUMA."""
        return None if self.guest_node is None else expander_id(self.guest_node)

    def to_json(self) -> dict[str, Any]:
        return {"bdf": self.bdf, "host_node": self.host_node, "guest_node": self.guest_node,
                "bus": self.bus}


def vfio_groups(doc: Mapping[str, Any], source: str) -> tuple[int, ...]:
    """The IOMMU groups the spec's `linux.devices` pass through, in the spec's order."""
    linux = doc.get("linux") or {}
    devices = linux.get("devices") if isinstance(linux, Mapping) else None
    groups: list[int] = []
    for i, dev in enumerate(devices or []):
        path = dev.get("path") if isinstance(dev, Mapping) else None
        if not isinstance(path, str) or not path.startswith(VFIO_DIR) or path == "/dev/vfio/vfio":
            continue
        name = path[len(VFIO_DIR):]
        if not name.isdigit() or len(name) > 6:
            raise SpecError(source, f"linux.devices[{i}].path", f"{path!r}: expected "
                            "/dev/vfio/<IOMMU group number>")
        if int(name) not in groups:
            groups.append(int(name))
    return tuple(groups)


def vfio_bdfs(groups: tuple[int, ...], topology: HostTopology, source: str) -> tuple[str, ...]:
    """Every PCI device of the groups (a group passes through whole)."""
    bdfs: list[str] = []
    for group in groups:
        members = topology.group_bdfs(group)
        if not members:
            raise SpecError(source, "linux.devices", f"/dev/vfio/{group}: the host has no "
                            f"IOMMU group {group} with devices (kernel/iommu_groups/{group})")
        bdfs += [b for b in members if b not in bdfs]
    return tuple(bdfs)


def plan_passthrough(bdfs: tuple[str, ...], numa: NumaPlan | None, topology: HostTopology
                     ) -> tuple[Passthrough, ...]:
    if numa is None:
        return tuple(Passthrough(b, _node(topology.device_node(b)), f"rp-vfio{i}", None)
                     for i, b in enumerate(bdfs))
    return tuple(Passthrough(d.bdf, d.host_node, d.bus, d.guest_node) for d in numa.devices)


def _node(node: int | None) -> int:
    return UNKNOWN_NODE if node is None else node


def expanders(devices: tuple[Passthrough, ...]) -> list[tuple[str, int, int]]:
    """(pxb-pcie id, first bus number, guest node) per expander in use. Bus numbers are
    spread evenly after the root bus's, so each has room for a bus per root port behind it."""
    nodes = sorted({d.guest_node for d in devices if d.guest_node is not None})
    if not nodes:
        return []
    step = (MAX_BUS + 1 - FIRST_PXB_BUS) // len(nodes)
    return [(expander_id(g), FIRST_PXB_BUS + k * step, g) for k, g in enumerate(nodes)]


def expander_id(guest_node: int) -> str:
    return f"pxb-numa{guest_node}"
