"""Facts about the host that plans depend on. Values only; pykata.host reads them."""

from __future__ import annotations

from dataclasses import dataclass

from pykata.domain.topology import HostTopology

# A host that says nothing about NUMA (no devices/system/node): enable_numa cannot be met.
NO_TOPOLOGY = HostTopology(nodes=())


@dataclass(frozen=True)
class HostFacts:
    cpu_flags: frozenset[str]
    kvm_usable: bool          # /dev/kvm opens and answers KVM_GET_API_VERSION
    kvm_detail: str           # why not, when it is not
    vhost_vsock: bool         # /dev/vhost-vsock exists
    online_cpus: int
    mem_total_mib: int
    arch: str = "x86_64"      # os.uname().machine
    topology: HostTopology = NO_TOPOLOGY   # NUMA nodes and PCI devices (sysfs)
    topology_error: str = ""  # why sysfs's topology could not be read (matters for NUMA only)
