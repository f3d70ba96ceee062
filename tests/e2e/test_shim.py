"""containerd-shim-pykata-v2 under a real containerd, driven with `ctr`; every task a QEMU VM.

One private containerd per module (the busybox image imported once) whose shims run the
pykata under test. After every test nothing may be left: no task or container, no process
naming the test's dirs (shim, QEMU, virtiofsd), no mount under them, no sandbox in the
pykata state dir. Each test boots one VM (~10 s under TCG), so checks share a VM where
they naturally can.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import pty
import select
import shutil
import signal
import struct
import subprocess
import sys
import tarfile
import tempfile
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import containerd_support
import e2e_support
import pytest
from containerd_support import IMAGE_PATH, IMAGE_REF, Containerd, build_busybox_image
from google.protobuf import empty_pb2

import pykata
from pykata.host.cgroups import read_layout
from pykata.protocol.pb import shim_pb2
from pykata.sandbox.metrics import ask_owner
from pykata.transport.ttrpc_aio import TtrpcClient

pytestmark = pytest.mark.e2e

RUNTIME = "io.containerd.pykata.v2"
SHIM = "containerd-shim-pykata-v2"
# The shim containerd starts must run the pykata these tests import (a worktree's, not
# whatever an editable install points at).
PYKATA_SRC = Path(pykata.__file__).resolve().parents[1]
BOOT_TIMEOUT = 90.0     # a VM boot under TCG on a busy 2-core host, with margin
SETTLE_TIMEOUT = 20.0   # after the last delete, the shim stops its VM and exits
TASK_SERVICE = "containerd.task.v2.Task"


# --- the environment --------------------------------------------------------------------


@dataclass
class ShimEnv:
    ctrd: Containerd
    base: Path          # short: the config, the state dir (shim sockets live there), rootfs
    state_dir: Path
    shim: Path
    shim_env: dict[str, str]  # what containerd adds to every shim's environment

    def ctr(self, *args: str, timeout: float = 60, input: bytes | None = None,
            check: bool = True) -> subprocess.CompletedProcess[bytes]:
        return self.ctrd.ctr(*args, timeout=timeout, input=input, check=check)

    def run(self, *args: str, input: bytes | None = None,
            check: bool = True) -> subprocess.CompletedProcess[bytes]:
        """`ctr run --runtime io.containerd.pykata.v2 ARGS`."""
        return self.ctr("run", "--runtime", RUNTIME, *args, timeout=BOOT_TIMEOUT + 60,
                        input=input, check=check)

    def ctr_argv(self, *args: str) -> list[str]:
        return [shutil.which("ctr") or "ctr", "--address", str(self.ctrd.address),
                "--namespace", self.ctrd.namespace, *args]

    def status(self, task_id: str) -> str | None:
        return {t.id: t.status for t in self.ctrd.tasks()}.get(task_id)

    def wait_status(self, task_id: str, status: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while (now := self.status(task_id)) != status:
            assert time.monotonic() < deadline, (
                f"task {task_id} is {now}, not {status}, after {timeout}s\n"
                f"{self.ctrd.log_tail()}")
            time.sleep(0.1)

    def qemu_pids(self) -> list[int]:
        return [pid for pid, cmd in processes() if str(self.state_dir) in cmd
                and "qemu-system" in cmd]

    def shim_pids(self) -> list[int]:
        return [pid for pid, cmd in processes() if SHIM in cmd
                and str(self.ctrd.address) in cmd]

    def bundle(self, task_id: str) -> Path:
        return (self.ctrd.state / "io.containerd.runtime.v2.task" / self.ctrd.namespace
                / task_id)

    def rootfs(self, name: str) -> Path:
        """A fresh copy of the busybox image's files, for specs that name their root."""
        dest = self.base / "rootfs" / name
        shutil.copytree(self.base / "rootfs" / "busybox", dest, symlinks=True)
        return dest

    def spec_file(self, task_id: str, args: list[str], root: Path,
                  annotations: dict[str, str] | None = None,
                  binds: dict[str, Path] | None = None) -> Path:
        """A full OCI spec for `ctr run --config`, which (ctr 1.6) takes it as it is, with no
        image and no snapshot: `ctr oci spec` with an absolute root, a PATH and a cgroup of
        the task's own."""
        spec: dict[str, Any] = json.loads(self.ctr("oci", "spec").stdout)
        spec["root"]["path"] = str(root)
        spec["process"]["args"] = args
        spec["process"]["env"] = [f"PATH={IMAGE_PATH}"]
        spec["linux"]["cgroupsPath"] = f"/{self.ctrd.namespace}/{task_id}"
        spec["annotations"] = annotations or {}
        spec["mounts"] += [{"destination": dest, "type": "bind", "source": str(src),
                            "options": ["rbind", "rw"]} for dest, src in (binds or {}).items()]
        path = self.base / f"{task_id}.json"
        path.write_text(json.dumps(spec, indent=1))
        return path

    def remove(self, task_id: str) -> None:
        """Task and container `task_id` gone, whatever their state. Kill (all processes) if
        the task runs; if that fails, end its VM (a task's pid is its VM's)."""
        task = {t.id: t for t in self.ctrd.tasks()}.get(task_id)
        if task is not None and task.status != "STOPPED":
            killed = self.ctr("task", "kill", "--all", "--signal", "SIGKILL", task_id,
                              check=False).returncode == 0
            if not killed and task.pid in self.qemu_pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(task.pid, signal.SIGKILL)
            with contextlib.suppress(AssertionError):
                self.wait_status(task_id, "STOPPED", timeout=20)
        if task is not None:
            self.ctr("task", "delete", task_id, check=False)
        self.ctr("container", "delete", task_id, check=False)

    def leftovers(self) -> list[str]:
        found = [f"task {t.id} {t.status}" for t in self.ctrd.tasks()]
        found += [f"container {c}" for c in
                  self.ctr("container", "ls", "-q").stdout.decode().split()]
        found += containerd_support.leftovers(self.base, self.ctrd.base,
                                              exclude=[self.ctrd.pid or 0])
        if self.state_dir.exists():
            found += [f"sandbox dir {p}" for p in self.state_dir.iterdir()
                      if p.name not in ("s", e2e_support.TEMPLATE)]
            found += [f"shim socket {p}" for p in self.state_dir.glob("s/*")]
        return found

    def force_clean(self) -> None:
        """After a failed check: leave nothing that could break the next test."""
        for task in self.ctrd.tasks():
            self.remove(task.id)
        for cid in self.ctr("container", "ls", "-q").stdout.decode().split():
            self.ctr("container", "delete", cid, check=False)
        kill_and_unmount(self.base, self.ctrd.base, exclude=[self.ctrd.pid or 0])
        if self.state_dir.exists():
            for p in self.state_dir.iterdir():
                if p.name != "s":
                    shutil.rmtree(p, ignore_errors=True)
            for p in self.state_dir.glob("s/*"):
                p.unlink(missing_ok=True)


