"""Read what `pykata check` and `pykata env` report: devices, modules, QEMU, cgroups, NUMA.

Reads only: never boots a VM, loads a module or writes a file. Executables run with an
argv (no shell) and a timeout. The parsers are pure and take the text they parse.
Judging what the facts mean is pykata.plan.checks' job.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

from pykata.domain.checks import HostReport, NumaNode, QemuCaps, Tool
from pykata.domain.config import Config
from pykata.domain.cpuset import CpuSet
from pykata.domain.errors import CpuSetError
from pykata.host.facts import image_bytes, read_host_facts

KVM_MODULES = ("kvm", "kvm_intel", "kvm_amd", "kvm_pvm")
DEVICES = ("/dev/kvm", "/dev/vhost-vsock", "/dev/vhost-net", "/dev/net/tun")
# Kernel modules pykata may use, and the device node each one provides (a module built
# into the kernel shows no /sys/module entry when it has no parameters).
MODULES = {"vhost_vsock": "/dev/vhost-vsock", "vhost_net": "/dev/vhost-net",
           "tun": "/dev/net/tun", "vfio_pci": ""}
DEVICE_PREFIXES = ("virtio-", "virtserialport", "vhost-", "vfio-", "pc-dimm", "pxb",
                   "pcie-root-port", "nvdimm")
TOOL_TIMEOUT = 10.0
_DEVICE_NAME = re.compile(r'^name "([^"]+)"', re.MULTILINE)
_SYS_NODE = Path("/sys/devices/system/node")


def run_tool(argv: Sequence[str]) -> tuple[str | None, str]:
    """(stdout, "") when `argv` ran and exited 0, else (None, why)."""
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, errors="replace",
                              timeout=TOOL_TIMEOUT, stdin=subprocess.DEVNULL, check=False)
    except FileNotFoundError:
        return None, "not found"
    except PermissionError:
        return None, "not executable"
    except subprocess.TimeoutExpired:
        return None, f"no answer within {TOOL_TIMEOUT:g} s"
    except OSError as exc:
        return None, exc.strerror or str(exc)
    if proc.returncode != 0:
        return None, f"exit {proc.returncode}: {proc.stderr.strip()[-300:]}"
    return proc.stdout, ""


def read_tool(path: str) -> Tool:
    out, why = run_tool([path, "--version"])
    if out is None:
        return Tool(path, found=os.access(path, os.X_OK), error=why)
    first = next((line.strip() for line in out.splitlines() if line.strip()), "")
    return Tool(path, found=True, version=first)


def parse_device_help(text: str) -> frozenset[str]:
    """The device names pykata may use (not the hundreds of CPU models and sound cards)."""
    return frozenset(d for d in _DEVICE_NAME.findall(text)
                     if d.startswith(DEVICE_PREFIXES) and not d.endswith("transitional"))


def parse_list_help(text: str) -> frozenset[str]:
    """First words of `-accel help` / `-machine help` lines, minus the heading."""
    return frozenset(line.split()[0] for line in text.splitlines()[1:] if line.strip())


def read_qemu_devices(path: str) -> tuple[frozenset[str] | None, str]:
    """The devices `path -device help` lists (see parse_device_help), or (None, why)."""
    out, why = run_tool([path, "-device", "help"])
    return (parse_device_help(out), "") if out is not None else (None, why)


def read_qemu_caps(path: str) -> QemuCaps:
    found = []
    for option in ("-accel", "-device", "-machine"):
        if option == "-device":
            devices, _ = read_qemu_devices(path)
            found.append(devices or frozenset())
            continue
        out, _ = run_tool([path, option, "help"])
        found.append(parse_list_help(out) if out is not None else frozenset())
    return QemuCaps(*found)


def parse_cgroup_mounts(mountinfo: str) -> str:
    fstypes: dict[str, str] = {}
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) >= 5 and right:
            fstypes[fields[4]] = right.split()[0]
    root = fstypes.get("/sys/fs/cgroup")
    if root == "cgroup2":
        return "v2"
    if root == "tmpfs" and fstypes.get("/sys/fs/cgroup/unified") == "cgroup2":
        return "v1 (hybrid, v2 at /sys/fs/cgroup/unified)"
    if root == "tmpfs":
        return "v1"
    return ""


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def read_numa(node_dir: Path = _SYS_NODE) -> tuple[NumaNode, ...]:
    try:
        online = CpuSet.parse(_read(node_dir / "online"))
    except CpuSetError:
        return ()
    nodes = []
    for n in online:
        meminfo = _read(node_dir / f"node{n}" / "meminfo")
        kib = re.search(r"MemTotal:\s+(\d+) kB", meminfo)
        nodes.append(NumaNode(n, _read(node_dir / f"node{n}" / "cpulist").strip(),
                              int(kib.group(1)) // 1024 if kib else 0))
    return tuple(nodes)


def _modules_present(release: str) -> dict[str, bool]:
    builtin = _read(Path(f"/lib/modules/{release}/modules.builtin"))
    built = {Path(line).name.removesuffix(".ko").replace("-", "_")
             for line in builtin.splitlines()}
    return {m: os.path.isdir(f"/sys/module/{m}") or m in built
            or bool(dev and os.path.exists(dev)) for m, dev in MODULES.items()}


def read_host_report(cfg: Config) -> HostReport:
    release = os.uname().release
    return HostReport(
        kernel_release=release,
        facts=read_host_facts(),
        kvm_device=os.path.exists("/dev/kvm"),
        kvm_modules=tuple(m for m in KVM_MODULES if os.path.isdir(f"/sys/module/{m}")),
        qemu=read_tool(cfg.hypervisor.path),
        qemu_caps=read_qemu_caps(cfg.hypervisor.path),
        virtiofsd=read_tool(cfg.hypervisor.virtio_fs_daemon),
        devices={d: os.path.exists(d) for d in DEVICES},
        modules=_modules_present(release),
        cgroup=parse_cgroup_mounts(_read(Path("/proc/self/mountinfo"))),
        numa=read_numa(),
        euid=os.geteuid(),
        image_bytes=image_bytes(cfg),
    )

