"""What a container (or a whole pod) may use: the value sizing, hotplug and pinning add up.
Pure values."""

from __future__ import annotations

from dataclasses import dataclass

from pykata.domain.cpuset import CpuSet

NO_CPUS = CpuSet()


@dataclass(frozen=True)
class Limits:
    """What one container (or a whole pod) may use; 0 means no limit."""

    vcpus: float = 0.0
    memory_mib: int = 0
    reasons: tuple[str, ...] = ()
    cpuset: CpuSet = NO_CPUS    # linux.resources.cpu.cpus: host CPUs; empty: any
    mems: CpuSet = NO_CPUS      # linux.resources.cpu.mems: host NUMA nodes; empty: any

    def __add__(self, other: Limits) -> Limits:
        return Limits(self.vcpus + other.vcpus, self.memory_mib + other.memory_mib,
                      self.reasons + other.reasons, self.cpuset | other.cpuset,
                      self.mems | other.mems)
