"""Plan a sandbox VM: accelerator, size, kernel command line, transport, and QEMU argv.

Pure: host facts and configuration arrive as arguments; nothing here reads the host.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pykata.domain.config import Config
from pykata.domain.contract import DAX_IMAGE_ALIGN, SHARED_TAG
from pykata.domain.errors import ConfigError, NumaError
from pykata.domain.host import HostFacts
from pykata.domain.limits import Limits
from pykata.plan import qemu
from pykata.plan.arch import ArchProfile, plan_arch, plan_machine
from pykata.plan.hotplug import virtio_mem_devices
from pykata.plan.numa import NumaPlan, numa_options, plan_numa
from pykata.plan.pci import Passthrough, expanders, plan_passthrough, vfio_bdfs
from pykata.plan.sizing import HOTPLUG_BLOCK_MIB, SizingPlan, plan_sizing

NO_LIMITS = Limits()

# Quiet, fast boot: no console chatter (serial output is slow under TCG), no PS/2 probing
# (x86), panic powers off (-no-reboot) instead of hanging.
BASE_KERNEL_PARAMS = ("quiet", "panic=-1", "reboot=k", "rdinit=/init")


@dataclass(frozen=True)
class GuestImage:
    """Where the guest's root comes from: the initramfs itself, or a read-only DAX image on
    virtio-pmem that a tiny initramfs mounts (`image` set)."""

    kernel: str
    initrd: str
    image: str = ""
    image_bytes: int = 0
    reason: str = ""


def built_image_dir(cfg: Config) -> str:
    return cfg.image.dir.rstrip("/") + "/image"


def image_path(cfg: Config) -> str:
    """The DAX image `cfg` asks for ("" when an `initrd` is set: the initramfs layout)."""
    hv = cfg.hypervisor
    return "" if hv.initrd else hv.image or f"{built_image_dir(cfg)}/rootfs.img"


def plan_guest_image(cfg: Config, arch: ArchProfile, devices: frozenset[str],
                     image_bytes: int) -> GuestImage:
    """The DAX image unless an `initrd` is set; the built image falls back to its
    initramfs where the DAX image cannot serve (a configured `image` is an error then).
    `image_bytes`: the image file's size as read (0: unreadable)."""
    hv = cfg.hypervisor
    built = built_image_dir(cfg)
    if hv.image and hv.initrd:
        raise ConfigError("configuration", "hypervisor.qemu.image", hv.image,
                          "set either image or initrd, not both")
    kernel = hv.kernel or f"{built}/vmlinuz"
    if hv.initrd:
        return GuestImage(kernel, hv.initrd, reason="guest root: the configured initrd")
    path = image_path(cfg)
    why = ""
    if not arch.pmem_image:
        why = f"{arch.name} guests here have no virtio-pmem"
    elif devices and f"virtio-pmem-{arch.bus}" not in devices:
        why = f"QEMU has no virtio-pmem-{arch.bus}"
    elif not image_bytes:
        why = f"{path} cannot be read"
    elif image_bytes % DAX_IMAGE_ALIGN:
        why = (f"{path}: {image_bytes} bytes is not a multiple of "
               f"{DAX_IMAGE_ALIGN >> 20} MiB (not a pykata image)")
    elif "," in path:
        why = f"{path}: a comma cannot be passed in a QEMU option"
    if why and hv.image:
        raise ConfigError("configuration", "hypervisor.qemu.image", hv.image, why)
    if why:
        return GuestImage(kernel, f"{built}/initramfs.img",
                          reason=f"guest root: the built initramfs ({why})")
    return GuestImage(kernel, f"{built}/initramfs-dax.img", path, image_bytes,
                      f"guest root: {path}, read-only on virtio-pmem with DAX")


