"""The sandbox lifecycle as one enum and one table of allowed transitions."""

from __future__ import annotations

import enum

from pykata.domain.errors import StateError


class SandboxState(enum.Enum):
    CREATED = "created"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


_ALLOWED: dict[SandboxState, frozenset[SandboxState]] = {
    SandboxState.CREATED: frozenset({SandboxState.STARTING, SandboxState.STOPPING}),
    SandboxState.STARTING: frozenset({SandboxState.RUNNING, SandboxState.STOPPING}),
    SandboxState.RUNNING: frozenset({SandboxState.STOPPING}),
    SandboxState.STOPPING: frozenset({SandboxState.STOPPED}),
    SandboxState.STOPPED: frozenset(),
}


def check_transition(what: str, current: SandboxState, target: SandboxState) -> None:
    if target not in _ALLOWED[current]:
        allowed = [s.value for s, nexts in _ALLOWED.items() if target in nexts]
        raise StateError(what, current.value, " or ".join(allowed) or "nothing")


def require(what: str, current: SandboxState, *states: SandboxState) -> None:
    if current not in states:
        raise StateError(what, current.value, " or ".join(s.value for s in states))
