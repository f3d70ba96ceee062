#!/usr/bin/env python3
"""Write the recorded host topologies under tests/fixtures/hosts/ as sysfs trees.

Each host is described below (node CPUs, MemTotal in kB, distance rows, PCI devices and
their numa_node, IOMMU groups) and written as the files pykata.host.topology reads:
  devices/system/node/online, nodeN/{cpulist,meminfo,distance}
  bus/pci/devices/<BDF>/numa_node
  kernel/iommu_groups/<g>/devices/<BDF>   (an empty file; sysfs has a symlink there)
The 1-node host is this development machine's /sys, recorded with `--record this-host /sys`.

    python scripts/gen-host-fixtures.py            # rewrite the described hosts
    python scripts/gen-host-fixtures.py --record NAME SYSFS_ROOT
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

HOSTS_DIR = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "hosts"
GiB_KB = 1 << 20


def _dist(rows: list[str]) -> list[list[int]]:
    return [[int(w) for w in row.split()] for row in rows]


# name -> (nodes: [(cpulist, MemTotal kB)], distance rows, {bdf: numa_node}, {group: [bdf]})
GPUS_NODE0 = ["0000:18:00.0", "0000:2a:00.0", "0000:3a:00.0", "0000:5d:00.0"]
GPUS_NODE1 = ["0000:9a:00.0", "0000:ab:00.0", "0000:ba:00.0", "0000:db:00.0"]
HOSTS: dict[str, dict[str, Any]] = {
    # Two sockets, 24 cores x 2 threads each, 256 GiB per socket, 4 GPUs per socket; each GPU
    # in its own IOMMU group, the first with its audio function beside it.
    "two-socket-8gpu": {
        "nodes": [("0-23,48-71", 263_625_884), ("24-47,72-95", 264_201_216)],
        "distance": _dist(["10 21", "21 10"]),
        "pci": {"0000:00:00.0": 0, "0000:18:00.1": 0, "0000:80:00.0": 1,
                **{b: 0 for b in GPUS_NODE0}, **{b: 1 for b in GPUS_NODE1}},
        "iommu": {20: ["0000:18:00.0", "0000:18:00.1"],
                  **{21 + i: [b] for i, b in enumerate(GPUS_NODE0[1:])},
                  **{40 + i: [b] for i, b in enumerate(GPUS_NODE1)}},
    },
    # AMD EPYC 64 cores in NPS4: four nodes of 16 cores x 2 threads, 64 GiB each.
    "nps4-4node": {
        "nodes": [(f"{16 * i}-{16 * i + 15},{64 + 16 * i}-{64 + 16 * i + 15}",
                   64 * GiB_KB - (1_048_576 if i == 0 else 262_144)) for i in range(4)],
        "distance": _dist(["10 12 12 12", "12 10 12 12", "12 12 10 12", "12 12 12 10"]),
        "pci": {"0000:00:00.0": 0, "0000:41:00.0": 1, "0000:81:00.0": 2, "0000:c1:00.0": 3},
        "iommu": {0: ["0000:00:00.0"], 30: ["0000:41:00.0"], 60: ["0000:81:00.0"],
                  90: ["0000:c1:00.0"]},
    },
    # Two sockets of four nodes (sub-NUMA clustering), 8 CPUs and 32 GiB per node.
    "eight-node": {
        "nodes": [(f"{8 * i}-{8 * i + 7}", 32 * GiB_KB) for i in range(8)],
        "distance": [[10 if i == j else 12 if i // 4 == j // 4 else 32 for j in range(8)]
                     for i in range(8)],
        "pci": {"0000:00:00.0": 0, "0000:17:00.0": 1, "0000:ca:00.0": 6},
        "iommu": {60: ["0000:ca:00.0"]},
    },
    # Two nodes with CPUs and a third with memory only (CXL), which has no CPUs.
    "memory-only-node": {
        "nodes": [("0-7", 16 * GiB_KB), ("8-15", 16 * GiB_KB), ("", 64 * GiB_KB)],
        "distance": _dist(["10 21 17", "21 10 28", "17 28 10"]),
        "pci": {"0000:00:00.0": 0, "0000:0d:00.0": 2},
        "iommu": {5: ["0000:0d:00.0"]},
    },
    # Two nodes, and a GPU whose firmware reports no proximity (numa_node -1).
    "gpu-unknown-node": {
        "nodes": [("0-15", 64 * GiB_KB), ("16-31", 64 * GiB_KB)],
        "distance": _dist(["10 20", "20 10"]),
        "pci": {"0000:00:00.0": 0, "0000:3b:00.0": -1, "0000:af:00.0": 1},
        "iommu": {12: ["0000:3b:00.0"], 13: ["0000:af:00.0"]},
    },
}


def write_host(dest: Path, host: dict[str, Any]) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    node_dir = dest / "devices/system/node"
    nodes = host["nodes"]
    _write(node_dir / "online", f"0-{len(nodes) - 1}" if len(nodes) > 1 else "0")
    for i, (cpus, kb) in enumerate(nodes):
        _write(node_dir / f"node{i}/cpulist", cpus)
        _write(node_dir / f"node{i}/meminfo",
               f"Node {i} MemTotal:       {kb} kB\nNode {i} MemFree:        {kb // 2} kB")
        _write(node_dir / f"node{i}/distance", " ".join(map(str, host["distance"][i])))
    for bdf, node in host["pci"].items():
        _write(dest / f"bus/pci/devices/{bdf}/numa_node", str(node))
    for group, bdfs in host["iommu"].items():
        for bdf in bdfs:
            _write(dest / f"kernel/iommu_groups/{group}/devices/{bdf}", None)


def record(dest: Path, sysfs: Path) -> None:
    """Copy the files pykata reads from a live sysfs (symlinked entries become plain ones)."""
    if dest.exists():
        shutil.rmtree(dest)
    node_dir = sysfs / "devices/system/node"
    _write(dest / "devices/system/node/online", (node_dir / "online").read_text().strip())
    for node in sorted(node_dir.glob("node[0-9]*")):
        for name in ("cpulist", "meminfo", "distance"):
            text = (node / name).read_text().strip()
            if name == "meminfo":
                text = "\n".join(text.splitlines()[:2])
            _write(dest / f"devices/system/node/{node.name}/{name}", text)
    for dev in sorted((sysfs / "bus/pci/devices").iterdir()):
        _write(dest / f"bus/pci/devices/{dev.name}/numa_node",
               (dev / "numa_node").read_text().strip())
    groups = sysfs / "kernel/iommu_groups"
    for group in sorted(groups.iterdir()) if groups.is_dir() else ():
        for dev in sorted((group / "devices").iterdir()):
            _write(dest / f"kernel/iommu_groups/{group.name}/devices/{dev.name}", None)


def _write(path: Path, text: str | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("" if text is None else text + "\n")


def main(argv: list[str]) -> int:
    if argv[:1] == ["--record"] and len(argv) == 3:
        record(HOSTS_DIR / argv[1], Path(argv[2]))
        return 0
    if argv:
        print(__doc__, file=sys.stderr)
        return 2
    for name, host in HOSTS.items():
        write_host(HOSTS_DIR / name, host)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
