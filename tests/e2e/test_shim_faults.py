"""containerd-shim-pykata-v2 when things break, under a real containerd driven with `ctr`.

One fault per test, injected by pid (never by name): QEMU or virtiofsd SIGKILLed, the shim
SIGKILLed with containerd up or down, a guest kernel panic, a guest OOM, containerd
restarted under a running task, a frozen guest, a container over its memory limit
(/tasks/oom). Each checks the exit status containerd
learns (from `ctr events`, the shim's State), that `ctr task delete` and `ctr container
delete` work, and that nothing is left afterwards: no task or container, no process naming
the test's dirs (shim, QEMU, virtiofsd), no mount under them, no sandbox dir in pykata's
state dir, no shim socket, no host cgroup the sandbox made.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import containerd_support
import e2e_support
import pytest
from containerd_support import IMAGE_REF, Containerd, build_busybox_image
from test_shim import (
    PYKATA_SRC,
    SETTLE_TIMEOUT,
    SHIM,
    ShimEnv,
    alive,
    kill_and_unmount,
    missing_reason,
    processes,
    removed_after,
    wait_gone,
)

pytestmark = pytest.mark.e2e

PDEATHSIG_TIMEOUT = 5.0   # QEMU and virtiofsd die with the shim daemon (PR_SET_PDEATHSIG)
EXIT_TIMEOUT = 30.0       # a fault reaches containerd as a task exit
CGROUP_ROOT = Path("/sys/fs/cgroup")
OVERHEAD_PARENT = "pykata_overhead"


# --- the environment --------------------------------------------------------------------


@dataclass
class FaultEnv(ShimEnv):
    conf: Path = Path()
    sandbox_ids: set[str] = field(default_factory=set)  # what this module's tasks made

    def write_config(self, runtime_extra: str = "") -> None:
        self.conf.write_text(f'[runtime]\nstate_dir = "{self.state_dir}"\n{runtime_extra}'
                             f'[image]\ndir = "{e2e_support.IMAGE_DIR}"\n')

    def start_task(self, task_id: str, *args: str, flags: tuple[str, ...] = ()) -> None:
        """`ctr run -d FLAGS` a task of its own sandbox; it runs once this returns."""
        self.sandbox_ids.add(task_id)
        self.run("-d", *flags, IMAGE_REF, task_id, *args)

    def sandbox_dir(self, sandbox_id: str) -> Path:
        return self.state_dir / sandbox_id

    def sandbox_pids(self, sandbox_id: str) -> dict[str, list[int]]:
        """The host processes of a sandbox, found by their command lines."""
        marker = f"{self.sandbox_dir(sandbox_id)}/"
        found: dict[str, list[int]] = {"qemu": [], "virtiofsd": [], "shim": []}
        for pid, cmd in processes():
            if marker in cmd and "qemu-system" in cmd:
                found["qemu"].append(pid)
            elif marker in cmd and "virtiofsd" in cmd:
                found["virtiofsd"].append(pid)
        found["shim"] = self.shim_pids()
        return found

    def recorded_pids(self, sandbox_id: str) -> dict[str, int]:
        """What the sandbox wrote in its `pids` file: {"qemu": pid, "virtiofsd": pid}."""
        text = (self.sandbox_dir(sandbox_id) / "pids").read_text()
        return {name: int(pid) for name, pid in (line.split() for line in text.splitlines())}

    def cgroups(self) -> list[Path]:
        """Host cgroups of this module's sandboxes: /<namespace>/<id> and
        /pykata_overhead/<id>, in every hierarchy (v1) or the one tree (v2)."""
        ns = self.ctrd.namespace
        found = [*CGROUP_ROOT.glob(f"{ns}/*"), *CGROUP_ROOT.glob(f"*/{ns}/*")]
        for sid in self.sandbox_ids:
            found += [*CGROUP_ROOT.glob(f"{OVERHEAD_PARENT}/{sid}"),
                      *CGROUP_ROOT.glob(f"*/{OVERHEAD_PARENT}/{sid}")]
        return sorted(p for p in found if p.is_dir())

    def leftovers(self) -> list[str]:
        return [*super().leftovers(), *(f"cgroup {p}" for p in self.cgroups())]

    def force_clean(self) -> None:
        super().force_clean()
        for path in sorted(self.cgroups(), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                path.rmdir()

    # containerd by pid: SIGTERM and wait, then the same binary on the same dirs and config.

    def stop_containerd(self, timeout: float = 30) -> None:
        proc = self.ctrd.proc
        assert proc is not None and proc.poll() is None, "containerd is not running"
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout)

    def start_containerd(self) -> None:
        proc = self.ctrd.proc
        if proc is None or proc.poll() is not None:
            self.ctrd.start()

    def log_since(self, offset: int) -> str:
        with open(self.ctrd.log_path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")


@pytest.fixture(scope="module")
def fenv() -> Iterator[FaultEnv]:
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    # /tmp and short: the shim's socket is <state_dir>/s/<32 hex>.sock, under 106 bytes.
    base = Path(tempfile.mkdtemp(prefix="pkf-", dir="/tmp"))
    state_dir = base / "run"
    conf = base / "pykata.toml"
    image_tar = base / "busybox.tar"
    build_busybox_image(image_tar)
    shim_env = {"PYKATA_CONF_FILE": str(conf), "PYTHONPATH": str(PYKATA_SRC)}
    ctrd = Containerd(path_prepend=[Path(sys.executable).parent], env=shim_env)
    env = FaultEnv(ctrd, base, state_dir, Path(sys.executable).parent / SHIM, shim_env, conf)
    env.write_config()
    try:
        ctrd.start()
        ctrd.import_image(image_tar)
        yield env
    finally:
        if ctrd.proc is None or ctrd.proc.poll() is not None:  # a test left it stopped
            with contextlib.suppress(Exception):
                ctrd.start()
        left = ctrd.stop()
        left += containerd_support.leftovers(base)
        left += [f"cgroup {p}" for p in env.cgroups()]
        kill_and_unmount(base, exclude=[])
        shutil.rmtree(base, ignore_errors=True)
    assert not left, f"the fault tests left things behind: {left}"


@pytest.fixture(autouse=True)
def nothing_left(fenv: FaultEnv) -> Iterator[None]:
    log_start = fenv.ctrd.log_path.stat().st_size
    yield
    fenv.start_containerd()  # a test that failed with containerd stopped
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while (left := fenv.leftovers()) and time.monotonic() < deadline:
        time.sleep(0.2)
    log = fenv.log_since(log_start)
    left += [f"shim log: {line}" for line in log.splitlines()
             if 'msg="shim failed' in line]  # a shim that did not end cleanly
    if left:
        tail = "\n".join(log.splitlines()[-80:])
        fenv.force_clean()
        pytest.fail(f"left behind after {SETTLE_TIMEOUT:g}s: {left}\ncontainerd log:\n{tail}")


# --- containerd's events ----------------------------------------------------------------

# ctr 1.6 prints `<timestamp> <namespace> <topic> <event as JSON>`; the timestamp has spaces.
_EVENT_LINE = re.compile(r"^.* (?P<ns>\S+) (?P<topic>/\S+) (?P<event>\{.*\})$")


class Events:
    """`ctr events` in the background: what containerd published, as it did."""

    def __init__(self, env: FaultEnv) -> None:
        self.env = env
        self.out = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        self.proc = subprocess.Popen(env.ctr_argv("events"), stdin=subprocess.DEVNULL,
                                     stdout=self.out, stderr=subprocess.STDOUT)
        # Subscribed once it sees an event of our own making (a namespace label).
        probe = f"probe-{time.monotonic_ns()}"
        deadline = time.monotonic() + 30
        while probe not in self.text():
            assert self.proc.poll() is None and time.monotonic() < deadline, self.text()
            env.ctr("namespaces", "label", env.ctrd.namespace, f"pykata.test.probe={probe}")
            time.sleep(0.2)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.out.close()

    def __enter__(self) -> Events:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def all(self) -> list[tuple[str, dict[str, Any]]]:
        self.out.seek(0)
        found = []
        for line in self.out.read().decode(errors="replace").splitlines():
            m = _EVENT_LINE.match(line)
            if m and m["ns"] == self.env.ctrd.namespace:
                found.append((m["topic"], json.loads(m["event"])))
        return found

    def text(self) -> str:
        self.out.seek(0)
        return self.out.read().decode(errors="replace")

    def exits(self, container_id: str, exec_id: str | None = None) -> list[int]:
        """Exit statuses published for the container's init (or one exec)."""
        want = exec_id or container_id
        return [int(e.get("exit_status", 0)) for topic, e in self.all()
                if topic == "/tasks/exit" and e.get("container_id") == container_id
                and e.get("id", container_id) == want]

    def wait_exit(self, container_id: str, exec_id: str | None = None,
                  timeout: float = EXIT_TIMEOUT) -> int:
        deadline = time.monotonic() + timeout
        while not (found := self.exits(container_id, exec_id)):
            assert time.monotonic() < deadline, (
                f"no /tasks/exit for {container_id}/{exec_id} in {timeout}s; events:\n"
                f"{self.text()}\ncontainerd log:\n{self.env.ctrd.log_tail(60)}")
            time.sleep(0.1)
        assert len(found) == 1, f"more than one exit for {container_id}: {found}"
        return found[0]