def kill_and_unmount(*paths: Path, exclude: list[int]) -> None:
    """SIGKILL (by pid) every process naming one of paths; unmount everything under them."""
    for pid in containerd_support.leftover_pids(*paths, exclude=exclude):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    for line in containerd_support.leftovers(*paths, exclude=exclude):
        if line.startswith("mount "):
            subprocess.run(["umount", "--lazy", line.removeprefix("mount ")],
                           capture_output=True, timeout=30)


def processes() -> Iterator[tuple[int, str]]:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                raw = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            yield int(entry.name), raw.replace(b"\0", b" ").decode(errors="replace")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def unpack_image(image_tar: Path, dest: Path) -> None:
    """The busybox image's one layer, unpacked: a rootfs for specs that name their own."""
    with tarfile.open(image_tar) as archive:
        def member(name: str) -> IO[bytes]:
            f = archive.extractfile(name)
            assert f is not None, name
            return f

        def blob(digest: str) -> IO[bytes]:
            return member("blobs/sha256/" + digest.removeprefix("sha256:"))

        index = json.load(member("index.json"))
        manifest = json.load(blob(index["manifests"][0]["digest"]))
        with tarfile.open(fileobj=blob(manifest["layers"][0]["digest"])) as layer:
            layer.extractall(dest, filter="tar")


def missing_reason() -> str | None:
    reason = e2e_support.missing_reason() or containerd_support.missing_reason()
    if reason:
        return reason
    if not (Path(sys.executable).parent / SHIM).exists():
        return f"{SHIM} is not installed beside {sys.executable} (pip install -e .)"
    return None


