"""A private, real containerd for end-to-end tests, driven with `ctr`.

`Containerd` runs its own daemon (own root, state, sockets, namespace) so tests never
touch a system containerd; `stop` ends only the processes it started or that name its dirs,
by pid, and `leftovers` finds what a shim or VM left behind. Nothing here kills by name.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from oci_image import IMAGE_PATH, IMAGE_REF, build_busybox_image

__all__ = ["IMAGE_PATH", "IMAGE_REF", "Containerd", "build_busybox_image"]

SOCKET_PATH_MAX = 107  # sun_path is 108 bytes with the NUL
# Shims of every containerd 1.6 put their sockets here and runc its state, whatever `state` says.
SHARED_STATE = Path("/run/containerd")


def missing_reason() -> str | None:
    """Why the containerd tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "containerd end-to-end tests need root"
    for tool in ("containerd", "ctr", "containerd-shim-runc-v2", "runc"):
        if not shutil.which(tool, path=_daemon_path([])):
            return f"{tool} is not installed (apt-get install containerd runc)"
    return None


@dataclass(frozen=True)
class Task:
    """One row of `ctr task ls`."""

    id: str
    pid: int
    status: str


class CtrFailed(subprocess.CalledProcessError):
    """A `ctr` call exited non-zero; the message carries its stderr and the daemon's log tail."""

    def __init__(self, proc: subprocess.CompletedProcess[bytes], log_tail: str) -> None:
        super().__init__(proc.returncode, proc.args, proc.stdout, proc.stderr)
        self.log_tail = log_tail

    def __str__(self) -> str:
        err = (self.stderr or b"").decode(errors="replace").strip()
        return f"{super().__str__()}\nstderr: {err}\ncontainerd log tail:\n{self.log_tail}"