# --- helpers ----------------------------------------------------------------------------


def wait_all_gone(pids: list[int], timeout: float) -> list[int]:
    """The pids still alive after `timeout`."""
    deadline = time.monotonic() + timeout
    for pid in pids:
        wait_gone(pid, max(0.0, deadline - time.monotonic()))
    return [pid for pid in pids if alive(pid)]


def one_sandbox(env: FaultEnv, sid: str) -> tuple[int, list[int], int]:
    """(QEMU, virtiofsd processes, shim) of the one sandbox running; checks that each is
    what the sandbox recorded and containerd reports."""
    pids = env.sandbox_pids(sid)
    assert len(pids["qemu"]) == 1 and len(pids["shim"]) == 1, pids
    assert pids["virtiofsd"], pids
    recorded = env.recorded_pids(sid)
    assert recorded["qemu"] == pids["qemu"][0], (recorded, pids)
    assert recorded["virtiofsd"] in pids["virtiofsd"], (recorded, pids)
    assert [t.pid for t in env.ctrd.tasks() if t.id == sid] == pids["qemu"]
    return pids["qemu"][0], pids["virtiofsd"], pids["shim"][0]


def assert_sandbox_gone(env: FaultEnv, sid: str, pids: list[int], timeout: float) -> None:
    still = wait_all_gone(pids, timeout)
    names = dict(processes())
    assert not still, (f"sandbox {sid}: still running after {timeout}s: "
                       f"{[(pid, names.get(pid, '?')[:80]) for pid in still]}")


