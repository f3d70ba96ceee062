"""The OCI runtime (crun, runc) as a few awaitable calls: create, start, exec, delete.

Argv building is pure (`runtime_argv`); running goes through the Reaper, never subprocess,
so that the one SIGCHLD reaper sees every status. Each call logs to its own file
(`--log F --log-format json`) because a create's or exec's stderr is the container's
stderr pipe; on failure the logged messages become the error. Signals are not sent
through the runtime: the agent signals pids it reaps itself (no fork per signal).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
from collections.abc import Sequence

from pykata.agent.reaper import Reaper
from pykata.domain.errors import PykataError


class RuntimeFailed(PykataError):
    """The runtime binary exited non-zero; detail is what it logged."""

    def __init__(self, argv: Sequence[str], code: int, detail: str) -> None:
        self.argv, self.code, self.detail = list(argv), code, detail
        verb = " ".join(argv[-2:]) if argv else "?"
        super().__init__(f"{os.path.basename(argv[0])} ...{verb} exited {code}: {detail}")


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

    async def create(self, cid: str, bundle: str, pid_file: str, stdio: Sequence[int]) -> int:
        """Creates the container with `stdio` as its stdio; returns the init's pid."""
        await self._run(bundle, ["create", "--bundle", bundle, "--pid-file", pid_file, cid],
                        stdio)
        return read_pid(pid_file)

    async def start(self, cid: str, workdir: str) -> None:
        await self._run(workdir, ["start", cid])

    async def exec(self, cid: str, workdir: str, process_json: str, pid_file: str,
                   stdio: Sequence[int]) -> int:
        args = ["exec", "--process", process_json, "--detach", "--pid-file", pid_file, cid]
        await self._run(workdir, args, stdio)
        return read_pid(pid_file)

    async def delete(self, cid: str, workdir: str) -> None:
        """delete --force: kills what is left of the container, then forgets it."""
        await self._run(workdir, ["delete", "--force", cid])

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
