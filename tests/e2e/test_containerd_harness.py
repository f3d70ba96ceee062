"""The containerd harness, proved with runc: a private containerd, the busybox image, `ctr`.

The pykata shim tests use the same fixtures with `--runtime io.containerd.pykata.v2`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from containerd_support import (
    IMAGE_REF,
    Containerd,
    build_busybox_image,
    leftovers,
    missing_reason,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def busybox_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    tar = tmp_path_factory.mktemp("busybox-image") / "busybox.tar"
    assert build_busybox_image(tar) == IMAGE_REF
    return tar


@pytest.fixture(scope="module")
def containerd(busybox_tar: Path) -> Iterator[Containerd]:
    ctrd = Containerd().start()
    try:
        ctrd.import_image(busybox_tar)
    except BaseException:
        ctrd.stop()
        raise
    yield ctrd
    left = ctrd.stop()
    assert not left, f"containerd tests left things behind: {left}"
    assert not leftovers(ctrd.base)


def wait_for_status(ctrd: Containerd, task_id: str, status: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while (tasks := {t.id: t.status for t in ctrd.tasks()}).get(task_id) != status:
        assert time.monotonic() < deadline, f"task {task_id} never {status}: {tasks}"
        time.sleep(0.05)


def test_image_is_deterministic(busybox_tar: Path, tmp_path: Path) -> None:
    build_busybox_image(tmp_path / "again.tar")
    assert (tmp_path / "again.tar").read_bytes() == busybox_tar.read_bytes()


def test_import_registers_exactly_the_name(containerd: Containerd) -> None:
    assert containerd.ctr("images", "ls", "-q").stdout.decode().split() == [IMAGE_REF]


def test_run_prints_output(containerd: Containerd) -> None:
    r = containerd.ctr("run", "--rm", IMAGE_REF, "t1", "echo", "hi")
    assert r.stdout == b"hi\n"
    assert containerd.tasks() == []


def test_image_has_users_and_applets(containerd: Containerd) -> None:
    r = containerd.ctr("run", "--rm", IMAGE_REF, "t-users",
                       "sh", "-c", "id -un; readlink /bin/ls; echo $PATH; test -d /tmp")
    assert r.stdout.decode().split() == [
        "root", "busybox", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]


def test_exit_code_propagates(containerd: Containerd) -> None:
    r = containerd.ctr("run", "--rm", IMAGE_REF, "t2", "sh", "-c", "exit 3", check=False)
    assert r.returncode == 3, r.stderr.decode()
    assert containerd.tasks() == []


def test_detached_exec_kill_delete(containerd: Containerd) -> None:
    containerd.ctr("run", "-d", IMAGE_REF, "t3",
                   "sh", "-c", "trap 'exit 143' TERM; sleep 1000 & wait")
    try:
        [task] = containerd.tasks()
        assert (task.id, task.status) == ("t3", "RUNNING") and task.pid > 0
        r = containerd.ctr("task", "exec", "--exec-id", "e1", "t3",
                           "sh", "-c", "echo from exec; exit 5", check=False)
        assert (r.returncode, r.stdout) == (5, b"from exec\n"), r.stderr.decode()
        containerd.ctr("task", "kill", "t3")
        wait_for_status(containerd, "t3", "STOPPED")
        containerd.ctr("task", "delete", "t3")
    finally:
        containerd.ctr("task", "delete", "--force", "t3", check=False)
        containerd.ctr("container", "delete", "t3", check=False)
    assert containerd.tasks() == []
    assert containerd.ctr("container", "ls", "-q").stdout == b""


def test_stop_leaves_nothing(busybox_tar: Path) -> None:
    ctrd = Containerd().start()
    try:
        ctrd.import_image(busybox_tar)
        ctrd.ctr("run", "--rm", IMAGE_REF, "t5", "true")
    finally:
        left = ctrd.stop()
    assert left == []
    assert leftovers(ctrd.base) == []
    assert not ctrd.base.exists()


def test_stop_reports_and_removes_a_running_task(busybox_tar: Path) -> None:
    ctrd = Containerd().start()
    try:
        ctrd.import_image(busybox_tar)
        ctrd.ctr("run", "-d", IMAGE_REF, "t6", "sleep", "1000")
        [task] = ctrd.tasks()
        assert any("containerd-shim-runc-v2" in item for item in ctrd.leftovers())
    finally:
        left = ctrd.stop()
    assert left == [f"task t6 pid {task.pid} RUNNING"]
    assert leftovers(ctrd.base) == []
    assert not Path(f"/proc/{task.pid}").exists()