def shim_environment(prefix: str, extra_config: str = "", what: str = "the shim tests"
                     ) -> Iterator[ShimEnv]:
    """A private containerd whose shims read a configuration of their own (`extra_config`
    appended), with the busybox image; removed afterwards, and nothing may be left."""
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    # /tmp and short: the shim's socket is <state_dir>/s/<32 hex>.sock, under 106 bytes.
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    state_dir = base / "run"
    conf = base / "pykata.toml"
    conf.write_text(f'[runtime]\nstate_dir = "{state_dir}"\n'
                    f'[image]\ndir = "{e2e_support.IMAGE_DIR}"\n' + extra_config)
    image_tar = base / "busybox.tar"
    build_busybox_image(image_tar)
    unpack_image(image_tar, base / "rootfs" / "busybox")
    shim_env = {"PYKATA_CONF_FILE": str(conf), "PYTHONPATH": str(PYKATA_SRC)}
    ctrd = Containerd(path_prepend=[Path(sys.executable).parent], env=shim_env)
    try:
        ctrd.start()
        ctrd.import_image(image_tar)
        yield ShimEnv(ctrd, base, state_dir, Path(sys.executable).parent / SHIM, shim_env)
    finally:
        left = ctrd.stop()
        left += containerd_support.leftovers(base)
        kill_and_unmount(base, exclude=[])
        shutil.rmtree(base, ignore_errors=True)
    assert not left, f"{what} left things behind: {left}"


@pytest.fixture(scope="module")
def env() -> Iterator[ShimEnv]:
    yield from shim_environment("pks-")


@pytest.fixture(autouse=True)
def nothing_left(env: ShimEnv) -> Iterator[None]:
    log_start = env.ctrd.log_path.stat().st_size
    yield
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while (left := env.leftovers()) and time.monotonic() < deadline:
        time.sleep(0.2)
    with open(env.ctrd.log_path, "rb") as f:
        f.seek(log_start)
        left += [f"shim log: {line}" for line in f.read().decode(errors="replace").splitlines()
                 if 'msg="shim failed' in line]  # a shim that did not end cleanly
    if left:
        log = env.ctrd.log_tail(60)
        env.force_clean()
        pytest.fail(f"left behind after {SETTLE_TIMEOUT:g}s: {left}\ncontainerd log:\n{log}")


@contextlib.contextmanager
def removed_after(env: ShimEnv, *task_ids: str) -> Iterator[None]:
    """However the test ends, its tasks and containers go (and their VMs with them)."""
    try:
        yield
    finally:
        for task_id in task_ids:
            env.remove(task_id)


# Runs until /tmp/stop exists (so it can end without `ctr task kill`); exits 143 on SIGTERM.
WAIT_FOR_STOP = "trap 'exit 143' TERM; while [ ! -e /tmp/stop ]; do sleep 0.1; done"


# --- tests ------------------------------------------------------------------------------


def test_run_rm_relays_stdio_and_exit_code(env: ShimEnv) -> None:
    # `echo data | ctr run --rm ...`: ctr's input ends long before the VM is up, and ctr's
    # CloseIO for that is only sent if it ends after Create returned (containerd#4489).
    r = env.run("--rm", IMAGE_REF, "rm1", "sh", "-c", "cat; echo to-stderr >&2; exit 3",
                input=b"data\nmore data\n", check=False)
    assert r.returncode == 3, r.stderr.decode()
    assert r.stdout == b"data\nmore data\n"
    assert r.stderr == b"to-stderr\n"


