"""The sysfs topology reader over the recorded hosts, and its errors on malformed files."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from pykata.domain.cpuset import CpuSet
from pykata.domain.errors import TopologyError
from pykata.domain.topology import UNKNOWN_NODE, HostNode, HostTopology, IommuGroup
from pykata.host.topology import read_topology

HOSTS = Path(__file__).resolve().parent.parent / "fixtures" / "hosts"
ALL_HOSTS = sorted(p.name for p in HOSTS.iterdir())

# name -> (node: cpus, MiB), distance rows, PCI devices on each node (-1: unknown), groups
EXPECTED = {
    "two-socket-8gpu": (
        {0: ("0-23,48-71", 257447), 1: ("24-47,72-95", 258009)},
        [[10, 21], [21, 10]],
        {0: 6, 1: 5, UNKNOWN_NODE: 0}, 8),
    "nps4-4node": (
        {0: ("0-15,64-79", 64512), 1: ("16-31,80-95", 65280), 2: ("32-47,96-111", 65280),
         3: ("48-63,112-127", 65280)},
        [[10, 12, 12, 12], [12, 10, 12, 12], [12, 12, 10, 12], [12, 12, 12, 10]],
        {0: 1, 1: 1, 2: 1, 3: 1}, 4),
    "eight-node": (
        {i: (f"{8 * i}-{8 * i + 7}", 32768) for i in range(8)},
        [[10 if i == j else 12 if i // 4 == j // 4 else 32 for j in range(8)]
         for i in range(8)],
        {0: 1, 1: 1, 6: 1}, 1),
    "memory-only-node": (
        {0: ("0-7", 16384), 1: ("8-15", 16384), 2: ("", 65536)},
        [[10, 21, 17], [21, 10, 28], [17, 28, 10]],
        {0: 1, 2: 1}, 1),
    "gpu-unknown-node": (
        {0: ("0-15", 65536), 1: ("16-31", 65536)},
        [[10, 20], [20, 10]],
        {0: 1, 1: 1, UNKNOWN_NODE: 1}, 2),
    "this-host": (
        {0: ("0-1", 6488)},
        [[10]],
        {UNKNOWN_NODE: 6}, 0),
}


def test_every_fixture_has_expectations() -> None:
    assert sorted(EXPECTED) == ALL_HOSTS


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_read_recorded_host(name: str) -> None:
    nodes, distances, per_node, groups = EXPECTED[name]
    topo = read_topology(HOSTS / name)
    assert {n.id: (str(n.cpus), n.memory_mib) for n in topo.nodes} == nodes
    assert [list(n.distances) for n in topo.nodes] == distances
    counts = {k: sum(d.numa_node == k for d in topo.devices) for k in per_node}
    assert counts == per_node
    assert len(topo.iommu_groups) == groups


def test_two_socket_gpus_and_groups() -> None:
    topo = read_topology(HOSTS / "two-socket-8gpu")
    assert topo.device_node("0000:9a:00.0") == 1
    assert topo.device_node("0000:18:00.0") == 0
    assert topo.device_node("0000:ff:00.0") is None
    assert topo.group_bdfs(20) == ("0000:18:00.0", "0000:18:00.1")
    assert topo.group_bdfs(40) == ("0000:9a:00.0",)
    assert topo.group_bdfs(99) is None
    assert topo.distance(0, 1) == 21
    assert topo.node_ids == CpuSet([0, 1])


def test_memory_only_node_and_unknown_device_are_values() -> None:
    assert read_topology(HOSTS / "memory-only-node").node(2).cpus == CpuSet()
    assert read_topology(HOSTS / "gpu-unknown-node").device_node("0000:3b:00.0") == -1


def test_no_numa_in_the_kernel_gives_no_nodes(tmp_path: Path) -> None:
    assert read_topology(tmp_path) == HostTopology(nodes=())


def test_pci_device_without_numa_node_is_unknown(tmp_path: Path) -> None:
    (tmp_path / "bus/pci/devices/0000:00:1f.0").mkdir(parents=True)
    assert read_topology(tmp_path).device_node("0000:00:1f.0") == UNKNOWN_NODE


# name -> (file under the copied two-socket host, its new text, what the error says)
MALFORMED = {
    "online": ("devices/system/node/online", "0-x", "'x' is not a number"),
    "cpulist": ("devices/system/node/node1/cpulist", "24-", "'' is not a number"),
    "meminfo-missing-total": ("devices/system/node/node0/meminfo", "Node 0 MemFree: 5 kB",
                              "no 'Node N MemTotal"),
    "meminfo-other-node": ("devices/system/node/node1/meminfo",
                           "Node 0 MemTotal: 1024 kB", "names another node than node1"),
    "distance-words": ("devices/system/node/node0/distance", "10 far",
                       "distances must be whole numbers"),
    "distance-count": ("devices/system/node/node0/distance", "10 21 31",
                       "3 distances for 2 online nodes"),
    "numa_node-text": ("bus/pci/devices/0000:9a:00.0/numa_node", "one", "not a node number"),
    "numa_node-below": ("bus/pci/devices/0000:9a:00.0/numa_node", "-2",
                        "-1 (unknown) or more"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_file_names_the_file_and_value(case: str, tmp_path: Path) -> None:
    rel, text, why = MALFORMED[case]
    root = tmp_path / "host"
    shutil.copytree(HOSTS / "two-socket-8gpu", root)
    (root / rel).write_text(text + "\n")
    with pytest.raises(TopologyError) as err:
        read_topology(root)
    assert err.value.path == str(root / rel)
    assert why in str(err.value)
    assert repr(text.split("\n")[0].strip()) in str(err.value)


def test_missing_node_file_is_named(tmp_path: Path) -> None:
    root = tmp_path / "host"
    shutil.copytree(HOSTS / "nps4-4node", root)
    (root / "devices/system/node/node3/meminfo").unlink()
    with pytest.raises(TopologyError, match=r"node3/meminfo: '': missing"):
        read_topology(root)


def test_iommu_group_not_a_number(tmp_path: Path) -> None:
    (tmp_path / "kernel/iommu_groups/x1/devices").mkdir(parents=True)
    with pytest.raises(TopologyError, match=r"iommu_groups/x1: 'x1': an IOMMU group is named"):
        read_topology(tmp_path)


def test_topology_value_checks_distance_rows() -> None:
    with pytest.raises(TopologyError, match=r"node0/distance: '10': 1 distances for 2 nodes"):
        HostTopology(nodes=(HostNode(0, CpuSet([0]), 1, (10,)),
                            HostNode(1, CpuSet([1]), 1, (10, 10))))
    assert HostTopology(nodes=(), iommu_groups=(IommuGroup(1, ("a",)),)).group_bdfs(1) == ("a",)


def _load_generator() -> object:
    path = HOSTS.parent.parent.parent / "scripts" / "gen-host-fixtures.py"
    spec = importlib.util.spec_from_file_location("gen_host_fixtures", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", sorted(set(EXPECTED) - {"this-host"}))
def test_fixtures_match_their_generator(name: str, tmp_path: Path) -> None:
    gen = _load_generator()
    gen.write_host(tmp_path / name, gen.HOSTS[name])  # type: ignore[attr-defined]
    written = {p.relative_to(tmp_path / name): p.read_text()
               for p in (tmp_path / name).rglob("*") if p.is_file()}
    committed = {p.relative_to(HOSTS / name): p.read_text()
                 for p in (HOSTS / name).rglob("*") if p.is_file()}
    assert written == committed, "run: python scripts/gen-host-fixtures.py"
