"""pykata.host.cgroups against a fake cgroupfs in a tmp dir: write order, rules, removal.

The fake behaves as the kernel does where it matters here: mkdir makes a cgroup's files,
an id written to cgroup.procs/tasks/cgroup.threads moves it out of every other cgroup of
that hierarchy, a v1 cpuset cgroup refuses tasks until its cpus and mems are set (ENOSPC),
a cpuset outside the parent's is refused (EINVAL), an exited id is ESRCH, and rmdir fails
while a cgroup has tasks (EBUSY) or children (ENOTEMPTY).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from pykata.domain.cpuset import CpuSet
from pykata.domain.errors import HostError
from pykata.host import cgroups as cg
from pykata.plan.cgroups import CgroupLayout, Hierarchy, plan_cgroups

MEMBERS = ("cgroup.procs", "tasks", "cgroup.threads")


class FakeCgroupfs:
    def __init__(self, tmp: Path, layout: CgroupLayout) -> None:
        self.layout = layout
        self.log: list[tuple[str, str]] = []
        self.dead: set[int] = set()
        self.where: dict[tuple[str, int], str] = {}  # (mount, id) -> cgroup dir
        for h in layout.hierarchies:
            os.makedirs(h.mount)
            self._files(h.mount, root=True)
        self.tmp = tmp

    def _mount(self, path: str) -> str:
        return next(h.mount for h in self.layout.hierarchies
                    if path == h.mount or path.startswith(h.mount + "/"))

    def _files(self, path: str, root: bool = False) -> None:
        files = {"cpuset.cpus": "0-3\n" if root else "", "cpuset.mems": "0\n" if root else "",
                 "cgroup.subtree_control": "", "cgroup.type": "domain\n",
                 "cpu.cfs_quota_us": "-1\n", "cpu.cfs_period_us": "100000\n", "cpu.max": "",
                 **dict.fromkeys(MEMBERS, "")}
        for name, text in files.items():
            Path(path, name).write_text(text)

    def mkdir(self, path: str, mode: int = 0o777) -> None:
        os.mkdir(path, mode)
        self._files(path)

    def rmdir(self, path: str) -> None:
        if Path(path, "cgroup.procs").read_text().split():
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), path)
        if any(p.is_dir() for p in Path(path).iterdir()):
            raise OSError(errno.ENOTEMPTY, os.strerror(errno.ENOTEMPTY), path)
        for f in Path(path).iterdir():
            f.unlink()
        os.rmdir(path)

    def _refuse(self, code: int, path: str) -> None:
        raise OSError(code, os.strerror(code), path)

    def write(self, path: str, value: str) -> None:
        self.log.append((path.removeprefix(str(self.tmp)), value))
        d, name = os.path.split(path)
        if name in MEMBERS:
            self._join(d, int(value), path)
        elif name == "cpuset.cpus" and value.strip() and d != self._mount(d):
            parent = CpuSet.parse(Path(os.path.dirname(d), name).read_text())
            if not CpuSet.parse(value) <= parent:
                self._refuse(errno.EINVAL, path)
            Path(path).write_text(value)
        else:
            Path(path).write_text(value)

    def _join(self, d: str, ident: int, path: str) -> None:
        mount = self._mount(d)
        if ident in self.dead:
            self._refuse(errno.ESRCH, path)
        if os.path.exists(os.path.join(d, "cpuset.cpus")) and mount.endswith("cpuset") and not (
                Path(d, "cpuset.cpus").read_text().strip()
                and Path(d, "cpuset.mems").read_text().strip()):
            self._refuse(errno.ENOSPC, path)
        old = self.where.get((mount, ident))
        if old is not None:
            self._set_members(old, [i for i in self.members(old) if i != ident])
        self.where[(mount, ident)] = d
        self._set_members(d, [*self.members(d), ident])

    def members(self, d: str) -> list[int]:
        return [int(x) for x in Path(d, "cgroup.procs").read_text().split()]

    def _set_members(self, d: str, ids: list[int]) -> None:
        for name in MEMBERS:
            Path(d, name).write_text("".join(f"{i}\n" for i in ids))


def _v1(tmp: Path) -> CgroupLayout:
    return CgroupLayout(1, (Hierarchy(str(tmp / "cpu"), frozenset({"cpu"})),
                            Hierarchy(str(tmp / "cpuset"), frozenset({"cpuset"}))))


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeCgroupfs:
    fs = FakeCgroupfs(tmp_path, _v1(tmp_path))
    monkeypatch.setattr(cg, "_mkdir", fs.mkdir)
    monkeypatch.setattr(cg, "_rmdir_path", fs.rmdir)
    monkeypatch.setattr(cg, "_write_raw", fs.write)
    return fs


def test_v1_create_place_remove(fake: FakeCgroupfs, tmp_path: Path) -> None:
    record = str(tmp_path / "record")
    sb = cg.SandboxCgroups(plan_cgroups(fake.layout, "/k/sb1", "sb1", False), record)
    sb.create(10, [20, 30], CpuSet.parse("1-2"), None, 1.5)
    # Each new cpuset cgroup got its parent's cpus and mems before any task joined it.
    writes = [(p, v) for p, v in fake.log if "cpuset" in p]
    assert writes[:4] == [("/cpuset/k/cpuset.cpus", "0-3"), ("/cpuset/k/cpuset.mems", "0"),
                          ("/cpuset/k/sb1/cpuset.cpus", "0-3"),
                          ("/cpuset/k/sb1/cpuset.mems", "0")]
    assert Path(tmp_path, "cpuset/k/sb1/cpuset.cpus").read_text() == "1-2"
    assert Path(tmp_path, "cpu/k/sb1/cpu.cfs_quota_us").read_text() == "150000"
    for mount in ("cpu", "cpuset"):
        assert fake.members(f"{tmp_path}/{mount}/pykata_overhead/sb1") == [10, 20, 30]
    fake.dead.add(6)
    sb.place_vcpus([5, 6, 7])
    sb.place_vcpus([5, 7])  # idempotent
    for mount in ("cpu", "cpuset"):
        assert fake.members(f"{tmp_path}/{mount}/k/sb1") == [5, 7]
    assert len(cg.recorded(record)) == 8
    assert sb.remove() == []
    for mount in ("cpu", "cpuset"):
        assert not [p for p in (tmp_path / mount).iterdir() if p.is_dir()]
        assert sorted(fake.members(str(tmp_path / mount))) == [5, 7, 10, 20, 30]
    assert not os.path.exists(record)
    assert sb.remove() == []  # again: nothing to do


def test_update_and_errors_name_the_file_and_value(fake: FakeCgroupfs) -> None:
    sb = cg.SandboxCgroups(plan_cgroups(fake.layout, None, "sb1", False))
    sb.create(10, [20])
    sb.update(CpuSet.parse("3"), CpuSet.parse("0"), 0.25)
    sb.place_vcpus([5])
    assert Path(fake.tmp, "cpuset/pykata/sb1/cpuset.cpus").read_text() == "3"
    assert Path(fake.tmp, "cpu/pykata/sb1/cpu.cfs_quota_us").read_text() == "25000"
    with pytest.raises(HostError, match=r"cannot write '7' to .*/cpuset/pykata/sb1/"
                       r"cpuset.cpus: Invalid argument"):
        sb.update(CpuSet.parse("7"), None, 0)
    assert sb.remove() == []


def test_shared_parent_in_use_stays(fake: FakeCgroupfs, tmp_path: Path) -> None:
    sb = cg.SandboxCgroups(plan_cgroups(fake.layout, "/k/sb1", "sb1", True))
    sb.create(10, [])
    (tmp_path / "cpu" / "k" / "other").mkdir()  # another sandbox's, made meanwhile
    assert sb.remove() == []
    assert (tmp_path / "cpu" / "k" / "other").is_dir()
    assert not (tmp_path / "cpu" / "k" / "sb1").exists()


def test_remove_recorded_after_the_owner_died(fake: FakeCgroupfs, tmp_path: Path) -> None:
    record = str(tmp_path / "record")
    sb = cg.SandboxCgroups(plan_cgroups(fake.layout, None, "sb1", False), record)
    sb.create(10, [20])
    removed = cg.remove_recorded(record)
    assert sorted(removed) == sorted(f"{tmp_path}/{m}/{p}/sb1" for m in ("cpu", "cpuset")
                                     for p in ("pykata", "pykata_overhead"))
    assert cg.remove_recorded(str(tmp_path / "none")) == []


def test_v2_threaded_subtree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layout = CgroupLayout(2, (Hierarchy(str(tmp_path / "v2"), frozenset({"cpu", "pids"})),))
    fake = FakeCgroupfs(tmp_path, layout)
    monkeypatch.setattr(cg, "_mkdir", fake.mkdir)
    monkeypatch.setattr(cg, "_rmdir_path", fake.rmdir)
    monkeypatch.setattr(cg, "_write_raw", fake.write)
    (tmp_path / "v2" / "cgroup.subtree_control").write_text("cpu memory\n")
    sb = cg.SandboxCgroups(plan_cgroups(layout, "/k/sb1", "sb1", False))
    sb.create(10, [20], vcpus=2)
    sb.place_vcpus([11])
    assert fake.log[:7] == [
        ("/v2/cgroup.subtree_control", "+pids"),  # the root had cpu already
        ("/v2/k/cgroup.subtree_control", "+cpu +pids"),
        ("/v2/k/sb1/vcpus/cgroup.type", "threaded"),
        ("/v2/k/sb1/cgroup.subtree_control", "+cpu +pids"),
        ("/v2/k/sb1/cgroup.procs", "10"),
        ("/v2/pykata_overhead/sb1/cgroup.procs", "20"),
        ("/v2/k/sb1/vcpus/cpu.max", "200000 100000")]
    assert fake.log.index(("/v2/k/sb1/vcpus/cgroup.type", "threaded")) < fake.log.index(
        ("/v2/k/sb1/cgroup.subtree_control", "+cpu +pids"))
    assert fake.members(f"{tmp_path}/v2/k/sb1/vcpus") == [11]
    assert fake.members(f"{tmp_path}/v2/pykata_overhead/sb1") == [20]
    assert sb.remove() == []
    # The vCPU thread went up to its threaded domain first, then everything to the root.
    assert sorted(fake.members(f"{tmp_path}/v2")) == [10, 11, 20]
    assert not (tmp_path / "v2" / "k").exists()


def test_clear_sandbox_removes_the_recorded_cgroups(tmp_path: Path) -> None:
    from pykata.sandbox.leftovers import clear_sandbox

    state = tmp_path / "state"
    state.mkdir()
    mount = tmp_path / "cpu"
    (mount / "pykata" / "sb1").mkdir(parents=True)
    for created in (cg.Created(str(mount), str(mount / "pykata"), own=False),
                    cg.Created(str(mount), str(mount / "pykata" / "sb1"))):
        cg._record(str(state / cg.RECORD_FILE), created)
    done = clear_sandbox(str(state))
    assert f"removed cgroup {mount}/pykata/sb1" in done
    assert not (mount / "pykata").exists() and not state.exists()


def test_pykatas_own_parents_go_with_the_last_sandbox(fake: FakeCgroupfs,
                                                      tmp_path: Path) -> None:
    """Whoever made /pykata and /pykata_overhead, the last sandbox to leave removes them."""
    first = cg.SandboxCgroups(plan_cgroups(fake.layout, None, "sb1", False))
    first.create(10, [])
    second = cg.SandboxCgroups(plan_cgroups(fake.layout, None, "sb2", False))
    second.create(11, [])
    assert first.remove() == []          # made the parents, but sb2 still uses them
    assert (tmp_path / "cpu" / "pykata").is_dir()
    assert second.remove() == []
    for mount in ("cpu", "cpuset"):
        assert not [p for p in (tmp_path / mount).iterdir() if p.is_dir()]


def test_a_parent_removed_meanwhile_is_made_again(fake: FakeCgroupfs, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    made = fake.mkdir
    raced: list[str] = []

    def racing_mkdir(path: str, mode: int = 0o777) -> None:
        if path.endswith("/pykata/sb1") and not raced:  # another sandbox's teardown
            raced.append(path)
            fake.rmdir(os.path.dirname(path))
        made(path, mode)

    monkeypatch.setattr(cg, "_mkdir", racing_mkdir)
    sb = cg.SandboxCgroups(plan_cgroups(fake.layout, None, "sb1", False))
    sb.create(10, [])
    sb.place_vcpus([5])
    assert raced and fake.members(f"{tmp_path}/cpu/pykata/sb1") == [5]
    assert sb.remove() == []
