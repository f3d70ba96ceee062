"""What `pykata monitor` reports about each running sandbox, read from the host.

A sandbox is found as `pykata inspect` finds it (its state directory names a live QEMU);
its processes are the ones it recorded (QEMU, virtiofsd) and its owner (the shim, or
`pykata run`); its sizes, boot path and guest NUMA nodes come from the plan it saved, and
whether its vCPUs are pinned from its last placement. Nothing here talks to the VM, so a
hung guest costs no more than reading /proc.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from pykata.host.procstat import ProcessStats, read_process
from pykata.sandbox.inspect import running_sandboxes
from pykata.sandbox.leftovers import read_owner, recorded_pids
from pykata.sandbox.placement import PLACEMENT_FILE
from pykata.sandbox.sandbox import PLAN_FILE

MIB = 1 << 20
# Kata's component names: the hypervisor (QEMU), virtiofsd, the shim (pykata's owner
# process: the containerd shim, or `pykata run`).
COMPONENTS = ("hypervisor", "virtiofsd", "shim")


@dataclass(frozen=True)
class SandboxMetrics:
    sandbox_id: str
    processes: dict[str, ProcessStats] = field(default_factory=dict)  # component -> figures
    vcpus: dict[str, int] = field(default_factory=dict)         # "boot", "max"
    memory_bytes: dict[str, int] = field(default_factory=dict)  # "boot", "max"
    boot: str = ""                  # "cold" or "clone"
    memory_hotplug: str = ""        # "none", "pc-dimm", "virtio-mem"
    numa_nodes: dict[int, str] = field(default_factory=dict)  # guest node -> host nodes
    pinned: bool | None = None      # None: no placement recorded yet


def sandbox_ids(state_root: str) -> list[str]:
    return [sandbox_id for sandbox_id, _ in running_sandboxes(state_root)]


def read_sandbox(state_root: str, sandbox_id: str, proc: str = "/proc") -> SandboxMetrics:
    """One sandbox's figures; OSError or ValueError when it went away meanwhile or its
    records are unreadable (the monitor counts a scrape error)."""
    state_dir = os.path.join(state_root, sandbox_id)
    pids = recorded_pids(state_dir)
    owner = read_owner(state_dir)
    by_component = {"hypervisor": pids.get("qemu"), "virtiofsd": pids.get("virtiofsd"),
                    "shim": owner[0] if owner else None}
    processes = {name: read_process(pid, proc) for name, pid in by_component.items() if pid}
    plan = _json(os.path.join(state_dir, PLAN_FILE))
    placement = _json(os.path.join(state_dir, PLACEMENT_FILE), missing_ok=True)
    return SandboxMetrics(
        sandbox_id, processes,
        vcpus={"boot": int(plan["vcpus"]), "max": int(plan["max_vcpus"])},
        memory_bytes={"boot": int(plan["memory_mib"]) * MIB,
                      "max": int(plan["max_memory_mib"]) * MIB},
        boot=str(plan.get("boot", "cold")), memory_hotplug=str(plan.get("memory_hotplug", "")),
        numa_nodes={int(n["guest_node"]): ",".join(map(str, n.get("host_nodes", [])))
                    for n in plan.get("numa") or []},
        pinned=bool(placement["pinned"]) if "pinned" in placement else None)


def _json(path: str, missing_ok: bool = False) -> dict[str, Any]:
    try:
        with open(path) as f:
            doc = json.load(f)
    except FileNotFoundError:
        if missing_ok:
            return {}
        raise
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: not a JSON object")
    return doc
