"""Guest NUMA in a real VM (TCG): the guest sees the planned nodes, their CPUs and memory.

This host has one NUMA node, so several guest nodes are all bound to host node 0 (FACTS.md §1);
spanning several host nodes is checked by the plan tests over recorded hosts.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
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
from pykata.sandbox.inspect import parse_memfd_mappings
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


async def _boot_and_grow(sandbox: Sandbox) -> tuple[tuple[int, int], tuple[int, int],
                                                    list[tuple[int, int]]]:
    await sandbox.start()
    try:
        boot = await sandbox.agent.guest_details()
        await sandbox.resize([Limits(vcpus=1, memory_mib=512)])
        grown = await sandbox.agent.guest_details()
        assert sandbox.vm is not None
        devices = await sandbox.vm.qmp.execute("query-memory-devices")
        nodes = [(d["data"]["node"], (d["data"].get("requested-size") or d["data"]["size"])
                  >> 20) for d in devices if d["type"] != "virtio-pmem"]  # not RAM
        return ((boot.online_cpus, boot.mem_total_bytes >> 20),
                (grown.online_cpus, grown.mem_total_bytes >> 20), sorted(nodes))
    finally:
        await sandbox.stop()


@pytest.mark.parametrize("mechanism", ["pc-dimm", "virtio-mem"])
def test_resizable_sandbox_with_guest_nodes_grows_balanced(pykata: Pykata, tmp_path: Path,
                                                           mechanism: str) -> None:
    """Hotplug and NUMA together: vCPU 1's slot is on guest node 1 from boot, and +512 MiB
    lands half on each guest node (a DIMM each, or each node's virtio-mem device)."""
    config = tmp_path / "numa.toml"
    config.write_text(pykata.config.read_text() + "[hypervisor.qemu]\ndefault_memory = 256\n"
                      "default_maxmemory = 1280\nenable_numa = true\n"
                      'numa_mapping = ["0", "0"]\n'
                      f"enable_virtio_mem = {str(mechanism == 'virtio-mem').lower()}\n")
    cfg = load_config(str(config))
    sandbox = Sandbox.from_parts(cfg, read_host_facts(),
                      devices=qemu_devices(cfg.hypervisor.path, cfg.image.dir))
    assert sandbox.plan.numa is not None
    assert sandbox.plan.sizing.memory_hotplug == mechanism
    assert [n.vcpus for n in sandbox.plan.numa.nodes] == [(0,), (1,)]
    (boot_cpus, boot_mib), (cpus, mib), nodes = asyncio.run(_boot_and_grow(sandbox))
    assert (boot_cpus, cpus) == (1, 2)
    assert mib - boot_mib >= 512 - 8, (boot_mib, mib)
    assert nodes == [(0, 256), (1, 256)]


PCI_SHOW = ("for d in /sys/bus/pci/devices/*; do echo \"$(basename $d) $(cat $d/vendor) "
            "$(cat $d/device) $(cat $d/numa_node)\"; done; ls -d /sys/devices/system/node/node*")
VIRTIO_RNG = ("0x1af4", "0x1044")   # vendor, device of a modern virtio-rng-pci


def _stand_in_gpu_run(pykata: Pykata, tmp_path: Path, qemu: str) -> list[list[str]]:
    config = tmp_path / "gpu.toml"
    config.write_text(pykata.config.read_text() + f"[hypervisor.qemu]\n{qemu}")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    spec = default_spec(["sh", "-c", PCI_SHOW])
    spec["root"]["path"] = str(pykata.image_dir / "rootfs" / "busybox")
    spec["linux"]["devices"] = [{"path": "/dev/vfio/77", "type": "c", "major": 241,
                                 "minor": 0}]
    (bundle / "config.json").write_text(json.dumps(spec))
    env = {**os.environ, "PYKATA_CONF_FILE": str(config)}
    r = subprocess.run([sys.executable, str(Path(__file__).parent / "stand_in_gpu.py"), "run",
                        "--bundle", str(bundle)], capture_output=True, timeout=120, env=env,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr.decode()
    return [line.split() for line in r.stdout.decode().splitlines()]


def test_gpu_behind_pxb_reports_its_guest_node(pykata: Pykata, tmp_path: Path) -> None:
    """Scenario 3 in a real VM: a (simulated) two-node host, too big a sandbox for one node:
    two guest nodes, and the stand-in GPU of host node 1 sits behind a pxb-pcie whose
    numa_node the guest reads as 1."""
    rows = _stand_in_gpu_run(pykata, tmp_path, "default_vcpus = 2\nenable_numa = true\n")
    nodes = [r[0] for r in rows if len(r) == 1]
    assert [n.rsplit("/", 1)[1] for n in nodes] == ["node0", "node1"]
    gpu = [r for r in rows if len(r) == 4 and tuple(r[1:3]) == VIRTIO_RNG]
    assert len(gpu) == 1 and gpu[0][3] == "1", rows
    # The devices on the root bus belong to no node; the expander's root port is on node 1.
    assert {r[3] for r in rows if len(r) == 4 and r[0].startswith("0000:00:")} == {"-1"}
    assert {r[3] for r in rows if len(r) == 4 and not r[0].startswith("0000:00:")} == {"1"}


def test_gpu_right_sized_onto_its_node(pykata: Pykata, tmp_path: Path) -> None:
    """Scenario 4 in a real VM: a sandbox that fits one node collapses to the GPU's node
    (host node 1, not node 0, the first that fits): one guest node, the GPU on it."""
    rows = _stand_in_gpu_run(pykata, tmp_path,
                             "default_vcpus = 1\ndefault_maxvcpus = 1\ndefault_memory = 512\n"
                             "enable_numa = true\n")
    assert [r[0].rsplit("/", 1)[1] for r in rows if len(r) == 1] == ["node0"]
    gpu = [r for r in rows if len(r) == 4 and tuple(r[1:3]) == VIRTIO_RNG]
    assert len(gpu) == 1 and gpu[0][3] == "0", rows


def _host_nodes_with_cpus() -> list[int]:
    return [n.id for n in read_host_facts().topology.nodes if n.cpus]


async def _placement(sandbox: Sandbox) -> tuple[list[CpuSet], list[tuple[str, dict[str, int]]]]:
    """Each vCPU thread's allowed CPUs, and each memfd's policy and pages per host node."""
    await sandbox.start()
    try:
        assert sandbox.vm is not None and sandbox.placement.threads is not None
        pid = sandbox.vm.qemu.pid
        cpus = [thread_affinity(pid, t) or CpuSet() for t in
                sandbox.placement.threads.values()]
        maps = Path(f"/proc/{pid}/maps").read_text()
        numa_maps = Path(f"/proc/{pid}/numa_maps").read_text()
        return cpus, [(p, r) for _, p, r in parse_memfd_mappings(maps, numa_maps)]
    finally:
        await sandbox.stop()


def test_explicit_mapping_from_a_drop_in(pykata: Pykata, tmp_path: Path) -> None:
    """Scenario 5 in a real VM: numa_mapping in a config.d/ drop-in names the highest host
    node with CPUs (1 on a two-node host, 0 here): one guest node, its memory bound there,
    every vCPU thread on that node's CPUs; without the drop-in the mapping is gone."""
    node = _host_nodes_with_cpus()[-1]
    main = tmp_path / "configuration.toml"
    main.write_text(pykata.config.read_text() + "[hypervisor.qemu]\ndefault_vcpus = 2\n"
                    "default_memory = 512\nenable_numa = true\n")
    drop_in = tmp_path / "config.d" / "50-numa.toml"
    drop_in.parent.mkdir()
    drop_in.write_text(f'[hypervisor.qemu]\nnuma_mapping = ["{node}"]\n')
    try:
        cfg = load_config(str(main))
        facts = read_host_facts()
        sandbox = Sandbox.from_parts(cfg, facts)
        assert sandbox.plan.numa is not None
        assert [list(n.host_nodes) for n in sandbox.plan.numa.nodes] == [[node]]
        cpus, memory = asyncio.run(_placement(sandbox))
    finally:
        drop_in.unlink()
    node_cpus = facts.topology.node(node).cpus
    assert len(cpus) == 2 and all(c and c <= node_cpus for c in cpus), cpus
    assert memory and all(p == "bind" and set(r) <= {f"node{node}"} for p, r in memory)
    assert load_config(str(main)).hypervisor.numa_mapping == ()


def test_multi_node_host_spans_and_keeps_threads_on_their_nodes(pykata: Pykata,
                                                                tmp_path: Path) -> None:
    """Scenario 1 on a real multi-node host: a sandbox too big for one node spans them all,
    its memory bound per node, each vCPU thread on its node's CPUs."""
    nodes = _host_nodes_with_cpus()
    if len(nodes) < 2:
        pytest.skip("this host has one NUMA node with CPUs: spanning host nodes is checked "
                    "by the plan tests over recorded hosts (tests/unit/test_numa_scenarios.py)")
    facts = read_host_facts()
    vcpus = max(len(facts.topology.node(n).cpus) for n in nodes) + 1
    config = tmp_path / "span.toml"
    config.write_text(pykata.config.read_text() + f"[hypervisor.qemu]\ndefault_vcpus = {vcpus}\n"
                      "default_memory = 1024\nenable_numa = true\n")
    sandbox = Sandbox.from_parts(load_config(str(config)), facts)
    assert sandbox.plan.numa is not None and len(sandbox.plan.numa.nodes) == len(nodes)
    cpus, memory = asyncio.run(_placement(sandbox))
    on = [next(n for n in nodes if c <= facts.topology.node(n).cpus) for c in cpus]
    assert sorted(set(on)) == nodes
    assert {p for p, _ in memory} == {"bind"}
