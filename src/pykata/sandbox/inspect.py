"""Look at a running sandbox from the host: where its vCPU threads may run and which cgroup
they are in, where its guest memory lives, which guest node each device is on.

Reads only: QEMU's second QMP monitor (`inspect.sock`; the sandbox holds the first),
/proc/<qemu pid>/{task,maps,numa_maps}, the host topology, and what the sandbox recorded in
its state directory (its plan, its last placement decision). Changes nothing.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from qemu.qmp import QMPClient
from qemu.qmp.error import QMPError

from pykata.domain.cpuset import CpuSet
from pykata.domain.errors import InspectError
from pykata.domain.topology import HostTopology
from pykata.host.affinity import thread_affinity
from pykata.plan.qemu import IMAGE_BACKEND
from pykata.sandbox.leftovers import recorded_pids, started_for
from pykata.sandbox.placement import PLACEMENT_FILE
from pykata.sandbox.sandbox import PLAN_FILE
from pykata.vmm.threads import parse_cpus_fast
from pykata.vmm.vm import INSPECT_SOCKET

MIB = 1 << 20


@dataclass(frozen=True)
class VcpuView:
    vcpu: int
    thread: int
    guest_node: int | None
    host_cpus: str           # the thread's allowed CPUs ("" when it is gone)
    host_nodes: str          # host nodes those CPUs are on
    cgroup: str


@dataclass(frozen=True)
class MemoryView:
    backend: str
    size_mib: int
    policy: str
    host_nodes: str          # what the backend is bound to ("" for none)
    resident_mib: dict[str, int]   # host node -> MiB of it in RAM now ("node0": 215)


@dataclass(frozen=True)
class SandboxView:
    id: str
    qemu_pid: int
    pinning: dict[str, Any]
    vcpus: list[VcpuView]
    memory: list[MemoryView]
    numa: dict[str, Any] | None
    devices: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def running_sandboxes(state_root: str) -> list[tuple[str, int]]:
    """(sandbox id, QEMU pid) of each sandbox under `state_root` whose QEMU is alive."""
    found = []
    try:
        names = sorted(os.listdir(state_root))
    except FileNotFoundError:
        return []
    for name in names:
        path = os.path.join(state_root, name)
        if name.startswith(".") or not os.path.isdir(path):  # the template, the sweep's lock
            continue
        pid = recorded_pids(path).get("qemu")
        if pid and started_for(pid, path):
            found.append((name, pid))
    return found


async def inspect_sandbox(state_root: str, sandbox_id: str, topology: HostTopology,
                          proc: str = "/proc") -> SandboxView:
    running = dict(running_sandboxes(state_root))
    if sandbox_id not in running:
        have = ", ".join(running) or "none"
        raise InspectError(f"sandbox {sandbox_id!r}: not running under {state_root} "
                           f"(running: {have})")
    state_dir = os.path.join(state_root, sandbox_id)
    pid = running[sandbox_id]
    cpus, memdevs = await _query(os.path.join(state_dir, INSPECT_SOCKET))
    plan = _read_json(os.path.join(state_dir, PLAN_FILE))
    vcpus = [VcpuView(index, tid, _node_id(cpus, index), *_thread(pid, tid, topology, proc))
             for index, tid in sorted(parse_cpus_fast(cpus).items())]
    return SandboxView(sandbox_id, pid, _read_json(os.path.join(state_dir, PLACEMENT_FILE)),
                       vcpus, _memory(memdevs, pid, proc), plan.get("numa"),
                       plan.get("devices", []))


async def _query(socket_path: str) -> tuple[Any, Any]:
    qmp = QMPClient("pykata-inspect")
    try:
        await qmp.connect(socket_path)
        return await qmp.execute("query-cpus-fast"), await qmp.execute("query-memdev")
    except (QMPError, OSError) as exc:
        raise InspectError(f"QMP on {socket_path}: {exc}") from exc
    finally:
        await qmp.disconnect()


def _read_json(path: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            doc = json.load(f)
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise InspectError(f"{path}: {exc}") from None
    return doc if isinstance(doc, dict) else {}


def _node_id(cpus: Any, index: int) -> int | None:
    for entry in cpus:
        if entry.get("cpu-index") == index:
            node = entry.get("props", {}).get("node-id")
            return node if isinstance(node, int) else None
    return None


def _thread(pid: int, tid: int, topology: HostTopology, proc: str) -> tuple[str, str, str]:
    allowed = thread_affinity(pid, tid, proc)
    if allowed is None:
        return "", "", ""
    nodes = CpuSet(n.id for n in topology.nodes if n.cpus & allowed)
    return str(allowed), str(nodes), _cgroup(f"{proc}/{pid}/task/{tid}/cgroup")


def _cgroup(path: str) -> str:
    """The thread's cgroup: the cpuset hierarchy's on v1, the unified one's on v2."""
    try:
        with open(path) as f:
            lines = [line.rstrip("\n").split(":", 2) for line in f]
    except OSError:
        return ""
    by = {ctrl: where for _, ctrls, where in lines for ctrl in ctrls.split(",")}
    return by.get("cpuset") or by.get("", "")


