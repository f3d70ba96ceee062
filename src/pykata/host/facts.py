"""Read the host facts plans need: CPU flags, KVM usability, vsock, CPUs and memory, and the
NUMA topology (under a sysfs root)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from pykata.domain.config import Config
from pykata.domain.errors import TopologyError
from pykata.domain.host import NO_TOPOLOGY, HostFacts
from pykata.host.topology import read_topology
from pykata.plan.vm import image_path

_KVM_GET_API_VERSION = 0xAE00
_KVM_API_VERSION = 12


def read_cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def probe_kvm(dev: str = "/dev/kvm") -> tuple[bool, str]:
    try:
        fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return False, f"cannot open {dev}: {exc.strerror}"
    try:
        version = fcntl.ioctl(fd, _KVM_GET_API_VERSION)
    except OSError as exc:
        return False, f"{dev} KVM_GET_API_VERSION failed: {exc.strerror}"
    finally:
        os.close(fd)
    if version != _KVM_API_VERSION:
        return False, f"{dev} speaks KVM API {version}, need {_KVM_API_VERSION}"
    return True, ""


def read_mem_total_mib(meminfo: Path = Path("/proc/meminfo")) -> int:
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 0


def read_host_facts(sysfs_root: str = "/sys") -> HostFacts:
    kvm_ok, kvm_detail = probe_kvm()
    # Only NUMA needs the topology: an unreadable one must not stop a sandbox without it.
    try:
        topology, topology_error = read_topology(sysfs_root), ""
    except TopologyError as exc:
        topology, topology_error = NO_TOPOLOGY, str(exc)
    return HostFacts(
        cpu_flags=read_cpu_flags(),
        kvm_usable=kvm_ok,
        kvm_detail=kvm_detail,
        vhost_vsock=os.path.exists("/dev/vhost-vsock"),
        online_cpus=len(os.sched_getaffinity(0)),
        mem_total_mib=read_mem_total_mib(),
        arch=os.uname().machine,
        topology=topology,
        topology_error=topology_error,
    )


def read_sysfs_sizes(root: str) -> tuple[int, int]:
    """(online CPUs, RAM in MiB) from a directory laid out like /sys: `devices/system/cpu/
    online` (else the union of `devices/system/node/node*/cpulist`) and the `MemTotal` of
    every `devices/system/node/node*/meminfo`."""
    from pykata.domain.cpuset import CpuSet
    from pykata.domain.errors import CpuSetError, HostError

    online = Path(root, "devices/system/cpu/online")
    # A recorded NUMA host may list its CPUs only per node (node*/cpulist).
    lists = [online] if online.exists() else sorted(
        Path(root, "devices/system/node").glob("node*/cpulist")) or [online]
    found = CpuSet()
    for path in lists:
        try:
            found = found | CpuSet.parse(path.read_text().strip())
        except (OSError, CpuSetError) as exc:
            raise HostError(f"--sysfs-root {root}: cannot read {path}: {exc}") from None
    cpus = len(found)
    kib = 0
    for meminfo in sorted(Path(root, "devices/system/node").glob("node*/meminfo")):
        for line in meminfo.read_text().splitlines():
            fields = line.split()
            if len(fields) >= 4 and fields[2] == "MemTotal:":
                kib += int(fields[3])
    if not kib:
        raise HostError(f"--sysfs-root {root}: no MemTotal in devices/system/node/node*/meminfo")
    return cpus, kib // 1024


def image_bytes(cfg: Config) -> int:
    """The size of the DAX guest image `cfg` asks for (0: none, or unreadable)."""
    path = image_path(cfg)
    try:
        return os.stat(path).st_size if path else 0
    except OSError:
        return 0
