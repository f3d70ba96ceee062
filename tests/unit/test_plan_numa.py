"""The NUMA planner over the recorded hosts: right-sizing, spanning, explicit mapping, devices,
and its errors and warnings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pykata.domain.cpuset import CpuSet
from pykata.domain.errors import NumaError
from pykata.domain.topology import HostNode, HostTopology
from pykata.host.topology import read_topology
from pykata.plan.numa import NumaPlan, numa_options, plan_numa
from pykata.plan.qemu import build_argv, format_argv

HOSTS = Path(__file__).resolve().parent.parent / "fixtures" / "hosts"
ALL_HOSTS = sorted(p.name for p in HOSTS.iterdir())
GPU_NODE1 = "0000:9a:00.0"
GPU_NODE0 = "0000:18:00.0"


def _topo(name: str) -> HostTopology:
    return read_topology(HOSTS / name)


def _plan(host: str, vcpus: int, max_vcpus: int, mib: int, mapping: tuple[str, ...] = (),
          bdfs: tuple[str, ...] = ()) -> NumaPlan:
    plan = plan_numa(vcpus, max_vcpus, mib, _topo(host), True, mapping, bdfs)
    assert plan is not None
    return plan


def _invariants(plan: NumaPlan, max_vcpus: int, mib: int) -> None:
    slots = sorted(v for n in plan.nodes for v in n.vcpus)
    assert slots == list(range(max_vcpus)), "every vCPU slot on exactly one guest node"
    assert sum(n.memory_mib for n in plan.nodes) == mib
    assert [n.guest_node for n in plan.nodes] == list(range(len(plan.nodes)))
    for i, row in enumerate(plan.distances):
        assert row[i] == 10 and all(d > 10 for j, d in enumerate(row) if j != i)


@pytest.mark.parametrize("host", ALL_HOSTS)
def test_without_numa_there_is_no_plan(host: str) -> None:
    assert plan_numa(4, 8, 4096, _topo(host), False, ["0"], []) is None


# Scenario 1: a sandbox too big for one node spans every host node with CPUs, balanced.
# host -> (max_vcpus, MiB, guest node count, host nodes)
SPANNING = {
    "two-socket-8gpu": (96, 65536, 2, [[0], [1]]),
    "nps4-4node": (64, 131072, 4, [[0], [1], [2], [3]]),
    "eight-node": (24, 65536, 8, [[i] for i in range(8)]),
    "memory-only-node": (16, 8192, 2, [[0], [1]]),
    "gpu-unknown-node": (32, 8192, 2, [[0], [1]]),
}


@pytest.mark.parametrize("host", sorted(SPANNING))
@pytest.mark.parametrize("boot", [1, 2, 5])
def test_multi_node_spans_and_balances(host: str, boot: int) -> None:
    max_vcpus, mib, count, host_nodes = SPANNING[host]
    plan = _plan(host, boot, max_vcpus, mib)
    _invariants(plan, max_vcpus, mib)
    assert len(plan.nodes) == count
    assert [list(n.host_nodes) for n in plan.nodes] == host_nodes
    sizes = [len(n.vcpus) for n in plan.nodes]
    assert max(sizes) - min(sizes) <= 1
    # Dealt in turn: every prefix (the boot vCPUs, each hotplug after) is balanced too.
    for k in range(1, max_vcpus + 1):
        counts = [sum(v < k for v in n.vcpus) for n in plan.nodes]
        assert max(counts) - min(counts) <= 1, k
    assert all(n.memory_mib > 0 for n in plan.nodes)
    assert plan.reasons[0].startswith("one guest node per host node with CPUs")
    topo = _topo(host)
    host_of = {n.guest_node: next(iter(n.host_nodes)) for n in plan.nodes}
    for n in plan.nodes:
        assert n.host_cpus == topo.node(host_of[n.guest_node]).cpus
        assert all(plan.distances[n.guest_node][m.guest_node]
                   == topo.distance(host_of[n.guest_node], host_of[m.guest_node])
                   for m in plan.nodes)


def test_memory_only_node_warns_and_gets_no_guest_node() -> None:
    plan = _plan("memory-only-node", 2, 16, 8192)
    assert plan.warnings == ("host node 2 has 65536 MiB and no CPUs (memory only): no guest "
                             "node mirrors it",)


# Scenario 2: a sandbox that fits one host node collapses onto one guest node.
# host -> (max_vcpus, MiB, host node, reason)
RIGHT_SIZED = {
    "two-socket-8gpu": (8, 16384, 0, "the lowest-numbered host node that fits 8 vCPUs (at "
                        "most) and 16384 MiB (48 CPUs, 257447 MiB)"),
    "nps4-4node": (32, 64512, 0, "the lowest-numbered host node that fits"),
    # 65000 MiB is more than node 0 has (64512) but fits node 1.
    "nps4-4node-big": (32, 65000, 1, "the lowest-numbered host node that fits"),
    "eight-node": (8, 32768, 0, "the lowest-numbered host node that fits"),
    "memory-only-node": (4, 4096, 0, "the lowest-numbered host node that fits"),
    "gpu-unknown-node": (16, 1024, 0, "the lowest-numbered host node that fits"),
    "this-host": (4, 2048, 0, "the only host node with CPUs"),
}


@pytest.mark.parametrize("case", sorted(RIGHT_SIZED))
def test_right_sized_to_one_node(case: str) -> None:
    max_vcpus, mib, node, why = RIGHT_SIZED[case]
    plan = _plan(case.removesuffix("-big"), 1, max_vcpus, mib)
    _invariants(plan, max_vcpus, mib)
    assert [(list(n.host_nodes), n.memory_mib) for n in plan.nodes] == [([node], mib)]
    assert plan.nodes[0].vcpus == tuple(range(max_vcpus))
    assert plan.distances == ((10,),)
    assert plan.reasons[0].startswith(f"one guest node on host node {node}: ")
    assert why in plan.reasons[0]
    assert plan.warnings == ()


def test_this_host_overcommits_rather_than_spans() -> None:
    plan = _plan("this-host", 2, 8, 2048)
    assert [list(n.host_nodes) for n in plan.nodes] == [[0]]


# Scenarios 3 and 4: VFIO devices. name -> (host, max_vcpus, MiB, bdfs,
#   [(guest node, host nodes)], [(bdf, host node, guest node, bus)])
DEVICES: dict[str, tuple[Any, ...]] = {
    # The GPU is on node 1: "the first node that fits" (0) would be wrong.
    "gpu-right-sized": ("two-socket-8gpu", 4, 4096, (GPU_NODE1,), [(0, [1])],
                        [(GPU_NODE1, 1, 0, "rp-numa0-0")]),
    "two-gpus-one-node": ("two-socket-8gpu", 8, 8192, (GPU_NODE1, "0000:db:00.0"),
                          [(0, [1])], [(GPU_NODE1, 1, 0, "rp-numa0-0"),
                                       ("0000:db:00.0", 1, 0, "rp-numa0-1")]),
    "gpus-on-both-nodes": ("two-socket-8gpu", 8, 8192, (GPU_NODE1, GPU_NODE0),
                           [(0, [0]), (1, [1])], [(GPU_NODE1, 1, 1, "rp-numa1-0"),
                                                  (GPU_NODE0, 0, 0, "rp-numa0-0")]),
    "gpu-multi-node": ("two-socket-8gpu", 96, 65536, (GPU_NODE1,), [(0, [0]), (1, [1])],
                       [(GPU_NODE1, 1, 1, "rp-numa1-0")]),
    "nps4-device-node3": ("nps4-4node", 4, 4096, ("0000:c1:00.0",), [(0, [3])],
                          [("0000:c1:00.0", 3, 0, "rp-numa0-0")]),
    # Too big for the device's node 3: spans, and the device sits on guest node 3.
    "nps4-device-too-big": ("nps4-4node", 40, 4096, ("0000:c1:00.0",),
                            [(i, [i]) for i in range(4)], [("0000:c1:00.0", 3, 3, "rp-numa3-0")]),
    "eight-node-device-node6": ("eight-node", 2, 1024, ("0000:ca:00.0",), [(0, [6])],
                                [("0000:ca:00.0", 6, 0, "rp-numa0-0")]),
    "unknown-node-gpu": ("gpu-unknown-node", 4, 4096, ("0000:3b:00.0",), [(0, [0])],
                         [("0000:3b:00.0", -1, 0, "rp-numa0-0")]),
    # A CXL device on memory-only node 2 counts as on node 0 (distance 17 < 28).
    "device-on-memory-only-node": ("memory-only-node", 2, 1024, ("0000:0d:00.0",), [(0, [0])],
                                   [("0000:0d:00.0", 2, 0, "rp-numa0-0")]),
}


@pytest.mark.parametrize("case", sorted(DEVICES))
def test_vfio_device_placement(case: str) -> None:
    host, max_vcpus, mib, bdfs, nodes, devices = DEVICES[case]
    plan = _plan(host, 1, max_vcpus, mib, bdfs=bdfs)
    _invariants(plan, max_vcpus, mib)
    assert [(n.guest_node, list(n.host_nodes)) for n in plan.nodes] == nodes
    assert [(d.bdf, d.host_node, d.guest_node, d.bus) for d in plan.devices] == devices


# name -> (host, bdfs, a warning's text)
DEVICE_WARNINGS = {
    "unknown-node-gpu": ("gpu-unknown-node", ("0000:3b:00.0",),
                         "vfio device 0000:3b:00.0: the host reports numa_node -1 (unknown); "
                         "its guest node is chosen without it"),
    "memory-only-node": ("memory-only-node", ("0000:0d:00.0",),
                         "vfio device 0000:0d:00.0: host node 2 has no CPUs; it counts as on "
                         "host node 0, the nearest with CPUs (distance 17)"),
    "this-host": ("this-host", ("0000:00:02.0",),
                  "vfio device 0000:00:02.0: the host reports numa_node -1 (unknown)"),
}


@pytest.mark.parametrize("case", sorted(DEVICE_WARNINGS))
def test_device_warnings(case: str) -> None:
    host, bdfs, text = DEVICE_WARNINGS[case]
    assert any(w.startswith(text) for w in _plan(host, 1, 2, 1024, bdfs=bdfs).warnings)


def test_device_off_the_explicit_mapping_goes_to_the_nearest_node() -> None:
    plan = _plan("two-socket-8gpu", 2, 2, 2048, mapping=("0",), bdfs=(GPU_NODE1,))
    assert [(d.host_node, d.guest_node) for d in plan.devices] == [(1, 0)]
    assert plan.warnings == (f"vfio device {GPU_NODE1}: no guest node is bound to host node 1; "
                             "it goes on guest node 0, the nearest (its DMA crosses host "
                             "nodes)",)


# Scenario 5: explicit numa_mapping. name -> (host, mapping, max_vcpus, MiB,
#   [host nodes per guest node], [vCPUs per guest node], [MiB per guest node], distances)
MAPPINGS: dict[str, tuple[Any, ...]] = {
    "node1": ("two-socket-8gpu", ("1",), 4, 4096, [[1]], [[0, 1, 2, 3]], [4096], [[10]]),
    # Small enough to right-size onto node 0, but the mapping says node 1.
    "node1-small": ("two-socket-8gpu", ("1",), 1, 512, [[1]], [[0]], [512], [[10]]),
    "pairs": ("nps4-4node", ("0-1", "2-3"), 4, 4096, [[0, 1], [2, 3]], [[0, 2], [1, 3]],
              [2048, 2048], [[10, 12], [12, 10]]),
    "eight-node-sockets": ("eight-node", ("0-3", "4-7"), 3, 3001, [[0, 1, 2, 3], [4, 5, 6, 7]],
                           [[0, 2], [1]], [1501, 1500], [[10, 32], [32, 10]]),
    # Two guest nodes on this one-node host (the e2e setup): told apart by distance 11.
    "this-host-twice": ("this-host", ("0", "0"), 2, 2048, [[0], [0]], [[0], [1]],
                        [1024, 1024], [[10, 11], [11, 10]]),
    "memory-only-with-cpus": ("memory-only-node", ("0,2", "1"), 4, 4096, [[0, 2], [1]],
                              [[0, 2], [1, 3]], [2048, 2048], [[10, 25], [25, 10]]),
}


@pytest.mark.parametrize("case", sorted(MAPPINGS))
def test_explicit_mapping(case: str) -> None:
    host, mapping, max_vcpus, mib, hosts, vcpus, mibs, distances = MAPPINGS[case]
    plan = _plan(host, 1, max_vcpus, mib, mapping=mapping)
    _invariants(plan, max_vcpus, mib)
    assert [list(n.host_nodes) for n in plan.nodes] == hosts
    assert [list(n.vcpus) for n in plan.nodes] == vcpus
    assert [n.memory_mib for n in plan.nodes] == mibs
    assert [list(r) for r in plan.distances] == distances
    assert plan.reasons[0].endswith("as configured (no right-sizing)")


def test_fewer_vcpus_than_nodes_gives_fewer_nodes_with_a_warning() -> None:
    plan = _plan("eight-node", 3, 3, 98304)
    assert [list(n.host_nodes) for n in plan.nodes] == [[0], [1], [2]]
    assert plan.warnings == ("3 vCPUs (at most) for 8 guest nodes: a guest node needs a vCPU, "
                             "so the guest gets 3 nodes, on host nodes 0, 1, 2",)
    _invariants(plan, 3, 98304)


def test_fewer_vcpus_than_nodes_keeps_the_devices_node() -> None:
    plan = _plan("nps4-4node", 2, 2, 100000, bdfs=("0000:c1:00.0",))
    assert [list(n.host_nodes) for n in plan.nodes] == [[0], [3]]
    assert [(d.host_node, d.guest_node) for d in plan.devices] == [(3, 1)]


def test_fewer_boot_vcpus_than_nodes_is_explained() -> None:
    plan = _plan("nps4-4node", 2, 64, 131072)
    assert "2 boot vCPUs for 4 guest nodes: guest nodes 2-3 get their first vCPU when one is " \
           "hotplugged" in plan.reasons


# name -> (host, args (vcpus, max_vcpus, MiB, mapping, bdfs), the whole message)
ERRORS: dict[str, tuple[Any, ...]] = {
    "mapping-missing-node": ("two-socket-8gpu", (1, 1, 1024, ("7",), ()),
                             "numa_mapping entry '7': host has nodes 0-1"),
    "mapping-some-missing": ("nps4-4node", (1, 2, 1024, ("0-1", "4-5"), ()),
                             "numa_mapping entry '4-5': host has nodes 0-3"),
    "mapping-not-a-list": ("two-socket-8gpu", (1, 1, 1024, ("one",), ()),
                           "numa_mapping entry 'one': 'one' is not a number; expected host "
                           "node ids like '1' or '0-1'"),
    "mapping-empty": ("two-socket-8gpu", (1, 1, 1024, (" ",), ()),
                      "numa_mapping entry ' ': names no host node"),
    "mapping-memory-only": ("memory-only-node", (1, 1, 1024, ("2",), ()),
                            "numa_mapping entry '2': its host nodes have no CPUs (memory "
                            "only), so its vCPUs would have nowhere to run; add a node with "
                            "CPUs"),
    "memory-too-small": ("nps4-4node", (4, 64, 12, (), ()),
                         "memory_mib 12: does not split over 4 guest nodes: each needs at "
                         "least 4 MiB (Linux ignores a smaller node)"),
    "memory-over-node": ("this-host", (1, 2, 8192, (), ()),
                         "memory_mib 8192: does not split: 8192 MiB would be bound to host "
                         "node(s) 0, which have 6488 MiB"),
    "memory-over-mapped-node": ("two-socket-8gpu", (1, 2, 300000, ("1",), ()),
                                "memory_mib 300000: does not split: 300000 MiB would be bound "
                                "to host node(s) 1, which have 258009 MiB"),
    "memory-over-host": ("nps4-4node", (1, 128, 300000, (), ()),
                         "memory_mib 300000: does not split: 75000 MiB would be bound to host "
                         "node(s) 0, which have 64512 MiB"),
    "unknown-device": ("two-socket-8gpu", (1, 1, 1024, (), ("0000:ff:00.0",)),
                       "vfio device '0000:ff:00.0': the host lists no such PCI device "
                       "(bus/pci/devices)"),
    "no-vcpus": ("this-host", (0, 1, 1024, (), ()),
                 "vcpus 0: a VM needs at least one vCPU"),
    "max-below-boot": ("this-host", (4, 2, 1024, (), ()),
                       "max_vcpus 2: is below the boot vCPUs (4)"),
    "no-memory": ("this-host", (1, 1, 0, (), ()), "memory_mib 0: a VM needs memory"),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_errors_name_the_value(case: str) -> None:
    host, (vcpus, max_vcpus, mib, mapping, bdfs), message = ERRORS[case]
    with pytest.raises(NumaError) as err:
        plan_numa(vcpus, max_vcpus, mib, _topo(host), True, mapping, bdfs)
    assert str(err.value) == message


def test_a_host_without_numa_nodes_is_an_error() -> None:
    with pytest.raises(NumaError, match="the host reports no NUMA node with CPUs"):
        plan_numa(1, 1, 1024, HostTopology(nodes=()), True)
    memory_only = HostTopology(nodes=(HostNode(0, CpuSet(), 1024, (10,)),))
    with pytest.raises(NumaError, match="no NUMA node with CPUs"):
        plan_numa(1, 1, 1024, memory_only, True)


def test_uneven_nodes_split_in_proportion() -> None:
    # 12 CPUs and 4 CPUs: three quarters of the vCPUs and of the memory on node 0.
    topo = HostTopology(nodes=(HostNode(0, CpuSet(range(12)), 4096, (10, 20)),
                               HostNode(1, CpuSet(range(12, 16)), 4096, (20, 10))))
    plan = plan_numa(8, 16, 4001, topo, True)
    assert plan is not None
    assert [len(n.vcpus) for n in plan.nodes] == [12, 4]
    assert [n.memory_mib for n in plan.nodes] == [3001, 1000]
    for k in range(1, 17):  # every prefix within one vCPU of its exact share
        on0 = sum(v < k for v in plan.nodes[0].vcpus)
        assert abs(on0 - k * 12 / 16) < 1, k


def test_to_json_has_the_issue_shape() -> None:
    plan = _plan("two-socket-8gpu", 4, 4, 4096, bdfs=(GPU_NODE1,))
    assert plan.to_json() == {
        "nodes": [{"guest_node": 0, "host_nodes": [1], "vcpus": [0, 1, 2, 3],
                   "memory_mib": 4096}],
        "devices": [{"bdf": GPU_NODE1, "host_node": 1, "guest_node": 0, "bus": "rp-numa0-0"}],
    }


# name -> (host, vcpus, max_vcpus, MiB, mapping, golden argv after the binary)
ARGV: dict[str, tuple[Any, ...]] = {
    "gpu-node1": ("two-socket-8gpu", 4, 4, 4096, ("1",),
                  "-object memory-backend-memfd,id=numa-mem0,size=4096M,share=on,host-nodes=1,"
                  "policy=bind -numa node,nodeid=0,memdev=numa-mem0,cpus=0-3"),
    "two-nodes": ("two-socket-8gpu", 2, 4, 2049, ("0", "1"),
                  "-object memory-backend-memfd,id=numa-mem0,size=1025M,share=on,host-nodes=0,"
                  "policy=bind -numa node,nodeid=0,memdev=numa-mem0,cpus=0,cpus=2 "
                  "-object memory-backend-memfd,id=numa-mem1,size=1024M,share=on,host-nodes=1,"
                  "policy=bind -numa node,nodeid=1,memdev=numa-mem1,cpus=1,cpus=3 "
                  "-numa dist,src=0,dst=1,val=21 -numa dist,src=1,dst=0,val=21"),
    "node-pairs": ("nps4-4node", 1, 2, 1024, ("0-1", "1,3"),
                   "-object memory-backend-memfd,id=numa-mem0,size=512M,share=on,"
                   "host-nodes=0-1,policy=bind -numa node,nodeid=0,memdev=numa-mem0,cpus=0 "
                   "-object memory-backend-memfd,id=numa-mem1,size=512M,share=on,host-nodes=1,"
                   "host-nodes=3,policy=bind -numa node,nodeid=1,memdev=numa-mem1,cpus=1 "
                   "-numa dist,src=0,dst=1,val=12 -numa dist,src=1,dst=0,val=12"),
}


@pytest.mark.parametrize("case", sorted(ARGV))
def test_numa_argv_golden(case: str) -> None:
    host, vcpus, max_vcpus, mib, mapping, golden = ARGV[case]
    plan = _plan(host, vcpus, max_vcpus, mib, mapping=mapping)
    assert format_argv(build_argv("qemu", numa_options(plan))) == f"qemu {golden}"