@dataclass(frozen=True)
class VmPlan:
    sandbox_id: str
    binary: str
    accel: str
    accel_reason: str
    tb_size_mib: int
    machine_type: str
    machine_extra: str
    arch: ArchProfile
    sizing: SizingPlan
    kernel: str
    initrd: str
    kernel_params: tuple[str, ...]
    transport: str          # "virtio-serial" or "vsock"
    guest_cid: int
    virtiofs_socket: str
    console_log: str
    reasons: tuple[str, ...]
    numa: NumaPlan | None = None    # None: one memory backend, no guest NUMA nodes
    passthrough: tuple[Passthrough, ...] = ()   # VFIO devices
    free_page_reporting: bool = False  # a virtio-balloon the guest reports freed pages to
    boot: str = "cold"              # "cold", "template" (making one) or "clone" (of one)
    boot_reason: str = ""
    template_dir: str = ""          # the template's (boot "template" or "clone")
    grow_to: tuple[int, int] | None = None  # a clone's (vCPUs, MiB) to hot-plug up to
    image: str = ""                 # the DAX root image on virtio-pmem ("": initramfs root)
    image_bytes: int = 0

    @property
    def vcpus(self) -> int:
        return self.sizing.vcpus

    @property
    def memory_mib(self) -> int:
        return self.sizing.memory_mib

    @property
    def start_size(self) -> tuple[int, int]:
        """(vCPUs, MiB) once started: a clone's after its growth, else the boot size."""
        return self.grow_to or (self.sizing.vcpus, self.sizing.memory_mib)


def plan_accel(requested: str, facts: HostFacts) -> tuple[str, str]:
    """KVM only where the CPU really has hardware virtualisation and /dev/kvm works."""
    hw = facts.cpu_flags & {"vmx", "svm"}
    if requested == "tcg":
        return "tcg", "configured: accel = tcg"
    if hw and facts.kvm_usable:
        return "kvm", f"CPU has {'/'.join(sorted(hw))} and /dev/kvm is usable"
    why = ("CPU has no vmx/svm flag" if not hw else f"/dev/kvm unusable: {facts.kvm_detail}")
    if requested == "kvm":
        raise ConfigError("configuration", "hypervisor.qemu.accel", "kvm", why)
    return "tcg", f"{why}: using TCG"


def plan_transport(requested: str, facts: HostFacts) -> str:
    if requested == "auto":
        return "vsock" if facts.vhost_vsock else "virtio-serial"
    if requested == "vsock" and not facts.vhost_vsock:
        raise ConfigError("configuration", "agent.pykata.transport", requested,
                          "this host has no /dev/vhost-vsock")
    return requested


# A template's spare root ports: a clone's virtio-fs device and NICs are hot-plugged there.
FS_PORT = "rp-fs"
NIC_PORTS = ("rp-net0", "rp-net1", "rp-net2")

# sun_path holds 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107
SOCKET_NAMES = ("qmp.sock", "inspect.sock", "agent.sock", "virtiofsd.sock")


def check_state_dir(state_dir: str) -> None:
    longest = f"{state_dir}/{max(SOCKET_NAMES, key=len)}"
    if len(longest.encode()) > MAX_SOCKET_PATH:
        raise ConfigError("configuration", "runtime.state_dir", state_dir.rsplit("/", 1)[0],
                          f"too long: socket path {longest!r} exceeds {MAX_SOCKET_PATH} bytes")


