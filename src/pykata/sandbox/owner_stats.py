"""What a sandbox's owner measures about it, for `pykata monitor`: the time it took to be
ready, each resize by hotplug (how long, until the guest saw it), and a shim's RPCs (how
long each took, by method). Served with the guest's figures on `metrics.sock`
(pykata.sandbox.metrics_server)."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

# Seconds. Under TCG a vCPU takes about 0.6 s to come online, a virtio-mem unplug about
# 1.3 s (README, Hotplug); under KVM both are far below.
BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# A shim's RPCs, in milliseconds as Kata's kata_shim_rpc_durations_histogram_milliseconds:
# most answer in a few ms; Create and Start wait for the guest's runtime.
RPC_BUCKETS_MS = (1.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0, 30000.0)


@dataclass
class Histogram:
    """Counts per upper bound (`bounds`, then +Inf), and the sum of what was observed."""

    bounds: tuple[float, ...] = BUCKETS_S
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def observe(self, value: float) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def to_json(self) -> dict[str, Any]:
        return {"bounds": list(self.bounds), "counts": self.counts, "sum": self.total}


@dataclass
class OwnerStats:
    ready_s: float | None = None     # start() until the pod was attached
    hotplug: dict[str, Histogram] = field(default_factory=dict)  # "op/direction" -> times
    rpc: dict[str, Histogram] = field(default_factory=dict)  # a shim's method -> ms

    def resized(self, op: str, direction: str, seconds: float) -> None:
        self.hotplug.setdefault(f"{op}/{direction}", Histogram()).observe(seconds)

    def answered(self, method: str, milliseconds: float) -> None:
        self.rpc.setdefault(method, Histogram(RPC_BUCKETS_MS)).observe(milliseconds)

    def to_json(self) -> dict[str, Any]:
        return {"ready_s": self.ready_s,
                "hotplug": {k: h.to_json() for k, h in self.hotplug.items()},
                "rpc": {k: h.to_json() for k, h in self.rpc.items()}}


def resize_kind(memory_hotplug: str, before: tuple[int, int],
                after: tuple[int, int]) -> tuple[str, str]:
    """("cpu" | the memory hotplug device | "cpu+<device>", "grow" | "shrink") of a resize
    from `before` to `after` (vCPUs, MiB)."""
    parts = (["cpu"] if after[0] != before[0] else []) + \
        ([memory_hotplug] if after[1] != before[1] else [])
    shrink = after[0] < before[0] or after[1] < before[1]
    return "+".join(parts) or "none", "shrink" if shrink else "grow"
