"""Apply vCPU thread affinity (`sched_setaffinity`) and read it back from /proc.

Thin: which CPUs each thread gets is pykata.plan.pinning's decision.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pykata.domain.cpuset import CpuSet
from pykata.domain.errors import HostError


def apply_affinity(cpus_by_tid: Mapping[int, CpuSet]) -> list[int]:
    """Set each thread's CPUs; returns the threads that had already exited."""
    gone = []
    for tid, cpus in cpus_by_tid.items():
        try:
            os.sched_setaffinity(tid, list(cpus))
        except ProcessLookupError:
            gone.append(tid)
        except OSError as exc:
            raise HostError(f"sched_setaffinity(thread {tid}, CPUs {cpus}): {exc}") from exc
    return gone


def thread_affinity(pid: int, tid: int, proc: str = "/proc") -> CpuSet | None:
    """The thread's allowed CPUs (Cpus_allowed_list), None when it is gone."""
    try:
        with open(f"{proc}/{pid}/task/{tid}/status") as f:
            for line in f:
                if line.startswith("Cpus_allowed_list:"):
                    return CpuSet.parse(line.split(":", 1)[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    raise HostError(f"{proc}/{pid}/task/{tid}/status: no Cpus_allowed_list line")
