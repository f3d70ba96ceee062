"""A typed view of the OCI runtime spec (config.json), and the default spec `pykata run` uses.

Validates only what pykata acts on; the whole document still travels to the guest runtime.
Takes parsed JSON; never reads files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pykata.domain.errors import SpecError

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_DEFAULT_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]


@dataclass(frozen=True)
class User:
    uid: int
    gid: int
    additional_gids: tuple[int, ...] = ()


@dataclass(frozen=True)
class Process:
    args: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str
    user: User
    terminal: bool


@dataclass(frozen=True)
class Spec:
    """The parts of config.json pykata reads; `doc` is the whole document."""

    doc: Mapping[str, Any]
    process: Process
    root_path: str
    root_readonly: bool
    hostname: str


def parse_spec(doc: object, source: str) -> Spec:
    if not isinstance(doc, Mapping):
        raise SpecError(source, "(document)", "must be a JSON object")
    root = _get(doc, "root", Mapping, source)
    root_path = _get(root, "path", str, source, "root.path")
    if not root_path:
        raise SpecError(source, "root.path", "must not be empty")
    process = parse_process(_get(doc, "process", Mapping, source), source, "process")
    return Spec(
        doc=doc,
        process=process,
        root_path=root_path,
        root_readonly=bool(root.get("readonly", False)),
        hostname=str(doc.get("hostname", "")),
    )


def parse_process(proc: Mapping[str, Any], source: str, where: str = "process") -> Process:
    args = _get(proc, "args", list, source, f"{where}.args")
    if not args or not all(isinstance(a, str) for a in args):
        raise SpecError(source, f"{where}.args", f"must be a non-empty list of strings: {args!r}")
    env = proc.get("env", [])
    if not isinstance(env, list) or not all(isinstance(e, str) and "=" in e for e in env):
        raise SpecError(source, f"{where}.env", f"must be a list of 'KEY=value': {env!r}")
    cwd = _get(proc, "cwd", str, source, f"{where}.cwd")
    if not cwd.startswith("/"):
        raise SpecError(source, f"{where}.cwd", f"must be an absolute path: {cwd!r}")
    return Process(
        args=tuple(args),
        env=tuple(env),
        cwd=cwd,
        user=_parse_user(proc.get("user", {}), source, f"{where}.user"),
        terminal=bool(proc.get("terminal", False)),
    )


def _parse_user(user: object, source: str, where: str) -> User:
    if not isinstance(user, Mapping):
        raise SpecError(source, where, "must be an object")
    extra = user.get("additionalGids", [])
    if not isinstance(extra, list):
        raise SpecError(source, f"{where}.additionalGids", f"must be a list, got {extra!r}")
    ids = [user.get("uid", 0), user.get("gid", 0), *extra]
    for value in ids:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise SpecError(source, where, f"ids must be non-negative integers: {value!r}")
    return User(uid=ids[0], gid=ids[1], additional_gids=tuple(ids[2:]))


def _get(doc: Mapping[str, Any], key: str, kind: type, source: str, where: str = "") -> Any:
    value = doc.get(key)
    if not isinstance(value, kind):
        names: dict[type, str] = {Mapping: "an object", list: "a list", str: "a string"}
        what = names.get(kind, kind.__name__)
        raise SpecError(source, where or key, f"must be {what}, got {value!r}")
    return value


def default_spec(
    args: Sequence[str],
    root_path: str = "rootfs",
    readonly: bool = True,
    hostname: str = "pykata",
    terminal: bool = False,
) -> dict[str, Any]:
    """A config.json like `runc spec` writes, with a tmpfs /tmp so a read-only root works."""
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": terminal,
            "user": {"uid": 0, "gid": 0},
            "args": list(args),
            "env": [f"PATH={DEFAULT_PATH}", "TERM=xterm", "HOME=/root"],
            "cwd": "/",
            "capabilities": {k: list(_DEFAULT_CAPS)
                             for k in ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": root_path, "readonly": readonly},
        "hostname": hostname,
        "mounts": _default_mounts(),
        "linux": {
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "maskedPaths": [
                "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
            ],
            "readonlyPaths": [
                "/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                "/proc/sysrq-trigger",
            ],
        },
    }


def _default_mounts() -> list[dict[str, Any]]:
    def m(dest: str, typ: str, opts: list[str], src: str | None = None) -> dict[str, Any]:
        return {"destination": dest, "type": typ, "source": src or typ, "options": opts}

    return [
        m("/proc", "proc", []),
        m("/dev", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]),
        m("/dev/pts", "devpts",
          ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]),
        m("/dev/shm", "tmpfs", ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"], "shm"),
        m("/dev/mqueue", "mqueue", ["nosuid", "noexec", "nodev"]),
        m("/sys", "sysfs", ["nosuid", "noexec", "nodev", "ro"]),
        m("/tmp", "tmpfs", ["nosuid", "nodev", "mode=1777"]),
    ]
