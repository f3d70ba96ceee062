"""/proc figures for `pykata monitor`: a host process's CPU seconds, memory, threads and
file descriptors, and the guest's meminfo, CPU times, load and network counters (the
guest's /proc files, as its agent returns them).

The `parse_*` functions are pure (the text of one /proc file in, figures out), so they are
tested against recorded files; `read_process` reads them for one host pid.
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


# The guest kernel's USER_HZ: /proc/stat counts in these.
GUEST_TICKS = 100
CPU_ITEMS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
NETDEV_ITEMS = ("rx_bytes", "rx_packets", "rx_errs", "rx_drop", "rx_fifo", "rx_frame",
                "rx_compressed", "rx_multicast", "tx_bytes", "tx_packets", "tx_errs",
                "tx_drop", "tx_fifo", "tx_colls", "tx_carrier", "tx_compressed")


def parse_meminfo(text: str) -> dict[str, int]:
    """Every /proc/meminfo line, lower-cased: kB values in bytes, counts as they are."""
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        words = value.split()
        if words and words[0].isdigit():
            out[key.lower()] = int(words[0]) * (1024 if words[1:] == ["kB"] else 1)
    return out


def parse_cpu_times(text: str, ticks: int = GUEST_TICKS) -> dict[tuple[str, str], float]:
    """(cpu, item) -> seconds from /proc/stat's cpu lines ("cpu" is the sum of all)."""
    out = {}
    for line in text.splitlines():
        words = line.split()
        if words and words[0].startswith("cpu"):
            for item, value in zip(CPU_ITEMS, words[1:], strict=False):
                out[(words[0], item)] = int(value) / ticks
    return out


def parse_loadavg(text: str) -> dict[str, float]:
    one, five, fifteen = text.split()[:3]
    return {"load1": float(one), "load5": float(five), "load15": float(fifteen)}


def parse_net_dev(text: str) -> dict[tuple[str, str], int]:
    """(interface, item) -> counter from /proc/net/dev (two header lines)."""
    out = {}
    for line in text.splitlines()[2:]:
        name, _, counters = line.partition(":")
        for item, value in zip(NETDEV_ITEMS, counters.split(), strict=False):
            out[(name.strip(), item)] = int(value)
    return out


def guest_process(files: dict[str, str]) -> ProcessStats | None:
    """The agent's figures from its own /proc files (no PSS: no smaps), None without."""
    if "agent_stat" not in files or "agent_status" not in files:
        return None
    utime, stime, threads = parse_stat(files["agent_stat"], GUEST_TICKS)
    return ProcessStats(utime, stime, threads, int(files.get("agent_fds", "0")),
                        parse_status(files["agent_status"]), 0)
