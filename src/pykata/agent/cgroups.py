"""A container's cgroup v2 statistics: where its cgroup is, and what its files say.

Parsing is pure (file texts in, numbers out, keyed by the kernel's names, which are the
field names of containerd's cgroups v2 Metrics); `find_cgroup` and `read_stats` only
read files. A controller whose files the cgroup lacks is left out (None), not zeroed.
Knows nothing of protobuf. Imported on the first stats call, never at boot.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from typing import NamedTuple

from pykata.domain.errors import NoCgroup2

UINT64_MAX = (1 << 64) - 1  # what "max" reads as (containerd does the same)

STAT_FILES = ("pids.current", "pids.max", "cpu.stat", "memory.current", "memory.max",
              "memory.stat", "memory.swap.current", "memory.swap.max", "memory.events",
              "io.stat")


class CgroupStats(NamedTuple):
    pids: dict[str, int] | None          # current, limit
    cpu: dict[str, int] | None           # cpu.stat: usage_usec, user_usec, ...
    memory: dict[str, int] | None        # memory.stat, usage, usage_limit, swap_*
    memory_events: dict[str, int] | None  # memory.events: low, high, max, oom, oom_kill
    io: list[dict[str, int]] | None      # io.stat: major, minor, rbytes, wbytes, rios, wios


def number(text: str) -> int | None:
    """A cgroup value: digits, or "max"; None for anything else."""
    text = text.strip()
    if text == "max":
        return UINT64_MAX
    return min(int(text), UINT64_MAX) if text.isdigit() else None


def parse_flat_keyed(text: str) -> dict[str, int]:
    """`key value` lines (cpu.stat, memory.stat, memory.events); odd lines are skipped."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and (value := number(parts[1])) is not None:
            out[parts[0]] = value
    return out


def parse_io_stat(text: str) -> list[dict[str, int]]:
    """`MAJ:MIN rbytes=N wbytes=N rios=N wios=N ...` lines."""
    entries = []
    for line in text.splitlines():
        device, *fields = line.split() or [""]
        major, _, minor = device.partition(":")
        if not (major.isdigit() and minor.isdigit()):
            continue
        entry = {"major": int(major), "minor": int(minor)}
        for field in fields:
            key, _, value = field.partition("=")
            if (n := number(value)) is not None:
                entry[key] = n
        entries.append(entry)
    return entries


def parse_stats(files: Mapping[str, str | None]) -> CgroupStats:
    """`files`: each of STAT_FILES' text, or None where the cgroup has no such file."""
    def value(name: str) -> int:
        text = files.get(name)
        return (number(text) or 0) if text is not None else 0

    def keyed(name: str) -> dict[str, int] | None:
        text = files.get(name)
        return None if text is None else parse_flat_keyed(text)

    pids = None
    if files.get("pids.current") is not None:
        pids = {"current": value("pids.current"), "limit": value("pids.max")}
    memory = None
    if files.get("memory.current") is not None:
        memory = {**(keyed("memory.stat") or {}), "usage": value("memory.current"),
                  "usage_limit": value("memory.max"), "swap_usage": value("memory.swap.current"),
                  "swap_limit": value("memory.swap.max")}
    io_text = files.get("io.stat")
    return CgroupStats(pids, keyed("cpu.stat"), memory, keyed("memory.events"),
                       None if io_text is None else parse_io_stat(io_text))


def cgroup2_path(proc_cgroup: str) -> str | None:
    """PATH of /proc/PID/cgroup's `0::PATH`, when that is its only hierarchy; None when
    there are v1 hierarchies (a v1 or hybrid host keeps the controllers there)."""
    lines = proc_cgroup.splitlines()
    if len(lines) != 1 or not lines[0].startswith("0::"):
        return None
    return lines[0][3:]


def cgroup2_mount(mountinfo: str) -> str | None:
    """Where the first cgroup2 filesystem of /proc/self/mountinfo is mounted."""
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if sep and right.split()[:1] == ["cgroup2"] and len(fields) >= 5:
            return fields[4]
    return None


def oom_kills(cgroup: str) -> int:
    """memory.events' oom_kill count (0 when the file or the key is missing)."""
    try:
        with open(os.path.join(cgroup, "memory.events")) as f:
            text = f.read()
    except OSError:
        return 0
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill" and value.strip().isdigit():
            return int(value)
    return 0


def find_cgroup(pid: int, what: str) -> str:
    """The cgroup v2 directory of a live `pid`; NoCgroup2 naming `what` without one."""
    with open(f"/proc/{pid}/cgroup") as f:
        path = cgroup2_path(f.read())
    with open("/proc/self/mountinfo") as f:
        mount = cgroup2_mount(f.read())
    if path is None or mount is None:
        raise NoCgroup2(what)
    return os.path.join(mount, path.lstrip("/"))


def read_stats(directory: str) -> CgroupStats:
    if not os.path.isdir(directory):
        raise FileNotFoundError(errno.ENOENT, "the container's cgroup is gone", directory)
    files: dict[str, str | None] = {}
    for name in STAT_FILES:
        try:
            with open(os.path.join(directory, name)) as f:
                files[name] = f.read()
        except FileNotFoundError:
            files[name] = None
    return parse_stats(files)
