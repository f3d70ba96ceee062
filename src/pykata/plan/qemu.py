"""QEMU command lines as data: one small frozen dataclass per option, `args()` gives argv.

Building argv opens no file and no socket. Sockets QEMU serves are handed over as inherited
file descriptors (`fd=N`), chosen by the caller and recorded here as plain numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from pykata.domain.contract import AGENT_PORT_NAME
from pykata.domain.cpuset import CpuSet


class QemuOption(Protocol):
    def args(self) -> list[str]: ...


def _kv(head: str, **opts: str | int | None) -> str:
    parts = [head] + [f"{k.replace('_', '-')}={v}" for k, v in opts.items() if v is not None]
    return ",".join(p for p in parts if p)


@dataclass(frozen=True)
class Base:
    """Options every pykata VM gets: no default devices, no monitor, no reboot."""

    name: str

    def args(self) -> list[str]:
        return ["-name", self.name, "-nodefaults", "-no-user-config", "-nographic",
                "-no-reboot"]


@dataclass(frozen=True)
class Machine:
    type: str
    memory_backend: str | None = None
    extra: str = ""

    def args(self) -> list[str]:
        head = ",".join(p for p in (self.type, self.extra) if p)
        return ["-machine", _kv(head, memory_backend=self.memory_backend)]


@dataclass(frozen=True)
class Accel:
    kind: str  # "kvm" or "tcg"
    tb_size_mib: int = 64

    def args(self) -> list[str]:
        if self.kind == "tcg":
            # One host thread per vCPU (pinning needs it); a bounded translation cache.
            return ["-accel", f"tcg,thread=multi,tb-size={self.tb_size_mib}"]
        return ["-accel", self.kind]


@dataclass(frozen=True)
class Cpu:
    model: str

    def args(self) -> list[str]:
        return ["-cpu", self.model]


@dataclass(frozen=True)
class Smp:
    cpus: int
    max_cpus: int

    def args(self) -> list[str]:
        return ["-smp", f"{self.cpus},maxcpus={self.max_cpus}"]


@dataclass(frozen=True)
class Memory:
    """Boot memory; with `slots`/`max_mib`, room for hotplugged memory devices."""

    size_mib: int
    slots: int = 0
    max_mib: int = 0

    def args(self) -> list[str]:
        if not self.max_mib:
            return ["-m", f"{self.size_mib}M"]
        return ["-m", f"{self.size_mib}M,slots={self.slots},maxmem={self.max_mib}M"]


IMAGE_BACKEND = "image0"


@dataclass(frozen=True)
class PmemImage:
    """The guest's root image, read-only and shared: QEMU maps the file (the host's page
    cache, one copy for every VM) and the guest mounts the virtio-pmem device with DAX.
    It takes `size` bytes of the memory-device area (`maxmem`)."""

    path: str
    size: int
    bus: str = "pci"

    def args(self) -> list[str]:
        return ["-object", f"memory-backend-file,id={IMAGE_BACKEND},mem-path={self.path},"
                f"size={self.size},share=on,readonly=on",
                "-device", f"virtio-pmem-{self.bus},memdev={IMAGE_BACKEND},id=pmem0"]


@dataclass(frozen=True)
class VirtioMem:
    """A virtio-mem device that can plug up to `size_mib`, none of it at boot; with `node`,
    on that guest node, its memory bound to `host_nodes`."""

    id: str
    size_mib: int
    bus: str = "pci"
    node: int | None = None
    host_nodes: tuple[int, ...] = ()

    def args(self) -> list[str]:
        bind = f",{_repeat('host-nodes', self.host_nodes)},policy=bind" \
            if self.host_nodes else ""
        node = f",node={self.node}" if self.node is not None else ""
        return ["-object", f"memory-backend-memfd,id={self.id}-mem,size={self.size_mib}M,"
                f"share=on{bind}",
                "-device", f"virtio-mem-{self.bus},id={self.id},memdev={self.id}-mem"
                f"{node},requested-size=0"]


@dataclass(frozen=True)
class MemfdBackend:
    """Guest RAM in a shareable memfd: vhost-user (virtiofsd) must map it."""

    id: str
    size_mib: int

    def args(self) -> list[str]:
        return ["-object", f"memory-backend-memfd,id={self.id},size={self.size_mib}M,share=on"]


@dataclass(frozen=True)
class FdBackend:
    """Guest RAM in a memfd the runtime made and QEMU inherits as `fd`, shared: a template's
    RAM is copied out of it, a clone's into it, and virtiofsd maps it."""

    id: str
    size_mib: int
    fd: int

    def args(self) -> list[str]:
        return ["-object", f"memory-backend-file,id={self.id},size={self.size_mib}M,"
                f"mem-path=/proc/self/fd/{self.fd},share=on"]


@dataclass(frozen=True)
class Incoming:
    """Start paused, waiting for a saved state (`migrate-incoming` over QMP)."""

    def args(self) -> list[str]:
        return ["-incoming", "defer"]


