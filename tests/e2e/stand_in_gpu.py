"""`pykata` with a simulated two-node host and a stand-in GPU, for tests/e2e/test_numa.py.

This host has one NUMA node and no device to pass through, so this wrapper runs pykata's
own CLI with three things swapped, and nothing else: the host topology gains a second node
(CPU 1) and a "GPU" on it in IOMMU group 77; the vfio-pci device QEMU would get becomes a
virtio-rng-pci device on the same root port (behind the same pxb-pcie); and memory bound to
the simulated host node 1 is bound to the real node 0. Everything else (the plan, the argv,
the boot, the guest) is pykata's real path.

Usage: python stand_in_gpu.py PYKATA-ARGS...
"""

from __future__ import annotations

import dataclasses
import sys

from pykata.cli import main as cli
from pykata.domain.cpuset import CpuSet
from pykata.domain.host import HostFacts
from pykata.domain.topology import HostNode, HostTopology, IommuGroup, PciDevice
from pykata.host import facts as host_facts
from pykata.plan import qemu
from pykata.sandbox import effects, request

GPU_BDF, GPU_GROUP = "0000:99:00.0", 77


def two_node_facts(sysfs_root: str = "/sys") -> HostFacts:
    real = host_facts.read_host_facts(sysfs_root)
    half = real.mem_total_mib // 2
    nodes = (HostNode(0, CpuSet([0]), half, (10, 20)), HostNode(1, CpuSet([1]), half, (20, 10)))
    topology = HostTopology(nodes, (PciDevice(GPU_BDF, 1),),
                            (IommuGroup(GPU_GROUP, (GPU_BDF,)),))
    return dataclasses.replace(real, topology=topology)


def stand_in_args(self: qemu.VfioPci) -> list[str]:
    return ["-device", f"virtio-rng-pci,bus={self.bus}"]


def real_node_args(self: qemu.NumaMemory) -> list[str]:
    return ORIGINAL_NUMA_MEMORY(dataclasses.replace(self, host_nodes=(0,)))


def no_check(bdfs: tuple[str, ...]) -> None:
    """No real device to check: the stand-in is an emulated one."""


ORIGINAL_NUMA_MEMORY = qemu.NumaMemory.args

if __name__ == "__main__":
    setattr(request, "read_host_facts", two_node_facts)  # noqa: B010 (not re-exported)
    qemu.VfioPci.args = stand_in_args  # type: ignore[method-assign]
    qemu.NumaMemory.args = real_node_args  # type: ignore[method-assign]
    setattr(effects, "check_vfio_ready", no_check)  # noqa: B010 (not re-exported)
    sys.exit(cli.main(sys.argv[1:]))
