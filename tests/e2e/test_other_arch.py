"""pykata's argv for aarch64, s390x and ppc64le boots that architecture's Debian kernel.

For each guest architecture: the configuration names `qemu-system-<arch>`, plan_vm and
vmm.launch build and start the VM exactly as a sandbox does (virtiofsd, QMP and the agent
port included, though the tiny guest uses none of them), and the guest is that arch's
Debian kernel with a busybox initramfs whose /init prints a marker on the console pykata
configures and powers off. This checks the machine type, CPU model, console device and
kernel parameters of each ArchProfile under TCG.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from foreign_arch import CACHE_DIR, GuestPieces, Unavailable, guest_pieces

from pykata.domain.config import Config
from pykata.host.config_files import load_config
from pykata.host.facts import read_host_facts
from pykata.host.qemu_caps import qemu_devices
from pykata.image.cpio import chardev_entry, dir_entry, file_entry, symlink_entry, write_archive
from pykata.plan.vm import VmPlan, plan_vm
from pykata.vmm import vm as vmm

pytestmark = pytest.mark.e2e

BINARIES = {"aarch64": "qemu-system-aarch64", "s390x": "qemu-system-s390x",
            "ppc64le": "qemu-system-ppc64"}
PACKAGES = {"aarch64": "qemu-system-arm", "s390x": "qemu-system-misc",
            "ppc64le": "qemu-system-ppc"}
# case -> (arch, enable_virtio_mem). Of these three, only aarch64's QEMU 7.2 offers a
# virtio-mem device (ppc64 has none, s390x lacks virtio-mem-ccw): only there does the option
# change the argv.
CASES = {"aarch64": ("aarch64", False), "aarch64-virtio-mem": ("aarch64", True),
         "s390x": ("s390x", False), "ppc64le": ("ppc64le", False)}
VIRTIOFSD = "/usr/lib/qemu/virtiofsd"
# TCG emulating another ISA on 2 host cores: generous, measured boots take well under this.
BOOT_TIMEOUT_S = 240.0
EXIT_TIMEOUT_S = 30.0
MARKER = re.compile(r"PYKATA-BOOT arch=(\S+) cpus=(\d+) memtotal_kb=(\d+)")

INIT = """#!/bin/sh
export PATH=/bin
busybox mount -t proc proc /proc
mem=$(busybox awk '/^MemTotal:/ {print $2}' /proc/meminfo)
echo "PYKATA-BOOT arch=$(busybox uname -m) cpus=$(busybox nproc) memtotal_kb=$mem"
busybox poweroff -f
"""


def initramfs(busybox: Path, dest: Path) -> Path:
    """A cpio with /init (the script above), /bin/busybox and /dev/console: the kernel
    opens /dev/console for init's stdio before any devtmpfs is mounted."""
    entries = [dir_entry("bin"), dir_entry("dev"), dir_entry("proc"),
               file_entry("bin/busybox", busybox.read_bytes(), 0o755),
               symlink_entry("bin/sh", "busybox"), chardev_entry("dev/console", 5, 1),
               file_entry("init", INIT.encode(), 0o755)]
    with open(dest, "wb") as out:
        write_archive(out, entries)
    return dest


def skip_reason(arch: str) -> str | None:
    if os.geteuid() != 0:
        return "needs root (virtiofsd)"
    binary = shutil.which(BINARIES[arch])
    if binary is None:
        return f"{BINARIES[arch]} is not installed (Debian package {PACKAGES[arch]})"
    if not os.path.exists(VIRTIOFSD):
        return f"{VIRTIOFSD} is not installed (Debian: qemu-system-common)"
    return None


def plan_for(arch: str, virtio_mem: bool, pieces: GuestPieces, initrd: Path, conf_dir: Path,
             state_root: str) -> tuple[Config, VmPlan]:
    """The plan a sandbox would make, from a configuration file naming this arch's QEMU."""
    conf = conf_dir / "configuration.toml"
    conf.write_text(
        f'[hypervisor.qemu]\npath = "{shutil.which(BINARIES[arch])}"\n'
        f'kernel = "{pieces.kernel}"\ninitrd = "{initrd}"\n'
        f'enable_virtio_mem = {str(virtio_mem).lower()}\n'
        f'[runtime]\nstate_dir = "{state_root}"\n')
    cfg = load_config(str(conf))
    devices = qemu_devices(cfg.hypervisor.path, str(CACHE_DIR))
    return cfg, plan_vm(cfg, read_host_facts(), arch, f"{state_root}/{arch}",
                        devices=devices)


