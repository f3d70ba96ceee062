"""The OCI runtime (crun, runc) as awaitable calls: create, start, exec, delete, pause,
resume, update, kill --all, ps.

Argv building is pure (`runtime_argv`); running goes through the Reaper, never subprocess,
so that the one SIGCHLD reaper sees every status. Each call logs to its own file
(`--log F --log-format json`) because a create's or exec's stderr is the container's
stderr pipe; on failure the logged messages become the error. A single process is
signalled by the agent itself (a pid it reaps: no fork per signal); only "every process
of the container" goes through the runtime, which knows the container's cgroup.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
from collections.abc import Sequence

from pykata.agent.reaper import Reaper
from pykata.domain.errors import RuntimeFailed


def runtime_argv(binary: str, root: str | None, log: str, args: Sequence[str]) -> list[str]:
    argv = [binary]
    if root:
        argv += ["--root", root]
    return [*argv, "--log", log, "--log-format", "json", *args]


def log_messages(text: str, limit: int = 600) -> str:
    """The `msg` of each JSON log line (runc, crun), else the raw text; the last `limit`."""
    msgs = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            msgs.append(line.strip())
            continue
        if isinstance(entry, dict) and entry.get("level", "error") in ("error", "fatal"):
            msgs.append(str(entry.get("msg", "")))
    joined = "; ".join(m for m in msgs if m) or "(nothing logged)"
    return joined[-limit:]


class OciRuntime:
    def __init__(self, binary: str, root: str | None, reaper: Reaper) -> None:
        self.binary, self.root, self._reaper = binary, root, reaper
        self._seq = itertools.count()
        self._null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)

    async def create(self, cid: str, bundle: str, pid_file: str, stdio: Sequence[int],
                     console_socket: str | None = None) -> int:
        """Creates the container with `stdio` as its stdio, or with a terminal sent to
        `console_socket`; returns the init's pid."""
        await self._run(bundle, ["create", "--bundle", bundle, "--pid-file", pid_file,
                                 *_console_args(console_socket), cid], stdio)
        return read_pid(pid_file)

    async def start(self, cid: str, workdir: str) -> None:
        await self._run(workdir, ["start", cid])

    async def exec(self, cid: str, workdir: str, process_json: str, pid_file: str,
                   stdio: Sequence[int], console_socket: str | None = None) -> int:
        tty = ["--tty", *_console_args(console_socket)] if console_socket else []
        args = ["exec", "--process", process_json, "--detach", "--pid-file", pid_file, *tty,
                cid]
        await self._run(workdir, args, stdio)
        return read_pid(pid_file)

    async def delete(self, cid: str, workdir: str) -> None:
        """delete --force: kills what is left of the container, then forgets it."""
        await self._run(workdir, ["delete", "--force", cid])

    async def pause(self, cid: str, workdir: str) -> None:
        await self._run(workdir, ["pause", cid])

    async def resume(self, cid: str, workdir: str) -> None:
        await self._run(workdir, ["resume", cid])

    async def update(self, cid: str, workdir: str, resources_json: str) -> None:
        await self._run(workdir, ["update", "--resources", resources_json, cid])

    async def kill_all(self, cid: str, workdir: str, signum: int) -> None:
        await self._run(workdir, ["kill", "--all", cid, str(signum)])

    async def pids(self, cid: str, workdir: str) -> list[int]:
        """Every pid in the container's cgroup (`ps --format json`), in our pid namespace."""
        out = os.path.join(workdir, f"runtime-ps-{next(self._seq)}.json")
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            # A file, not a pipe: a long list must not block the runtime on a full pipe.
            await self._run(workdir, ["ps", "--format", "json", cid], (self._null, fd, self._null))
            return parse_pids(_read_text(out))
        finally:
            os.close(fd)
            _unlink(out)

    async def _run(self, workdir: str, args: list[str], stdio: Sequence[int] = ()) -> None:
        log = os.path.join(workdir, f"runtime-{args[0]}-{next(self._seq)}.log")
        argv = runtime_argv(self.binary, self.root, log, args)
        _, done = self._reaper.spawn(argv, stdio or (self._null,) * 3)
        code = await done
        try:
            if code != 0:
                raise RuntimeFailed(argv, code, log_messages(_read_text(log)))
        finally:
            _unlink(log)

    def close(self) -> None:
        os.close(self._null)


def _console_args(console_socket: str | None) -> list[str]:
    return ["--console-socket", console_socket] if console_socket else []


def parse_pids(text: str) -> list[int]:
    """`ps --format json` output: a JSON list of pids (runc prints `null` for none)."""
    try:
        doc = json.loads(text)
    except ValueError:
        doc = text
    if doc is None:
        return []
    if not isinstance(doc, list) or not all(type(p) is int and p > 0 for p in doc):
        raise OSError(errno.EPROTO, f"runtime ps printed {text[:80]!r}, not a list of pids")
    return doc


def read_pid(path: str) -> int:
    with open(path) as f:
        text = f.read().strip()
    if not text.isdigit():
        raise OSError(errno.EINVAL, f"pid file holds {text[:20]!r}", path)
    return int(text)


def _read_text(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
