"""pykata.plan.cgroups: layouts, cgroupsPath forms, and the steps for v1 and v2."""

from __future__ import annotations

import pytest

from pykata.domain.cpuset import CpuSet
from pykata.domain.errors import CgroupError
from pykata.plan.cgroups import (
    CgroupLayout,
    Enable,
    Hierarchy,
    MakeDir,
    Move,
    Write,
    cpu_quota,
    parse_mountinfo,
    parse_proc_cgroup,
    plan_cgroups,
    plan_create,
    plan_layout,
    plan_place_vcpus,
    plan_update,
    sandbox_cgroup_path,
    spec_cgroups_path,
)

# This machine's (Debian 12 here): v1 controllers, a name=systemd hierarchy, an empty v2.
HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
# A systemd host with cpu and cpuacct co-mounted.
COMOUNTED = """\
25 24 0:22 / /sys/fs/cgroup/cpu,cpuacct rw shared:9 - cgroup cgroup rw,cpu,cpuacct
26 24 0:23 / /sys/fs/cgroup/cpuset rw shared:10 - cgroup cgroup rw,cpuset
"""
PURE_V2 = "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"

V1 = CgroupLayout(1, (Hierarchy("/cg/cpu", frozenset({"cpu"})),
                      Hierarchy("/cg/cpuset", frozenset({"cpuset"}))))
V2 = CgroupLayout(2, (Hierarchy("/cg", frozenset({"cpu", "cpuset", "pids"})),))
V2_BARE = CgroupLayout(2, (Hierarchy("/cg", frozenset()),))


@pytest.mark.parametrize(("text", "controllers", "want"), [
    pytest.param(HYBRID, (), CgroupLayout(1, (
        Hierarchy("/sys/fs/cgroup/cpu", frozenset({"cpu"})),
        Hierarchy("/sys/fs/cgroup/cpuacct", frozenset({"cpuacct"})),
        Hierarchy("/sys/fs/cgroup/cpuset", frozenset({"cpuset"})),
        Hierarchy("/sys/fs/cgroup/pids", frozenset({"pids"})))), id="hybrid-v1"),
    pytest.param(COMOUNTED, (), CgroupLayout(1, (
        Hierarchy("/sys/fs/cgroup/cpu,cpuacct", frozenset({"cpu", "cpuacct"})),
        Hierarchy("/sys/fs/cgroup/cpuset", frozenset({"cpuset"})))), id="co-mounted"),
    pytest.param(PURE_V2, ("cpuset", "cpu", "io", "memory", "pids"), CgroupLayout(2, (
        Hierarchy("/sys/fs/cgroup", frozenset({"cpu", "cpuset", "pids"})),)), id="v2"),
    pytest.param("", (), None, id="none"),
])
def test_layout(text: str, controllers: tuple[str, ...], want: CgroupLayout | None) -> None:
    v1, v2 = parse_mountinfo(text)
    assert plan_layout(v1, v2, controllers) == want


def test_mountinfo_unescapes_mount_points() -> None:
    v1, _ = parse_mountinfo(r"1 2 0:3 / /a\040b rw - cgroup cgroup rw,cpu" "\n")
    assert v1["cpu"] == "/a b"


@pytest.mark.parametrize(("value", "want"), [
    pytest.param(None, "/pykata/sb1", id="none"),
    pytest.param("", "/pykata/sb1", id="empty"),
    pytest.param("/k8s.io/sb1", "/k8s.io/sb1", id="cri"),
    pytest.param("/default/t1", "/default/t1", id="ctr"),
    pytest.param("//a//b/", "/a/b", id="slashes"),
    pytest.param("a/b", "/a/b", id="relative"),
    pytest.param("system.slice:cri-containerd:abc", "/system.slice/cri-containerd-abc.scope",
                 id="systemd"),
    pytest.param("kubepods-burstable-pod12.slice:cri-containerd:abc",
                 "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12.slice/"
                 "cri-containerd-abc.scope", id="systemd-nested"),
    pytest.param(":cri-containerd:abc", "/system.slice/cri-containerd-abc.scope",
                 id="systemd-default-slice"),
    pytest.param("-.slice::abc", "/abc.scope", id="systemd-root-no-prefix"),
    pytest.param("machine.slice:x:pod.slice", "/machine.slice/pod.slice", id="systemd-slice"),
])
def test_sandbox_cgroup_path(value: str | None, want: str) -> None:
    assert sandbox_cgroup_path(value, "sb1") == want


