"""Size a sandbox VM: vCPUs and memory at boot, hotplug headroom, and resize targets.

Pure: the OCI spec, CRI sandbox annotations, configuration, host facts and the QEMU
binary's devices all arrive as arguments. Follows Kata (FACTS.md §5): limits size the VM,
requests do not (cpu shares count only where no quota is set); vCPUs are ceil(quota/period),
or the cpuset's size; memory is the limit in bytes >> 20. Fractions of a CPU are summed
before rounding up. Anything capped by the host is a warning, never silent; bad input is a
SpecError naming the field and the value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pykata.domain.config import Config
from pykata.domain.cpuset import CpuSet
from pykata.domain.errors import CpuSetError, SpecError
from pykata.domain.host import HostFacts
from pykata.domain.limits import Limits

MAX_VCPUS = 240                 # Kata's cap for default_maxvcpus = 0
DEFAULT_CPU_PERIOD = 100_000    # the kernel's CFS period, when a spec sets only a quota
# A container limit below this cannot hold crun and a process in the guest: refused.
MIN_LIMIT_MIB = 16
# A statically sized VM never boots with less: the kernel, agent and crun need it.
MIN_VM_MEMORY_MIB = 256
CRI = "io.kubernetes.cri."
ANNOTATIONS = {"cpu_quota": CRI + "sandbox-cpu-quota", "cpu_period": CRI + "sandbox-cpu-period",
               "cpu_shares": CRI + "sandbox-cpu-shares", "memory": CRI + "sandbox-memory"}
_INT = re.compile(r"-?[0-9]{1,19}\Z")
# Hotplugged memory comes in multiples of this: x86's guest memory block, and a multiple of
# every virtio-mem block size (QEMU refuses a virtio-mem region of 2047 MiB).
HOTPLUG_BLOCK_MIB = 128
# Hotplug device names per bus.
VIRTIO_MEM = {"pci": "virtio-mem-pci", "ccw": "virtio-mem-ccw"}



@dataclass(frozen=True)
class SizingPlan:
    vcpus: int
    max_vcpus: int
    memory_mib: int
    max_memory_mib: int
    static: bool
    memory_hotplug: str          # "pc-dimm", "virtio-mem" or "none"
    cpu_hotplug: bool
    memory_slots: int            # 0 when memory_hotplug is "none"
    default_vcpus: float         # the base that plan_resize adds container limits to
    default_memory_mib: int
    warnings: tuple[str, ...] = ()
    cpu_unplug: bool = True      # false under TCG: vCPUs only grow (see plan_sizing)
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class ResizeTarget:
    vcpus: int
    memory_mib: int
    reasons: tuple[str, ...] = ()


# ---- limits from the OCI spec and CRI annotations --------------------------------------------


def _int(value: object, source: str, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(source, field, f"expected an integer, got {value!r}")
    return value


def _cpu_limit(quota: int | None, period: int | None, source: str,
               fields: tuple[str, str]) -> float:
    """quota/period in CPUs; 0 when there is no quota (absent, 0 or -1)."""
    if period is not None and period <= 0:
        raise SpecError(source, fields[1], f"must be more than 0, got {period}")
    if quota is None or quota in (0, -1):
        return 0.0
    if quota < 0:
        raise SpecError(source, fields[0], f"must be more than 0, or -1 for no limit, "
                        f"got {quota}")
    return quota / (period or DEFAULT_CPU_PERIOD)


def _memory_limit(limit: int | None, source: str, field: str) -> int:
    """The limit in MiB; 0 when there is none (absent, 0 or -1)."""
    if limit is None or limit in (0, -1):
        return 0
    if limit < 0:
        raise SpecError(source, field, f"must be more than 0, or -1 for no limit, got {limit}")
    mib = limit >> 20
    if mib < MIN_LIMIT_MIB:
        raise SpecError(source, field, f"{limit} bytes ({mib} MiB) is below the "
                        f"{MIN_LIMIT_MIB} MiB a container needs in the guest")
    return mib


def _shares_vcpus(shares: int | None, source: str, field: str) -> float:
    if shares is None or shares == 0:
        return 0.0
    if shares < 0:
        raise SpecError(source, field, f"must not be negative, got {shares}")
    return float(math.ceil(shares / 1024))


def limits_from_spec(doc: Mapping[str, Any], source: str) -> Limits:
    """A container's limits from config.json's linux.resources."""
    res = _obj(_obj(doc, "linux", source, "linux"), "resources", source, "linux.resources")
    cpu = _obj(res, "cpu", source, "linux.resources.cpu")
    mem = _obj(res, "memory", source, "linux.resources.memory")
    f = "linux.resources.cpu."
    got = {k: _int(cpu[k], source, f + k) for k in ("quota", "period", "shares") if k in cpu}
    vcpus = _cpu_limit(got.get("quota"), got.get("period"), source, (f + "quota", f + "period"))
    cpus, mems = (_cpuset(cpu.get(k) or "", source, f + k) for k in ("cpus", "mems"))
    reasons = []
    if vcpus:
        reasons.append(f"{f}quota/period = {got['quota']}/"
                       f"{got.get('period', DEFAULT_CPU_PERIOD)} = {vcpus:g} CPUs")
    elif cpus:
        vcpus = float(len(cpus))
        reasons.append(f"{f}cpus = {cpu['cpus']!r}: {vcpus:g} CPUs (no quota)")
    elif got.get("shares"):
        vcpus = _shares_vcpus(got["shares"], source, f + "shares")
        reasons.append(f"{f}shares = {got['shares']}: ceil(shares/1024) = {vcpus:g} CPUs "
                       "(no quota, no cpuset)")
    field = "linux.resources.memory.limit"
    limit = _int(mem["limit"], source, field) if "limit" in mem else None
    mib = _memory_limit(limit, source, field)
    if mib:
        reasons.append(f"{field} = {limit} bytes = {mib} MiB")
    return Limits(vcpus, mib, tuple(reasons), cpus, mems)


def _obj(parent: Mapping[str, Any], key: str, source: str, field: str) -> Mapping[str, Any]:
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(source, field, f"must be an object, got {value!r}")
    return value


def _cpuset(text: object, source: str, field: str) -> CpuSet:
    if not isinstance(text, str):
        raise SpecError(source, field, f"expected a CPU list like '0-3', got {text!r}")
    try:
        return CpuSet.parse(text)
    except CpuSetError as exc:
        raise SpecError(source, field, f"{text!r}: {exc.why}") from None


def limits_from_annotations(annotations: Mapping[str, str], source: str) -> Limits | None:
    """The pod's limits from containerd's sandbox annotations; None when there are none."""
    got: dict[str, int] = {}
    for key, name in ANNOTATIONS.items():
        if name in annotations:
            raw = annotations[name].strip()
            if not _INT.match(raw):
                raise SpecError(source, name, f"expected an integer, got {annotations[name]!r}")
            got[key] = int(raw)
    if not got:
        return None
    fields = (ANNOTATIONS["cpu_quota"], ANNOTATIONS["cpu_period"])
    vcpus = _cpu_limit(got.get("cpu_quota"), got.get("cpu_period"), source, fields)
    reasons = []
    if vcpus:
        reasons.append(f"sandbox-cpu-quota/period = {got['cpu_quota']}/"
                       f"{got.get('cpu_period', DEFAULT_CPU_PERIOD)} = {vcpus:g} CPUs")
    elif got.get("cpu_shares"):
        vcpus = _shares_vcpus(got["cpu_shares"], source, ANNOTATIONS["cpu_shares"])
        reasons.append(f"sandbox-cpu-shares = {got['cpu_shares']}: ceil(shares/1024) = "
                       f"{vcpus:g} CPUs (no quota)")
    mib = _memory_limit(got.get("memory"), source, ANNOTATIONS["memory"])
    if mib:
        reasons.append(f"sandbox-memory = {got['memory']} bytes = {mib} MiB")
    return Limits(vcpus, mib, tuple(reasons))


def workload_limits(doc: Mapping[str, Any], source: str) -> Limits:
    """What a single-container sandbox (`pykata run`, a bundle) needs at boot: the CRI
    sandbox annotations' limits when there are any, else the container's own."""
    annotations = doc.get("annotations") or {}
    if not isinstance(annotations, Mapping):
        raise SpecError(source, "annotations", f"must be an object, got {annotations!r}")
    pod = limits_from_annotations(annotations, source)
    return pod if pod is not None else limits_from_spec(doc, source)


# ---- the plan ------------------------------------------------------------------------------


def plan_memory_hotplug(cfg: Config, devices: frozenset[str], bus: str,
                        dimm_ok: bool) -> tuple[str, str]:
    """("pc-dimm" | "virtio-mem" | "none", why), from what the QEMU binary offers."""
    hv = cfg.hypervisor
    virtio_mem = VIRTIO_MEM.get(bus, "")
    if hv.enable_virtio_mem and virtio_mem in devices:
        return "virtio-mem", f"enable_virtio_mem and {hv.path} offers {virtio_mem}"
    if dimm_ok and "pc-dimm" in devices:
        why = f"{hv.path} offers pc-dimm"
        if hv.enable_virtio_mem:
            why += f" but not {virtio_mem or 'virtio-mem'}"
        return "pc-dimm", why
    if not dimm_ok and not hv.enable_virtio_mem:
        return "none", (f"this machine type has no pc-dimm and enable_virtio_mem is false "
                        f"({virtio_mem or 'virtio-mem'} would be its hotplug device)")
    wanted = [d for d in (virtio_mem if hv.enable_virtio_mem else "",
                          "pc-dimm" if dimm_ok else "") if d]
    return "none", f"{hv.path} offers no memory hotplug device ({' or '.join(wanted)})"


def plan_sizing(cfg: Config, facts: HostFacts, devices: frozenset[str], workload: Limits,
                bus: str = "pci", dimm_ok: bool = True, resizable: bool = True,
                accel: str = "kvm") -> SizingPlan:
    """Boot size and headroom. `workload` is what is known at boot: the sandbox annotations'
    limits, or the single container's. `devices` are the QEMU binary's device names.
    `resizable` is false when containers never come and go (`pykata run`): hotplug
    headroom would only slow the boot (measured: about 1 s under TCG)."""
    hv = cfg.hypervisor
    warnings: list[str] = []
    reasons: list[str] = list(workload.reasons)
    mechanism, mech_why = plan_memory_hotplug(cfg, devices, bus, dimm_ok)
    # `static` picks the boot-size formula; a VM that is never resized (pykata run) keeps
    # the dynamic formula (defaults + limits) and only drops the headroom.
    static = cfg.runtime.static_sandbox_resource_mgmt or (resizable and mechanism == "none")
    if cfg.runtime.static_sandbox_resource_mgmt:
        reasons.append("static: static_sandbox_resource_mgmt = true, no hotplug")
    elif static:
        reasons.append(f"static: {mech_why}")
    vcpus, memory = _boot_size(cfg, workload, static, reasons)
    vcpus, memory = _cap_to_host(vcpus, memory, facts, warnings)
    if not resizable and not cfg.runtime.static_sandbox_resource_mgmt:
        reasons.append("no hotplug: one container for the VM's whole life (pykata run)")
        static = True
    if static:
        max_vcpus, max_memory, mechanism = vcpus, memory, "none"
        reasons.append("max_vcpus and max_memory: the boot size (static)")
    else:
        max_vcpus, max_memory = _maxima(cfg, facts, warnings, reasons)
        vcpus, memory = _cap_to_max(vcpus, memory, max_vcpus, max_memory, warnings)
        headroom = (max_memory - memory) // HOTPLUG_BLOCK_MIB * HOTPLUG_BLOCK_MIB
        if memory + headroom != max_memory:
            max_memory = memory + headroom
            reasons.append(f"max_memory {max_memory} MiB: the room above boot memory, "
                           f"a multiple of {HOTPLUG_BLOCK_MIB} MiB")
        if max_memory > memory:
            reasons.append(f"memory hotplug {mechanism}: {mech_why}")
        else:
            mechanism = "none"
            reasons.append(f"memory hotplug none: no room above {memory} MiB")
    # QEMU 7.2 under TCG keeps a vCPU's address spaces and TCG context after device_del;
    # the next hotplug then corrupts its heap (measured: every time, on the second add).
    cpu_unplug = accel != "tcg"
    if max_vcpus > vcpus and not cpu_unplug:
        reasons.append("vcpus grow only: under TCG, QEMU crashes on a hotplug after a vCPU "
                       "unplug")
    return SizingPlan(
        vcpus=vcpus, max_vcpus=max_vcpus, memory_mib=memory, max_memory_mib=max_memory,
        static=static, memory_hotplug=mechanism, cpu_hotplug=max_vcpus > vcpus,
        cpu_unplug=cpu_unplug,
        memory_slots=hv.memory_slots if mechanism != "none" else 0,
        default_vcpus=hv.default_vcpus, default_memory_mib=hv.default_memory,
        warnings=tuple(warnings), reasons=tuple(reasons))


def _boot_size(cfg: Config, workload: Limits, static: bool,
               reasons: list[str]) -> tuple[int, int]:
    hv = cfg.hypervisor
    base_cpu, base_mem = hv.default_vcpus, hv.default_memory
    cpu_why, mem_why = f"default_vcpus {hv.default_vcpus:g}", f"default_memory {hv.default_memory}"
    # runtime-rs: a statically sized VM gets the workload's limits plus a small overhead.
    if static and workload.vcpus:
        base_cpu, cpu_why = hv.overhead_vcpus, f"overhead_vcpus {hv.overhead_vcpus:g}"
    if static and workload.memory_mib:
        base_mem, mem_why = hv.overhead_memory, f"overhead_memory {hv.overhead_memory}"
    vcpus = max(1, math.ceil(base_cpu + workload.vcpus))
    memory = base_mem + workload.memory_mib
    reasons.append(f"vcpus {vcpus}: ceil({cpu_why} + workload {workload.vcpus:g})")
    reasons.append(f"memory {memory} MiB: {mem_why} + workload {workload.memory_mib}")
    if static and memory < MIN_VM_MEMORY_MIB:
        reasons.append(f"memory raised to {MIN_VM_MEMORY_MIB} MiB: the least a guest boots with")
        memory = MIN_VM_MEMORY_MIB
    return vcpus, memory


def _cap_to_max(vcpus: int, memory: int, max_vcpus: int, max_memory: int,
                warnings: list[str]) -> tuple[int, int]:
    if vcpus > max_vcpus:
        warnings.append(f"vcpus {vcpus} capped to max_vcpus {max_vcpus}")
        vcpus = max_vcpus
    if memory > max_memory:
        warnings.append(f"memory {memory} MiB capped to max_memory {max_memory} MiB")
        memory = max_memory
    return vcpus, memory


def _cap_to_host(vcpus: int, memory: int, facts: HostFacts,
                 warnings: list[str]) -> tuple[int, int]:
    if vcpus > facts.online_cpus:
        warnings.append(f"vcpus {vcpus} capped to the host's {facts.online_cpus} CPUs")
        vcpus = facts.online_cpus
    if facts.mem_total_mib and memory > facts.mem_total_mib:
        warnings.append(f"memory {memory} MiB capped to the host's {facts.mem_total_mib} MiB")
        memory = facts.mem_total_mib
    return vcpus, memory


def _maxima(cfg: Config, facts: HostFacts, warnings: list[str],
            reasons: list[str]) -> tuple[int, int]:
    hv = cfg.hypervisor
    host_cpus = min(facts.online_cpus, MAX_VCPUS)
    max_vcpus = _maximum("max_vcpus", "default_maxvcpus", hv.default_maxvcpus, host_cpus,
                         ("", " CPUs", f"the host's CPUs (at most {MAX_VCPUS})"),
                         warnings, reasons)
    host_mem = facts.mem_total_mib or hv.default_maxmemory or hv.default_memory
    max_memory = _maximum("max_memory", "default_maxmemory", hv.default_maxmemory, host_mem,
                          (" MiB", " MiB", "the host's RAM"), warnings, reasons)
    return max_vcpus, max_memory


def _maximum(name: str, key: str, configured: int, host: int, units: tuple[str, str, str],
             warnings: list[str], reasons: list[str]) -> int:
    """`configured`, where 0 means the host's amount and more than the host is capped."""
    unit, host_unit, host_what = units
    if configured == 0:
        reasons.append(f"{name} {host}{unit}: {key} = 0: {host_what}")
        return host
    if configured > host:
        warnings.append(f"{key} {configured}{unit} capped to the host's {host}{host_unit}")
        return host
    reasons.append(f"{name} {configured}{unit}: {key}")
    return configured


def plan_resize(current: SizingPlan, containers: Sequence[Limits]) -> ResizeTarget:
    """Dynamic mode: the target for the running containers, default + the sum of their
    limits, within the plan's maxima. pc-dimm memory only grows."""
    if current.static:
        return ResizeTarget(current.vcpus, current.memory_mib, ("static: no resize",))
    total = sum(containers, Limits())
    reasons = []
    vcpus = max(1, math.ceil(current.default_vcpus + total.vcpus))
    memory = current.default_memory_mib + total.memory_mib
    if vcpus > current.max_vcpus:
        reasons.append(f"vcpus {vcpus} capped to max_vcpus {current.max_vcpus}")
        vcpus = current.max_vcpus
    if memory > current.max_memory_mib:
        reasons.append(f"memory {memory} MiB capped to max_memory {current.max_memory_mib} MiB")
        memory = current.max_memory_mib
    if current.memory_hotplug != "virtio-mem" and memory < current.memory_mib:
        reasons.append(f"memory stays {current.memory_mib} MiB: "
                       f"{current.memory_hotplug} cannot shrink")
        memory = current.memory_mib
    return ResizeTarget(vcpus, memory, tuple(reasons))
