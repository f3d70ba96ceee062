"""What a sandbox whose owner died leaves behind, and how to clear it.

A live sandbox records its owner (the shim or `pykata run` process: pid and start time),
its helper processes' pids and the host cgroups it made in its state directory. When the
owner is gone (a killed shim), `clear_sandbox` stops those processes by pid (only if the
pid still names a process started for this state directory: pids get reused), removes
those cgroups, its network redirects, unmounts everything below the directory, deepest
first, and removes it. `sweep` does that for every sandbox whose owner is provably gone,
and removes the sockets of shims that died; `owner_gone` is its pure decision.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import signal
import socket
import time
from collections.abc import Iterator

from pykata.domain.errors import PykataError
from pykata.host import cgroups, mounts, portforward
from pykata.plan.portforward import port_redirect_removal

PIDS_FILE = "pids"
PORTFORWARD_RECORD = "portforward"  # the namespace holding the redirect
OWNER_FILE = "owner"
SOCKETS_DIR = "s"  # the shims' sockets, below the state root
# A state directory without an owner record this old was made by a process that died
# before writing it (it writes it at once); younger, its maker may still be writing.
HALF_MADE_GRACE_S = 60.0
# A shim socket nobody accepts on, this old, belongs to a dead shim (a starting shim binds
# and listens microseconds apart).
STALE_SOCKET_S = 10.0


def process_start_time(pid: int) -> int | None:
    """The process's start time (clock ticks after boot), None when there is no such
    process: with the pid, it names one process for good (pids get reused)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    return int(fields[19]) if len(fields) > 19 else None


def record_owner(state_dir: str) -> None:
    pid = os.getpid()
    with open(os.path.join(state_dir, OWNER_FILE), "w") as f:
        f.write(f"{pid} {process_start_time(pid)}\n")


def read_owner(state_dir: str) -> tuple[int, int] | None:
    try:
        with open(os.path.join(state_dir, OWNER_FILE)) as f:
            pid, start = f.read().split()
        return int(pid), int(start)
    except (OSError, ValueError):
        return None


def owner_gone(owner: tuple[int, int] | None, start_now: int | None, age_s: float) -> bool:
    """Whether a sandbox's owner is provably gone: its pid names no process (`start_now`
    None) or a later one (another start time); with no record, only once the directory is
    older than its maker could take to write one."""
    if owner is None:
        return age_s > HALF_MADE_GRACE_S
    return start_now is None or start_now != owner[1]


def record_pids(state_dir: str, pids: dict[str, int]) -> None:
    with open(os.path.join(state_dir, PIDS_FILE), "w") as f:
        f.writelines(f"{name} {pid}\n" for name, pid in pids.items())


def recorded_pids(state_dir: str) -> dict[str, int]:
    try:
        with open(os.path.join(state_dir, PIDS_FILE)) as f:
            pairs = [line.split() for line in f]
    except FileNotFoundError:
        return {}
    return {p[0]: int(p[1]) for p in pairs if len(p) == 2 and p[1].isdigit()}


def started_for(pid: int, marker: str) -> bool:
    """Whether process `pid` exists and its command line mentions `marker`."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return marker.encode() in f.read()
    except OSError:
        return False


def mounts_below(path: str) -> list[str]:
    """Mount points at or below `path`, deepest first."""
    prefix = path.rstrip("/") + "/"
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    found = {p for p in points if p == path or p.startswith(prefix)}
    return sorted(found, key=lambda p: p.count("/"), reverse=True)


def kill_and_wait(pid: int, timeout: float = 5.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.01)


def clear_sandbox(state_dir: str) -> list[str]:
    """Stops, unmounts and removes what the sandbox at `state_dir` left; says what it did."""
    done = []
    for name, pid in recorded_pids(state_dir).items():
        if started_for(pid, state_dir):
            kill_and_wait(pid)
            done.append(f"killed {name} (pid {pid})")
    for path in cgroups.remove_recorded(os.path.join(state_dir, cgroups.RECORD_FILE)):
        done.append(f"removed cgroup {path}")
    if os.path.exists(os.path.join(state_dir, "network.json")):
        from pykata.sandbox.network import clear_network  # pyroute2: only when needed

        done += clear_network(state_dir)
    done += clear_port_forward(state_dir)
    for point in mounts_below(state_dir):
        mounts.unmount(point)
        done.append(f"unmounted {point}")
    if os.path.isdir(state_dir):
        shutil.rmtree(state_dir, ignore_errors=True)
        done.append(f"removed {state_dir}")
    return done


def clear_port_forward(state_dir: str) -> list[str]:
    """A dead sandbox's port-forward redirect, removed (a namespace already gone took it
    along)."""
    try:
        with open(os.path.join(state_dir, PORTFORWARD_RECORD)) as f:
            netns = f.read().strip()
        portforward.apply_nft(netns, port_redirect_removal())
    except (OSError, PykataError):
        return []
    return [f"{netns}: removed the port-forward redirect"]


# pykata.plan.template.LOCK (not imported: the shim's one-shot start and delete sweep, and
# must stay light): it marks a template's directory.
TEMPLATE_MARK = "template.lock"


def sweep(root: str, dry_run: bool = False) -> list[str]:
    """Clears every sandbox under the state root `root` whose owner is gone, and the sockets
    of dead shims; says what it did (with `dry_run`, what it would do). One sweeper at a
    time: another one running means this one does nothing."""
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return []
    with _sweep_lock(root) as locked:
        if not locked:
            return []
        done = []
        for entry in entries:
            if entry.name == SOCKETS_DIR:
                done += _sweep_sockets(entry.path, dry_run)
            elif entry.is_dir(follow_symlinks=False) and _orphaned(entry.path):
                done.append(f"sandbox {entry.name}: its owner is gone")
                if not dry_run:
                    done += clear_sandbox(entry.path)
        return done


def _orphaned(state_dir: str) -> bool:
    if os.path.exists(os.path.join(state_dir, TEMPLATE_MARK)):
        return False  # a VM template under the state root: no sandbox, no owner
    owner = read_owner(state_dir)
    try:
        age = time.time() - os.stat(state_dir).st_mtime
    except OSError:
        return False
    return owner_gone(owner, process_start_time(owner[0]) if owner else None, age)


@contextlib.contextmanager
def _sweep_lock(root: str) -> Iterator[bool]:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # no lock file to leave
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _sweep_sockets(directory: str, dry_run: bool) -> list[str]:
    done = []
    for entry in os.scandir(directory):
        try:
            age = time.time() - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        if age > STALE_SOCKET_S and entry.name.endswith(".sock") and _refused(entry.path):
            done.append(f"removed the socket of a dead shim {entry.path}")
            if not dry_run:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
    return done


def _refused(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(path)
        except OSError as exc:
            return exc.errno == errno.ECONNREFUSED
    return False
