"""The one place that reaps children: SIGCHLD -> waitpid(-1, WNOHANG) -> per-pid futures.

As PID 1 (or a subreaper on a host) the agent inherits every orphan: a container's init
once `crun create` exits, an exec'd process once `crun exec --detach` exits. A second
waiter (subprocess, asyncio's child watcher) would steal statuses, so the agent starts
processes only through `Reaper.spawn` and never uses subprocess.

A status can arrive before anyone asks for it (an exec that exits before its pid file is
read); it is kept briefly for a later `watch(pid)`. Must not be used from threads.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Sequence

# Statuses of pids nobody watches yet are kept this long: a watcher asks within moments
# (after reading a pid file); keeping them longer risks pairing a status with a reused pid.
_UNCLAIMED_TTL_S = 30.0
_UNCLAIMED_MAX = 512

# Python ignores these; children must start with the default actions.
_DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)


def exit_code(wait_status: int) -> int:
    """Exit code, or 128 + signal number for a killed process (the shell's convention)."""
    code = os.waitstatus_to_exitcode(wait_status)
    return 128 - code if code < 0 else code


class Reaper:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._watched: dict[int, asyncio.Future[int]] = {}
        self._unclaimed: dict[int, tuple[float, int]] = {}
        self._installed = False

    def install(self) -> None:
        self._loop.add_signal_handler(signal.SIGCHLD, self.reap)
        self._installed = True
        self.reap()  # children that exited before the handler existed

    def close(self) -> None:
        if self._installed:
            self._loop.remove_signal_handler(signal.SIGCHLD)
            self._installed = False

    def watch(self, pid: int) -> asyncio.Future[int]:
        """The future of pid's exit code; the same future for every caller."""
        fut = self._watched.get(pid)
        if fut is not None:
            return fut
        fut = self._loop.create_future()
        early = self._unclaimed.pop(pid, None)
        if early is not None:
            fut.set_result(early[1])
        else:
            self._watched[pid] = fut
        return fut

    def spawn(self, argv: Sequence[str], stdio: Sequence[int],
              env: dict[str, str] | None = None) -> tuple[int, asyncio.Future[int]]:
        """posix_spawn (no fork of this big process) with stdio = fds for 0, 1, 2."""
        actions = [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(stdio)]
        pid = os.posix_spawn(argv[0], list(argv), os.environ if env is None else env,
                             file_actions=actions, setsigdef=_DEFAULT_SIGNALS, setsid=True)
        # No await between spawn and watch: reap() runs only as a loop callback.
        return pid, self.watch(pid)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._settle(pid, exit_code(status))

    def _settle(self, pid: int, code: int) -> None:
        fut = self._watched.pop(pid, None)
        if fut is not None:
            if not fut.done():
                fut.set_result(code)
            return
        now = time.monotonic()
        for old, (stamp, _) in list(self._unclaimed.items()):
            if now - stamp > _UNCLAIMED_TTL_S or len(self._unclaimed) >= _UNCLAIMED_MAX:
                del self._unclaimed[old]
        self._unclaimed[pid] = (now, code)