def delete_task(env: FaultEnv, task_id: str) -> str:
    """`ctr task delete` (while containerd still lists the task) and `ctr container
    delete`; returns task delete's stderr (where ctr warns of a non-zero exit)."""
    err = ""
    if env.status(task_id) is not None:
        err = env.ctr("task", "delete", task_id).stderr.decode()
    assert env.status(task_id) is None
    env.ctr("container", "delete", task_id)
    return err


def qmp(path: Path, *commands: dict[str, Any], timeout: float = 10) -> list[dict[str, Any]]:
    """Commands on a QMP monitor (after its greeting and qmp_capabilities): the replies."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        with sock.makefile("rwb") as f:
            greeting = json.loads(f.readline())
            assert "QMP" in greeting, greeting
            replies = []
            for command in [{"execute": "qmp_capabilities"}, *commands]:
                f.write(json.dumps(command).encode() + b"\n")
                f.flush()
                while "event" in (reply := json.loads(f.readline())):
                    pass
                assert "return" in reply, (command, reply)
                replies.append(reply)
        return replies[1:]


# --- tests ------------------------------------------------------------------------------


def test_qemu_killed(fenv: FaultEnv) -> None:
    with removed_after(fenv, "fq1"), Events(fenv) as events:
        fenv.start_task("fq1", "sleep", "100000")
        qemu, virtiofsd, shim = one_sandbox(fenv, "fq1")
        assert fenv.cgroups(), "the sandbox made no host cgroup (the check would see none)"
        os.kill(qemu, signal.SIGKILL)
        assert events.wait_exit("fq1") == 255
        fenv.wait_status("fq1", "STOPPED")
        assert_sandbox_gone(fenv, "fq1", virtiofsd, SETTLE_TIMEOUT)
        assert alive(shim), "the shim serves the stopped task until it is deleted"
        assert "exit code 255" in delete_task(fenv, "fq1")
        assert wait_gone(shim, SETTLE_TIMEOUT)


def test_virtiofsd_killed(fenv: FaultEnv) -> None:
    with removed_after(fenv, "fv1"), Events(fenv) as events:
        fenv.start_task("fv1", "sleep", "100000")
        qemu, virtiofsd, shim = one_sandbox(fenv, "fv1")
        os.kill(fenv.recorded_pids("fv1")["virtiofsd"], signal.SIGKILL)
        assert events.wait_exit("fv1") == 255
        fenv.wait_status("fv1", "STOPPED")
        assert_sandbox_gone(fenv, "fv1", [qemu, *virtiofsd], SETTLE_TIMEOUT)
        assert "exit code 255" in delete_task(fenv, "fv1")
        assert wait_gone(shim, SETTLE_TIMEOUT)


def test_shim_killed(fenv: FaultEnv) -> None:
    """containerd sees the shim's connection close and runs `shim delete`, which clears
    the sandbox (its VM already died with the shim) and reports 137."""
    with removed_after(fenv, "fs1"), Events(fenv) as events:
        fenv.start_task("fs1", "sleep", "100000")
        qemu, virtiofsd, shim = one_sandbox(fenv, "fs1")
        os.kill(shim, signal.SIGKILL)
        assert_sandbox_gone(fenv, "fs1", [qemu, *virtiofsd], PDEATHSIG_TIMEOUT)
        assert events.wait_exit("fs1") == 128 + 9
        assert fenv.status("fs1") in (None, "STOPPED", "UNKNOWN")
        delete_task(fenv, "fs1")


def test_shim_killed_while_containerd_is_down(fenv: FaultEnv) -> None:
    """The shim dies while nobody watches it: its VM dies with it; the containerd that
    comes back finds the dead shim and clears its sandbox (`shim delete`)."""
    with removed_after(fenv, "fd1"):
        fenv.start_task("fd1", "sleep", "100000")
        qemu, virtiofsd, shim = one_sandbox(fenv, "fd1")
        fenv.stop_containerd()
        try:
            assert alive(qemu) and alive(shim), "stopping containerd stopped the sandbox"
            os.kill(shim, signal.SIGKILL)
            assert_sandbox_gone(fenv, "fd1", [qemu, *virtiofsd], PDEATHSIG_TIMEOUT)
        finally:
            fenv.start_containerd()
        assert fenv.status("fd1") in (None, "STOPPED", "UNKNOWN")
        delete_task(fenv, "fd1")


def test_guest_kernel_panic(fenv: FaultEnv) -> None:
    """What a dying agent (PID 1) causes: the guest panics, powers off (panic=-1 and
    -no-reboot), QEMU exits and every task with it, 255."""
    with removed_after(fenv, "fp1"), Events(fenv) as events, contextlib.ExitStack() as stack:
        fenv.start_task("fp1", "sleep", "100000", flags=("--privileged",))
        qemu, virtiofsd, shim = one_sandbox(fenv, "fp1")
        # Opened now, it still reads once the sandbox's teardown removed it.
        console = stack.enter_context(open(fenv.sandbox_dir("fp1") / "console.log", "rb"))
        r = fenv.ctr("task", "exec", "--exec-id", "panic", "fp1", "sh", "-c",
                     "echo c > /proc/sysrq-trigger; echo survived", check=False, timeout=60)
        assert b"survived" not in r.stdout, r
        assert events.wait_exit("fp1") == 255
        assert wait_gone(qemu, SETTLE_TIMEOUT)
        text = console.read().decode(errors="replace")
        assert "Kernel panic" in text, text[-3000:]
        fenv.wait_status("fp1", "STOPPED")
        assert_sandbox_gone(fenv, "fp1", [qemu, *virtiofsd], SETTLE_TIMEOUT)
        assert "exit code 255" in delete_task(fenv, "fp1")
        assert wait_gone(shim, SETTLE_TIMEOUT)


def test_guest_oom_kills_the_container(fenv: FaultEnv) -> None:
    """A container that touches more memory than the VM has (2048 MiB by default; ctr's
    spec sets no limit) is killed by the guest's OOM killer; the VM lives on."""
    with removed_after(fenv, "fo1"), Events(fenv) as events:
        fenv.start_task("fo1", "sleep", "100000")
        qemu, virtiofsd, shim = one_sandbox(fenv, "fo1")
        # dd's one 1900 MiB buffer: allowed by the guest's overcommit heuristic (under its
        # RAM), then filled from /dev/zero, beyond what is free.
        r = fenv.ctr("task", "exec", "--exec-id", "oom", "fo1", "dd", "if=/dev/zero",
                     "of=/dev/null", "bs=1900M", "count=1", check=False, timeout=120)
        console = (fenv.sandbox_dir("fo1") / "console.log").read_text(errors="replace")
        assert r.returncode == 128 + 9, (r, console[-3000:])
        assert "Out of memory" in console or "oom-kill" in console, console[-3000:]
        assert events.wait_exit("fo1", "oom") == 128 + 9
        assert fenv.status("fo1") == "RUNNING" and alive(qemu), "the VM died of the OOM"
        r = fenv.ctr("task", "exec", "--exec-id", "after", "fo1", "echo", "still-here")
        assert r.stdout == b"still-here\n"
        fenv.ctr("task", "kill", "-s", "SIGKILL", "fo1")
        assert events.wait_exit("fo1") == 128 + 9
        assert "exit code 137" in delete_task(fenv, "fo1")
        assert_sandbox_gone(fenv, "fo1", [qemu, *virtiofsd, shim], SETTLE_TIMEOUT)


