"""What differs per guest architecture: machine type, CPU model, console, device bus.

Pure. The architecture comes from the QEMU binary's name (`qemu-system-<arch>`), else from
the host; the machine type from the configuration, unless it names another architecture's
default (the packaged `q35` on an aarch64 host), which is replaced with a reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from pykata.domain.errors import ConfigError

# Kernel parameters only x86's PC devices and TSC understand.
X86_KERNEL_PARAMS = ("i8042.noaux=1", "i8042.nomux=1", "i8042.nopnp=1", "i8042.dumbkbd=1",
                     "cryptomgr.notests", "no_timer_check", "tsc=reliable")


@dataclass(frozen=True)
class ArchProfile:
    name: str                  # os.uname().machine spelling: x86_64, aarch64, s390x, ppc64le
    machine_type: str          # the default QEMU machine
    tcg_cpu: str               # -cpu under TCG
    console: str               # the guest's console device for console=
    bus: str                   # "pci" or "ccw": device name suffix
    pc_dimm: bool              # the machine type takes pc-dimm hotplug
    kernel_params: tuple[str, ...]
    pmem_image: bool = False   # the guest root can be a DAX image on virtio-pmem


ARCHES = {
    a.name: a for a in (
        # TCG: the default model plus RDRAND, so the guest's CRNG is ready at boot and
        # Python's start-up does not block ~1.3 s on entropy (`-cpu max` boots slower).
        ArchProfile("x86_64", "q35", "qemu64,+rdrand", "ttyS0", "pci", True,
                    X86_KERNEL_PARAMS, pmem_image=True),
        ArchProfile("aarch64", "virt", "max", "ttyAMA0", "pci", True, ("cryptomgr.notests",)),
        ArchProfile("s390x", "s390-ccw-virtio", "qemu", "ttysclp0", "ccw", False,
                    ("cryptomgr.notests",)),
        ArchProfile("ppc64le", "pseries", "power9", "hvc0", "pci", True, ("cryptomgr.notests",)),
    )
}
# qemu-system-<suffix> -> arch: Debian's ppc64le guests run under qemu-system-ppc64.
BINARY_ARCH = {"x86_64": "x86_64", "aarch64": "aarch64", "s390x": "s390x",
               "ppc64": "ppc64le", "ppc64le": "ppc64le"}
DEFAULT_MACHINES = frozenset(a.machine_type for a in ARCHES.values())


def plan_arch(binary: str, host_arch: str) -> ArchProfile:
    """The guest architecture QEMU at `binary` emulates."""
    base = binary.rsplit("/", 1)[-1]
    suffix = base.removeprefix("qemu-system-") if base.startswith("qemu-system-") else ""
    arch = BINARY_ARCH.get(suffix) if suffix else BINARY_ARCH.get(host_arch, host_arch)
    if arch not in ARCHES:
        raise ConfigError("configuration", "hypervisor.qemu.path", binary,
                          f"guest architecture {suffix or host_arch!r} is not supported; "
                          f"pykata runs {', '.join(ARCHES)}")
    return ARCHES[arch]


def plan_machine(configured: str, arch: ArchProfile) -> tuple[str, str]:
    """(machine type, reason)."""
    if configured != arch.machine_type and configured in DEFAULT_MACHINES:
        return arch.machine_type, (f"machine {arch.machine_type}: machine_type {configured} "
                                   f"is another architecture's; {arch.name} uses "
                                   f"{arch.machine_type}")
    return configured, f"machine {configured}: machine_type"
