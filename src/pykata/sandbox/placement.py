"""Keep a sandbox's vCPU threads where pykata.plan.pinning says, after boot and after every
container add, update and delete (the caller serialises these and reads the thread ids from
QMP each time: a hot-plugged vCPU has a new thread), and record the result for
`pykata inspect`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

from pykata.domain.cpuset import CpuSet
from pykata.host.affinity import apply_affinity
from pykata.plan.numa import NumaPlan
from pykata.plan.pinning import PinPlan, plan_pinning

log = logging.getLogger(__name__)

PLACEMENT_FILE = "placement.json"


@dataclass
class Placement:
    enabled: bool               # enable_vcpus_pinning (config or annotation)
    host_cpus: CpuSet
    numa: NumaPlan | None
    state_dir: str
    pin: PinPlan | None = None           # the last decision applied
    threads: dict[int, int] | None = None  # vCPU index -> host thread id, at the last look

    def place(self, found: dict[int, int], cpusets: Sequence[CpuSet]) -> PinPlan:
        """Decide the CPUs of the vCPU threads (`found`: vCPU index -> thread id, read just
        now), apply, record. Returns the decision."""
        pin = plan_pinning(found, cpusets, self.host_cpus, self.enabled, self.numa)
        gone = apply_affinity({found[v]: cpus for v, cpus in pin.affinity.items()})
        if gone:  # an unplugged vCPU's thread can end between the read and the write
            log.info("vCPU threads %s exited before their affinity was set", gone)
        if self.pin is None or pin.pinned != self.pin.pinned:
            log.info("vCPU placement: %s", pin.reason)
        self.pin, self.threads = pin, found
        self._record()
        return pin

    def _record(self) -> None:
        assert self.pin is not None and self.threads is not None
        doc = {**self.pin.to_json(), "enabled": self.enabled,
               "threads": {str(v): t for v, t in sorted(self.threads.items())}}
        path = os.path.join(self.state_dir, PLACEMENT_FILE)
        with open(path + ".tmp", "w") as f:
            json.dump(doc, f)
        os.replace(path + ".tmp", path)
