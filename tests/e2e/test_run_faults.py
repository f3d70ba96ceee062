"""`pykata run` when things go wrong: signals to pykata, pykata killed, a guest that never
answers, a full state directory. After each, nothing of the sandbox is left on the host
(at the latest after `pykata cleanup`, for a pykata that was SIGKILLed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import Pykata, leftovers, qemu_argvs, sandbox_dirs

pytestmark = pytest.mark.e2e


def _start(pykata: Pykata, *cmd: str, config: Path | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYKATA_CONF_FILE": str(config or pykata.config)}
    return subprocess.Popen([sys.executable, "-m", "pykata.cli.main", "run", "--", *cmd],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)


def _wait_ready(proc: subprocess.Popen[bytes]) -> None:
    """Until the container printed its first line (it runs, with its handlers set)."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line == b"ready\n", (line, proc.stderr.read() if proc.stderr else b"")


def _processes_of(state_dir: Path) -> list[int]:
    found = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes()
            except OSError:
                continue
            if str(state_dir).encode() in cmd and b"pytest" not in cmd:
                found.append(int(p.name))
    return found


def test_sigterm_reaches_the_container(pykata: Pykata) -> None:
    proc = _start(pykata, "sh", "-c", 'trap "echo got TERM; exit 3" TERM; echo ready; '
                  "while :; do sleep 0.1; done")
    _wait_ready(proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, out) == (3, b"got TERM\n"), err.decode()
    assert leftovers(pykata.state_dir) == []


def test_a_second_signal_kills_the_vm(pykata: Pykata) -> None:
    # PID 1 of its namespace ignores SIGTERM without a handler: only the VM's end stops it.
    proc = _start(pykata, "sh", "-c", "echo ready; exec sleep 1000")
    _wait_ready(proc)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGKILL
    assert time.monotonic() - started < 8  # not the 10 s grace
    assert leftovers(pykata.state_dir) == []


def test_a_signal_during_boot_stops_the_run(pykata: Pykata) -> None:
    proc = _start(pykata, "true")
    deadline = time.monotonic() + 60
    # QEMU is up (the sandbox's, or the template's being made), the guest not yet serving.
    while not qemu_argvs(pykata.state_dir, template=True):
        assert proc.poll() is None and time.monotonic() < deadline, "no QEMU came up"
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert leftovers(pykata.state_dir) == []


def test_sigkill_leaves_no_vm_and_cleanup_removes_the_rest(pykata: Pykata) -> None:
    survivor = _start(pykata, "sh", "-c", "echo ready; exec sleep 1000")
    try:
        _wait_ready(survivor)
        before = sandbox_dirs(pykata.state_dir)
        victim = _start(pykata, "sh", "-c", "echo ready; exec sleep 1000")
        _wait_ready(victim)
        (sandbox,) = sandbox_dirs(pykata.state_dir) - before
        assert len(_processes_of(sandbox)) >= 2  # QEMU and virtiofsd
        victim.kill()
        victim.wait(timeout=30)
        deadline = time.monotonic() + 10
        while _processes_of(sandbox):  # they die with it (PR_SET_PDEATHSIG)
            assert time.monotonic() < deadline, "the killed run's VM outlived it"
            time.sleep(0.1)
        assert sandbox.exists(), "nothing to clean up: the test proves nothing"
        planned = pykata.run("cleanup", "--dry-run")
        assert planned.returncode == 0, planned.stderr.decode()
        assert planned.stdout.decode().splitlines()[0] == \
            f"would: sandbox {sandbox.name}: its owner is gone", planned.stdout
        done = pykata.run("cleanup")
        assert b"its owner is gone" in done.stdout and b"unmounted" in done.stdout, done.stdout
        assert not sandbox.exists()
        assert survivor.poll() is None and len(sandbox_dirs(pykata.state_dir)) == 1, \
            "cleanup touched a live sandbox"
    finally:
        survivor.send_signal(signal.SIGINT)
        survivor.send_signal(signal.SIGINT)
        survivor.communicate(timeout=60)
    assert leftovers(pykata.state_dir) == []


def _config(pykata: Pykata, tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "configuration.toml"
    path.write_text(pykata.config.read_text() + extra)
    return path


def test_a_guest_that_never_answers_times_out(pykata: Pykata, tmp_path: Path) -> None:
    # The guest's init is `cat` on the console: the kernel boots, no agent ever answers.
    config = _config(pykata, tmp_path, '[hypervisor.qemu]\nkernel_params = "rdinit=/bin/cat"\n'
                     "[agent.pykata]\ndial_timeout = 3\n")
    started = time.monotonic()
    r = pykata.run("run", "--", "true", config=config)
    assert r.returncode == 125
    assert "agent did not come up: no answer in 3 s" in r.stderr.decode(), r.stderr.decode()
    assert time.monotonic() - started < 30
    assert leftovers(pykata.state_dir) == []


@pytest.fixture
def full_state_dir(pykata: Pykata) -> Iterator[Path]:
    """A state dir on a tmpfs with almost no room left."""
    path = pykata.state_dir.parent / f"{pykata.state_dir.name}-full"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(path)], check=True)
    try:
        with open(path / "filler", "wb") as f:
            f.write(b"\0" * (256 * 1024 - 8192))
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)
        path.rmdir()


def test_a_full_state_dir_fails_clearly(pykata: Pykata, tmp_path: Path,
                                        full_state_dir: Path) -> None:
    text = pykata.config.read_text().replace(str(pykata.state_dir), str(full_state_dir))
    config = tmp_path / "configuration.toml"
    config.write_text(text)
    r = pykata.run("run", "--", "true", config=config)
    assert r.returncode == 125
    assert "No space left on device" in r.stderr.decode(), r.stderr.decode()
    # The test's own tmpfs and filler, nothing else.
    assert sorted(leftovers(full_state_dir)) == [f"file {full_state_dir}/filler",
                                                 f"mount {full_state_dir}"]
