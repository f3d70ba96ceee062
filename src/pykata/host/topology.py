"""Read the host's NUMA topology from sysfs (FACTS.md §5), under a configurable root.

Reads only. A root need not be /sys: tests and `--sysfs-root` point it at a recorded tree.
A kernel without NUMA (no devices/system/node) gives no nodes; a PCI device without a
numa_node file gives -1 (unknown). A file that is there but unreadable as what it should hold
is a TopologyError naming the file and the text.
"""

from __future__ import annotations

import re
from pathlib import Path

from pykata.domain.cpuset import CpuSet
from pykata.domain.errors import CpuSetError, TopologyError
from pykata.domain.topology import UNKNOWN_NODE, HostNode, HostTopology, IommuGroup, PciDevice

_MEM_TOTAL = re.compile(r"^Node\s+(\d+)\s+MemTotal:\s+(\d+)\s+kB\s*$", re.MULTILINE)


def read_topology(sysfs_root: str | Path = "/sys") -> HostTopology:
    root = Path(sysfs_root)
    return HostTopology(nodes=read_nodes(root / "devices/system/node"),
                        devices=read_pci_devices(root / "bus/pci/devices"),
                        iommu_groups=read_iommu_groups(root / "kernel/iommu_groups"))


def read_nodes(node_dir: Path) -> tuple[HostNode, ...]:
    online_file = node_dir / "online"
    if not online_file.exists():
        return ()
    online = _cpuset(online_file)
    return tuple(_node(node_dir / f"node{n}", n, len(online)) for n in online)


def _node(path: Path, node_id: int, count: int) -> HostNode:
    cpus = _cpuset(path / "cpulist")
    return HostNode(node_id, cpus, _mem_total_mib(path / "meminfo", node_id),
                    _distances(path / "distance", count))


def _cpuset(path: Path) -> CpuSet:
    text = _text(path)
    try:
        return CpuSet.parse(text)
    except CpuSetError as exc:
        raise TopologyError(str(path), text.strip(), exc.why) from None


def _mem_total_mib(path: Path, node_id: int) -> int:
    text = _text(path)
    found = _MEM_TOTAL.search(text)
    if found is None:
        first = text.strip().splitlines()[0] if text.strip() else ""
        raise TopologyError(str(path), first, "no 'Node N MemTotal: <n> kB' line")
    if int(found.group(1)) != node_id:
        raise TopologyError(str(path), found.group(0).strip(), f"names another node than "
                            f"node{node_id}")
    return int(found.group(2)) // 1024


def _distances(path: Path, count: int) -> tuple[int, ...]:
    text = _text(path)
    words = text.split()
    if not all(w.isascii() and w.isdigit() for w in words):
        raise TopologyError(str(path), text.strip(), "distances must be whole numbers")
    if len(words) != count:
        raise TopologyError(str(path), text.strip(),
                            f"{len(words)} distances for {count} online nodes")
    return tuple(int(w) for w in words)


def read_pci_devices(pci_dir: Path) -> tuple[PciDevice, ...]:
    if not pci_dir.is_dir():
        return ()
    devices = []
    for entry in sorted(pci_dir.iterdir(), key=lambda p: p.name):
        node_file = entry / "numa_node"
        node = _node_id(node_file) if node_file.exists() else UNKNOWN_NODE
        devices.append(PciDevice(entry.name, node))
    return tuple(devices)


def _node_id(path: Path) -> int:
    text = _text(path).strip()
    try:
        value = int(text)
    except ValueError:
        raise TopologyError(str(path), text, "not a node number") from None
    if value < UNKNOWN_NODE:
        raise TopologyError(str(path), text, "a node number is -1 (unknown) or more")
    return value


def read_iommu_groups(groups_dir: Path) -> tuple[IommuGroup, ...]:
    if not groups_dir.is_dir():
        return ()
    groups = []
    for entry in groups_dir.iterdir():
        if not (entry.name.isascii() and entry.name.isdigit()):
            raise TopologyError(str(entry), entry.name, "an IOMMU group is named by a number")
        devices = entry / "devices"
        bdfs = tuple(sorted(p.name for p in devices.iterdir())) if devices.is_dir() else ()
        groups.append(IommuGroup(int(entry.name), bdfs))
    return tuple(sorted(groups, key=lambda g: g.group))


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        raise TopologyError(str(path), "", "missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TopologyError(str(path), "", f"unreadable: {exc}") from None