@pytest.mark.parametrize(("value", "why"), [
    pytest.param("/a/../b", "'..'", id="dotdot"),
    pytest.param("../b", "'..'", id="relative-dotdot"),
    pytest.param("/a/./b", "'.'", id="dot"),
    pytest.param("/", "root cgroup", id="root"),
    pytest.param("/a\nb", "newline", id="newline"),
    pytest.param("/" + "x" * 300, "longer than 255", id="long"),
    pytest.param("a:b", "slice:prefix:name", id="two-parts"),
    pytest.param("a:b:c:d", "slice:prefix:name", id="four-parts"),
    pytest.param("system:p:n", "NAME.slice", id="not-a-slice"),
    pytest.param("a--b.slice:p:n", "misplaced '-'", id="double-dash"),
    pytest.param("system.slice:p:", "must not be empty", id="empty-name"),
    pytest.param("system.slice:p:a/b", "'/'", id="slash-in-name"),
])
def test_bad_cgroups_paths(value: str, why: str) -> None:
    with pytest.raises(CgroupError, match="cgroupsPath") as info:
        sandbox_cgroup_path(value, "sb1")
    assert why in str(info.value) and repr(value) in str(info.value)


def test_spec_cgroups_path() -> None:
    assert spec_cgroups_path({"linux": {"cgroupsPath": "/a/b"}}, "c.json") == "/a/b"
    assert spec_cgroups_path({"linux": {}}, "c.json") is None
    assert spec_cgroups_path({}, "c.json") is None
    with pytest.raises(CgroupError, match=r"c.json: linux.cgroupsPath 7"):
        spec_cgroups_path({"linux": {"cgroupsPath": 7}}, "c.json")


@pytest.mark.parametrize(("layout", "only", "want"), [
    pytest.param(V1, False, ("/k/sb1", "/pykata_overhead/sb1", "/k/sb1"), id="v1"),
    pytest.param(V1, True, ("/k/sb1", None, "/k/sb1"), id="v1-only"),
    pytest.param(V2, False, ("/k/sb1", "/pykata_overhead/sb1", "/k/sb1/vcpus"), id="v2"),
    pytest.param(V2, True, ("/k/sb1", None, "/k/sb1"), id="v2-only"),
])
def test_plan_paths(layout: CgroupLayout, only: bool,
                    want: tuple[str, str | None, str]) -> None:
    plan = plan_cgroups(layout, "/k/sb1", "sb1", only)
    assert (plan.sandbox, plan.overhead, plan.vcpus) == want


def test_overlap_with_overhead_refused() -> None:
    with pytest.raises(CgroupError, match="overlaps the overhead cgroup /pykata_overhead/sb1"):
        plan_cgroups(V1, "/pykata_overhead", "sb1", False)
    plan_cgroups(V1, "/pykata_overhead", "sb1", True)  # no overhead cgroup: no overlap


def test_v1_create_order() -> None:
    plan = plan_cgroups(V1, "/k/sb1", "sb1", False)
    steps = plan_create(plan, 10, [20, 30], CpuSet.parse("0-1"), None, 1.5)
    assert steps == [
        MakeDir("/cg/cpu", "/cg/cpu/k", own=False),
        MakeDir("/cg/cpu", "/cg/cpu/k/sb1"),
        MakeDir("/cg/cpu", "/cg/cpu/pykata_overhead", own=False),
        MakeDir("/cg/cpu", "/cg/cpu/pykata_overhead/sb1"),
        # A v1 cpuset cgroup takes no task before its cpus and mems are set.
        MakeDir("/cg/cpuset", "/cg/cpuset/k", copy_cpuset=True, own=False),
        MakeDir("/cg/cpuset", "/cg/cpuset/k/sb1", copy_cpuset=True),
        MakeDir("/cg/cpuset", "/cg/cpuset/pykata_overhead", copy_cpuset=True, own=False),
        MakeDir("/cg/cpuset", "/cg/cpuset/pykata_overhead/sb1", copy_cpuset=True),
        Move("/cg/cpu/pykata_overhead/sb1", "cgroup.procs", (10, 20, 30)),
        Move("/cg/cpuset/pykata_overhead/sb1", "cgroup.procs", (10, 20, 30)),
        Write("/cg/cpu/k/sb1", "cpu.cfs_period_us", "100000"),
        Write("/cg/cpu/k/sb1", "cpu.cfs_quota_us", "150000"),
        Write("/cg/cpuset/k/sb1", "cpuset.cpus", "0-1"),
        Write("/cg/cpuset/k/sb1", "cpuset.mems", None),   # the parent's
    ]


