"""Host cgroups for a sandbox: read the layout, apply pykata.plan.cgroups' steps, remove
what was made.

Effects only: what to create and write is decided by the plan. Every directory this creates
is recorded, in memory and (when given a file) in the sandbox's state dir, so removal, also
by a later process cleaning up after a dead shim, takes away exactly those, deepest first.
A write that fails names the file and the value; a thread or process that has exited by
the time it is moved is skipped.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

from pykata.domain.cpuset import CpuSet
from pykata.domain.errors import HostError
from pykata.plan.cgroups import (
    DEFAULT_PARENT,
    OVERHEAD_PARENT,
    V1_CONTROLLERS,
    CgroupLayout,
    CgroupPlan,
    Enable,
    MakeDir,
    Move,
    Step,
    Write,
    cgroup_dir,
    parse_mountinfo,
    parse_proc_cgroup,
    plan_create,
    plan_layout,
    plan_place_vcpus,
    plan_update,
)

log = logging.getLogger(__name__)

MOUNTINFO = "/proc/self/mountinfo"
RECORD_FILE = "cgroups"          # in the sandbox's state dir: one JSON object per line
RMDIR_TRIES = 50                 # a task that is exiting can keep a cgroup busy briefly
RMDIR_WAIT = 0.01


def read_layout(mountinfo: str = MOUNTINFO) -> CgroupLayout | None:
    with open(mountinfo) as f:
        v1, v2 = parse_mountinfo(f.read())
    controllers: list[str] = []
    if v2 is not None and not any(c in v1 for c in V1_CONTROLLERS):
        controllers = _read(os.path.join(v2, "cgroup.controllers")).split()
    return plan_layout(v1, v2, controllers)


@dataclass(frozen=True)
class Created:
    """A cgroup directory this sandbox made."""

    mount: str
    dir: str
    threaded: bool = False
    own: bool = True   # False: a parent made on the way, which other sandboxes may share


# The kernel's cgroupfs makes a cgroup's files on mkdir; the unit tests' fake tree does too
# (and stands in for `_write_raw`).
_mkdir = os.mkdir
_rmdir_path = os.rmdir


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _write_raw(path: str, value: str) -> None:
    """One write(2), as the cgroup files want it."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, (value or "\n").encode())  # an empty write would not reach the kernel
    finally:
        os.close(fd)


def write_value(path: str, value: str) -> None:
    try:
        _write_raw(path, value)
    except OSError as exc:
        raise HostError(f"cgroup: cannot write {value!r} to {path}: "
                        f"{exc.strerror or exc}") from exc


def _record(record: str | None, created: Created) -> None:
    if record is not None:
        with open(record, "a") as f:
            f.write(json.dumps(asdict(created)) + "\n")


def _make_dir(step: MakeDir, created: list[Created], record: str | None) -> None:
    try:
        _mkdir(step.dir, 0o755)
    except FileExistsError:
        return
    except OSError as exc:
        raise HostError(f"cgroup: cannot create {step.dir}: {exc.strerror or exc}") from exc
    made = Created(step.mount, step.dir, step.threaded, step.own)
    created.append(made)
    _record(record, made)
    if step.copy_cpuset:
        for name in ("cpuset.cpus", "cpuset.mems"):
            _write_step(Write(step.dir, name, None))


def _enable(step: Enable) -> None:
    path = os.path.join(step.dir, "cgroup.subtree_control")
    enabled = _read(path).split()
    missing = [c for c in step.controllers if c not in enabled]
    if missing:
        write_value(path, " ".join(f"+{c}" for c in missing))


def _write_step(step: Write) -> None:
    value = step.value
    if value is None:
        value = _read(os.path.join(os.path.dirname(step.dir), step.file)).strip()
    write_value(os.path.join(step.dir, step.file), value)


def _move(step: Move) -> None:
    path = os.path.join(step.dir, step.file)
    for ident in step.ids:
        try:
            write_value(path, str(ident))
        except HostError as exc:
            if isinstance(exc.__cause__, OSError) and exc.__cause__.errno == errno.ESRCH:
                continue  # it exited meanwhile
            raise


def apply_steps(steps: Iterable[Step], created: list[Created],
                record: str | None = None) -> None:
    for step in steps:
        if isinstance(step, MakeDir):
            _make_dir(step, created, record)
        elif isinstance(step, Enable):
            _enable(step)
        elif isinstance(step, Write):
            _write_step(step)
        else:
            _move(step)


# ---- removal ----------------------------------------------------------------------------


def _ids(path: str) -> list[int]:
    try:
        return [int(x) for x in _read(path).split()]
    except OSError:
        return []


def _evacuate(c: Created, origin: Mapping[str, str]) -> None:
    """Move whatever is still in `c` out: threads of a threaded cgroup to its parent (they
    cannot leave their threaded domain one by one), processes to where the caller came
    from, else to the hierarchy's root."""
    if c.threaded:
        _move_quietly(_ids(os.path.join(c.dir, "cgroup.threads")),
                      [os.path.join(os.path.dirname(c.dir), "cgroup.threads")])
        return
    targets = [os.path.join(c.mount, "cgroup.procs")]
    home = origin.get(c.mount)
    if home is not None:
        back = cgroup_dir(c.mount, home)
        if back != c.dir and not back.startswith(c.dir + "/") and os.path.isdir(back):
            targets.insert(0, os.path.join(back, "cgroup.procs"))
    _move_quietly(_ids(os.path.join(c.dir, "cgroup.procs")), targets)


