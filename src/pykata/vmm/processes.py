"""Start and stop the VMM's helper processes: listening sockets, spawn, stop by pid."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
from collections.abc import Sequence

from pykata.domain.errors import VmmError


def listen_unix(path: str) -> socket.socket:
    """A listening socket at `path`, inheritable so a child can serve it as `fd=N`."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(4)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def connect_unix(path: str) -> socket.socket:
    """Connect now: the connection waits in the listener's backlog until it is accepted."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def die_with_parent(argv: Sequence[str]) -> list[str]:
    """`argv` run so that the kernel SIGKILLs it when the thread that started it dies
    (PR_SET_PDEATHSIG, set by util-linux's setpriv, which then execs it: same pid), so a
    VM never outlives the process that owns it, whatever killed that."""
    setpriv = shutil.which("setpriv", path="/usr/bin:/bin:/usr/sbin:/sbin")
    if setpriv is None:
        raise VmmError("setpriv is not installed (apt-get install util-linux)")
    return [setpriv, "--pdeathsig", "KILL", "--", *argv]


async def spawn(
    argv: Sequence[str], log_path: str, pass_fds: Sequence[int] = ()
) -> asyncio.subprocess.Process:
    """Start `argv` in its own session (Ctrl-C reaches pykata, which tears down in order),
    dying with this process. Called from the event loop's thread, which lives as long as
    the process: the death signal follows the thread that forked."""
    with open(log_path, "ab") as log:
        try:
            return await asyncio.create_subprocess_exec(
                *die_with_parent(argv), stdin=asyncio.subprocess.DEVNULL, stdout=log,
                stderr=log,
                pass_fds=tuple(pass_fds), start_new_session=True,
            )
        except OSError as exc:
            raise VmmError(f"cannot start {argv[0]}: {exc.strerror}") from exc


async def stop(proc: asyncio.subprocess.Process, grace: float) -> int:
    """Wait up to `grace` seconds for the process to exit, then SIGKILL it by pid."""
    try:
        return await asyncio.wait_for(proc.wait(), grace)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        return await proc.wait()


def log_tail(path: str, limit: int = 2000) -> str:
    """The end of a log for an error message. The guest writes the console log, so control
    characters are replaced: guest text must not drive the user's terminal."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - limit))
            text = f.read().decode(errors="replace").strip()
    except OSError:
        return ""
    return "".join(c if c.isprintable() or c in "\n\t" else "?" for c in text)
