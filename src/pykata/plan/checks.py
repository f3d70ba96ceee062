"""Judge a host for `pykata check`: one pass/warn/fail line per fact, with what to do.

Pure: the host report, the image report and the configuration arrive as arguments. The
accelerator decision is plan.vm's own, so check says what `pykata run` will do. FAIL
means pykata cannot run a container until it is fixed; WARN means it runs, but slower
or with less than it could.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

from pykata.domain.checks import CheckResult, HostReport, ImageReport, Status
from pykata.domain.config import Config
from pykata.domain.cpuset import CpuSet
from pykata.domain.errors import ConfigError
from pykata.plan.arch import plan_arch
from pykata.plan.vm import check_state_dir, plan_accel, plan_guest_image

PASS, WARN, FAIL = Status.PASS, Status.WARN, Status.FAIL
TESTED_QEMU = (7, 2)
REQUIRED_DEVICES = ("virtio-serial-pci", "virtserialport", "vhost-user-fs-pci")
MEMORY_HOTPLUG_DEVICES = ("pc-dimm", "virtio-mem-pci")
Check = Callable[[HostReport, Config], CheckResult]


def judge_host(r: HostReport, image: ImageReport, cfg: Config) -> list[CheckResult]:
    return [*(check(r, cfg) for check in _PLATFORM), judge_image(image),
            *(check(r, cfg) for check in _SETUP)]


def can_run(results: list[CheckResult]) -> bool:
    return all(c.status is not FAIL for c in results)


def _cpu(r: HostReport, cfg: Config) -> CheckResult:
    hw = sorted(r.facts.cpu_flags & {"vmx", "svm"})
    if hw:
        return CheckResult("cpu virtualisation", PASS, f"CPU has {'/'.join(hw)}")
    where = " (this host is itself a VM)" if "hypervisor" in r.facts.cpu_flags else ""
    return CheckResult("cpu virtualisation", WARN, f"CPU has no vmx/svm flag{where}",
                       "guests run under TCG, which is much slower; for KVM use bare metal "
                       "or nested virtualisation, with VT-x/AMD-V enabled in firmware")


def _kvm(r: HostReport, cfg: Config) -> CheckResult:
    mods = f" (modules: {', '.join(r.kvm_modules)})" if r.kvm_modules else ""
    hw = r.facts.cpu_flags & {"vmx", "svm"}
    if not r.kvm_device:
        return CheckResult("kvm", WARN, "/dev/kvm is missing",
                           "modprobe kvm_intel or kvm_amd" if hw else "guests run under TCG")
    if not r.facts.kvm_usable:
        return CheckResult("kvm", WARN, f"/dev/kvm unusable: {r.facts.kvm_detail}{mods}",
                           "run as root, or fix /dev/kvm's permissions")
    if not hw:
        pvm = " by kvm_pvm" if "kvm_pvm" in r.kvm_modules else ""
        return CheckResult("kvm", WARN, f"KVM unusable: /dev/kvm is provided{pvm}{mods} but the "
                           "CPU has no vmx/svm, and a standard guest kernel does not run "
                           "under it", "nothing to do: guests run under TCG")
    return CheckResult("kvm", PASS, f"/dev/kvm answers{mods}; that a guest really boots "
                       "under it is verified by `pykata check --boot`")


def _accel(r: HostReport, cfg: Config) -> CheckResult:
    try:
        accel, why = plan_accel(cfg.hypervisor.accel, r.facts)
    except ConfigError as exc:
        return CheckResult("accelerator", FAIL, str(exc),
                           'set [hypervisor.qemu] accel = "auto" to fall back to TCG')
    if r.qemu_caps.accels and accel not in r.qemu_caps.accels:
        return CheckResult("accelerator", FAIL, f"{accel}: {r.qemu.path} does not offer it",
                           "install a QEMU built with it")
    return CheckResult("accelerator", PASS, f"{accel}: {why}")


def _qemu(r: HostReport, cfg: Config) -> CheckResult:
    q = r.qemu
    if not q.found or not q.version:
        return CheckResult("qemu", FAIL, f"{q.path}: {q.error or 'no version'}",
                           "apt-get install qemu-system-x86, or set [hypervisor.qemu] path")
    m = re.search(r"version (\d+)\.(\d+)", q.version)
    if m and (int(m.group(1)), int(m.group(2))) < TESTED_QEMU:
        return CheckResult("qemu", WARN, f"{q.path}: {q.version}",
                           f"pykata is tested with QEMU {'.'.join(map(str, TESTED_QEMU))}")
    return CheckResult("qemu", PASS, f"{q.path}: {q.version}")


def _qemu_devices(r: HostReport, cfg: Config) -> CheckResult:
    devices = r.qemu_caps.devices
    if not devices:
        return CheckResult("qemu devices", FAIL, "QEMU did not list its devices", "see qemu")
    need = [*REQUIRED_DEVICES, *(["vhost-vsock-pci"] if cfg.agent.transport == "vsock" else [])]
    missing = [d for d in need if d not in devices]
    if missing:
        return CheckResult("qemu devices", FAIL, f"missing {', '.join(missing)}",
                           "install Debian's qemu-system-x86")
    hotplug = [d for d in MEMORY_HOTPLUG_DEVICES if d in devices]
    if not hotplug:
        return CheckResult("qemu devices", WARN, "no pc-dimm or virtio-mem-pci: no memory "
                           "hotplug", "VMs are sized once, at boot")
    return CheckResult("qemu devices", PASS, f"{', '.join(need)}; memory hotplug: "
                       f"{', '.join(hotplug)}")


def _free_page_reporting(r: HostReport, cfg: Config) -> CheckResult:
    """QEMU's virtio-balloon, for the guest's free page reporting (the guest kernel of the
    built image has it: PAGE_REPORTING=y, virtio_balloon as a module)."""
    name = "free page reporting"
    if not cfg.hypervisor.reclaim_guest_freed_memory:
        return CheckResult(name, PASS, "off (reclaim_guest_freed_memory = false)")
    if r.qemu_caps.devices and "virtio-balloon-pci" not in r.qemu_caps.devices:
        return CheckResult(name, WARN, "QEMU has no virtio-balloon-pci: freed guest memory "
                           "stays with the VM", "set reclaim_guest_freed_memory = false")
    return CheckResult(name, PASS, "virtio-balloon-pci with free-page-reporting: the guest "
                       "returns memory it frees")


def _guest_root(r: HostReport, cfg: Config) -> CheckResult:
    """The DAX image on virtio-pmem, or why the initramfs holds the root: the decision
    `pykata run` makes (the built image's kernel was checked for DAX when it was built)."""
    name = "dax guest image"
    try:
        guest = plan_guest_image(cfg, plan_arch(cfg.hypervisor.path, r.facts.arch),
                                 r.qemu_caps.devices, r.image_bytes)
    except ConfigError as exc:
        return CheckResult(name, FAIL, str(exc), "fix [hypervisor.qemu] image or initrd")
    if guest.image:
        kernel = ("the configured kernel must have FS_DAX, ZONE_DEVICE and virtio_pmem"
                  if cfg.hypervisor.kernel else "the built kernel has DAX")
        return CheckResult(name, PASS, f"{guest.image} ({guest.image_bytes / (1 << 20):.0f} "
                           f"MiB) on virtio-pmem, shared by every VM; {kernel}")
    detail = guest.reason.removeprefix("guest root: ")
    if cfg.hypervisor.initrd:
        return CheckResult(name, PASS, f"off: {detail}", "leave initrd empty for the "
                           "shared DAX image")
    return CheckResult(name, WARN, f"off: {detail}", "run `pykata image build`; each VM "
                       "holds a copy of the whole initramfs meanwhile")


def _machine(r: HostReport, cfg: Config) -> CheckResult:
    machine = cfg.hypervisor.machine_type
    if r.qemu_caps.machines and machine not in r.qemu_caps.machines:
        return CheckResult("machine type", FAIL, f"{machine}: QEMU does not offer it",
                           "set [hypervisor.qemu] machine_type (see `qemu -machine help`)")
    return CheckResult("machine type", PASS, machine)


def _virtiofsd(r: HostReport, cfg: Config) -> CheckResult:
    v = r.virtiofsd
    if not v.found:
        return CheckResult("virtiofsd", FAIL, f"{v.path}: {v.error}",
                           "apt-get install qemu-system-common, or set virtio_fs_daemon")
    return CheckResult("virtiofsd", PASS, f"{v.path}: {v.version or 'found'}")


def judge_image(image: ImageReport) -> CheckResult:
    """current: PASS; stale or unknown: WARN (the old image still runs); else FAIL."""
    if image.state == "current":
        return CheckResult("guest image", PASS, image.detail)
    hint = "run `pykata image build`" + (" --force" if image.state == "broken" else "")
    status = WARN if image.state in ("stale", "unknown") else FAIL
    return CheckResult("guest image", status, f"{image.state}: {image.detail}", hint)


def _vsock(r: HostReport, cfg: Config) -> CheckResult:
    if r.devices.get("/dev/vhost-vsock"):
        return CheckResult("vhost-vsock", PASS, "/dev/vhost-vsock present: vsock transport")
    if cfg.agent.transport == "vsock":
        return CheckResult("vhost-vsock", FAIL, "/dev/vhost-vsock is missing and "
                           'transport = "vsock"', 'modprobe vhost_vsock, or transport = "auto"')
    return CheckResult("vhost-vsock", PASS, "/dev/vhost-vsock absent: the agent talks over "
                       "virtio-serial")


def _modules(r: HostReport, cfg: Config) -> CheckResult:
    loaded = [m for m, ok in r.modules.items() if ok]
    absent = [m for m, ok in r.modules.items() if not ok]
    return CheckResult("kernel modules", PASS, f"loaded: {', '.join(loaded) or 'none'}; "
                       f"not loaded: {', '.join(absent) or 'none'}")


def _cgroups(r: HostReport, cfg: Config) -> CheckResult:
    if not r.cgroup:
        return CheckResult("cgroups", WARN, "no cgroup file system at /sys/fs/cgroup",
                           "mount cgroup2 (or the v1 controllers) at /sys/fs/cgroup")
    return CheckResult("cgroups", PASS, r.cgroup)


def _numa(r: HostReport, cfg: Config) -> CheckResult:
    nodes = ", ".join(f"node{n.id} CPUs {n.cpus} {n.mem_mib} MiB" for n in r.numa)
    hv = cfg.hypervisor
    online = CpuSet(n.id for n in r.numa)
    for entry in hv.numa_mapping if hv.enable_numa else ():
        if not CpuSet.parse(entry) <= online:
            return CheckResult("numa", FAIL, f"numa_mapping entry {entry!r}: host has nodes "
                               f"{online or 'none'}", "fix [hypervisor.qemu] numa_mapping")
    count = f"{len(r.numa)} node{'s' if len(r.numa) != 1 else ''}"
    return CheckResult("numa", PASS, f"{count}: {nodes}" if r.numa else "no NUMA information")


def _privileges(r: HostReport, cfg: Config) -> CheckResult:
    if r.euid == 0:
        return CheckResult("privileges", PASS, "root")
    return CheckResult("privileges", FAIL, f"uid {r.euid}: `pykata run` needs root (it "
                       "mounts the container's rootfs and runs virtiofsd)", "run as root")


def _state_dir(r: HostReport, cfg: Config) -> CheckResult:
    state = cfg.runtime.state_dir
    try:
        check_state_dir(f"{state.rstrip('/')}/{'0' * 32}")  # a sandbox id is 32 characters
    except ConfigError as exc:
        return CheckResult("state dir", FAIL, str(exc), "set a shorter [runtime] state_dir")
    return CheckResult("state dir", PASS, state)


def _resources(r: HostReport, cfg: Config) -> CheckResult:
    hv = cfg.hypervisor
    vcpus = math.ceil(hv.default_vcpus)
    size = f"{vcpus} vCPU, {hv.default_memory} MiB"
    host = f"host has {r.facts.online_cpus} CPUs, {r.facts.mem_total_mib} MiB"
    if vcpus > r.facts.online_cpus:
        return CheckResult("vm size", FAIL, f"{size}: {host}", "lower default_vcpus")
    if hv.default_memory > r.facts.mem_total_mib:
        return CheckResult("vm size", WARN, f"{size}: {host}", "lower default_memory")
    return CheckResult("vm size", PASS, f"{size} per VM at boot; {host}")


def _config(r: HostReport, cfg: Config) -> CheckResult:
    read = ", ".join(cfg.sources) or "built-in defaults"
    if cfg.warnings:
        return CheckResult("configuration", WARN, f"{read}: " + "; ".join(cfg.warnings),
                           "fix or remove the keys named")
    return CheckResult("configuration", PASS, read)


# In the order they print: what runs the VM, then the image, then the host's setup.
_PLATFORM: tuple[Check, ...] = (
    _config, _cpu, _kvm, _accel, _qemu, _qemu_devices, _free_page_reporting, _guest_root,
    _machine, _virtiofsd,
)
_SETUP: tuple[Check, ...] = (
    _vsock, _modules, _cgroups, _numa, _privileges, _state_dir, _resources,
)
