"""vCPU pinning in a real VM (TCG, thread=multi: one host thread per vCPU): threads pinned one
to one when the VM's vCPUs match the pod's cpuset, spread over it when they do not, read back
from /proc/<qemu>/task/<tid>/status.

This host has 2 CPUs and pykata caps max_vcpus at the host's CPUs (as Kata does), so the test
that hot-plugs a third vCPU tells the sandbox the host has 4 (QEMU runs 3 vCPU threads on 2
CPUs happily). Under TCG vCPUs are never unplugged (QEMU 7.2, see plan.sizing), so a removed
container leaves 3 vCPUs and the threads stay spread; the unplug-then-pin case is a plan test.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import pytest
from e2e_support import Pykata

from pykata.domain.cpuset import CpuSet
from pykata.domain.limits import Limits
from pykata.domain.spec import default_spec
from pykata.host.affinity import thread_affinity
from pykata.host.config_files import load_config
from pykata.host.facts import read_host_facts
from pykata.host.qemu_caps import qemu_devices
from pykata.sandbox.sandbox import Sandbox

pytestmark = pytest.mark.e2e

C = CpuSet.parse


def _sandbox(pykata: Pykata, tmp_path: Path, extra: str, online_cpus: int = 0) -> Sandbox:
    config = tmp_path / "pin.toml"
    config.write_text(pykata.config.read_text().replace(
        "[runtime]\n", "[runtime]\nenable_vcpus_pinning = true\n")
        + f"[hypervisor.qemu]\ndefault_memory = 512\n{extra}")
    cfg = load_config(str(config))
    facts = read_host_facts()
    if online_cpus:
        facts = dataclasses.replace(facts, online_cpus=online_cpus)
    return Sandbox.from_parts(cfg, facts, devices=qemu_devices(cfg.hypervisor.path, cfg.image.dir))


def _affinity(sandbox: Sandbox) -> list[str]:
    """Each vCPU thread's CPUs, read from /proc, in vCPU order."""
    assert sandbox.vm is not None and sandbox.placement.threads is not None
    pid = sandbox.vm.qemu.pid
    return [str(thread_affinity(pid, tid)) for _, tid in
            sorted(sandbox.placement.threads.items())]


def _check(sandbox: Sandbox, vcpus: int, affinity: list[str], pinned: bool) -> None:
    assert sandbox.size.vcpus == vcpus
    assert _affinity(sandbox) == affinity
    assert sandbox.placement.pin is not None and sandbox.placement.pin.pinned is pinned


async def _hotplug_third(sandbox: Sandbox) -> None:
    await sandbox.start()
    try:
        a = Limits(vcpus=1, cpuset=C("0-1"))
        _check(sandbox, 1, ["0-1"], False)             # no container yet
        await sandbox.resize([a])                      # 1 + 1 = 2 vCPUs, cpuset 0-1
        _check(sandbox, 2, ["0", "1"], True)
        await sandbox.resize([a, Limits(vcpus=1)])     # a third vCPU: counts differ
        _check(sandbox, 3, ["0-1", "0-1", "0-1"], False)
        await sandbox.resize([a])                      # TCG keeps the third vCPU
        _check(sandbox, 3, ["0-1", "0-1", "0-1"], False)
        assert "3 vCPUs, 2 CPUs" in sandbox.placement.pin.reason  # type: ignore[union-attr]
    finally:
        await sandbox.stop()


def test_pinned_then_reset_by_a_hot_plugged_vcpu(pykata: Pykata, tmp_path: Path) -> None:
    sandbox = _sandbox(pykata, tmp_path, "default_maxvcpus = 3\n", online_cpus=4)
    asyncio.run(_hotplug_third(sandbox))


async def _update_cpuset(sandbox: Sandbox) -> None:
    await sandbox.start()
    try:
        await sandbox.resize([Limits(vcpus=2, cpuset=C("0-1"))])
        _check(sandbox, 2, ["0", "1"], True)
        await sandbox.resize([Limits(vcpus=2, cpuset=C("1"))])   # an Update of its cpuset
        _check(sandbox, 2, ["1", "1"], False)
        await sandbox.resize([Limits(vcpus=2, cpuset=C("0-1"))])
        _check(sandbox, 2, ["0", "1"], True)
    finally:
        await sandbox.stop()


def test_cpuset_update_resets_and_pins_again(pykata: Pykata, tmp_path: Path) -> None:
    asyncio.run(_update_cpuset(_sandbox(pykata, tmp_path, "default_vcpus = 2\n")))


def test_guest_container_is_not_confined_to_host_cpu_ids(pykata: Pykata,
                                                         tmp_path: Path) -> None:
    """A bundle cpuset of host CPU 1: the VM gets 1 + 1 vCPUs and the container in the guest
    may use both (cpuset.cpus cleared in the guest spec), not guest CPU 1 alone."""
    spec = default_spec(["grep", "Cpus_allowed_list", "/proc/self/status"])
    spec["root"]["path"] = str(pykata.image_dir / "rootfs" / "busybox")
    spec["linux"]["resources"] = {"cpu": {"cpus": "1"}}
    (tmp_path / "config.json").write_text(json.dumps(spec))
    r = pykata.run("run", "--bundle", str(tmp_path))
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode().split() == ["Cpus_allowed_list:", "0-1"]
