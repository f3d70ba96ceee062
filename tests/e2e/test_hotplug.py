"""Resizing a running sandbox: CPUs and memory hot-plugged over QMP reach the guest.

Three VM boots: pc-dimm (grows only), virtio-mem (grows and shrinks), static (never
hot-plugs). The guest's view comes from GetGuestDetails, which reads
/sys/devices/system/cpu/online and /proc/meminfo itself, not from OnlineCPUMem's reply.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

import pytest
from e2e_support import Pykata

from pykata.domain.config import Config
from pykata.domain.limits import Limits
from pykata.host.config_files import load_config
from pykata.host.facts import read_host_facts
from pykata.host.qemu_caps import qemu_devices
from pykata.plan.vm import NO_LIMITS
from pykata.sandbox.sandbox import Sandbox

pytestmark = pytest.mark.e2e

MiB = 1 << 20
CONTAINER = Limits(vcpus=2, memory_mib=512)
SIZING = """
[hypervisor.qemu]
default_vcpus = 1
default_memory = 256
default_maxmemory = 1280
"""


def _config(pykata: Pykata, tmp_path: Path, extra: str = "", runtime: str = "") -> Config:
    path = tmp_path / "configuration.toml"
    base = pykata.config.read_text().replace("[runtime]\n", f"[runtime]\n{runtime}")
    path.write_text(base + SIZING + extra)
    return load_config(str(path))


def _sandbox(cfg: Config, workload: Limits = NO_LIMITS) -> Sandbox:
    devices = qemu_devices(cfg.hypervisor.path, cfg.image.dir)
    return Sandbox.from_parts(cfg, read_host_facts(), devices=devices, workload=workload)


async def _guest(sandbox: Sandbox) -> tuple[int, int]:
    details = await sandbox.agent.guest_details()
    return details.online_cpus, details.mem_total_bytes


def _record_qmp(sandbox: Sandbox) -> list[str]:
    """The QMP commands sent from now on."""
    assert sandbox.vm is not None
    qmp = sandbox.vm.qmp
    sent: list[str] = []
    execute = qmp.execute

    async def recording(cmd: str, arguments: Mapping[str, object] | None = None) -> object:
        sent.append(cmd)
        return await execute(cmd, arguments)
    qmp.execute = recording
    return sent


async def _grow_then_empty(sandbox: Sandbox) -> tuple[tuple[int, int], ...]:
    await sandbox.start()
    try:
        boot = await _guest(sandbox)
        size = await sandbox.resize([CONTAINER])
        assert (size.vcpus, size.memory_mib) == (2, 768)
        grown = await _guest(sandbox)
        size = await sandbox.resize([])
        emptied = await _guest(sandbox)
        return boot, grown, emptied, (size.vcpus, size.memory_mib)
    finally:
        await sandbox.stop()


def test_pc_dimm_grows_and_cpus_come_and_go(pykata: Pykata, tmp_path: Path) -> None:
    sandbox = _sandbox(_config(pykata, tmp_path))
    assert sandbox.plan.sizing.memory_hotplug == "pc-dimm"
    # Under TCG (this project's machine) vCPUs only grow: QEMU 7.2 crashes on a hotplug
    # after a TCG vCPU unplug.
    left = 1 if sandbox.plan.sizing.cpu_unplug else 2
    boot, grown, emptied, size = asyncio.run(_grow_then_empty(sandbox))
    assert boot[0] == 1 and grown[0] == 2
    assert grown[1] - boot[1] >= 480 * MiB
    # pc-dimm memory stays; the hot-added CPU leaves where QEMU can unplug it.
    assert size == (left, 768)
    assert emptied[0] == left and emptied[1] == grown[1]


def test_virtio_mem_grows_and_shrinks(pykata: Pykata, tmp_path: Path) -> None:
    sandbox = _sandbox(_config(pykata, tmp_path, "enable_virtio_mem = true\n"))
    assert sandbox.plan.sizing.memory_hotplug == "virtio-mem"
    left = 1 if sandbox.plan.sizing.cpu_unplug else 2
    boot, grown, emptied, size = asyncio.run(_grow_then_empty(sandbox))
    assert grown[0] == 2 and grown[1] - boot[1] >= 480 * MiB
    assert size == (left, 256)
    assert emptied[0] == left and abs(emptied[1] - boot[1]) <= 4 * MiB
    # what `pykata monitor` reports: one resize each way, timed until the guest saw it
    kinds = {k: sum(h.counts) for k, h in sandbox.stats.hotplug.items()}
    assert kinds["cpu+virtio-mem/grow"] == 1 and kinds.get("virtio-mem/shrink", 0) + \
        kinds.get("cpu+virtio-mem/shrink", 0) == 1, kinds
    assert sandbox.owner_figures()["size"] == list(size)


def test_static_boots_full_size_and_never_hotplugs(pykata: Pykata, tmp_path: Path) -> None:
    cfg = _config(pykata, tmp_path, runtime="static_sandbox_resource_mgmt = true\n")
    sandbox = _sandbox(cfg, workload=CONTAINER)

    async def go() -> tuple[tuple[int, int], list[str]]:
        await sandbox.start()
        try:
            sent = _record_qmp(sandbox)
            await sandbox.resize([CONTAINER, CONTAINER])
            await sandbox.resize([])
            return await _guest(sandbox), sent
        finally:
            await sandbox.stop()
    (cpus, mem_total), sent = asyncio.run(go())
    plan = sandbox.plan.sizing
    assert plan.static and plan.vcpus == cpus == 2  # ceil(overhead 0.2 + 2), host has 2
    assert mem_total > (plan.memory_mib - 100) * MiB
    assert "device_add" not in sent and "qom-set" not in sent