def test_v1_sandbox_only_moves_all_into_the_sandbox_cgroup() -> None:
    plan = plan_cgroups(V1, None, "sb1", True)
    steps = plan_create(plan, 10, [20])
    assert [s for s in steps if isinstance(s, Move)] == [
        Move("/cg/cpu/pykata/sb1", "cgroup.procs", (10, 20)),
        Move("/cg/cpuset/pykata/sb1", "cgroup.procs", (10, 20))]
    assert not any("overhead" in s.dir for s in steps)


def test_v2_create_order() -> None:
    plan = plan_cgroups(V2, "/k/sb1", "sb1", False)
    steps = plan_create(plan, 10, [20, 30], None, CpuSet.parse("0"), 0.5)
    ctrls = ("cpu", "cpuset", "pids")
    assert steps == [
        Enable("/cg", ctrls), MakeDir("/cg", "/cg/k", own=False),
        Enable("/cg/k", ctrls), MakeDir("/cg", "/cg/k/sb1"),
        MakeDir("/cg", "/cg/k/sb1/vcpus", threaded=True),
        Write("/cg/k/sb1/vcpus", "cgroup.type", "threaded"),
        Enable("/cg/k/sb1", ctrls),
        MakeDir("/cg", "/cg/pykata_overhead", own=False),
        MakeDir("/cg", "/cg/pykata_overhead/sb1"),
        # QEMU whole into the threaded domain; virtiofsd and the shim into the overhead.
        Move("/cg/k/sb1", "cgroup.procs", (10,)),
        Move("/cg/pykata_overhead/sb1", "cgroup.procs", (20, 30)),
        Write("/cg/k/sb1/vcpus", "cpuset.cpus", ""),
        Write("/cg/k/sb1/vcpus", "cpuset.mems", "0"),
        Write("/cg/k/sb1/vcpus", "cpu.max", "50000 100000"),
    ]


def test_v2_sandbox_only_without_controllers() -> None:
    plan = plan_cgroups(V2_BARE, None, "sb1", True)
    assert plan_create(plan, 10, [20]) == [
        MakeDir("/cg", "/cg/pykata", own=False), MakeDir("/cg", "/cg/pykata/sb1"),
        Move("/cg/pykata/sb1", "cgroup.procs", (10, 20))]


@pytest.mark.parametrize(("layout", "want"), [
    pytest.param(V1, [Move("/cg/cpu/k/sb1", "tasks", (5, 7)),
                      Move("/cg/cpuset/k/sb1", "tasks", (5, 7))], id="v1"),
    pytest.param(V2, [Move("/cg/k/sb1/vcpus", "cgroup.threads", (5, 7))], id="v2"),
])
def test_place_vcpus(layout: CgroupLayout, want: list[Move]) -> None:
    assert plan_place_vcpus(plan_cgroups(layout, "/k/sb1", "sb1", False), [7, 5, 7]) == want


@pytest.mark.parametrize(("cpus", "vcpus", "want"), [
    pytest.param(None, 0.0, ["", "", "max 100000"], id="no-limits"),
    pytest.param(CpuSet(), 2.0, ["", "", "200000 100000"], id="empty-cpuset"),
    pytest.param(CpuSet.parse("1,3"), 0.001, ["1,3", "", "1000 100000"], id="min-quota"),
])
def test_v2_update(cpus: CpuSet | None, vcpus: float, want: list[str]) -> None:
    steps = plan_update(plan_cgroups(V2, None, "sb1", False), cpus, None, vcpus)
    assert [s.value for s in steps if isinstance(s, Write)] == want


def test_v1_update_without_limits_copies_the_parent() -> None:
    steps = plan_update(plan_cgroups(V1, None, "sb1", False), None, None, 0)
    assert [(s.file, s.value) for s in steps if isinstance(s, Write)] == [
        ("cpu.cfs_period_us", "100000"), ("cpu.cfs_quota_us", "-1"),
        ("cpuset.cpus", None), ("cpuset.mems", None)]


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_bad_cpu_limit(bad: float) -> None:
    with pytest.raises(CgroupError, match="CPU limit"):
        cpu_quota(bad)


def test_proc_cgroup() -> None:
    v1, v2 = parse_mountinfo(HYBRID)
    layout = plan_layout(v1, v2)
    assert layout is not None
    text = "9:name=systemd:/\n4:memory:/x\n3:cpuset:/a\n1:cpu:/b\n0::/\n"
    assert parse_proc_cgroup(text, layout) == {"/sys/fs/cgroup/cpuset": "/a",
                                               "/sys/fs/cgroup/cpu": "/b"}
    assert parse_proc_cgroup("0::/user.slice\n", V2) == {"/cg": "/user.slice"}
