from __future__ import annotations

import pytest

from pykata.domain.errors import StateError
from pykata.sandbox.state import SandboxState as S
from pykata.sandbox.state import check_transition, require


@pytest.mark.parametrize(
    ("current", "target", "ok"),
    [
        (S.CREATED, S.STARTING, True),
        (S.STARTING, S.RUNNING, True),
        (S.STARTING, S.STOPPING, True),
        (S.RUNNING, S.STOPPING, True),
        (S.STOPPING, S.STOPPED, True),
        (S.CREATED, S.RUNNING, False),
        (S.STOPPED, S.STARTING, False),
        (S.RUNNING, S.STARTING, False),
    ],
)
def test_transitions(current: S, target: S, ok: bool) -> None:
    if ok:
        check_transition("x", current, target)
    else:
        with pytest.raises(StateError):
            check_transition("x", current, target)


def test_error_names_state_and_requirement() -> None:
    with pytest.raises(StateError, match="create container: state is stopped, requires running"):
        require("create container", S.STOPPED, S.RUNNING)
