"""What a sandbox's owner measures about it, for `pykata monitor`: the time it took to be
ready, and each resize by hotplug (how long, until the guest saw it). Served with the
guest's figures on `metrics.sock` (pykata.sandbox.metrics_server)."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

# Seconds. Under TCG a vCPU takes about 0.6 s to come online, a virtio-mem unplug about
# 1.3 s (README, Hotplug); under KVM both are far below.
BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass
class Histogram:
    """Counts per upper bound (BUCKETS_S, then +Inf), and the sum of what was observed."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS_S) + 1))
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS_S, seconds)] += 1
        self.total += seconds

    def to_json(self) -> dict[str, Any]:
        return {"counts": self.counts, "sum": self.total}


@dataclass
class OwnerStats:
    ready_s: float | None = None     # start() until the pod was attached
    boot: str = ""                   # "cold" or "clone": how it became ready
    hotplug: dict[str, Histogram] = field(default_factory=dict)  # "op/direction" -> times

    def resized(self, op: str, direction: str, seconds: float) -> None:
        self.hotplug.setdefault(f"{op}/{direction}", Histogram()).observe(seconds)

    def to_json(self) -> dict[str, Any]:
        return {"ready_s": self.ready_s, "boot": self.boot,
                "hotplug": {k: h.to_json() for k, h in self.hotplug.items()}}


def resize_kind(memory_hotplug: str, before: tuple[int, int],
                after: tuple[int, int]) -> tuple[str, str]:
    """("cpu" | the memory hotplug device | "cpu+<device>", "grow" | "shrink") of a resize
    from `before` to `after` (vCPUs, MiB)."""
    parts = (["cpu"] if after[0] != before[0] else []) + \
        ([memory_hotplug] if after[1] != before[1] else [])
    shrink = after[0] < before[0] or after[1] < before[1]
    return "+".join(parts) or "none", "shrink" if shrink else "grow"