_NUMA_MAPS = re.compile(r"^([0-9a-f]+) (\S+) .*file=/memfd:")
_MAPS = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ (\d+) +/memfd:")


def parse_memfd_mappings(maps: str, numa_maps: str) -> list[tuple[int, str, dict[str, int]]]:
    """QEMU's memfd mappings, oldest first (by inode): (size, policy, {node: bytes in RAM})."""
    sizes = {int(m[1], 16): (int(m[2], 16) - int(m[1], 16), int(m[3]))
             for m in map(_MAPS.match, maps.splitlines()) if m}
    found = []
    for line in numa_maps.splitlines():
        m = _NUMA_MAPS.match(line)
        if not m or int(m[1], 16) not in sizes:
            continue
        size, inode = sizes[int(m[1], 16)]
        fields = dict(f.split("=", 1) for f in line.split()[2:] if "=" in f)
        page = int(fields.get("kernelpagesize_kB", "4")) * 1024
        resident = {f"node{k[1:]}": int(v) * page for k, v in fields.items()
                    if re.fullmatch(r"N\d+", k)}
        found.append((inode, size, m[2].split(":")[0], resident))
    return [(size, policy, resident) for _, size, policy, resident in sorted(found)]


def _memory(memdevs: Any, pid: int, proc: str) -> list[MemoryView]:
    try:
        with open(f"{proc}/{pid}/maps") as f, open(f"{proc}/{pid}/numa_maps") as g:
            mappings = parse_memfd_mappings(f.read(), g.read())
    except OSError:
        mappings = []
    views = []
    # query-memdev does not say where a backend is mapped: match each (oldest backend first:
    # boot memory, then hot-plugged in slot order) to a mapping of its size and policy.
    # The DAX guest image is no RAM.
    for dev in sorted((d for d in memdevs if d["id"] != IMAGE_BACKEND),
                      key=lambda d: _natural(d["id"])):
        policy = dev.get("policy", "default")
        match = next((m for m in mappings if m[0] == dev["size"] and m[1] == policy), None)
        if match is not None:
            mappings.remove(match)
        views.append(MemoryView(dev["id"], dev["size"] // MIB, policy,
                                str(CpuSet(dev.get("host-nodes", []))),
                                {k: v // MIB for k, v in (match[2] if match else {}).items()}))
    return views


def _natural(name: str) -> tuple[str, int]:
    m = re.fullmatch(r"(\D*)(\d*)", name)
    return (m[1], int(m[2] or 0)) if m else (name, 0)


def render(view: SandboxView) -> str:
    """The operator's view, as aligned text."""
    pin: Mapping[str, Any] = view.pinning
    out = [f"sandbox {view.id}  (QEMU pid {view.qemu_pid})",
           f"vCPU pinning: {'on' if pin.get('enabled') else 'off'}; "
           f"{pin.get('reason', 'no placement recorded')}", ""]
    out += _table(["vCPU", "thread", "guest node", "host CPUs", "host node", "cgroup"],
                  [[str(v.vcpu), str(v.thread), _dash(v.guest_node), v.host_cpus or "gone",
                    v.host_nodes, v.cgroup] for v in view.vcpus])
    out.append("")
    out += _table(["memory backend", "size", "policy", "bound to host nodes",
                   "resident by host node"],
                  [[m.backend, f"{m.size_mib} MiB", m.policy, m.host_nodes or "-",
                    ", ".join(f"{k} {v} MiB" for k, v in m.resident_mib.items()) or "-"]
                   for m in view.memory])
    if view.numa:
        out.append("")
        out += _table(["guest node", "host nodes", "vCPUs", "memory"],
                      [[str(n["guest_node"]), str(CpuSet(n["host_nodes"])),
                        str(CpuSet(n["vcpus"])), f"{n['memory_mib']} MiB"]
                       for n in view.numa.get("nodes", [])])
    if view.devices:
        out.append("")
        out += _table(["device", "host node", "guest node", "bus"],
                      [[d["bdf"], str(d["host_node"]), _dash(d["guest_node"]), d["bus"]]
                       for d in view.devices])
    return "\n".join(out)


def _dash(value: int | None) -> str:
    return "-" if value is None else str(value)


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in [head, *rows]]
