"""plan_pinning: one CPU per vCPU when the counts match, else the pod's cpuset (per NUMA node)."""

from __future__ import annotations

import os

import pytest

from pykata.domain.cpuset import CpuSet
from pykata.domain.errors import SpecError
from pykata.host.affinity import apply_affinity, thread_affinity
from pykata.plan.numa import GuestNode, NumaPlan
from pykata.plan.pinning import check_cpusets, host_cpu_set, plan_pinning

C = CpuSet.parse
HOST = C("0-7")
# Two guest nodes on host nodes 0 (CPUs 0-3) and 1 (CPUs 4-7); vCPUs dealt alternately.
NUMA = NumaPlan((GuestNode(0, C("0"), C("0-3"), (0, 2), 512),
                 GuestNode(1, C("1"), C("4-7"), (1, 3), 512)), ((10, 20), (20, 10)))
SAME_HOST_NODE = NumaPlan((GuestNode(0, C("0"), C("0-7"), (0,), 512),
                           GuestNode(1, C("0"), C("0-7"), (1,), 512)), ((10, 11), (11, 10)))

CASES = {
    # name: (vcpus, cpusets, enabled, numa, expected affinity, pinned)
    "counts match": ([0, 1], ["0-1"], True, None, ["0", "1"], True),
    "union of two containers, sorted": ([0, 1], ["5", "2"], True, None, ["2", "5"], True),
    "more vCPUs than CPUs (hotplug)": ([0, 1, 2], ["0-1"], True, None, ["0-1"] * 3, False),
    "fewer vCPUs than CPUs": ([0], ["0-1"], True, None, ["0-1"], False),
    "no cpuset: every host CPU": ([0, 1], [], True, None, ["0-7"] * 2, False),
    "empty cpusets": ([0, 1], ["", ""], True, None, ["0-7"] * 2, False),
    "pinning off": ([0, 1], ["0-1"], False, None, ["0-1"] * 2, False),
    "NUMA: each node's vCPUs on its CPUs": (
        [0, 1, 2, 3], ["2-5"], True, NUMA, ["2", "4", "3", "5"], True),
    "NUMA: per-node counts differ": (
        [0, 1, 2, 3], ["1-3,4"], True, NUMA, ["1-3", "4", "1-3", "4"], False),
    "NUMA: no cpuset, node's CPUs": ([0, 1, 2], [], True, NUMA, ["0-3", "4-7", "0-3"], False),
    "NUMA: cpuset off a node keeps the node": (
        [0, 1], ["0-1"], False, NUMA, ["0-1", "4-7"], False),
    "NUMA: nodes sharing a host node": ([0, 1], ["6-7"], True, SAME_HOST_NODE, ["6", "7"],
                                        True),
}


@pytest.mark.parametrize("case", CASES)
def test_plan_pinning(case: str) -> None:
    vcpus, cpusets, enabled, numa, expected, pinned = CASES[case]
    plan = plan_pinning(vcpus, [C(s) for s in cpusets], HOST, enabled, numa)
    assert {v: str(c) for v, c in plan.affinity.items()} == dict(zip(vcpus, expected,
                                                                   strict=True))
    assert plan.pinned is pinned, plan.reason


def test_reasons_say_why() -> None:
    assert plan_pinning([0, 1, 2], [C("0-1")], HOST, True).reason == (
        "not pinned: 3 vCPUs, 2 CPUs in the pod's cpuset 0-1: counts differ; vCPUs may run "
        "on the pod's cpuset 0-1")
    assert "guest NUMA node" in plan_pinning([0, 1, 2, 3], [C("1-4")], HOST, True,
                                             NUMA).reason
    assert plan_pinning([0, 1], [C("0-1")], HOST, True).reason == (
        "2 vCPUs on the 2 CPUs of the pod's cpuset 0-1, one each")


def test_overlapping_guest_nodes_do_not_pin_a_cpu_twice() -> None:
    overlap = NumaPlan((GuestNode(0, C("0"), C("0-3"), (0, 2), 512),
                        GuestNode(1, C("0"), C("2-5"), (1,), 512)), ((10, 11), (11, 10)))
    plan = plan_pinning([0, 1, 2], [C("0,2,7")], HOST, True, overlap)
    assert not plan.pinned and "does not split one-to-one" in plan.reason


@pytest.mark.parametrize("cpus, mems, match", [
    ("0-8", "", "linux.resources.cpu.cpus: 0-8: CPUs 8 are not on this host"),
    ("0", "0-2", r"linux.resources.cpu.mems: 0-2: NUMA nodes 2 are not on this host \(it "
     r"has 0-1\)"),
])
def test_cpusets_the_host_lacks_are_refused(cpus: str, mems: str, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        check_cpusets(C(cpus), C(mems), HOST, C("0-1"), "config.json")


def test_host_cpus_from_nodes_or_count() -> None:
    assert host_cpu_set(4) == C("0-3")
    assert host_cpu_set(4, [C("0-1"), C("8-9")]) == C("0-1,8-9")


def test_apply_and_read_back_on_this_thread() -> None:
    before = os.sched_getaffinity(0)
    tid = os.getpid()
    one = CpuSet([min(before)])
    try:
        assert apply_affinity({tid: one}) == []
        assert thread_affinity(tid, tid) == one
    finally:
        os.sched_setaffinity(0, before)
    assert apply_affinity({2 ** 22 + 7: one}) == [2 ** 22 + 7]
    assert thread_affinity(tid, 2 ** 22 + 7) is None
