"""Hotplug over QMP: read the VM's CPU slots and memory devices, send planned steps.

Thin: what to send is decided in `pykata.plan.hotplug`. QEMU's replies are checked here,
and every QMP failure becomes a VmmError naming the command and QEMU's own message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from qemu.qmp.error import QMPError

from pykata.domain.errors import VmmError
from pykata.plan.hotplug import MIB, VIRTIO_MEM_PREFIX, CpuSlot, HotplugState, QmpStep


class Qmp(Protocol):
    """What hotplug needs of `qemu.qmp.QMPClient` (a scripted fake in tests)."""

    async def execute(self, cmd: str, arguments: Mapping[str, object] | None = None
                      ) -> object: ...


async def execute(qmp: Qmp, command: str, arguments: Mapping[str, object] | None = None
                  ) -> object:
    try:
        return await qmp.execute(command, arguments)
    except QMPError as exc:
        shown = ", ".join(f"{k}={v}" for k, v in (arguments or {}).items())
        raise VmmError(f"QMP {command}({shown}) failed: {exc}") from exc


async def apply_steps(qmp: Qmp, steps: Sequence[QmpStep]) -> None:
    """Send each step in order; the first failure stops the rest."""
    for step in steps:
        await execute(qmp, step.command, step.arguments)


def _bad(command: str, what: str, value: object) -> VmmError:
    return VmmError(f"QMP {command}: unexpected reply: {what} {value!r}")


def parse_cpu_slots(reply: object) -> tuple[CpuSlot, ...]:
    command = "query-hotpluggable-cpus"
    if not isinstance(reply, list):
        raise _bad(command, "expected a list, got", reply)
    slots = []
    for entry in reply:
        if not isinstance(entry, dict) or not isinstance(entry.get("type"), str) \
                or not isinstance(entry.get("props"), dict):
            raise _bad(command, "entry", entry)
        props = entry["props"]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in props.values()):
            raise _bad(command, "props", props)
        path = entry.get("qom-path", "")
        if not isinstance(path, str):
            raise _bad(command, "qom-path", path)
        slots.append(CpuSlot(entry["type"], tuple(sorted(props.items())), path))
    return tuple(slots)


def parse_memory_devices(reply: object) -> tuple[
        tuple[tuple[str, int], ...], tuple[int, ...], tuple[tuple[str, int], ...]]:
    """(pc-dimms as (id, MiB), their guest nodes, virtio-mem devices as (id, requested
    MiB))."""
    command = "query-memory-devices"
    if not isinstance(reply, list):
        raise _bad(command, "expected a list, got", reply)
    dimms, nodes, virtio_mem = [], [], []
    for entry in reply:
        data: Any = entry.get("data") if isinstance(entry, dict) else None
        if not isinstance(data, dict):
            raise _bad(command, "entry", entry)
        kind = entry["type"]
        if kind == "dimm":
            size = data.get("size")
            if not isinstance(size, int) or not isinstance(data.get("id"), str):
                raise _bad(command, "dimm", data)
            dimms.append((data["id"], size // MIB))
            nodes.append(data.get("node", 0) if isinstance(data.get("node"), int) else 0)
        elif kind == "virtio-mem" and str(data.get("id")).startswith(VIRTIO_MEM_PREFIX):
            size = data.get("requested-size")
            if not isinstance(size, int):
                raise _bad(command, "virtio-mem", data)
            virtio_mem.append((data["id"], size // MIB))
    return tuple(dimms), tuple(nodes), tuple(virtio_mem)


async def read_state(qmp: Qmp, block_mib: int) -> HotplugState:
    """The VM's hotplug state now; `block_mib` is the guest's memory block size."""
    slots = parse_cpu_slots(await execute(qmp, "query-hotpluggable-cpus"))
    dimms, nodes, virtio_mem = parse_memory_devices(
        await execute(qmp, "query-memory-devices"))
    return HotplugState(slots, dimms, virtio_mem, block_mib, nodes)
