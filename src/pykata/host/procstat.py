"""A process's resource figures from /proc, for `pykata monitor`: CPU seconds, memory,
threads and file descriptors.

The `parse_*` functions are pure (the text of one /proc file in, figures out), so they are
tested against recorded files; `read_process` reads them for one pid.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# /proc/<pid>/stat counts CPU time in clock ticks.
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# /proc/<pid>/status lines kept, as Kata's `proc_status` items (lower-cased), in bytes.
STATUS_ITEMS = ("VmPeak", "VmSize", "VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem",
                "VmData", "VmSwap")


@dataclass(frozen=True)
class ProcessStats:
    utime_s: float
    stime_s: float
    threads: int
    fds: int
    status: dict[str, int]   # STATUS_ITEMS (lower-cased) -> bytes
    pss_bytes: int


def parse_stat(text: str, ticks: int = CLOCK_TICKS) -> tuple[float, float, int]:
    """(user seconds, system seconds, threads) from /proc/<pid>/stat. The command name
    (field 2) may hold spaces and parentheses: fields are counted after its last ')'."""
    fields = text[text.rfind(")") + 2:].split()
    # after the name: state(3) ... utime(14) stime(15) ... num_threads(20)
    return int(fields[11]) / ticks, int(fields[12]) / ticks, int(fields[17])


def parse_status(text: str) -> dict[str, int]:
    """The STATUS_ITEMS of /proc/<pid>/status, in bytes (the file says kB)."""
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in STATUS_ITEMS:
            out[key.lower()] = int(value.split()[0]) * 1024
    return out


def parse_pss(text: str) -> int:
    """Pss from /proc/<pid>/smaps_rollup, in bytes."""
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


def read_process(pid: int, proc: str = "/proc") -> ProcessStats:
    """The figures of process `pid`; OSError when it is gone."""
    base = f"{proc}/{pid}"
    with open(f"{base}/stat") as f:
        utime, stime, threads = parse_stat(f.read())
    with open(f"{base}/status") as f:
        status = parse_status(f.read())
    with open(f"{base}/smaps_rollup") as f:
        pss = parse_pss(f.read())
    return ProcessStats(utime, stime, threads, len(os.listdir(f"{base}/fd")), status, pss)