def test_guest_oom_of_the_task_itself(fenv: FaultEnv) -> None:
    """The same, for the task's own process: the task exits 137."""
    with removed_after(fenv, "fo2"), Events(fenv) as events:
        fenv.start_task("fo2", "dd", "if=/dev/zero", "of=/dev/null", "bs=1900M", "count=1")
        assert events.wait_exit("fo2", timeout=120) == 128 + 9
        fenv.wait_status("fo2", "STOPPED")
        console = (fenv.sandbox_dir("fo2") / "console.log").read_text(errors="replace")
        assert "Out of memory" in console or "oom-kill" in console, console[-3000:]
        assert "exit code 137" in delete_task(fenv, "fo2")


def test_container_oom_is_published(fenv: FaultEnv) -> None:
    """A container over its own memory limit is OOM-killed in its guest cgroup: 137, and
    containerd hears /tasks/oom first (from which CRI reports the reason OOMKilled)."""
    with removed_after(fenv, "fm1"), Events(fenv) as events:
        fenv.start_task("fm1", "dd", "if=/dev/zero", "of=/dev/null", "bs=128M", "count=1",
                        flags=("--memory-limit", str(64 << 20)))
        assert events.wait_exit("fm1", timeout=60) == 128 + 9
        fenv.wait_status("fm1", "STOPPED")
        topics = [topic for topic, e in events.all()
                  if topic in ("/tasks/oom", "/tasks/exit") and e.get("container_id") == "fm1"]
        assert topics == ["/tasks/oom", "/tasks/exit"], events.text()
        assert "exit code 137" in delete_task(fenv, "fm1")