def plan_vm(
    cfg: Config, facts: HostFacts, sandbox_id: str, state_dir: str, guest_cid: int = 3,
    devices: frozenset[str] = frozenset(), workload: Limits = NO_LIMITS,
    resizable: bool = True, vfio_groups: tuple[int, ...] = (), image_bytes: int = 0,
) -> VmPlan:
    """`devices`: what the QEMU binary offers (none: no hotplug, sized statically);
    `workload`: the limits known at boot (sandbox annotations or the one container's);
    `resizable`: whether containers may come and go (false for `pykata run`);
    `vfio_groups`: the IOMMU groups passed through (the spec's /dev/vfio/<group>);
    `image_bytes`: the size of the DAX image file (`image_path`), 0 if unreadable."""
    check_state_dir(state_dir)
    hv = cfg.hypervisor
    accel, accel_reason = plan_accel(hv.accel, facts)
    arch = plan_arch(hv.path, facts.arch)
    machine, machine_reason = plan_machine(hv.machine_type, arch)
    sizing = plan_sizing(cfg, facts, devices, workload, bus=arch.bus, dimm_ok=arch.pc_dimm,
                         resizable=resizable, accel=accel)
    if hv.enable_numa and facts.topology_error:
        raise NumaError("enable_numa", True, facts.topology_error)
    bdfs = vfio_bdfs(vfio_groups, facts.topology, "config.json")
    numa = plan_numa(sizing.vcpus, sizing.max_vcpus, sizing.memory_mib, facts.topology,
                     hv.enable_numa, hv.numa_mapping, bdfs)
    guest = plan_guest_image(cfg, arch, devices, image_bytes)
    passthrough = plan_passthrough(bdfs, numa, facts.topology)
    return VmPlan(
        sandbox_id=sandbox_id,
        binary=hv.path,
        accel=accel,
        accel_reason=accel_reason,
        tb_size_mib=hv.tcg_tb_size,
        machine_type=machine,
        machine_extra=hv.machine_accelerators,
        arch=arch,
        sizing=sizing,
        kernel=guest.kernel,
        initrd=guest.initrd,
        image=guest.image,
        image_bytes=guest.image_bytes,
        kernel_params=(f"console={arch.console}", *BASE_KERNEL_PARAMS, *arch.kernel_params,
                       *dma_params(arch, passthrough), *hv.kernel_params.split()),
        transport=plan_transport(cfg.agent.transport, facts),
        guest_cid=guest_cid,
        virtiofs_socket=f"{state_dir}/virtiofsd.sock",
        console_log=f"{state_dir}/console.log",
        reasons=(f"accel {accel}: {accel_reason}", machine_reason, guest.reason,
                 *sizing.reasons, *(numa.reasons if numa else ())),
        numa=numa,
        passthrough=passthrough,
        free_page_reporting=hv.reclaim_guest_freed_memory and (
            not devices or f"virtio-balloon-{arch.bus}" in devices),
    )


def dma_params(arch: ArchProfile, passthrough: Sequence[Passthrough]) -> tuple[str, ...]:
    """No swiotlb bounce buffer on x86 without VFIO devices. `maxmem` (hotplug headroom,
    the DAX image) puts the guest's highest address above 4 GiB, so the kernel reserves
    and zeroes 64 MiB of bounce buffer: 64 MiB of every cold-booted VM's RAM on the host.
    Virtio devices never bounce (they do not use the DMA API without ACCESS_PLATFORM); a
    passed-through device limited to 32-bit DMA might, so its VM keeps the buffer."""
    return ("swiotlb=noforce",) if arch.name == "x86_64" and not passthrough else ()


def _memory_options(plan: VmPlan) -> list[qemu.QemuOption]:
    """`-m`, the DAX image (first in the memory-device area, which starts on a memory
    block, as the guest's ZONE_DEVICE mapping of it needs), then the virtio-mem devices."""
    s = plan.sizing
    image: list[qemu.QemuOption] = []
    room = 0
    if plan.image:
        image = [qemu.PmemImage(plan.image, plan.image_bytes, plan.arch.bus)]
        room = plan.image_bytes >> 20  # MiB of maxmem
    if s.memory_hotplug == "none":
        return [qemu.Memory(s.memory_mib, 0, s.memory_mib + room if room else 0), *image]
    memory: list[qemu.QemuOption] = [qemu.Memory(s.memory_mib, s.memory_slots,
                                                 s.max_memory_mib + room), *image]
    if s.memory_hotplug == "virtio-mem":
        memory += [qemu.VirtioMem(d.id, d.region_mib, plan.arch.bus, d.node, d.host_nodes)
                   for d in virtio_mem_devices(s, plan.numa, HOTPLUG_BLOCK_MIB)]
    return memory


