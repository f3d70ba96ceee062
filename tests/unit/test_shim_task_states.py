"""A task's process moves through one table; a late move after its exit changes nothing."""

from __future__ import annotations

import asyncio

import pytest

from pykata.domain.errors import FAILED_PRECONDITION, RpcError
from pykata.shim.tasks import (
    CREATED,
    EXIT,
    PAUSE,
    PAUSED,
    RESUME,
    RUNNING,
    START,
    STOPPED,
    Proc,
    Stdio,
)


def _proc(status: int) -> Proc:
    proc = Proc("t1", "", Stdio("", "", "", False))
    proc.status = status  # type: ignore[assignment]
    return proc


@pytest.mark.parametrize(("status", "event", "after"), [
    (CREATED, START, RUNNING), (RUNNING, PAUSE, PAUSED), (PAUSED, RESUME, RUNNING),
    (CREATED, EXIT, STOPPED), (RUNNING, EXIT, STOPPED), (PAUSED, EXIT, STOPPED),
    (STOPPED, START, STOPPED), (STOPPED, PAUSE, STOPPED), (STOPPED, RESUME, STOPPED),
])
def test_moves(status: int, event: str, after: int) -> None:
    proc = _proc(status)
    proc.advance("verb", event)
    assert proc.status == after


@pytest.mark.parametrize(("status", "event", "message"), [
    (RUNNING, START, "task 't1' is running; Start needs created"),
    (CREATED, PAUSE, "task 't1' is created; Pause needs running"),
    (RUNNING, RESUME, "task 't1' is running; Resume needs paused"),
])
def test_a_move_the_table_lacks_names_the_state(status: int, event: str,
                                                message: str) -> None:
    proc = _proc(status)
    verb = event.capitalize()
    with pytest.raises(RpcError) as info:
        proc.advance(verb, event)
    assert info.value.code == FAILED_PRECONDITION and info.value.message == message


def test_the_first_exit_is_recorded_once() -> None:
    async def main() -> None:
        proc = _proc(RUNNING)
        assert proc.record_exit(3) and not proc.record_exit(9)
        assert (proc.status, proc.exit_status) == (STOPPED, 3)

    asyncio.run(main())
