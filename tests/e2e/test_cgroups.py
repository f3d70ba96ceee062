"""Host cgroups on this machine's real cgroupfs: a throwaway threaded process, then a VM.

This host is v1 (hybrid, FACTS.md §1); its empty v2 mount still shows that threads are
placed through a threaded subtree. Each test removes what it made (names carry the pid).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import Pykata

from pykata.domain.cpuset import CpuSet
from pykata.domain.limits import Limits
from pykata.host.cgroups import SandboxCgroups, read_layout
from pykata.host.config_files import load_config
from pykata.host.facts import read_host_facts
from pykata.plan.cgroups import CgroupLayout, Hierarchy, plan_cgroups
from pykata.sandbox.sandbox import Sandbox
from pykata.vmm.threads import vcpu_threads

pytestmark = pytest.mark.e2e

THREADS = ("import threading, time\n"
           "stop = threading.Event()\n"
           "for _ in range(3): threading.Thread(target=stop.wait, daemon=True).start()\n"
           "print('ready', flush=True)\n"
           "time.sleep(120)\n")


def _cgroups_of(pid: int, tid: int) -> dict[str, str]:
    """hierarchy ("cpu", "cpuset", ..., "" for v2) -> cgroup path of one thread."""
    text = Path(f"/proc/{pid}/task/{tid}/cgroup").read_text()
    out = {}
    for line in text.splitlines():
        _, names, path = line.split(":", 2)
        for name in names.split(",") if names else [""]:
            out[name] = path
    return out


@pytest.fixture
def threaded_child() -> Iterator[subprocess.Popen[bytes]]:
    if os.geteuid() != 0:
        pytest.skip("host cgroups need root")
    child = subprocess.Popen([sys.executable, "-c", THREADS], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        yield child
    finally:
        child.kill()
        child.wait()


def _tids(pid: int) -> list[int]:
    return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))


def test_v1_threads_split_then_removed(threaded_child: subprocess.Popen[bytes]) -> None:
    layout = read_layout()
    if layout is None or layout.version != 1:
        pytest.skip("this test is for a cgroup v1 host")
    sid = f"cgtest-{os.getpid()}"
    sb = SandboxCgroups(plan_cgroups(layout, f"/pykata-test-{os.getpid()}/{sid}", sid, False))
    pid = threaded_child.pid
    main, *others = _tids(pid)
    try:
        sb.create(pid, [], CpuSet.parse("0"), None, 0.5)
        sb.place_vcpus([*others[:2], 999_999_999 % 4_194_304 + 1])  # the last never existed
        assert sb.plan is not None
        for tid in _tids(pid):
            where = _cgroups_of(pid, tid)
            want = sb.plan.sandbox if tid in others[:2] else sb.plan.overhead
            assert {c: where[c] for c in ("cpu", "cpuacct", "cpuset", "pids")} == dict.fromkeys(
                ("cpu", "cpuacct", "cpuset", "pids"), want), (tid, where)
        (cpuset_dir,) = [d for d in sb.dir(sb.plan.sandbox) if d.endswith(sb.plan.sandbox)
                         and "/cpuset/" in d]
        assert Path(cpuset_dir, "cpuset.cpus").read_text().strip() == "0"
        (cpu_dir,) = [d for d in sb.dir(sb.plan.sandbox) if "/cpu/" in d]
        assert Path(cpu_dir, "cpu.cfs_quota_us").read_text().strip() == "50000"
    finally:
        left = sb.remove()
    assert left == []
    for d in sb.dir(sb.plan.sandbox) + sb.dir(sb.plan.overhead or "/"):
        assert not os.path.exists(d), d
    assert not any(os.path.exists(d) for d in sb.dir(f"/pykata-test-{os.getpid()}"))
    assert all(_cgroups_of(pid, t)["cpu"] == "/" for t in _tids(pid))


def test_v2_threaded_subtree(threaded_child: subprocess.Popen[bytes]) -> None:
    """On the hybrid layout's empty v2 mount: no controllers, but the kernel's threaded mode
    rules (cgroup.type, cgroup.threads, the threaded domain) are the real ones."""
    unified = "/sys/fs/cgroup/unified"
    if not os.path.exists(f"{unified}/cgroup.threads"):
        pytest.skip(f"no cgroup2 hierarchy at {unified}")
    layout = CgroupLayout(2, (Hierarchy(unified, frozenset()),))
    sid = f"cgtest-{os.getpid()}"
    plan = plan_cgroups(layout, f"/pykata-test-{os.getpid()}/{sid}", sid, False)
    sb = SandboxCgroups(plan)
    pid = threaded_child.pid
    main, *others = _tids(pid)
    try:
        sb.create(pid, [])
        sb.place_vcpus(others[:2])
        for tid in _tids(pid):
            want = plan.vcpus if tid in others[:2] else plan.sandbox
            assert _cgroups_of(pid, tid)[""] == want, tid
        assert Path(unified + plan.vcpus, "cgroup.type").read_text().strip() == "threaded"
    finally:
        left = sb.remove()
    assert left == [] and not os.path.exists(unified + plan.sandbox)
    assert {_cgroups_of(pid, t)[""] for t in _tids(pid)} == {"/"}


# ---- a real VM --------------------------------------------------------------------------


@pytest.mark.parametrize("only", [False, True], ids=["split", "sandbox_cgroup_only"])
def test_vm_vcpu_threads_in_the_sandbox_cgroup(pykata: Pykata, tmp_path: Path,
                                               only: bool) -> None:
    layout = read_layout()
    if layout is None or layout.version != 1:
        pytest.skip("this test is for a cgroup v1 host")
    config = tmp_path / "vm.toml"
    config.write_text(pykata.config.read_text().replace(
        "[runtime]\n", f"[runtime]\nsandbox_cgroup_only = {str(only).lower()}\n")
        + "[hypervisor.qemu]\ndefault_vcpus = 2\n")
    cgroups_path = f"/pykata-test-{os.getpid()}/vm"
    sandbox = Sandbox.from_parts(load_config(str(config)), read_host_facts(), resizable=False,
                      cgroups_path=cgroups_path)
    seen: dict[int, dict[str, str]] = {}
    limits: dict[str, str] = {}

    async def look() -> tuple[dict[int, int], int, int]:
        await sandbox.start()
        try:
            assert sandbox.vm is not None
            qemu, fsd = sandbox.vm.qemu.pid, sandbox.vm.virtiofsd.pid
            threads = await vcpu_threads(sandbox.vm.qmp, 2)
            for pid in (qemu, fsd):
                for tid in _tids(pid):
                    seen[tid] = _cgroups_of(pid, tid)
            seen[0] = _cgroups_of(os.getpid(), os.getpid())
            # A container comes (static VM: no hotplug): the pod's cpuset and quota follow.
            await sandbox.resize([Limits(vcpus=0.5, cpuset=CpuSet.parse("1"))])
            for d in _cg(sandbox).dir(cgroups_path):
                files = {f.name: f.read_text().strip() for f in Path(d).iterdir()
                         if f.name in ("cpuset.cpus", "cpu.cfs_quota_us")}
                limits.update(files)
            return threads, qemu, fsd
        finally:
            await sandbox.stop()

    threads, qemu, fsd = asyncio.run(look())
    assert limits == {"cpuset.cpus": "1", "cpu.cfs_quota_us": "50000"}
    overhead = f"/pykata_overhead/{sandbox.id}"
    assert len(threads) == 2
    for tid, where in seen.items():
        want = cgroups_path if only or tid in threads.values() else overhead
        for controller in ("cpu", "cpuset"):
            assert where[controller] == want, (tid, controller, where)
    assert set(threads.values()) < set(seen)
    assert sandbox.cgroups is not None
    for d in _cg(sandbox).dir(cgroups_path) + _cg(sandbox).dir(overhead):
        assert not os.path.exists(d), d
    assert not any(os.path.exists(d) for d in
                   _cg(sandbox).dir(f"/pykata-test-{os.getpid()}"))
    assert _cgroups_of(os.getpid(), os.getpid())["cpu"] == "/"  # pytest went back


def _cg(sandbox: Sandbox) -> SandboxCgroups:
    assert isinstance(sandbox.cgroups, SandboxCgroups)
    return sandbox.cgroups