class Containerd:
    """A containerd of its own: `start()`, `ctr(...)`, `stop()`; or use it as a context manager.

    All its files live in one short temp dir (`base`): config.toml, containerd.log, root/,
    state/ and the sockets c.sock and c.sock.ttrpc. Runtime shims (e.g. pykata's) are found
    on `path_prepend` first; `env` reaches containerd and so every shim it starts.
    """

    def __init__(self, *, path_prepend: Sequence[str | Path] = (),
                 env: Mapping[str, str] | None = None, namespace: str | None = None,
                 base_dir: Path | None = None, start_timeout: float = 30.0,
                 argv_prefix: Sequence[str] = ()) -> None:
        # /tmp, not pytest's tmp_path: sockets need short paths (shim sockets add more).
        self.base = base_dir or Path(tempfile.mkdtemp(prefix="ctrd-", dir="/tmp"))
        # containerd takes only alphanumeric runs joined by single [._-]; mkdtemp's names
        # may hold "_" anywhere (e.g. "ctrd-_tanhbq0").
        suffix = re.sub(r"[^A-Za-z0-9]", "", self.base.name[-8:]) or "x"
        self.namespace = namespace or f"pykata-e2e-{os.getpid()}-{suffix}"
        self.root, self.state = self.base / "root", self.base / "state"
        self.address = self.base / "c.sock"
        self.ttrpc_address = self.base / "c.sock.ttrpc"
        self.config_path, self.log_path = self.base / "config.toml", self.base / "containerd.log"
        self.path_prepend = [str(p) for p in path_prepend]
        self.env = dict(env or {})
        self.start_timeout = start_timeout
        # e.g. ["nsenter", "--net=/var/run/netns/N"]: a wrapper that execs containerd (so
        # the pid stays containerd's).
        self.argv_prefix = list(argv_prefix)
        self.proc: subprocess.Popen[bytes] | None = None
        if len(bytes(self.ttrpc_address)) >= SOCKET_PATH_MAX:
            raise ValueError(f"socket path {self.ttrpc_address} is over {SOCKET_PATH_MAX} bytes")

    def __enter__(self) -> Containerd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> Containerd:
        """Start the daemon and wait until `ctr version` answers; on failure, stop and raise."""
        for d in (self.root, self.state):
            d.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_toml())
        env = {**os.environ, **self.env, "PATH": _daemon_path(self.path_prepend)}
        try:
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [*self.argv_prefix, "containerd", "--config", str(self.config_path),
                     "--log-level", "debug"],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                    start_new_session=True)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def config_toml(self) -> str:
        return "\n".join([
            "version = 2",
            f'root = "{self.root}"',
            f'state = "{self.state}"',
            'disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs",'
            ' "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",'
            ' "io.containerd.snapshotter.v1.devmapper"]',
            "[grpc]", f'  address = "{self.address}"',
            "[ttrpc]", f'  address = "{self.ttrpc_address}"',
            "[debug]", '  level = "debug"',
            '[plugins."io.containerd.internal.v1.opt"]', f'  path = "{self.root / "opt"}"',
            "",
        ])

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"containerd exited with {self.proc.returncode}:\n"
                                   f"{self.log_tail()}")
            # ctr keeps redialling a missing socket: probe only once the socket is there.
            if self.address.is_socket() and self._answers():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"containerd did not answer in {self.start_timeout}s:\n"
                                   f"{self.log_tail()}")
            time.sleep(0.05)

    def _answers(self) -> bool:
        try:
            return self.ctr("version", timeout=5, check=False).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def ctr(self, *args: str, timeout: float = 60, input: bytes | None = None,
            check: bool = True) -> subprocess.CompletedProcess[bytes]:
        """Run `ctr --address A --namespace NS ARGS`; raise CtrFailed on failure if check."""
        ctr = shutil.which("ctr", path=_daemon_path([])) or "ctr"
        proc = subprocess.run(
            [ctr, "--address", str(self.address), "--namespace", self.namespace, *args],
            input=input, stdin=subprocess.DEVNULL if input is None else None,
            capture_output=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise CtrFailed(proc, self.log_tail())
        return proc

    def import_image(self, tar: Path, ref: str = IMAGE_REF, timeout: float = 120) -> None:
        """Import an OCI archive so that exactly `ref` is registered (checked with images ls)."""
        # ctr 1.6 keeps a ref.name annotation that is a full name; a bare tag ("latest")
        # would become "import-<date>:latest". --base-name also drops any other name.
        self.ctr("images", "import", "--base-name", ref.rpartition(":")[0], str(tar),
                 timeout=timeout)
        names = self.ctr("images", "ls", "-q").stdout.decode().split()
        if ref not in names:
            raise RuntimeError(f"import of {tar} registered {names}, not {ref}")

    def remove_tasks(self, names: Iterable[str]) -> None:
        """SIGKILL these tasks, then delete them and their containers, whatever their
        state (for benchmarks' clean-up: nothing is checked)."""
        names = list(names)
        for name in names:
            self.ctr("task", "kill", "-s", "9", name, check=False)
        time.sleep(1.0)
        for name in names:
            self.ctr("task", "delete", name, check=False, timeout=60)
            self.ctr("container", "delete", name, check=False)

    def tasks(self) -> list[Task]:
        """`ctr task ls`, parsed."""
        lines = self.ctr("task", "ls").stdout.decode().splitlines()[1:]
        return [Task(f[0], int(f[1]), f[2]) for f in (line.split() for line in lines) if f]

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def leftovers(self) -> list[str]:
        """Processes (but containerd) naming its dir, and mounts under it, right now."""
        return leftovers(self.base, exclude=[self.pid] if self.pid else [])

    def stop(self, timeout: float = 10.0) -> list[str]:
        """Stop the daemon, kill and unmount what it left, remove its dirs.

        Returns what was left behind before the cleanup: tasks still listed, then processes
        naming its dirs (shims, QEMU) and mounts under them. An empty list means a clean run.
        """
        found: list[str] = []
        if self.proc is not None and self.proc.poll() is None:
            found += self._force_delete_tasks()
        self._stop_daemon(timeout)
        found += leftovers(self.base)
        _kill_pids(leftover_pids(self.base), timeout)
        _unmount_under([self.base])
        found += _remove_cgroups(self.namespace)
        shutil.rmtree(self.base, ignore_errors=True)
        with contextlib.suppress(OSError):  # runc's state root for this namespace, if empty
            (SHARED_STATE / "runc" / self.namespace).rmdir()
        return found

    def _force_delete_tasks(self) -> list[str]:
        try:
            tasks = self.tasks()
        except (CtrFailed, subprocess.TimeoutExpired) as e:
            return [f"ctr task ls failed: {e}"]
        for task in tasks:
            self.ctr("task", "delete", "--force", task.id, timeout=30, check=False)
        return [f"task {t.id} pid {t.pid} {t.status}" for t in tasks]

    def _stop_daemon(self, timeout: float) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)


