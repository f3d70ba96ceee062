"""The shim's view of tasks (containers) and their processes: ids, states, exit records.

Holds no I/O. A process's life is one table, `TRANSITIONS`: CREATED -> RUNNING -> STOPPED
(PAUSED in between, for a container's init); an exit stops it from any state, and a start,
pause or resume that arrives after the exit changes nothing. The exit is recorded once,
with its time; Wait waits for it. Errors are RpcErrors carrying containerd's codes, so the
handler table passes them through.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from pykata.domain.errors import ALREADY_EXISTS, FAILED_PRECONDITION, NOT_FOUND, RpcError
from pykata.domain.limits import Limits
from pykata.protocol.pb import shim_pb2 as pb

CREATED, RUNNING, STOPPED, PAUSED = pb.CREATED, pb.RUNNING, pb.STOPPED, pb.PAUSED
_NAMES = {CREATED: "created", RUNNING: "running", STOPPED: "stopped", PAUSED: "paused"}
START, PAUSE, RESUME, EXIT = "start", "pause", "resume", "exit"
TRANSITIONS: dict[tuple[pb.Status, str], pb.Status] = {
    (CREATED, START): RUNNING,
    (RUNNING, PAUSE): PAUSED,
    (PAUSED, RESUME): RUNNING,
    (CREATED, EXIT): STOPPED,
    (RUNNING, EXIT): STOPPED,
    (PAUSED, EXIT): STOPPED,
}


@dataclass(frozen=True)
class Stdio:
    stdin: str
    stdout: str
    stderr: str
    terminal: bool


@dataclass
class Proc:
    task_id: str
    exec_id: str                 # "" for the container's init
    stdio: Stdio
    spec_json: bytes = b""       # an exec's process, until it starts
    status: pb.Status = CREATED
    exit_status: int = 0
    exited_at_ns: int = 0        # wall clock, as containerd's timestamps take it
    oom_killed: bool = False     # the guest's OOM killer struck the container
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    # Held while Start is under way: an exit seen meanwhile waits, so that containerd
    # hears /tasks/start before /tasks/exit (a process may exit before Start's reply).
    starting: asyncio.Lock = field(default_factory=asyncio.Lock)
    workers: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"exec {self.exec_id!r} of task {self.task_id!r}" if self.exec_id else \
            f"task {self.task_id!r}"

    def record_exit(self, status: int) -> bool:
        """Records the first exit only; says whether this call did."""
        if self.exited.is_set():
            return False
        self.advance("exit", EXIT)
        self.exit_status, self.exited_at_ns = status, time.time_ns()
        self.exited.set()
        return True

    def advance(self, what: str, event: str) -> None:
        """Moves by `TRANSITIONS`. A stopped process stays stopped (its exit came first);
        any other move the table lacks is an error naming the state and what was needed."""
        new = TRANSITIONS.get((self.status, event))
        if new is not None:
            self.status = new
        elif self.status is not STOPPED:
            self.require(what, *(s for (s, e) in TRANSITIONS if e == event))

    def require(self, what: str, *states: pb.Status) -> None:
        if self.status not in states:
            need = " or ".join(_NAMES[s] for s in states)
            raise RpcError(what, FAILED_PRECONDITION,
                           f"{self.name} is {_NAMES[self.status]}; {what} needs {need}")


@dataclass
class Task:
    id: str
    bundle: str
    init: Proc
    rootfs_mounts: list[str] = field(default_factory=list)
    resources: dict[str, Any] | None = None    # the last Update's OCI LinuxResources
    limits: Limits = field(default_factory=Limits)  # what the task adds to its VM's size
    execs: dict[str, Proc] = field(default_factory=dict)

    def process(self, method: str, exec_id: str) -> Proc:
        if not exec_id:
            return self.init
        proc = self.execs.get(exec_id)
        if proc is None:
            raise RpcError(method, NOT_FOUND, f"no exec {exec_id!r} in task {self.id!r}")
        return proc

    def add_exec(self, method: str, proc: Proc) -> None:
        if proc.exec_id in self.execs:
            raise RpcError(method, ALREADY_EXISTS,
                           f"exec {proc.exec_id!r} already exists in task {self.id!r}")
        self.execs[proc.exec_id] = proc


class Tasks:
    def __init__(self) -> None:
        self._tasks: dict[str, Task] = {}

    def get(self, method: str, task_id: str) -> Task:
        task = self._tasks.get(task_id)
        if task is None:
            raise RpcError(method, NOT_FOUND, f"no task {task_id!r}")
        return task

    def reserve(self, method: str, task_id: str) -> None:
        if task_id in self._tasks:
            raise RpcError(method, ALREADY_EXISTS, f"task {task_id!r} already exists")

    def add(self, task: Task) -> None:
        self._tasks[task.id] = task

    def remove(self, task_id: str) -> None:
        self._tasks.pop(task_id, None)

    def all(self) -> list[Task]:
        return list(self._tasks.values())

    def __len__(self) -> int:
        return len(self._tasks)
