"""The hotplug executor against a scripted fake QMP: replies parsed, failures typed."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest
from qemu.qmp.error import QMPError

from pykata.domain.errors import VmmError
from pykata.plan.hotplug import CpuSlot, QmpStep
from pykata.vmm.hotplug import apply_steps, parse_cpu_slots, parse_memory_devices, read_state

MiB = 1 << 20


class QemuSaid(QMPError):
    """Stands in for qemu.qmp's ExecuteError, whose str() is QEMU's desc."""


class FakeQmp:
    def __init__(self, replies: Mapping[str, object] | None = None,
                 fail: Mapping[str, str] | None = None) -> None:
        self.replies, self.fail = dict(replies or {}), dict(fail or {})
        self.sent: list[tuple[str, dict[str, object]]] = []

    async def execute(self, cmd: str, arguments: Mapping[str, object] | None = None) -> object:
        self.sent.append((cmd, dict(arguments or {})))
        if cmd in self.fail:
            raise QemuSaid(self.fail[cmd])
        return self.replies.get(cmd, {})


CPUS = [
    {"props": {"core-id": 0, "thread-id": 0, "socket-id": 1}, "vcpus-count": 1,
     "type": "qemu64-x86_64-cpu"},
    {"props": {"core-id": 0, "thread-id": 0, "socket-id": 0}, "vcpus-count": 1,
     "qom-path": "/machine/unattached/device[0]", "type": "qemu64-x86_64-cpu"},
]
MEMORY = [
    {"type": "dimm", "data": {"id": "dimm1", "size": 512 * MiB, "slot": 0, "node": 0,
                              "memdev": "/objects/mem1", "hotplugged": True,
                              "hotpluggable": True, "addr": 1 << 32}},
    {"type": "virtio-mem", "data": {"id": "virtiomem0", "requested-size": 256 * MiB,
                                    "size": 128 * MiB, "max-size": 1 << 30}},
]


def test_read_state() -> None:
    qmp = FakeQmp({"query-hotpluggable-cpus": CPUS, "query-memory-devices": MEMORY})
    state = asyncio.run(read_state(qmp, 128))
    props = (("core-id", 0), ("socket-id", 1), ("thread-id", 0))
    assert state.cpu_slots[0] == CpuSlot("qemu64-x86_64-cpu", props, "")
    assert state.vcpus == 1
    assert state.dimms == (("dimm1", 512),)
    assert state.virtio_mem_mib == 256
    assert state.block_mib == 128


def test_steps_in_order_and_stop_at_the_first_failure() -> None:
    qmp = FakeQmp(fail={"device_add": "Bus 'pcie.0' does not support hotplugging"})
    steps = [QmpStep("object-add", {"id": "mem1"}), QmpStep("device_add", {"id": "dimm1"}),
             QmpStep("qom-set", {})]
    with pytest.raises(VmmError) as err:
        asyncio.run(apply_steps(qmp, steps))
    assert str(err.value) == ("QMP device_add(id=dimm1) failed: "
                              "Bus 'pcie.0' does not support hotplugging")
    assert [c for c, _ in qmp.sent] == ["object-add", "device_add"]


def test_arguments_are_sent_as_planned() -> None:
    qmp = FakeQmp()
    asyncio.run(apply_steps(qmp, [QmpStep("device_del", {"id": "cpu-1"})]))
    assert qmp.sent == [("device_del", {"id": "cpu-1"})]


@pytest.mark.parametrize("reply", [
    {}, [1], [{"type": "x"}], [{"type": "x", "props": {"core-id": "0"}}],
    [{"type": "x", "props": {}, "qom-path": 3}],
], ids=["not a list", "not a dict", "no props", "string id", "bad qom-path"])
def test_bad_cpu_replies(reply: Any) -> None:
    with pytest.raises(VmmError, match="query-hotpluggable-cpus: unexpected reply"):
        parse_cpu_slots(reply)


@pytest.mark.parametrize("reply", [
    None, [{"type": "dimm"}], [{"type": "dimm", "data": {"id": "d", "size": "1"}}],
    [{"type": "virtio-mem", "data": {"id": "virtiomem0"}}],
], ids=["not a list", "no data", "string size", "no requested-size"])
def test_bad_memory_replies(reply: Any) -> None:
    with pytest.raises(VmmError, match="query-memory-devices: unexpected reply"):
        parse_memory_devices(reply)