def test_containerd_restarts(fenv: FaultEnv) -> None:
    """A task outlives its containerd: the restarted one finds it running, execs in it,
    kills and deletes it, and hears its exits."""
    with removed_after(fenv, "fr1"):
        fenv.start_task("fr1", "sleep", "100000")
        qemu, virtiofsd, shim = one_sandbox(fenv, "fr1")
        fenv.stop_containerd()
        try:
            time.sleep(1)
            assert alive(qemu) and alive(shim), "stopping containerd stopped the sandbox"
        finally:
            fenv.start_containerd()
        assert [(t.id, t.pid, t.status) for t in fenv.ctrd.tasks()] == [
            ("fr1", qemu, "RUNNING")]
        with Events(fenv) as events:
            r = fenv.ctr("task", "exec", "--exec-id", "e1", "fr1", "sh", "-c",
                         "echo after-restart; echo err >&2; exit 3", check=False)
            assert (r.returncode, r.stdout, r.stderr) == (3, b"after-restart\n", b"err\n")
            assert fenv.sandbox_pids("fr1")["qemu"] == [qemu]
            fenv.ctr("task", "kill", "-s", "SIGKILL", "fr1")
            fenv.wait_status("fr1", "STOPPED")
            assert "exit code 137" in delete_task(fenv, "fr1")
            assert_sandbox_gone(fenv, "fr1", [qemu, *virtiofsd, shim], SETTLE_TIMEOUT)
            assert events.wait_exit("fr1", "e1", timeout=5) == 3
            assert events.wait_exit("fr1", timeout=5) == 128 + 9


