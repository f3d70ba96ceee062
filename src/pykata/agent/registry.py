"""Containers and their processes: who exists, in which state, and what each state allows.

One enum, one transition table, one table of what each operation requires; violations
raise StateError naming the container, its state and the requirement. Ids are checked
here too (they become path components). Holds no I/O: the service layer does the work
and records the outcome here.
"""

from __future__ import annotations

import asyncio
import enum
from typing import NamedTuple

from pykata.agent.stdio import ProcessStdio
from pykata.domain import ids
from pykata.domain.errors import BadValue, DuplicateId, StateError, UnknownId, shown


class State(enum.Enum):
    CREATING = "creating"    # runtime create in progress; the id is reserved
    CREATED = "created"
    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"        # frozen (`crun pause`); set before the runtime call returns
    STOPPED = "stopped"      # the init process exited
    REMOVING = "removing"


class Event(enum.Enum):
    CREATED = "created"
    START = "start"
    STARTED = "started"
    START_FAILED = "start failed"
    EXITED = "exited"
    REMOVE = "remove"
    PAUSE = "pause"
    PAUSE_FAILED = "pause failed"
    RESUME = "resume"
    RESUME_FAILED = "resume failed"


S, E = State, Event
TRANSITIONS: dict[tuple[State, Event], State] = {
    (S.CREATING, E.CREATED): S.CREATED,
    (S.CREATED, E.START): S.STARTING,
    (S.STARTING, E.STARTED): S.RUNNING,
    (S.STARTING, E.START_FAILED): S.CREATED,
    (S.CREATED, E.EXITED): S.STOPPED,
    (S.STARTING, E.EXITED): S.STOPPED,
    (S.RUNNING, E.EXITED): S.STOPPED,
    (S.PAUSED, E.EXITED): S.STOPPED,
    (S.REMOVING, E.EXITED): S.REMOVING,
    (S.CREATED, E.REMOVE): S.REMOVING,
    (S.RUNNING, E.REMOVE): S.REMOVING,
    (S.PAUSED, E.REMOVE): S.REMOVING,
    (S.STOPPED, E.REMOVE): S.REMOVING,
    # The state moves when the call begins and moves back if the runtime fails: a
    # second pause (or resume) meanwhile is refused, not run twice.
    (S.RUNNING, E.PAUSE): S.PAUSED,
    (S.PAUSED, E.PAUSE_FAILED): S.RUNNING,
    (S.PAUSED, E.RESUME): S.RUNNING,
    (S.RUNNING, E.RESUME_FAILED): S.PAUSED,
}

# While the container's processes (and its cgroup) exist.
_LIVE = frozenset({S.CREATED, S.STARTING, S.RUNNING, S.PAUSED})
# Operations that do not change the state, and the states they need.
REQUIRES: dict[str, frozenset[State]] = {
    "exec": frozenset({S.RUNNING}),
    "signal": _LIVE,
    "list processes": _LIVE,
    "stats": _LIVE,
    "update": _LIVE,
}


def _names(states: frozenset[State] | set[State]) -> str:
    return " or ".join(sorted(s.value for s in states))


class Process(NamedTuple):
    exec_id: str                  # "" for the container's init
    pid: int
    stdio: ProcessStdio
    exit: asyncio.Future[int]     # exit code, 128 + signal when killed


class Container:
    # A plain class: a dataclass would compile its methods at import (slow under TCG).
    def __init__(self, cid: str, bundle: str, state: State = State.CREATING) -> None:
        self.id, self.bundle, self.state = cid, bundle, state
        self.init: Process | None = None
        self.execs: dict[str, Process | None] = {}  # None: exec starting
        self.mounts: list[str] = []
        self.state_before_remove: State | None = None
        self.cgroup: str | None = None  # its cgroup v2 directory, once looked up

    def advance(self, event: Event) -> None:
        new = TRANSITIONS.get((self.state, event))
        if new is None:
            allowed = {s for (s, e) in TRANSITIONS if e is event}
            raise StateError(f"container {self.id!r}: {event.value}", self.state.value,
                             _names(allowed))
        if event is Event.REMOVE:
            self.state_before_remove = self.state
        self.state = new

    def abort_remove(self) -> None:
        """Back to where removal began (STOPPED if the init exited meanwhile)."""
        assert self.state is State.REMOVING and self.state_before_remove is not None
        exited = self.init is not None and self.init.exit.done()
        self.state = State.STOPPED if exited else self.state_before_remove

    def require(self, operation: str) -> None:
        # The init's exit moves the state in a loop callback that runs soon after its future
        # is set; a call in between (one that saw the exit, through WaitProcess) must already
        # see the container stopped.
        if self.init is not None and self.init.exit.done() and self.state in _LIVE:
            self.state = TRANSITIONS[(self.state, Event.EXITED)]
        if self.state not in REQUIRES[operation]:
            raise StateError(f"container {self.id!r}: {operation}", self.state.value,
                             _names(REQUIRES[operation]))

    def process(self, exec_id: str) -> Process:
        """The init process for exec_id "", else the named exec."""
        if not exec_id:
            if self.init is None:
                raise StateError(f"container {self.id!r}: init process", self.state.value,
                                 "created")
            return self.init
        proc = self.execs.get(exec_id)
        if proc is None:
            if exec_id in self.execs:
                raise StateError(f"exec {exec_id!r} in container {self.id!r}", "starting",
                                 "started")
            raise UnknownId("exec", exec_id, f"container {self.id!r}")
        return proc


def check_id(key: str, value: str) -> str:
    """The host's rule (pykata.domain.ids), reported as BadValue (INVALID_ARGUMENT)."""
    why = ids.id_problem(value)
    if why is not None:
        raise BadValue(key, shown(value), why)
    return value


class Registry:
    def __init__(self) -> None:
        self._containers: dict[str, Container] = {}

    def reserve(self, container_id: str, bundle: str) -> Container:
        check_id("container_id", container_id)
        if container_id in self._containers:
            raise DuplicateId("container", container_id)
        self._containers[container_id] = c = Container(container_id, bundle)
        return c

    def get(self, container_id: str) -> Container:
        c = self._containers.get(container_id)
        if c is None:
            raise UnknownId("container", container_id)
        return c

    def drop(self, container_id: str) -> None:
        self._containers.pop(container_id, None)

    def all(self) -> list[Container]:
        return list(self._containers.values())
