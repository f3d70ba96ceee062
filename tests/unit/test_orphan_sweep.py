"""The orphan sweep: which sandboxes' owners are provably gone, and what a sweep removes."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from pykata.plan.template import LOCK
from pykata.sandbox.leftovers import (
    HALF_MADE_GRACE_S,
    OWNER_FILE,
    STALE_SOCKET_S,
    TEMPLATE_MARK,
    owner_gone,
    process_start_time,
    read_owner,
    record_owner,
    sweep,
)


@pytest.mark.parametrize(("owner", "start_now", "age", "gone"), [
    pytest.param((10, 500), 500, 0.0, False, id="owner-alive"),
    pytest.param((10, 500), None, 0.0, True, id="owner-dead"),
    pytest.param((10, 500), 900, 0.0, True, id="pid-recycled"),
    pytest.param(None, None, 1.0, False, id="half-made-young"),
    pytest.param(None, None, HALF_MADE_GRACE_S + 1, True, id="half-made-old"),
])
def test_owner_gone(owner: tuple[int, int] | None, start_now: int | None, age: float,
                    gone: bool) -> None:
    assert owner_gone(owner, start_now, age) is gone


def test_own_record_reads_back(tmp_path: Path) -> None:
    record_owner(str(tmp_path))
    assert read_owner(str(tmp_path)) == (os.getpid(), process_start_time(os.getpid()))
    assert process_start_time(2**22 + 1) is None


def _sandbox(root: Path, name: str, owner: str | None, age: float = 0.0) -> Path:
    d = root / name
    d.mkdir()
    (d / "console.log").write_text("x")
    if owner is not None:
        (d / OWNER_FILE).write_text(owner)
    if age:
        then = time.time() - age
        os.utime(d, (then, then))
    return d


def test_sweep_removes_only_orphans(tmp_path: Path) -> None:
    me = f"{os.getpid()} {process_start_time(os.getpid())}\n"
    live = _sandbox(tmp_path, "live", me)
    dead = _sandbox(tmp_path, "dead", f"{2**22 + 1} 1\n")
    recycled = _sandbox(tmp_path, "recycled", f"{os.getpid()} 1\n")
    young = _sandbox(tmp_path, "young", None)
    old = _sandbox(tmp_path, "old", None, age=HALF_MADE_GRACE_S + 5)
    template = _sandbox(tmp_path, "template", None, age=HALF_MADE_GRACE_S + 5)
    (template / TEMPLATE_MARK).write_text("")
    planned = sweep(str(tmp_path), dry_run=True)
    assert sorted(planned) == sorted(f"sandbox {n}: its owner is gone"
                                     for n in ("dead", "recycled", "old"))
    assert all(d.exists() for d in (live, dead, recycled, young, old))
    sweep(str(tmp_path))
    assert live.exists() and young.exists() and template.exists()
    assert not dead.exists() and not recycled.exists() and not old.exists()


def test_sweep_removes_dead_shims_sockets(tmp_path: Path) -> None:
    sockets = tmp_path / "s"
    sockets.mkdir()
    serving = socket.socket(socket.AF_UNIX)
    serving.bind(str(sockets / "live.sock"))
    serving.listen(1)
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(sockets / "dead.sock"))
    dead.close()  # bound, nobody listening: what a killed shim leaves
    fresh = socket.socket(socket.AF_UNIX)
    fresh.bind(str(sockets / "fresh.sock"))
    fresh.close()
    then = time.time() - STALE_SOCKET_S - 5
    for name in ("live.sock", "dead.sock"):
        os.utime(sockets / name, (then, then), follow_symlinks=False)
    try:
        assert sweep(str(tmp_path)) == [f"removed the socket of a dead shim {sockets}/dead.sock"]
        assert sorted(p.name for p in sockets.iterdir()) == ["fresh.sock", "live.sock"]
    finally:
        serving.close()


def test_sweep_of_a_missing_root_is_nothing(tmp_path: Path) -> None:
    assert sweep(str(tmp_path / "none")) == []


def test_the_template_mark_is_the_templates_lock() -> None:
    assert TEMPLATE_MARK == LOCK