def _repeat(key: str, ids: Iterable[int]) -> str:
    """QEMU takes a non-contiguous id list as the key repeated: "cpus=0-1,cpus=4"."""
    return ",".join(f"{key}={span}" for span in str(CpuSet(ids)).split(",") if span)


@dataclass(frozen=True)
class NumaMemory:
    """One guest node's RAM, bound to its host nodes. memfd with share=on: virtiofsd
    (vhost-user) must map all guest RAM."""

    id: str
    size_mib: int
    host_nodes: tuple[int, ...]

    def args(self) -> list[str]:
        return ["-object", f"memory-backend-memfd,id={self.id},size={self.size_mib}M,share=on,"
                f"{_repeat('host-nodes', self.host_nodes)},policy=bind"]


@dataclass(frozen=True)
class NumaNode:
    node_id: int
    memdev: str
    cpus: tuple[int, ...]   # vCPU indices, boot and hotpluggable

    def args(self) -> list[str]:
        cpus = _repeat("cpus", self.cpus)
        return ["-numa", f"node,nodeid={self.node_id},memdev={self.memdev}"
                + (f",{cpus}" if cpus else "")]


@dataclass(frozen=True)
class NumaDistance:
    src: int
    dst: int
    value: int

    def args(self) -> list[str]:
        return ["-numa", f"dist,src={self.src},dst={self.dst},val={self.value}"]


@dataclass(frozen=True)
class DirectBoot:
    kernel: str
    initrd: str
    append: str

    def args(self) -> list[str]:
        return ["-kernel", self.kernel, "-initrd", self.initrd, "-append", self.append]


@dataclass(frozen=True)
class QmpMonitor:
    """QMP on a listening socket the caller created and passes as `fd`."""

    fd: int
    id: str = "qmp"

    def args(self) -> list[str]:
        return ["-chardev", f"socket,id={self.id},fd={self.fd},server=on,wait=off",
                "-mon", f"chardev={self.id},mode=control"]


@dataclass(frozen=True)
class SerialConsole:
    """The guest's ttyS0, written to a log file."""

    path: str

    def args(self) -> list[str]:
        return ["-chardev", f"file,id=console,path={self.path}", "-serial", "chardev:console"]


@dataclass(frozen=True)
class AgentSerialPort:
    """virtio-serial port `name` on a listening socket passed as `fd`."""

    fd: int
    name: str = AGENT_PORT_NAME
    bus: str = "pci"

    def args(self) -> list[str]:
        return ["-device", f"virtio-serial-{self.bus},id=serial0",
                "-chardev", f"socket,id=agent,fd={self.fd},server=on,wait=off",
                "-device", f"virtserialport,chardev=agent,id=channel0,name={self.name}"]


@dataclass(frozen=True)
class Vsock:
    guest_cid: int
    bus: str = "pci"

    def args(self) -> list[str]:
        return ["-device", f"vhost-vsock-{self.bus},id=vsock0,guest-cid={self.guest_cid}"]


@dataclass(frozen=True)
class VirtioFs:
    """vhost-user-fs on virtiofsd's socket at `path` (virtiofsd listens, QEMU connects)."""

    path: str
    tag: str
    bus: str = "pci"

    def args(self) -> list[str]:
        return ["-chardev", f"socket,id=fs0,path={self.path}",
                "-device", f"vhost-user-fs-{self.bus},chardev=fs0,tag={self.tag},queue-size=1024"]


@dataclass(frozen=True)
class FreePageReporting:
    """virtio-balloon used only for free page reporting: the guest reports pages it freed,
    QEMU discards them from guest RAM (the memfd or file gets holes)."""

    bus: str = "pci"

    def args(self) -> list[str]:
        return ["-device", f"virtio-balloon-{self.bus},id=balloon0,free-page-reporting=on"]


@dataclass(frozen=True)
class PxbPcie:
    """A PCIe expander bus on the root bus, on guest NUMA node `numa_node`."""

    id: str
    bus_nr: int
    numa_node: int

    def args(self) -> list[str]:
        return ["-device", f"pxb-pcie,id={self.id},bus=pcie.0,bus_nr={self.bus_nr},"
                f"numa_node={self.numa_node}"]


@dataclass(frozen=True)
class RootPort:
    id: str
    bus: str          # pcie.0 or a pxb-pcie
    chassis: int      # unique per root port

    def args(self) -> list[str]:
        return ["-device", f"pcie-root-port,id={self.id},bus={self.bus},chassis={self.chassis}"]


@dataclass(frozen=True)
class VfioPci:
    host: str         # the host device's BDF
    bus: str          # its root port

    def args(self) -> list[str]:
        return ["-device", f"vfio-pci,host={self.host},bus={self.bus}"]


def build_argv(binary: str, options: Iterable[QemuOption]) -> list[str]:
    argv = [binary]
    for option in options:
        argv.extend(option.args())
    return argv


def format_argv(argv: Sequence[str]) -> str:
    """One line a person can paste into a shell."""
    import shlex

    return " ".join(shlex.quote(a) for a in argv)
