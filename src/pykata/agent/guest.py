"""Facts about the guest for GetGuestDetails (memory block size, CPUs, memory, kernel) and
GetMetrics (the /proc files the host's `pykata monitor` parses).

Parsers are pure (text in, number out); `read_guest_details` is the one reader, with the
/proc and /sys roots as arguments so tests can point it at fixture trees.
"""

from __future__ import annotations

import contextlib
import os
from typing import NamedTuple

from pykata.domain.errors import ProtocolError


class GuestDetails(NamedTuple):
    mem_block_size_bytes: int       # 0: unknown (no memory hotplug support in the kernel)
    support_mem_hotplug_probe: bool
    kernel_release: str
    online_cpus: int
    mem_total_bytes: int


def parse_block_size(text: str) -> int:
    """/sys/devices/system/memory/block_size_bytes holds hex without a 0x: "8000000"."""
    return int(text.strip(), 16)


def parse_cpu_list(text: str) -> int:
    """How many CPUs a kernel cpu list names: "0-3,6" -> 5."""
    count = 0
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        count += int(hi or lo) - int(lo) + 1
    return count


def parse_mem_total(meminfo: str) -> int:
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            value, _, unit = line.split(":", 1)[1].strip().partition(" ")
            return int(value) * (1024 if unit.strip() == "kB" else 1)
    raise ProtocolError("meminfo has no MemTotal line")


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def read_guest_details(proc: str = "/proc", sys: str = "/sys") -> GuestDetails:
    block = _read(f"{sys}/devices/system/memory/block_size_bytes")
    cpus = _read(f"{sys}/devices/system/cpu/online")
    meminfo = _read(f"{proc}/meminfo")
    return GuestDetails(
        mem_block_size_bytes=parse_block_size(block) if block else 0,
        support_mem_hotplug_probe=os.path.exists(f"{sys}/devices/system/memory/probe"),
        kernel_release=os.uname().release,
        online_cpus=parse_cpu_list(cpus) if cpus else len(os.sched_getaffinity(0)),
        mem_total_bytes=parse_mem_total(meminfo) if meminfo else 0,
    )


# GetMetrics: name -> the file, below the /proc root.
METRICS_FILES = {"meminfo": "meminfo", "stat": "stat", "loadavg": "loadavg",
                 "net_dev": "net/dev", "agent_stat": "self/stat", "agent_status": "self/status"}


def read_metrics_files(proc: str = "/proc") -> dict[str, str]:
    """The METRICS_FILES that can be read, and the agent's open fds ("agent_fds")."""
    files = {name: text for name, rel in METRICS_FILES.items()
             if (text := _read(f"{proc}/{rel}")) is not None}
    with contextlib.suppress(OSError):
        files["agent_fds"] = str(len(os.listdir(f"{proc}/self/fd")))
    return files
