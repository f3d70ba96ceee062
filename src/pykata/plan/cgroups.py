"""Host cgroups for a sandbox: which cgroups it gets, and what is written to them, in order.

Pure: the cgroup layout (v1 controller mounts, or the v2 unified root and its controllers)
arrives as a value that pykata.host.cgroups reads; nothing here opens a file. The steps
come out in the order the kernel needs them (a v1 cpuset cgroup refuses tasks until its
cpus and mems are set; a v2 controller must be enabled in every ancestor before a
descendant can be limited). Why the layout is what it is: docs/decisions.md "Host cgroups".

- Sandbox cgroup: the OCI `cgroupsPath` (cgroupfs `/a/b`, or systemd `slice:prefix:name`),
  `/pykata/<id>` without one. It carries the pod's cpuset and CPU quota and holds the vCPU
  threads (on v2 in a threaded child, `<sandbox>/vcpus`: the kernel keeps all of a
  process's threads in one threaded domain, so QEMU itself stays in the sandbox cgroup).
- Overhead cgroup `/pykata_overhead/<id>`: QEMU's other threads (v1), virtiofsd, the shim.
- `sandbox_cgroup_only`: everything in the sandbox cgroup, no overhead cgroup.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pykata.domain.cpuset import CpuSet
from pykata.domain.errors import CgroupError

V1_CONTROLLERS = ("cpu", "cpuacct", "cpuset", "pids")
# The threaded controllers: the only ones a v2 threaded subtree can use.
V2_CONTROLLERS = ("cpu", "cpuset", "pids")
DEFAULT_PARENT = "/pykata"
OVERHEAD_PARENT = "/pykata_overhead"
VCPU_CHILD = "vcpus"
CPU_PERIOD = 100_000      # us, the kernel's default CFS period
MIN_QUOTA = 1_000         # us, the smallest CFS quota the kernel takes
NAME_MAX = 255
_SLICE = re.compile(r"[A-Za-z0-9_.-]+\.slice\Z")


# ---- the layout -------------------------------------------------------------------------


@dataclass(frozen=True)
class Hierarchy:
    """One mounted cgroup hierarchy and the controllers of it that pykata uses."""

    mount: str
    controllers: frozenset[str]


@dataclass(frozen=True)
class CgroupLayout:
    version: int                        # 1 (also hybrid hosts) or 2
    hierarchies: tuple[Hierarchy, ...]  # v1: one per mount; v2: the unified root


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (\\040)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> tuple[dict[str, str], str | None]:
    """(v1 controller -> mount point, the first cgroup2 mount point or None)."""
    v1: dict[str, str] = {}
    v2: str | None = None
    for line in text.splitlines():
        head, sep, tail = line.partition(" - ")
        fields, after = head.split(), tail.split()
        if not sep or len(fields) < 5 or len(after) < 3:
            continue
        point = _unescape(fields[4])
        if after[0] == "cgroup2" and v2 is None:
            v2 = point
        elif after[0] == "cgroup":
            for option in after[2].split(","):
                v1.setdefault(option, point)
    return v1, v2


def plan_layout(v1_mounts: Mapping[str, str], v2_mount: str | None,
                v2_controllers: Iterable[str] = ()) -> CgroupLayout | None:
    """The hierarchies to use: v1 where any controller pykata uses is mounted as v1 (the
    hybrid layout's unified mount then holds no controller), else v2; None without either."""
    mounts: dict[str, set[str]] = {}
    for controller in V1_CONTROLLERS:
        if controller in v1_mounts:
            mounts.setdefault(v1_mounts[controller], set()).add(controller)
    if mounts:
        return CgroupLayout(1, tuple(Hierarchy(m, frozenset(c))
                                     for m, c in sorted(mounts.items())))
    if v2_mount is None:
        return None
    available = frozenset(v2_controllers) & frozenset(V2_CONTROLLERS)
    return CgroupLayout(2, (Hierarchy(v2_mount, available),))


def parse_proc_cgroup(text: str, layout: CgroupLayout) -> dict[str, str]:
    """A process's cgroup per hierarchy mount, from /proc/<pid>/cgroup."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        _, sep, rest = line.partition(":")
        names, sep2, path = rest.partition(":")
        if not (sep and sep2):
            continue
        controllers = set(names.split(",")) if names else set()
        for h in layout.hierarchies:
            if (layout.version == 2 and not names) or h.controllers & controllers:
                found[h.mount] = path
    return found


# ---- paths ------------------------------------------------------------------------------


def spec_cgroups_path(doc: Mapping[str, Any], source: str) -> str | None:
    """The OCI spec's `linux.cgroupsPath`; None where it is absent or empty."""
    linux = doc.get("linux")
    value = linux.get("cgroupsPath") if isinstance(linux, Mapping) else None
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise CgroupError(f"{source}: linux.cgroupsPath", value, "must be a string")
    return value


def _check_components(parts: Sequence[str], value: str) -> None:
    for part in parts:
        if part in (".", ".."):
            raise CgroupError("cgroupsPath", value, f"must not contain {part!r}")
        if len(part.encode()) > NAME_MAX:
            raise CgroupError("cgroupsPath", value,
                              f"component {part[:20]!r}... is longer than {NAME_MAX} bytes")


def _cgroupfs_path(value: str) -> str:
    parts = [p for p in value.split("/") if p]
    _check_components(parts, value)
    if not parts:
        raise CgroupError("cgroupsPath", value, "names the root cgroup")
    return "/" + "/".join(parts)


def expand_slice(name: str, value: str) -> str:
    """systemd's slice nesting: `a-b.slice` is `/a.slice/a-b.slice`; `-.slice` is the root."""
    if not _SLICE.match(name):
        raise CgroupError("cgroupsPath", value, f"slice {name!r} must be a NAME.slice")
    base = name.removesuffix(".slice")
    if base == "-":
        return ""
    if base.startswith("-") or base.endswith("-") or "--" in base:
        raise CgroupError("cgroupsPath", value, f"slice {name!r}: misplaced '-'")
    path, prefix = "", ""
    for part in base.split("-"):
        prefix = f"{prefix}-{part}" if prefix else part
        path += f"/{prefix}.slice"
    return path


def _systemd_path(value: str) -> str:
    """`slice:prefix:name` (runc's and containerd's systemd form) as its cgroupfs path:
    `system.slice:cri-containerd:ID` is `/system.slice/cri-containerd-ID.scope`."""
    parts = value.split(":")
    if len(parts) != 3:
        raise CgroupError("cgroupsPath", value, "a systemd path is 'slice:prefix:name'")
    slice_name, prefix, name = parts
    if not name or "/" in name or "/" in prefix:
        raise CgroupError("cgroupsPath", value, "the name must not be empty, and neither "
                          "the prefix nor the name may contain '/'")
    unit = (name if name.endswith(".slice") else
            f"{prefix}-{name}.scope" if prefix else f"{name}.scope")
    path = f"{expand_slice(slice_name or 'system.slice', value)}/{unit}"
    _check_components(path.split("/")[1:], value)
    return path


def sandbox_cgroup_path(cgroups_path: str | None, sandbox_id: str) -> str:
    """The sandbox's cgroup, as a path below every hierarchy's root."""
    if not cgroups_path:
        return f"{DEFAULT_PARENT}/{sandbox_id}"
    if "\0" in cgroups_path or "\n" in cgroups_path:
        raise CgroupError("cgroupsPath", cgroups_path, "must not contain NUL or newline")
    if ":" in cgroups_path:
        return _systemd_path(cgroups_path)
    return _cgroupfs_path(cgroups_path)


# ---- the plan ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CgroupPlan:
    layout: CgroupLayout
    sandbox: str          # the sandbox cgroup's path below each hierarchy's root
    overhead: str | None  # None with sandbox_cgroup_only
    vcpus: str            # where the vCPU threads go: the sandbox cgroup, or (v2) its child

    @property
    def version(self) -> int:
        return self.layout.version


def plan_cgroups(layout: CgroupLayout, cgroups_path: str | None, sandbox_id: str,
                 sandbox_cgroup_only: bool) -> CgroupPlan:
    sandbox = sandbox_cgroup_path(cgroups_path, sandbox_id)
    overhead = None if sandbox_cgroup_only else f"{OVERHEAD_PARENT}/{sandbox_id}"
    if overhead is not None and (_within(overhead, sandbox) or _within(sandbox, overhead)):
        raise CgroupError("cgroupsPath", cgroups_path,
                          f"overlaps the overhead cgroup {overhead}")
    vcpus = f"{sandbox}/{VCPU_CHILD}" if layout.version == 2 and overhead else sandbox
    return CgroupPlan(layout, sandbox, overhead, vcpus)


def _within(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def cgroup_dir(mount: str, path: str) -> str:
    """`path` (a cgroup path, "/" the root) in the hierarchy mounted at `mount`."""
    return mount.rstrip("/") + path.rstrip("/")


# ---- steps ------------------------------------------------------------------------------


@dataclass(frozen=True)
class MakeDir:
    """Create `dir` if it is missing (the applier records what it created). A new v1
    cpuset cgroup gets its parent's cpus and mems: it refuses tasks until they are set."""

    mount: str
    dir: str
    copy_cpuset: bool = False
    threaded: bool = False  # v2: becomes `cgroup.type` threaded (removal moves threads up)
    own: bool = True        # this sandbox's alone; False for a parent others may share


@dataclass(frozen=True)
class Enable:
    """v2: make sure `controllers` are in `dir`'s cgroup.subtree_control."""

    dir: str
    controllers: tuple[str, ...]


@dataclass(frozen=True)
class Write:
    """Write `value` to `dir/file`; None: the parent's value of the same file (v1 cpuset)."""

    dir: str
    file: str
    value: str | None


@dataclass(frozen=True)
class Move:
    """Write each id to `dir/file`: `cgroup.procs` moves a process with all its threads,
    `tasks` (v1) or `cgroup.threads` (v2) one thread. An id that has exited is skipped."""

    dir: str
    file: str
    ids: tuple[int, ...]


Step = MakeDir | Enable | Write | Move


def _prefixes(path: str) -> list[str]:
    parts = path.strip("/").split("/")
    return ["/" + "/".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _make_path(mount: str, path: str, copy_cpuset: bool) -> list[Step]:
    prefixes = _prefixes(path)
    return [MakeDir(mount, cgroup_dir(mount, p), copy_cpuset, own=p == path)
            for p in prefixes]


def plan_create(plan: CgroupPlan, qemu_pid: int, other_pids: Sequence[int],
                cpuset: CpuSet | None = None, mems: CpuSet | None = None,
                vcpus: float = 0.0) -> list[Step]:
    """Make the cgroups, write the pod's limits, move the processes in (QEMU whole: the
    vCPU threads are placed afterwards by `plan_place_vcpus`)."""
    if plan.version == 1:
        return _create_v1(plan, qemu_pid, other_pids) + plan_update(plan, cpuset, mems, vcpus)
    return _create_v2(plan, qemu_pid, other_pids) + plan_update(plan, cpuset, mems, vcpus)


def _create_v1(plan: CgroupPlan, qemu_pid: int, other_pids: Sequence[int]) -> list[Step]:
    steps: list[Step] = []
    home = plan.overhead or plan.sandbox
    for h in plan.layout.hierarchies:
        copy = "cpuset" in h.controllers
        steps += _make_path(h.mount, plan.sandbox, copy)
        if plan.overhead:
            steps += _make_path(h.mount, plan.overhead, copy)
    for h in plan.layout.hierarchies:
        steps.append(Move(cgroup_dir(h.mount, home), "cgroup.procs",
                          (qemu_pid, *other_pids)))
    return steps


def _create_v2(plan: CgroupPlan, qemu_pid: int, other_pids: Sequence[int]) -> list[Step]:
    (h,) = plan.layout.hierarchies
    wanted = tuple(c for c in V2_CONTROLLERS if c in h.controllers)
    steps: list[Step] = []
    parents = ["/", *_prefixes(plan.sandbox)[:-1]]
    for parent, made in zip(parents, _make_path(h.mount, plan.sandbox, False), strict=True):
        if wanted:
            steps.append(Enable(cgroup_dir(h.mount, parent if parent != "/" else ""), wanted))
        steps.append(made)
    sandbox = cgroup_dir(h.mount, plan.sandbox)
    if plan.overhead:
        vcpus = cgroup_dir(h.mount, plan.vcpus)
        steps += [MakeDir(h.mount, vcpus, threaded=True),
                  Write(vcpus, "cgroup.type", "threaded")]
        if wanted:
            steps.append(Enable(sandbox, wanted))
        steps += _make_path(h.mount, plan.overhead, False)
        overhead = cgroup_dir(h.mount, plan.overhead)
        return [*steps, Move(sandbox, "cgroup.procs", (qemu_pid,)),
                Move(overhead, "cgroup.procs", tuple(other_pids))]
    return [*steps, Move(sandbox, "cgroup.procs", (qemu_pid, *other_pids))]


def cpu_quota(vcpus: float) -> int | None:
    """CFS quota (us per CPU_PERIOD) for `vcpus` CPUs; None for no limit (0)."""
    if not (math.isfinite(vcpus) and vcpus >= 0):
        raise CgroupError("CPU limit", vcpus, "must be a finite number of CPUs, 0 or more")
    if vcpus == 0:
        return None
    return max(MIN_QUOTA, math.ceil(vcpus * CPU_PERIOD))


def plan_update(plan: CgroupPlan, cpuset: CpuSet | None, mems: CpuSet | None,
                vcpus: float) -> list[Step]:
    """The pod's cpuset (union of its containers'; None or empty: the parent's, i.e. no
    restriction), memory nodes, and CPU quota (`vcpus` CPUs; 0: none) on the vCPU cgroup."""
    quota = cpu_quota(vcpus)
    cpus_text = str(cpuset) if cpuset else None
    mems_text = str(mems) if mems else None
    steps: list[Step] = []
    for h in plan.layout.hierarchies:
        target = cgroup_dir(h.mount, plan.vcpus)
        if plan.version == 1:
            if "cpuset" in h.controllers:
                steps += [Write(target, "cpuset.cpus", cpus_text),
                          Write(target, "cpuset.mems", mems_text)]
            if "cpu" in h.controllers:
                steps += [Write(target, "cpu.cfs_period_us", str(CPU_PERIOD)),
                          Write(target, "cpu.cfs_quota_us", str(quota or -1))]
            continue
        if "cpuset" in h.controllers:  # v2: empty means the parent's
            steps += [Write(target, "cpuset.cpus", cpus_text or ""),
                      Write(target, "cpuset.mems", mems_text or "")]
        if "cpu" in h.controllers:
            steps.append(Write(target, "cpu.max", f"{quota or 'max'} {CPU_PERIOD}"))
    return steps


def plan_place_vcpus(plan: CgroupPlan, tids: Iterable[int]) -> list[Step]:
    """Move vCPU threads into the vCPU cgroup of every hierarchy."""
    ids = tuple(sorted(set(tids)))
    file = "tasks" if plan.version == 1 else "cgroup.threads"
    return [Move(cgroup_dir(h.mount, plan.vcpus), file, ids) for h in plan.layout.hierarchies]
