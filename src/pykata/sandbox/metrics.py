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
import socket
from dataclasses import dataclass, field
from typing import Any

from pykata.host.procstat import (
    ProcessStats,
    guest_process,
    parse_cpu_times,
    parse_loadavg,
    parse_meminfo,
    parse_net_dev,
    read_process,
)
from pykata.sandbox.inspect import running_sandboxes
from pykata.sandbox.leftovers import read_owner, recorded_pids
from pykata.sandbox.metrics_server import METRICS_SOCKET
from pykata.sandbox.owner_stats import Histogram
from pykata.sandbox.placement import PLACEMENT_FILE
from pykata.sandbox.sandbox import PLAN_FILE

MIB = 1 << 20
# Kata's component names: the hypervisor (QEMU), virtiofsd, the shim (pykata's owner
# process: the containerd shim, or `pykata run`), the agent (in the guest).
COMPONENTS = ("hypervisor", "virtiofsd", "shim", "agent")


@dataclass(frozen=True)
class GuestMetrics:
    meminfo: dict[str, int] = field(default_factory=dict)          # item -> bytes (or count)
    cpu_seconds: dict[tuple[str, str], float] = field(default_factory=dict)  # (cpu, item)
    load: dict[str, float] = field(default_factory=dict)            # load1, load5, load15
    netdev: dict[tuple[str, str], int] = field(default_factory=dict)  # (interface, item)


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
    guest: GuestMetrics | None = None
    guest_error: str = ""           # why the guest's figures are missing
    pod: dict[str, str] = field(default_factory=dict)  # a CRI pod's name, namespace, uid
    ready_s: float | None = None    # start until ready, as its owner measured
    hotplug: dict[str, Histogram] = field(default_factory=dict)  # "op/direction" -> s
    rpc: dict[str, Histogram] = field(default_factory=dict)      # a shim's method -> ms


def sandbox_ids(state_root: str) -> list[str]:
    return [sandbox_id for sandbox_id, _ in running_sandboxes(state_root)]


def read_sandbox(state_root: str, sandbox_id: str, proc: str = "/proc",
                 timeout: float = 2.0) -> SandboxMetrics:
    """One sandbox's figures; OSError or ValueError when it went away meanwhile or its
    records are unreadable (the monitor counts a scrape error). The guest's come from the
    owner's metrics socket within `timeout`; without them `guest_error` says why."""
    state_dir = os.path.join(state_root, sandbox_id)
    pids = recorded_pids(state_dir)
    owner = read_owner(state_dir)
    by_component = {"hypervisor": pids.get("qemu"), "virtiofsd": pids.get("virtiofsd"),
                    "shim": owner[0] if owner else None}
    processes = {name: read_process(pid, proc) for name, pid in by_component.items() if pid}
    plan = _json(os.path.join(state_dir, PLAN_FILE))
    placement = _json(os.path.join(state_dir, PLACEMENT_FILE), missing_ok=True)
    guest, guest_error = None, ""
    figures: dict[str, Any] = {}  # the owner's own
    try:
        doc = ask_owner(os.path.join(state_dir, METRICS_SOCKET), timeout)
        figures = doc.get("owner") or {}
        if not isinstance(doc.get("guest"), dict):
            raise ValueError(str(doc.get("error", "no guest figures")))
        files = {str(k): str(v) for k, v in doc["guest"].items()}
        guest = GuestMetrics(
            parse_meminfo(files.get("meminfo", "")), parse_cpu_times(files.get("stat", "")),
            parse_loadavg(files["loadavg"]) if "loadavg" in files else {},
            parse_net_dev(files.get("net_dev", "")))
        if (agent := guest_process(files)) is not None:
            processes["agent"] = agent
    except FileNotFoundError:
        pass  # still starting: its owner serves the socket once the pod is attached
    except (OSError, ValueError, KeyError, IndexError) as exc:
        guest_error = f"{METRICS_SOCKET}: {exc or type(exc).__name__}"
    found = SandboxMetrics(
        sandbox_id, processes,
        vcpus={"boot": int(plan["vcpus"]), "max": int(plan["max_vcpus"])},
        memory_bytes={"boot": int(plan["memory_mib"]) * MIB,
                      "max": int(plan["max_memory_mib"]) * MIB},
        boot=str(plan.get("boot", "cold")), memory_hotplug=str(plan.get("memory_hotplug", "")),
        numa_nodes={int(n["guest_node"]): ",".join(map(str, n.get("host_nodes", [])))
                    for n in plan.get("numa") or []},
        pinned=bool(placement["pinned"]) if "pinned" in placement else None,
        guest=guest, guest_error=guest_error,
        pod={str(k): str(v) for k, v in (plan.get("pod") or {}).items()},
        ready_s=float(figures["ready_s"]) if figures.get("ready_s") is not None else None,
        hotplug=_histograms(figures.get("hotplug")), rpc=_histograms(figures.get("rpc")))
    if figures.get("size"):  # the owner's: after its last resize
        now_vcpus, now_mib = figures["size"]
        found.vcpus["current"], found.memory_bytes["current"] = int(now_vcpus), int(now_mib) * MIB
    return found


def _histograms(doc: Any) -> dict[str, Histogram]:
    """Histograms as OwnerStats.to_json wrote them."""
    return {str(k): Histogram(tuple(float(b) for b in h["bounds"]),
                              [int(c) for c in h["counts"]], float(h["sum"]))
            for k, h in (doc or {}).items()}


def ask_owner(path: str, timeout: float) -> dict[str, Any]:
    """The owner's answer on its metrics socket: the guest's /proc files ("guest", or an
    "error"), and its own figures ("owner")."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    doc = json.loads(b"".join(chunks))
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    return doc


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