def _daemon_path(prepend: Sequence[str]) -> str:
    """PATH for containerd: prepend, then the caller's PATH, then sbin dirs (runc is there)."""
    parts = [*prepend, *os.environ.get("PATH", "").split(os.pathsep), *IMAGE_PATH.split(":")]
    return os.pathsep.join(dict.fromkeys(p for p in parts if p))


# --- leftovers ---------------------------------------------------------------------------


def leftovers(*paths: Path, exclude: Iterable[int] = ()) -> list[str]:
    """Processes whose argv mentions one of paths, and mounts at or under them.

    This process and its ancestors are never reported (pytest's own argv may name a
    temp dir); pass the containerd pid in exclude while it runs.
    """
    found = [f"process {pid}: {_cmdline(pid)[:200]}"
             for pid in leftover_pids(*paths, exclude=exclude)]
    found += [f"mount {mp}" for mp in _mounts_under(paths)]
    return found


def leftover_pids(*paths: Path, exclude: Iterable[int] = ()) -> list[int]:
    skip = {*exclude, *_self_and_ancestors()}
    patterns = [re.compile(re.escape(str(p)) + r"(?![\w.-])") for p in paths]
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in skip:
            continue
        cmdline = _cmdline(int(entry.name))
        if any(p.search(cmdline) for p in patterns):
            pids.append(int(entry.name))
    return sorted(pids)


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")


def _self_and_ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        pid = int((_stat(pid) or ["?", "0"])[1])
    return pids


def _mounts_under(paths: Iterable[Path]) -> list[str]:
    """Mount points at or under any of paths, deepest first."""
    roots = [str(p) for p in paths]
    with open("/proc/self/mountinfo") as f:
        # mountinfo escapes space, tab, newline and backslash as \\ooo
        points = [re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), line.split()[4])
                  for line in f]
    hits = {mp for mp in points if any(mp == r or mp.startswith(r + "/") for r in roots)}
    return sorted(hits, key=lambda mp: (-mp.count("/"), mp))


def _kill_pids(pids: Iterable[int], timeout: float) -> None:
    pids = list(pids)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while any(_stat(pid)[:1] not in ([], ["Z"]) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat after the command name: [state, ppid, ...]; [] once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return []


def _unmount_under(paths: Iterable[Path]) -> None:
    for _ in range(3):  # a lazy unmount can reveal a mount stacked below it
        for mp in _mounts_under(paths):
            subprocess.run(["umount", "--lazy", mp], capture_output=True, timeout=30)


def _remove_cgroups(namespace: str) -> list[str]:
    """Remove the namespace's cgroup dirs (ctr's default cgroup is /<ns>/<id>).

    Returns the container cgroups that were still there: those are leftovers.
    """
    found = []
    roots = Path("/sys/fs/cgroup")
    for ns_dir in [roots / namespace, *roots.glob(f"*/{namespace}")]:
        if not ns_dir.is_dir():
            continue
        children = sorted((p for p in ns_dir.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        found += [f"cgroup {p}" for p in children]
        for d in [*children, ns_dir]:
            with contextlib.suppress(OSError):
                d.rmdir()
    return found
