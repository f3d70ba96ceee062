"""Resizer: plan, hot-plug over (fake) QMP, then the (fake) agent's OnlineCPUMem."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import replace
from typing import cast

import pytest

from pykata.domain.errors import HotplugError
from pykata.domain.limits import Limits
from pykata.plan.sizing import ResizeTarget, SizingPlan
from pykata.protocol.pb import agent_pb2 as pb
from pykata.sandbox.agent_client import AgentClient
from pykata.sandbox.resize import Resizer

MiB = 1 << 20
SIZING = SizingPlan(vcpus=1, max_vcpus=2, memory_mib=256, max_memory_mib=1280, static=False,
                    memory_hotplug="pc-dimm", cpu_hotplug=True, memory_slots=4,
                    default_vcpus=1, default_memory_mib=256)
CPUS = [{"type": "t", "props": {"socket-id": 1}},
        {"type": "t", "props": {"socket-id": 0}, "qom-path": "/machine/unattached/device[0]"}]
BOOT_MEMTOTAL = 200 * MiB


class FakeQmp:
    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.replies: dict[str, object] = {"query-hotpluggable-cpus": CPUS,
                                           "query-memory-devices": []}

    async def execute(self, cmd: str, arguments: Mapping[str, object] | None = None) -> object:
        self.log.append(f"{cmd} {arguments.get('id', '') if arguments else ''}".strip())
        await asyncio.sleep(0)
        return self.replies.get(cmd, {})


class FakeAgent:
    def __init__(self, log: list[str], short_by: int = 0) -> None:
        self.log, self.short_by = log, short_by

    async def guest_details(self) -> pb.GuestDetailsResponse:
        self.log.append("details")
        return pb.GuestDetailsResponse(mem_block_size_bytes=128 * MiB,
                                       mem_total_bytes=BOOT_MEMTOTAL)

    async def online_cpu_mem(self, cpus: int, mem_bytes: int,
                             timeout: float) -> pb.OnlineCPUMemResponse:
        self.log.append(f"online {cpus} {mem_bytes // MiB}")
        await asyncio.sleep(0.01)
        return pb.OnlineCPUMemResponse(online_cpus=cpus,
                                       mem_total_bytes=mem_bytes - self.short_by)


def _resizer(sizing: SizingPlan = SIZING) -> Resizer:
    return Resizer(sizing, ResizeTarget(sizing.vcpus, sizing.memory_mib))


def _run(resizer: Resizer, *calls: list[Limits], short_by: int = 0
         ) -> tuple[list[str], list[ResizeTarget]]:
    log: list[str] = []
    qmp, agent = FakeQmp(log), cast(AgentClient, FakeAgent(log, short_by))

    async def go() -> list[ResizeTarget]:
        return list(await asyncio.gather(*(resizer.resize(qmp, agent, c) for c in calls)))
    return log, asyncio.run(go())


def test_grow_plugs_then_waits_for_the_guest() -> None:
    resizer = _resizer()
    log, [size] = _run(resizer, [Limits(2, 512)])
    assert log == ["details", "query-hotpluggable-cpus", "query-memory-devices",
                   "device_add cpu-0", "object-add mem1", "device_add dimm1",
                   "online 2 708"]
    assert (size.vcpus, size.memory_mib) == (2, 768)
    assert resizer.size == size
    assert resizer.seen == (768, 708 * MiB)


def test_same_target_is_a_no_op() -> None:
    resizer = _resizer()
    _run(resizer, [Limits(2, 512)])
    log, [size] = _run(resizer, [Limits(1, 512)])
    assert log == []
    assert (size.vcpus, size.memory_mib) == (2, 768)


def test_static_never_plugs() -> None:
    log, [size] = _run(_resizer(replace(SIZING, static=True)), [Limits(2, 512)])
    assert log == []
    assert (size.vcpus, size.memory_mib) == (1, 256)


def test_resizes_are_serialised() -> None:
    log, _ = _run(_resizer(), [Limits(1, 0)], [Limits(0, 512)])
    first_online = log.index("online 2 0")
    assert log.index("object-add mem1") > first_online


def test_guest_shortfall_is_an_error_after_recording_the_size() -> None:
    resizer = _resizer()
    with pytest.raises(HotplugError, match="MemTotal 580 MiB, wanted 708 MiB"):
        _run(resizer, [Limits(2, 512)], short_by=128 * MiB)
    assert (resizer.size.vcpus, resizer.size.memory_mib) == (2, 768)