@dataclass
class Boot:
    console: str
    marker_s: float      # launch to marker on the console
    exited_s: float      # launch to QEMU's own exit; -1 if it had to be killed
    returncode: int | None
    qmp_arch: str


async def wait_console(vm: vmm.Vm, deadline: float) -> str:
    path = Path(vm.plan.console_log)
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""
        if MARKER.search(text):
            return text
        if vm.qemu.returncode is not None:
            pytest.fail(f"QEMU exited {vm.qemu.returncode} before the marker:\n"
                        f"{vm.failure_detail()}")
        await asyncio.sleep(0.2)
    pytest.fail(f"no marker within {BOOT_TIMEOUT_S:.0f} s:\n{vm.failure_detail()}")


async def boot(cfg: Config, plan: VmPlan, state_dir: str, shared: Path) -> Boot:
    """Launch as Sandbox.start does, wait for the marker, then for QEMU's own exit."""
    os.mkdir(state_dir, 0o700)
    hv = cfg.hypervisor
    start = time.monotonic()
    vm = await vmm.launch(plan, state_dir, str(shared), hv.virtio_fs_daemon,
                          hv.virtio_fs_cache)
    try:
        await vm.connect_qmp()
        target = await vm.qmp.execute("query-target")
        assert isinstance(target, dict)
        console = await wait_console(vm, start + BOOT_TIMEOUT_S)
        marker_s = time.monotonic() - start
        try:
            await asyncio.wait_for(vm.qemu.wait(), EXIT_TIMEOUT_S)
            exited_s = time.monotonic() - start
        except TimeoutError:
            exited_s = -1.0
        return Boot(console, marker_s, exited_s, vm.qemu.returncode, str(target["arch"]))
    finally:
        await vm.shutdown()  # stops QEMU and virtiofsd by pid if still running


@pytest.mark.parametrize("case", list(CASES))
def test_planned_argv_boots(case: str, tmp_path: Path) -> None:
    arch, virtio_mem = CASES[case]
    reason = skip_reason(arch)
    if reason:
        pytest.skip(f"{arch}: {reason}")
    try:
        pieces = guest_pieces(arch)
    except Unavailable as exc:
        pytest.skip(f"{arch}: no Debian kernel/busybox: {exc}")
    state_root = f"/run/pykata-arch-{os.getpid()}"
    os.makedirs(state_root, exist_ok=True)
    shared = tmp_path / "shared"
    shared.mkdir()
    try:
        cfg, plan = plan_for(arch, virtio_mem, pieces,
                             initramfs(pieces.busybox, tmp_path / "initramfs.img"),
                             tmp_path, state_root)
        assert plan.arch.name == arch
        assert (plan.sizing.memory_hotplug == "virtio-mem") == virtio_mem
        result = asyncio.run(boot(cfg, plan, f"{state_root}/{arch}", shared))
    finally:
        shutil.rmtree(state_root, ignore_errors=True)
    print(f"{case}: marker after {result.marker_s:.1f} s, QEMU exited after "
          f"{result.exited_s:.1f} s ({plan.machine_type}, -cpu {plan.arch.tcg_cpu}, "
          f"console={plan.arch.console}, {pieces.kernel_version})")
    found = MARKER.search(result.console)
    assert found is not None
    guest_arch, cpus, memtotal_kb = found.group(1), int(found.group(2)), int(found.group(3))
    assert guest_arch == arch
    assert result.qmp_arch == BINARIES[arch].removeprefix("qemu-system-")
    assert cpus == plan.vcpus
    assert plan.memory_mib * 1024 // 2 < memtotal_kb <= plan.memory_mib * 1024
    assert result.exited_s >= 0, f"the guest powered off but QEMU did not exit in " \
                                 f"{EXIT_TIMEOUT_S:.0f} s"
    assert result.returncode == 0