def test_detached_task_execs(env: ShimEnv) -> None:
    with removed_after(env, "d1"):
        env.run("-d", IMAGE_REF, "d1", "sh", "-c", WAIT_FOR_STOP)
        [task] = env.ctrd.tasks()
        assert (task.id, task.status) == ("d1", "RUNNING")
        assert env.qemu_pids() == [task.pid], "a task's pid is its VM's QEMU"

        def exec_(exec_id: str, *args: str, input: bytes | None = None,
                  ) -> subprocess.CompletedProcess[bytes]:
            return env.ctr("task", "exec", "--exec-id", exec_id, "d1", *args, input=input,
                           check=False)

        for code in (0, 7):
            r = exec_(f"code{code}", "sh", "-c", f"exit {code}")
            assert r.returncode == code, r.stderr.decode()
        r = exec_("signalled", "sh", "-c", "kill -9 $$")
        assert r.returncode == 128 + 9, r.stderr.decode()

        r = exec_("streams", "sh", "-c", "echo out; echo err >&2; echo out2")
        assert (r.returncode, r.stdout, r.stderr) == (0, b"out\nout2\n", b"err\n")
        r = exec_("stdin", "sh", "-c", "cat; echo done", input=b"to exec\n")
        assert (r.returncode, r.stdout) == (0, b"to exec\ndone\n"), r.stderr.decode()

        r = exec_("missing", "/no/such/binary")
        assert r.returncode != 0
        assert b"/no/such/binary" in r.stderr and b"not found" in r.stderr, r.stderr.decode()

        # Each waits for the other's file: both finish only if they run side by side.
        meet = ("echo {me} > /tmp/{me}; i=0; while [ ! -e /tmp/{other} ] && [ $i -lt 300 ];"
                " do sleep 0.1; i=$((i+1)); done; echo {me}-saw-$(cat /tmp/{other});"
                " echo {me}-err >&2")
        procs = {me: subprocess.Popen(
            env.ctr_argv("task", "exec", "--exec-id", f"meet-{me}", "d1", "sh", "-c",
                         meet.format(me=me, other=other)),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for me, other in (("a", "b"), ("b", "a"))}
        outs = {me: p.communicate(timeout=60) for me, p in procs.items()}
        assert outs["a"] == (b"a-saw-b\n", b"a-err\n"), outs
        assert outs["b"] == (b"b-saw-a\n", b"b-err\n"), outs
        assert {me: p.returncode for me, p in procs.items()} == {"a": 0, "b": 0}

        assert env.status("d1") == "RUNNING"
        # the shim times its RPCs by method, for `pykata monitor` (docs/metrics.md)
        [sock] = env.state_dir.glob("*/metrics.sock")
        rpc = ask_owner(str(sock), 10)["owner"]["rpc"]
        assert {"Create", "Start", "Exec", "Wait"} <= set(rpc), sorted(rpc)
        assert sum(rpc["Exec"]["counts"]) >= 8
        env.ctr("task", "kill", "d1")  # SIGTERM: the trap exits 143
        env.wait_status("d1", "STOPPED")
        env.ctr("task", "delete", "d1")
        env.ctr("container", "delete", "d1")


def test_terminal_session(env: ShimEnv) -> None:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))
    proc = subprocess.Popen(
        env.ctr_argv("run", "-t", "--rm", "--runtime", RUNTIME, IMAGE_REF, "tty1", "sh"),
        stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    out = bytearray()
    try:
        with removed_after(env, "tty1"):
            env.wait_status("tty1", "RUNNING", timeout=BOOT_TIMEOUT)
            os.write(master, b"echo hello-$((6*7))\n")
            read_pty(master, out, until=b"hello-42", timeout=30)
            # ctr passes its terminal's size on (ResizePty) once the task started.
            os.write(master, b"tty; stty size; echo end-$((1+1))\n")
            read_pty(master, out, until=b"end-2", timeout=30)
            os.write(master, b"exit 7\n")
            read_pty(master, out, until=None, timeout=30)
            assert proc.wait(timeout=30) == 7, bytes(out).decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    text = bytes(out).decode(errors="replace")
    assert "hello-42" in text
    assert "/dev/pts/" in text, f"the shell has no terminal:\n{text}"
    assert "33 101" in text, f"the terminal did not get ctr's size:\n{text}"


def read_pty(fd: int, out: bytearray, until: bytes | None, timeout: float) -> None:
    """Read into `out` until it holds `until`, or (None) until the other side closed."""
    deadline = time.monotonic() + timeout
    while until is None or until not in out:
        left = deadline - time.monotonic()
        assert left > 0, f"waited {timeout}s for {until!r}; got {bytes(out)!r}"
        if select.select([fd], [], [], min(left, 0.5))[0]:
            try:
                data = os.read(fd, 4096)
            except OSError:  # EIO: every writer is gone
                data = b""
            if not data:
                assert until is None, f"closed before {until!r}; got {bytes(out)!r}"
                return
            out += data


def test_pod_shares_one_vm_and_a_mount(env: ShimEnv) -> None:
    shared = env.base / "pod-shared"
    shared.mkdir()
    pod = {"io.kubernetes.cri.sandbox-id": "pod1"}
    sandbox = env.spec_file(
        "pod1", ["sh", "-c", "while [ ! -e /shared/stop ]; do sleep 0.2; done"],
        env.rootfs("pod1"), {**pod, "io.kubernetes.cri.container-type": "sandbox"},
        {"/shared": shared})
    # Each writes its file, waits for the other's, records what it read, then idles. Files
    # appear whole (written aside, then renamed): a reader never sees one half written.
    meet = ("echo from-{me} > /shared/.{me}; mv /shared/.{me} /shared/{me};"
            " while [ ! -e /shared/{other} ]; do sleep 0.1; done;"
            " cat /shared/{other} > /shared/.{me}-saw; mv /shared/.{me}-saw /shared/{me}-saw;"
            " while [ ! -e /shared/done ]; do sleep 0.2; done")
    members = {me: env.spec_file(
        me, ["sh", "-c", meet.format(me=me, other=other)], env.rootfs(me),
        {**pod, "io.kubernetes.cri.container-type": "container"}, {"/shared": shared})
        for me, other in (("c1", "c2"), ("c2", "c1"))}
    with removed_after(env, "c1", "c2", "pod1"):
        env.run("-d", "--config", str(sandbox), "pod1")
        [shim] = env.shim_pids()
        for me, spec in members.items():
            env.run("-d", "--config", str(spec), me)
        deadline = time.monotonic() + 30
        while not all((shared / f"{me}-saw").exists() for me in members):
            assert time.monotonic() < deadline, sorted(p.name for p in shared.iterdir())
            time.sleep(0.1)
        assert (shared / "c1-saw").read_text() == "from-c2\n"
        assert (shared / "c2-saw").read_text() == "from-c1\n"

        tasks = {t.id: t for t in env.ctrd.tasks()}
        assert {t.status for t in tasks.values()} == {"RUNNING"} and len(tasks) == 3
        [qemu] = env.qemu_pids()
        assert {t.pid for t in tasks.values()} == {qemu}
        assert env.shim_pids() == [shim], "one shim serves the whole pod"

        (shared / "done").touch()
        for me in members:
            env.wait_status(me, "STOPPED")
            env.ctr("task", "delete", me)
            env.ctr("container", "delete", me)
        assert env.status("pod1") == "RUNNING"
        assert env.qemu_pids() == [qemu] and alive(shim), "the pod outlives its containers"

        (shared / "stop").touch()
        env.wait_status("pod1", "STOPPED")
        env.ctr("task", "delete", "pod1")
        env.ctr("container", "delete", "pod1")
        assert wait_gone(shim, SETTLE_TIMEOUT), "the shim outlived its last task"


def _mem_total_kib(env: ShimEnv, task_id: str, exec_id: str) -> int:
    r = env.ctr("task", "exec", "--exec-id", exec_id, task_id, "grep", "MemTotal",
                "/proc/meminfo")
    return int(r.stdout.split()[1])


def test_pod_memory_grows_for_a_container_with_a_limit(env: ShimEnv) -> None:
    pod = {"io.kubernetes.cri.sandbox-id": "mem1"}
    sandbox = env.spec_file("mem1", ["sleep", "1000"], env.rootfs("mem1"),
                            {**pod, "io.kubernetes.cri.container-type": "sandbox"})
    member = env.spec_file("m1", ["sleep", "1000"], env.rootfs("m1"),
                           {**pod, "io.kubernetes.cri.container-type": "container"})
    doc = json.loads(member.read_text())
    doc["linux"].setdefault("resources", {})["memory"] = {"limit": 512 << 20}
    member.write_text(json.dumps(doc))
    with removed_after(env, "m1", "mem1"):
        env.run("-d", "--config", str(sandbox), "mem1")
        before = _mem_total_kib(env, "mem1", "before")
        env.run("-d", "--config", str(member), "m1")  # the VM grows before m1 starts
        after = _mem_total_kib(env, "mem1", "after")
        assert after - before >= 480 << 10, (before, after)
        assert _mem_total_kib(env, "m1", "inside") == after


def test_vm_killed_midrun(env: ShimEnv) -> None:
    with removed_after(env, "vm1"):
        env.run("-d", IMAGE_REF, "vm1", "sleep", "1000")
        [qemu] = env.qemu_pids()
        assert env.ctrd.tasks()[0].pid == qemu
        os.kill(qemu, signal.SIGKILL)
        env.wait_status("vm1", "STOPPED")
        r = env.ctr("task", "delete", "vm1")
        # The VM's loss is exit status 255 for every task in it; ctr only warns of it.
        assert b"exit code 255" in r.stderr, r.stderr.decode()
        assert env.status("vm1") is None
        env.ctr("container", "delete", "vm1")


def _cpu_cgroups(pid: int, tid: int) -> tuple[str, str]:
    """(cpu, cpuset) v1 cgroups of one thread."""
    lines = Path(f"/proc/{pid}/task/{tid}/cgroup").read_text().splitlines()
    found = {names: path for _, names, path in (line.split(":", 2) for line in lines)}
    return found["cpu"], found["cpuset"]


def test_host_cgroups_follow_the_cgroups_path(env: ShimEnv) -> None:
    """ctr's spec has cgroupsPath /<namespace>/<id>: as many QEMU threads as the VM has
    vCPUs are there, QEMU's other threads and the shim in the overhead cgroup; both cgroups
    are gone once the task is deleted. (Which threads are the vCPUs only QMP says, and the
    shim holds it: the Sandbox-level test checks the thread ids.)"""
    layout = read_layout()
    if layout is None or layout.version != 1:
        pytest.skip("this test is for a cgroup v1 host")
    sandbox = f"/{env.ctrd.namespace}/cg1"
    dirs = [Path(h.mount + p) for h in layout.hierarchies
            for p in (sandbox, "/pykata_overhead/cg1")]
    with removed_after(env, "cg1"):
        env.run("-d", IMAGE_REF, "cg1", "sleep", "1000")
        [qemu], [shim] = env.qemu_pids(), env.shim_pids()
        # The VM's vCPUs once started (a clone's hot-plugged ones too), as it recorded them.
        vcpus = json.loads((env.state_dir / "cg1" / "plan.json").read_text())["vcpus"]
        where = [_cpu_cgroups(qemu, int(tid)) for tid in os.listdir(f"/proc/{qemu}/task")]
        assert sorted(where) == sorted([(sandbox, sandbox)] * vcpus
                                       + [("/pykata_overhead/cg1",) * 2] * (len(where) - vcpus))
        assert _cpu_cgroups(shim, shim) == ("/pykata_overhead/cg1",) * 2
        assert all(d.is_dir() for d in dirs)
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while [d for d in dirs if d.exists()] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [d for d in dirs if d.exists()] == []


def test_bad_command_fails_clearly(env: ShimEnv) -> None:
    r = env.run("--rm", IMAGE_REF, "bad1", "/no/such/binary", check=False)
    assert r.returncode != 0
    err = r.stderr.decode()
    assert "/no/such/binary" in err and "not found" in err, err
    assert env.ctrd.tasks() == []


def test_a_hostile_annotation_is_invalid_argument(env: ShimEnv) -> None:
    """A refused annotation reaches ctr as containerd's InvalidArgument, naming it."""
    r = env.run("--rm", "--annotation", "io.katacontainers.config.hypervisor.path=/bin/sh",
                IMAGE_REF, "hostile1", "true", check=False)
    assert r.returncode != 0
    err = r.stderr.decode()
    assert "io.katacontainers.config.hypervisor.path" in err and "invalid argument" in err, err
    assert env.ctrd.tasks() == []


def test_pause_resume_ps_metrics_kill(env: ShimEnv) -> None:
    with removed_after(env, "pk1"):
        env.run("-d", IMAGE_REF, "pk1", "sh", "-c",
                "trap 'exit 143' TERM; i=0; while true; do i=$((i+1)); echo $i > /tmp/n;"
                " sleep 0.1; done")
        counter = env.bundle("pk1") / "rootfs" / "tmp" / "n"   # the host sees it: virtiofs

        def count() -> int:
            return int(counter.read_text() or 0) if counter.exists() else 0

        ps = env.ctr("task", "ps", "pk1").stdout.decode().split("\n")
        assert ps[0].split()[:1] == ["PID"] and len([p for p in ps[1:] if p]) >= 1, ps
        metrics = env.ctr("task", "metrics", "pk1").stdout.decode()
        assert "memory" in metrics or "pids" in metrics, metrics

        env.ctr("task", "pause", "pk1")
        assert env.status("pk1") == "PAUSED"
        before = count()
        time.sleep(1)
        assert count() == before, "a paused container kept running"
        env.ctr("task", "resume", "pk1")
        assert env.status("pk1") == "RUNNING"
        deadline = time.monotonic() + 10
        while count() == before:
            assert time.monotonic() < deadline, "a resumed container stayed still"
            time.sleep(0.1)

        env.ctr("task", "kill", "pk1")  # SIGTERM to its init
        env.wait_status("pk1", "STOPPED")
        assert b"exit code 143" in env.ctr("task", "delete", "pk1").stderr
        env.ctr("container", "delete", "pk1")


def test_kill_created_task(env: ShimEnv) -> None:
    """containerd's `ctr` always starts what it creates, so this talks to the shim itself,
    as containerd would: start, Create, Kill, Wait, Delete, Shutdown, delete."""
    bundle = env.base / "kc1"
    bundle.mkdir()
    spec = env.spec_file("kc1", ["sleep", "1000"], env.rootfs("kc1"))
    shutil.copy(spec, bundle / "config.json")
    flags = ["-namespace", env.ctrd.namespace, "-address", str(env.ctrd.address),
             "-publish-binary", "containerd", "-id", "kc1"]
    shim_env = {k: v for k, v in os.environ.items() if k != "TTRPC_ADDRESS"}  # no events
    shim_env.update(env.shim_env)
    start = subprocess.run([str(env.shim), *flags, "start"], cwd=bundle, env=shim_env,
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    assert (start.returncode, start.stderr) == (0, b""), start.stderr.decode()
    address = start.stdout.decode()
    assert address.startswith("unix://"), address
    [shim] = env.shim_pids()
    try:
        statuses = asyncio.run(kill_created(address.removeprefix("unix://"), str(bundle)))
        assert statuses == {"created": shim_pb2.CREATED, "waited": 128 + 9,
                            "stopped": shim_pb2.STOPPED, "deleted": 128 + 9}
    finally:
        exited = wait_gone(shim, SETTLE_TIMEOUT)
        if not exited:  # end the VM, then the shim, by pid; `delete` clears the rest
            for pid in [*env.qemu_pids(), shim]:
                os.kill(pid, signal.SIGKILL)
        delete = subprocess.run([str(env.shim), *flags, "-bundle", str(bundle), "delete"],
                                cwd=bundle, env=shim_env, stdin=subprocess.DEVNULL,
                                capture_output=True, timeout=30)
    assert exited, "the shim outlived Shutdown"
    assert delete.returncode == 0, delete.stderr.decode()
    shim_pb2.DeleteResponse.FromString(delete.stdout)


async def kill_created(path: str, bundle: str) -> dict[str, int]:
    client = await TtrpcClient.connect_unix(path)

    async def call(method: str, req: Any, resp: Any, timeout: float = 30) -> Any:
        data = await client.call(TASK_SERVICE, method, req.SerializeToString(), timeout)
        return resp.FromString(data)

    out: dict[str, int] = {}
    try:
        created = await call("Create", shim_pb2.CreateTaskRequest(id="kc1", bundle=bundle),
                             shim_pb2.CreateTaskResponse, BOOT_TIMEOUT)
        assert created.pid > 0
        state = shim_pb2.StateRequest(id="kc1")
        out["created"] = (await call("State", state, shim_pb2.StateResponse)).status
        await call("Kill", shim_pb2.KillRequest(id="kc1", signal=9), empty_pb2.Empty)
        out["waited"] = (await call("Wait", shim_pb2.WaitRequest(id="kc1"),
                                    shim_pb2.WaitResponse)).exit_status
        out["stopped"] = (await call("State", state, shim_pb2.StateResponse)).status
        out["deleted"] = (await call("Delete", shim_pb2.DeleteRequest(id="kc1"),
                                     shim_pb2.DeleteResponse)).exit_status
        await call("Shutdown", shim_pb2.ShutdownRequest(id="kc1"), empty_pb2.Empty)
    finally:
        with contextlib.suppress(Exception):
            await call("Delete", shim_pb2.DeleteRequest(id="kc1"), shim_pb2.DeleteResponse)
            await call("Shutdown", shim_pb2.ShutdownRequest(id="kc1"), empty_pb2.Empty)
        await client.close()
    return out