def _ram_options(plan: VmPlan, ram_fd: int | None) -> list[qemu.QemuOption]:
    """Boot RAM: one shared memfd, or with NUMA one bound memfd per guest node (QEMU then
    takes `-m` as their sum and no `-machine memory-backend=`). A template's or clone's is
    a memfd the runtime made and passes as `ram_fd`: it copies the RAM out or in."""
    if plan.boot != "cold":
        assert ram_fd is not None, "a template or clone needs its RAM's fd"
        return [qemu.FdBackend("mem0", plan.sizing.memory_mib, ram_fd)]
    if plan.numa is None:
        return [qemu.MemfdBackend("mem0", plan.sizing.memory_mib)]
    return numa_options(plan.numa)


def _pci_options(plan: VmPlan) -> list[qemu.QemuOption]:
    """Per passthrough device a root port of its own (behind its guest node's expander)."""
    options: list[qemu.QemuOption] = [qemu.PxbPcie(*e) for e in expanders(plan.passthrough)]
    for chassis, d in enumerate(plan.passthrough, start=1):
        options += [qemu.RootPort(d.bus, d.expander or "pcie.0", chassis),
                    qemu.VfioPci(d.bdf, d.bus)]
    return options


def _boot_options(plan: VmPlan) -> list[qemu.QemuOption]:
    """Cold: the shared filesystem at boot. A template or clone: spare root ports for the
    devices a clone gets by hotplug, and a clone waits for the template's state."""
    if plan.boot == "cold":
        return [qemu.VirtioFs(plan.virtiofs_socket, SHARED_TAG, plan.arch.bus)]
    ports: list[qemu.QemuOption] = [qemu.RootPort(port, "pcie.0", chassis)
                                    for chassis, port in enumerate((FS_PORT, *NIC_PORTS), 1)]
    return ports + ([qemu.Incoming()] if plan.boot == "clone" else [])


def plan_qemu_argv(plan: VmPlan, qmp_fd: int, agent_fd: int | None,
                   inspect_fd: int | None = None,
                   devices: Sequence[qemu.QemuOption] = (),
                   ram_fd: int | None = None) -> list[str]:
    """The QEMU command line; `qmp_fd`/`agent_fd`/`inspect_fd` are listening sockets QEMU
    inherits. `inspect_fd`: a second QMP monitor for `pykata inspect`, since the sandbox's
    own QMP connection holds the first for the VM's life. `devices`: network devices on
    taps QEMU inherits. `ram_fd`: a template's or clone's RAM."""
    bus = plan.arch.bus
    options: list[qemu.QemuOption] = [
        qemu.Base(name=f"pykata-{plan.sandbox_id}"),
        qemu.Machine(plan.machine_type, memory_backend=None if plan.numa else "mem0",
                     extra=plan.machine_extra),
        qemu.Accel(plan.accel, plan.tb_size_mib),
        qemu.Cpu("host" if plan.accel == "kvm" else plan.arch.tcg_cpu),
        qemu.Smp(plan.sizing.vcpus, plan.sizing.max_vcpus),
        *_memory_options(plan),
        *_ram_options(plan, ram_fd),
        qemu.DirectBoot(plan.kernel, plan.initrd, " ".join(plan.kernel_params)),
        qemu.QmpMonitor(qmp_fd),
        *([qemu.QmpMonitor(inspect_fd, "qmp-inspect")] if inspect_fd is not None else []),
        qemu.SerialConsole(plan.console_log),
        *_boot_options(plan),
    ]
    if plan.free_page_reporting:
        options.append(qemu.FreePageReporting(bus))
    if plan.transport == "vsock":
        options.append(qemu.Vsock(plan.guest_cid, bus))
    else:
        assert agent_fd is not None, "virtio-serial transport needs the agent socket fd"
        options.append(qemu.AgentSerialPort(agent_fd, bus=bus))
    options += devices
    # Last: QEMU puts a device given no bus on the newest PCIe bus, and a pxb-pcie takes
    # only root ports.
    options += _pci_options(plan)
    return qemu.build_argv(plan.binary, options)