def _move_quietly(ids: Sequence[int], targets: Sequence[str]) -> None:
    for ident in ids:
        for target in targets:
            try:
                write_value(target, str(ident))
                break
            except HostError as exc:
                log.debug("%s", exc)


def _rmdir(c: Created, origin: Mapping[str, str]) -> bool:
    """Whether `c` is gone. A shared parent still in use is left quietly."""
    last: OSError | None = None
    for _ in range(RMDIR_TRIES if c.own else 1):
        if c.own:
            _evacuate(c, origin)
        try:
            _rmdir_path(c.dir)
            return True
        except FileNotFoundError:
            return True
        except OSError as exc:
            if not c.own:
                return False
            last = exc
            time.sleep(RMDIR_WAIT)
    log.warning("cgroup %s left behind: %s", c.dir, last and (last.strerror or last))
    return False


def remove_cgroups(created: Sequence[Created], origin: Mapping[str, str] | None = None
                   ) -> list[str]:
    """Remove `created`, deepest first (the reverse of creation); never raises. Returns
    the directories of this sandbox's own that could not be removed."""
    left = []
    for c in reversed(created):
        if not _rmdir(c, origin or {}) and c.own:
            left.append(c.dir)
    return left


def recorded(record: str) -> list[Created]:
    try:
        with open(record) as f:
            return [Created(**json.loads(line)) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def remove_recorded(record: str) -> list[str]:
    """A dead sandbox's cgroups, from its record file: the ones now removed."""
    created = recorded(record)
    left = set(remove_cgroups(created))
    return [c.dir for c in reversed(created) if c.own and c.dir not in left]


# ---- one sandbox ------------------------------------------------------------------------


@dataclass
class SandboxCgroups:
    """A sandbox's host cgroups (no-ops where the host has no cgroup hierarchy)."""

    plan: CgroupPlan | None
    record: str | None = None
    created: list[Created] = field(default_factory=list)
    origin: dict[str, str] = field(default_factory=dict)  # the caller's cgroups before

    def create(self, qemu_pid: int, other_pids: Sequence[int], cpuset: CpuSet | None = None,
               mems: CpuSet | None = None, vcpus: float = 0.0) -> None:
        """Make the cgroups, write the limits, move QEMU (whole), virtiofsd and the shim
        (`other_pids`) in: the overhead cgroup, or the sandbox cgroup when it is the only
        one (on v2 QEMU always goes to the sandbox cgroup, the threaded domain of its
        vCPU threads). Place the vCPU threads afterwards."""
        if self.plan is None:
            return
        if not self.origin:  # a second VM (a failed clone's cold boot) keeps the first's
            with contextlib.suppress(OSError):
                self.origin = parse_proc_cgroup(_read("/proc/self/cgroup"), self.plan.layout)
        steps = plan_create(self.plan, qemu_pid, other_pids, cpuset, mems, vcpus)
        try:
            apply_steps(steps, self.created, self.record)
        except HostError as exc:
            if not isinstance(exc.__cause__, FileNotFoundError):
                raise
            # A sandbox tearing down removed an empty shared parent (`/pykata`) between our
            # mkdir of it and of our own cgroup: once more makes it again.
            apply_steps(steps, self.created, self.record)

    def place_vcpus(self, tids: Iterable[int]) -> None:
        """Move these vCPU threads into the sandbox (vCPU) cgroup. Idempotent; call again
        after a vCPU hotplug: a new vCPU thread starts in QEMU's own cgroup."""
        if self.plan is not None:
            apply_steps(plan_place_vcpus(self.plan, tids), self.created, self.record)

    def update(self, cpuset: CpuSet | None, mems: CpuSet | None, vcpus: float) -> None:
        """The pod's cpuset union (None: no restriction), memory nodes and CPU limit
        (`vcpus` CPUs, 0: none): call when containers come, change and go."""
        if self.plan is not None:
            apply_steps(plan_update(self.plan, cpuset, mems, vcpus), self.created,
                        self.record)

    def dir(self, path: str) -> list[str]:
        """`path` (e.g. `plan.vcpus`) in every hierarchy."""
        if self.plan is None:
            return []
        return [cgroup_dir(h.mount, path) for h in self.plan.layout.hierarchies]

    def remove(self) -> list[str]:
        """Remove what `create` made, then pykata's own parents (`/pykata`,
        `/pykata_overhead`) when no sandbox uses them any more, whoever made them;
        idempotent, never raises. Returns what is left of this sandbox's own."""
        left = remove_cgroups(self.created, self.origin)
        self.created.clear()
        for h in self.plan.layout.hierarchies if self.plan is not None else ():
            for parent in (DEFAULT_PARENT, OVERHEAD_PARENT):
                with contextlib.suppress(OSError):  # in use (EBUSY), or already gone
                    _rmdir_path(cgroup_dir(h.mount, parent))
        if self.record is not None and not left:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.record)
        return left