def test_first_event_after_containerd_restart_is_published(fenv: FaultEnv) -> None:
    """The first thing a task does after containerd came back is exit: containerd (and
    CRI above it) must hear of it."""
    with removed_after(fenv, "fe1"):
        fenv.start_task("fe1", "sleep", "100000")
        fenv.stop_containerd()
        fenv.start_containerd()
        with Events(fenv) as events:
            fenv.ctr("task", "kill", "-s", "SIGKILL", "fe1")
            fenv.wait_status("fe1", "STOPPED")
            assert events.wait_exit("fe1", timeout=10) == 128 + 9


def freeze(env: FaultEnv, sid: str) -> Path:
    """Stop the VM's vCPUs over its second QMP monitor: the guest hangs, QEMU lives."""
    inspect = env.sandbox_dir(sid) / "inspect.sock"
    qmp(inspect, {"execute": "stop"})
    [status] = qmp(inspect, {"execute": "query-status"})
    assert status["return"]["running"] is False, status
    return inspect


def test_frozen_guest_exec_times_out(fenv: FaultEnv) -> None:
    """A guest that stops answering: an exec fails after create_container_timeout (5 s
    here), saying so; the shim is not wedged by it: the guest resumed, it works on."""
    with removed_after(fenv, "fh1"):
        fenv.write_config("create_container_timeout = 5\n")  # the shim reads it as it starts
        try:
            fenv.start_task("fh1", "sleep", "100000")
        finally:
            fenv.write_config()
        qemu, virtiofsd, shim = one_sandbox(fenv, "fh1")
        inspect = freeze(fenv, "fh1")
        t0 = time.monotonic()
        r = fenv.ctr("task", "exec", "--exec-id", "hung", "fh1", "echo", "hi", check=False,
                     timeout=60)
        took = time.monotonic() - t0
        err = r.stderr.decode()
        assert r.returncode != 0 and r.stdout == b"", (r, took)
        assert 4.5 < took < 15, (took, err)
        # The shim's deadline on the agent's ExecProcess, passed on as it is.
        assert "no answer within 5s" in err and "deadline exceeded" in err, err
        assert alive(qemu) and fenv.status("fh1") == "RUNNING"
        qmp(inspect, {"execute": "cont"})
        r = fenv.ctr("task", "exec", "--exec-id", "thawed", "fh1", "echo", "thawed")
        assert r.stdout == b"thawed\n"
        fenv.ctr("task", "kill", "-s", "SIGKILL", "fh1")
        fenv.wait_status("fh1", "STOPPED")
        assert "exit code 137" in delete_task(fenv, "fh1")
        assert_sandbox_gone(fenv, "fh1", [qemu, *virtiofsd, shim], SETTLE_TIMEOUT)


def test_frozen_guest_sigkill_ends_it(fenv: FaultEnv) -> None:
    """A SIGKILL the hung guest cannot deliver ends the VM: the task exits, nothing left."""
    with removed_after(fenv, "fk1"):
        fenv.start_task("fk1", "sleep", "100000")
        qemu, virtiofsd, shim = one_sandbox(fenv, "fk1")
        freeze(fenv, "fk1")
        try:
            r = fenv.ctr("task", "kill", "-s", "SIGKILL", "fk1", check=False, timeout=90)
            assert r.returncode == 0, r.stderr.decode()
            fenv.wait_status("fk1", "STOPPED", timeout=30)
            delete_task(fenv, "fk1")
            assert_sandbox_gone(fenv, "fk1", [qemu, *virtiofsd, shim], SETTLE_TIMEOUT)
        finally:
            if alive(qemu):  # what a user is left to do: end the VM by its pid
                os.kill(qemu, signal.SIGKILL)
