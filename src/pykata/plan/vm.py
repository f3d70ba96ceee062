"""Plan a sandbox VM: accelerator, size, kernel command line, transport, and QEMU argv.

Pure: host facts and configuration arrive as arguments; nothing here reads the host.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pykata.domain.config import Config
from pykata.domain.errors import ConfigError
from pykata.domain.host import HostFacts
from pykata.plan import qemu

SHARED_TAG = "pykatafs"
# Under TCG: the default model plus RDRAND, so the guest's CRNG is ready at boot and
# Python's start-up does not block ~1.3 s on entropy (measured; `-cpu max` boots slower).
TCG_CPU_MODEL = "qemu64,+rdrand"
GUEST_SHARED_DIR = "/run/pykata/shared"

# Quiet, fast boot: no console chatter (serial output is slow under TCG), no PS/2 probing,
# panic powers off (-no-reboot) instead of hanging.
BASE_KERNEL_PARAMS = (
    "console=ttyS0", "quiet", "panic=-1", "reboot=k", "rdinit=/init",
    "i8042.noaux=1", "i8042.nomux=1", "i8042.nopnp=1", "i8042.dumbkbd=1",
    "cryptomgr.notests", "no_timer_check", "tsc=reliable",
)


@dataclass(frozen=True)
class VmPlan:
    sandbox_id: str
    binary: str
    accel: str
    accel_reason: str
    tb_size_mib: int
    machine_type: str
    machine_extra: str
    vcpus: int
    memory_mib: int
    kernel: str
    initrd: str
    kernel_params: tuple[str, ...]
    transport: str          # "virtio-serial" or "vsock"
    guest_cid: int
    virtiofs_socket: str
    console_log: str
    reasons: tuple[str, ...]


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


# sun_path holds 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107
SOCKET_NAMES = ("qmp.sock", "agent.sock", "virtiofsd.sock")


def check_state_dir(state_dir: str) -> None:
    longest = f"{state_dir}/{max(SOCKET_NAMES, key=len)}"
    if len(longest.encode()) > MAX_SOCKET_PATH:
        raise ConfigError("configuration", "runtime.state_dir", state_dir.rsplit("/", 1)[0],
                          f"too long: socket path {longest!r} exceeds {MAX_SOCKET_PATH} bytes")


def plan_vm(
    cfg: Config, facts: HostFacts, sandbox_id: str, state_dir: str, guest_cid: int = 3
) -> VmPlan:
    check_state_dir(state_dir)
    hv = cfg.hypervisor
    accel, accel_reason = plan_accel(hv.accel, facts)
    vcpus = max(1, math.ceil(hv.default_vcpus))
    reasons = [f"accel {accel}: {accel_reason}",
               f"vcpus {vcpus}: default_vcpus = {hv.default_vcpus:g}",
               f"memory {hv.default_memory} MiB: default_memory"]
    if vcpus > facts.online_cpus:
        raise ConfigError("configuration", "hypervisor.qemu.default_vcpus", hv.default_vcpus,
                          f"host has only {facts.online_cpus} CPUs")
    image = cfg.image.dir.rstrip("/") + "/image"
    return VmPlan(
        sandbox_id=sandbox_id,
        binary=hv.path,
        accel=accel,
        accel_reason=accel_reason,
        tb_size_mib=hv.tcg_tb_size,
        machine_type=hv.machine_type,
        machine_extra=hv.machine_accelerators,
        vcpus=vcpus,
        memory_mib=hv.default_memory,
        kernel=hv.kernel or f"{image}/vmlinuz",
        initrd=hv.initrd or f"{image}/initramfs.img",
        kernel_params=(*BASE_KERNEL_PARAMS, *hv.kernel_params.split()),
        transport=plan_transport(cfg.agent.transport, facts),
        guest_cid=guest_cid,
        virtiofs_socket=f"{state_dir}/virtiofsd.sock",
        console_log=f"{state_dir}/console.log",
        reasons=tuple(reasons),
    )


def plan_qemu_argv(plan: VmPlan, qmp_fd: int, agent_fd: int | None) -> list[str]:
    """The QEMU command line; `qmp_fd`/`agent_fd` are listening sockets QEMU inherits."""
    options: list[qemu.QemuOption] = [
        qemu.Base(name=f"pykata-{plan.sandbox_id}"),
        qemu.Machine(plan.machine_type, memory_backend="mem0", extra=plan.machine_extra),
        qemu.Accel(plan.accel, plan.tb_size_mib),
    ]
    options.append(qemu.Cpu("host" if plan.accel == "kvm" else TCG_CPU_MODEL))
    options += [
        qemu.Smp(plan.vcpus, plan.vcpus),
        qemu.Memory(plan.memory_mib),
        qemu.MemfdBackend("mem0", plan.memory_mib),
        qemu.DirectBoot(plan.kernel, plan.initrd, " ".join(plan.kernel_params)),
        qemu.QmpMonitor(qmp_fd),
        qemu.SerialConsole(plan.console_log),
        qemu.VirtioFs(plan.virtiofs_socket, SHARED_TAG),
    ]
    if plan.transport == "vsock":
        options.append(qemu.Vsock(plan.guest_cid))
    else:
        assert agent_fd is not None, "virtio-serial transport needs the agent socket fd"
        options.append(qemu.AgentSerialPort(agent_fd))
    return qemu.build_argv(plan.binary, options)
