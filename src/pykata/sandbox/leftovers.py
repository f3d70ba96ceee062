"""What a sandbox whose owner died leaves behind, and how to clear it.

A live sandbox records its helper processes' pids and the host cgroups it made in its state
directory. When the process that owned it is gone (a killed shim), `clear_sandbox` stops
those processes by pid (only if the pid still names a process started for this state
directory: pids get reused), removes those cgroups, unmounts everything below the
directory, deepest first, and removes it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time

from pykata.host import cgroups, mounts
from pykata.sandbox.portforward import clear_port_forward

PIDS_FILE = "pids"


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
