"""Guest NUMA in a real VM (TCG): the guest sees the planned nodes, their CPUs and memory.

This host has one NUMA node, so several guest nodes are all bound to host node 0 (FACTS.md §1);
spanning several host nodes is checked by the plan tests over recorded hosts.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from e2e_support import Pykata

from pykata.host.config_files import load_config
from pykata.host.facts import read_host_facts
from pykata.host.qemu_caps import qemu_devices
from pykata.plan.sizing import Limits
from pykata.sandbox.sandbox import Sandbox

pytestmark = pytest.mark.e2e

SHOW = ("cd /sys/devices/system/node; for n in node*; do "
        'echo "$n $(cat $n/cpulist) $(cat $n/distance) '
        "$(awk '/MemTotal/ {print $4}' $n/meminfo)\"; done")


def _nodes(pykata: Pykata, tmp_path: Path, qemu: str) -> list[tuple[str, str, str, int]]:
    config = tmp_path / "numa.toml"
    config.write_text(pykata.config.read_text() + f"[hypervisor.qemu]\n{qemu}")
    r = pykata.run("run", "--", "sh", "-c", SHOW, config=config)
    assert r.returncode == 0, r.stderr.decode()
    rows = [line.split(" ", 1) for line in r.stdout.decode().splitlines()]
    out = []
    for name, rest in rows:
        *cpus_and_distance, kib = rest.split()
        out.append((name, cpus_and_distance[0], " ".join(cpus_and_distance[1:]),
                    int(kib) // 1024))
    return out


def test_numa_mapping_gives_two_guest_nodes(pykata: Pykata, tmp_path: Path) -> None:
    nodes = _nodes(pykata, tmp_path, 'default_vcpus = 2\nenable_numa = true\n'
                   'numa_mapping = ["0", "0"]\n')
    assert [(n, cpus, dist) for n, cpus, dist, _ in nodes] == [
        ("node0", "0", "10 11"), ("node1", "1", "11 10")]
    # 1024 MiB each, less what the guest kernel keeps for itself.
    assert all(900 < mib <= 1024 for *_, mib in nodes), nodes


def test_right_sized_to_the_one_host_node(pykata: Pykata, tmp_path: Path) -> None:
    nodes = _nodes(pykata, tmp_path, "default_vcpus = 2\nenable_numa = true\n")
    assert [(n, cpus, dist) for n, cpus, dist, _ in nodes] == [("node0", "0-1", "10")]
    assert 1800 < nodes[0][3] <= 2048, nodes


async def _boot_and_grow(sandbox: Sandbox) -> tuple[tuple[int, int], tuple[int, int]]:
    await sandbox.start()
    try:
        boot = await sandbox.agent.guest_details()
        await sandbox.resize([Limits(vcpus=1, memory_mib=256)])
        grown = await sandbox.agent.guest_details()
        return ((boot.online_cpus, boot.mem_total_bytes >> 20),
                (grown.online_cpus, grown.mem_total_bytes >> 20))
    finally:
        await sandbox.stop()


def test_resizable_sandbox_with_guest_nodes_grows(pykata: Pykata, tmp_path: Path) -> None:
    """Hotplug headroom and NUMA together: vCPU 1's slot is on guest node 1 from boot."""
    config = tmp_path / "numa.toml"
    config.write_text(pykata.config.read_text() + "[hypervisor.qemu]\ndefault_memory = 256\n"
                      "default_maxmemory = 1280\nenable_numa = true\n"
                      'numa_mapping = ["0", "0"]\n')
    cfg = load_config(str(config))
    sandbox = Sandbox(cfg, read_host_facts(),
                      devices=qemu_devices(cfg.hypervisor.path, cfg.image.dir))
    assert sandbox.plan.numa is not None
    assert [n.vcpus for n in sandbox.plan.numa.nodes] == [(0,), (1,)]
    (boot_cpus, boot_mib), (cpus, mib) = asyncio.run(_boot_and_grow(sandbox))
    assert (boot_cpus, cpus) == (1, 2)
    assert mib > boot_mib
