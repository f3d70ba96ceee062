"""plan_hotplug: the QMP steps from a VM's state to a resize target, case by case."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from pykata.domain.errors import HotplugError
from pykata.plan.hotplug import (
    VIRTIO_MEM_ID,
    CpuSlot,
    HotplugPlan,
    HotplugState,
    QmpStep,
    plan_hotplug,
)
from pykata.plan.numa import NumaPlan
from pykata.plan.sizing import ResizeTarget, SizingPlan

MiB = 1 << 20
T = "qemu64-x86_64-cpu"
SIZING = SizingPlan(vcpus=1, max_vcpus=4, memory_mib=256, max_memory_mib=2304, static=False,
                    memory_hotplug="pc-dimm", cpu_hotplug=True, memory_slots=2,
                    default_vcpus=1, default_memory_mib=256)


def slot(socket: int, path: str = "") -> CpuSlot:
    return CpuSlot(T, (("core-id", 0), ("socket-id", socket), ("thread-id", 0)), path)


BOOT = slot(0, "/machine/unattached/device[0]")
# QEMU lists slots highest first.
FOUR = (slot(3), slot(2), slot(1), BOOT)


def state(slots: tuple[CpuSlot, ...] = FOUR, dimms: tuple[tuple[str, int], ...] = (),
          virtio_mem: int = 0, block: int = 128) -> HotplugState:
    return HotplugState(slots, dimms, ((VIRTIO_MEM_ID, virtio_mem),) if virtio_mem else (),
                        block)


def add_cpu(n: int, socket: int) -> QmpStep:
    return QmpStep("device_add", {"driver": T, "id": f"cpu-{n}", "core-id": 0,
                                  "socket-id": socket, "thread-id": 0})


def add_dimm(slot_no: int, mib: int) -> list[QmpStep]:
    return [QmpStep("object-add", {"qom-type": "memory-backend-memfd", "id": f"mem{slot_no}",
                                   "size": mib * MiB, "share": True}),
            QmpStep("device_add", {"driver": "pc-dimm", "id": f"dimm{slot_no}",
                                   "memdev": f"mem{slot_no}"})]


def virtio_mem(mib: int) -> QmpStep:
    return QmpStep("qom-set", {"path": "/machine/peripheral/virtiomem0",
                               "property": "requested-size", "value": mib * MiB})


VIRTIO = replace(SIZING, memory_hotplug="virtio-mem", memory_slots=2)
PLUGGED = (slot(3), slot(2, "/machine/peripheral/cpu-1"), slot(1, "/machine/peripheral/cpu-0"),
           BOOT)


@dataclass(frozen=True)
class Case:
    name: str
    sizing: SizingPlan
    state: HotplugState
    target: tuple[int, int]
    steps: list[QmpStep]
    size: tuple[int, int]


CASES = [
    Case("nothing to do", SIZING, state(), (1, 256), [], (1, 256)),
    Case("two CPUs into the lowest free slots", SIZING, state(), (3, 256),
         [add_cpu(0, 1), add_cpu(1, 2)], (3, 256)),
    Case("CPUs capped by free slots", SIZING, state(), (9, 256),
         [add_cpu(0, 1), add_cpu(1, 2), add_cpu(2, 3)], (4, 256)),
    Case("ids skip those in use", SIZING, state((slot(3), slot(2),
                                                 slot(1, "/machine/peripheral/cpu-0"), BOOT)),
         (3, 256), [add_cpu(1, 2)], (3, 256)),
    Case("shrink: newest first", SIZING, state(PLUGGED), (1, 256),
         [QmpStep("device_del", {"id": "cpu-1"}), QmpStep("device_del", {"id": "cpu-0"})],
         (1, 256)),
    Case("boot CPUs stay", SIZING, state((slot(1), slot(0, "/machine/unattached/device[1]"),
                                          BOOT)), (1, 256), [], (2, 256)),
    Case("pc-dimm rounded up to the block", SIZING, state(), (1, 700),
         add_dimm(1, 512), (1, 768)),
    Case("pc-dimm: a 1 GiB guest block", SIZING, state(block=1024), (1, 300),
         add_dimm(1, 1024), (1, 1280)),
    Case("pc-dimm next slot", SIZING, state(dimms=(("dimm1", 512),)), (1, 1024),
         add_dimm(2, 256), (1, 1024)),
    Case("pc-dimm never shrinks", SIZING, state(dimms=(("dimm1", 512),)), (1, 256), [],
         (1, 768)),
    Case("pc-dimm capped by max_memory", SIZING, state(), (1, 9999), add_dimm(1, 2048),
         (1, 2304)),
    Case("pc-dimm and a CPU", SIZING, state(), (2, 768), [add_cpu(0, 1), *add_dimm(1, 512)],
         (2, 768)),
    Case("virtio-mem grows", VIRTIO, state(), (1, 768), [virtio_mem(512)], (1, 768)),
    Case("virtio-mem aligned up", VIRTIO, state(), (1, 300), [virtio_mem(128)], (1, 384)),
    Case("virtio-mem shrinks", VIRTIO, state(virtio_mem=512), (1, 256), [virtio_mem(0)],
         (1, 256)),
    Case("virtio-mem capped by its region", VIRTIO, state(), (1, 9999), [virtio_mem(2048)],
         (1, 2304)),
    Case("virtio-mem already there", VIRTIO, state(virtio_mem=512), (1, 768), [], (1, 768)),
    Case("no memory hotplug", replace(SIZING, memory_hotplug="none"), state(), (1, 768), [],
         (1, 256)),
    Case("static: nothing, ever", replace(SIZING, static=True), state(), (4, 2048), [],
         (1, 256)),
    Case("TCG: vCPUs grow", replace(SIZING, cpu_unplug=False), state(), (2, 256),
         [add_cpu(0, 1)], (2, 256)),
    Case("TCG: vCPUs never unplugged", replace(SIZING, cpu_unplug=False), state(PLUGGED),
         (1, 256), [], (3, 256)),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_plan_hotplug(case: Case) -> None:
    plan = plan_hotplug(case.sizing, case.state, ResizeTarget(*case.target))
    assert list(plan.steps) == case.steps
    assert (plan.vcpus, plan.memory_mib) == case.size


def test_shortfalls_are_reasons() -> None:
    plan = plan_hotplug(SIZING, state(dimms=(("dimm1", 512),)), ResizeTarget(9, 256))
    assert any("free CPU slots" in r for r in plan.reasons)
    assert any("cannot shrink" in r for r in plan.reasons)


def test_no_dimm_slot_left() -> None:
    full = state(dimms=(("dimm1", 128), ("dimm2", 128)))
    with pytest.raises(HotplugError, match="all 2 memory slots"):
        plan_hotplug(SIZING, full, ResizeTarget(1, 1024))


def test_bad_block_size() -> None:
    with pytest.raises(HotplugError, match="block size 0"):
        plan_hotplug(SIZING, state(block=0), ResizeTarget(1, 512))


def test_plan_prints() -> None:
    plan: HotplugPlan = plan_hotplug(SIZING, state(), ResizeTarget(2, 256))
    assert str(plan.steps[0]) == ("device_add(driver=qemu64-x86_64-cpu, id=cpu-0, core-id=0, "
                                  "socket-id=1, thread-id=0)")


# ---- guest NUMA nodes: hot-plugged memory gets a node ----------------------------------------

def _numa(shares: tuple[int, ...] = (128, 128)) -> NumaPlan:
    from pykata.domain.cpuset import CpuSet
    from pykata.plan.numa import GuestNode

    return NumaPlan(tuple(GuestNode(g, CpuSet([g]), CpuSet([g]), (g,), mib)
                          for g, mib in enumerate(shares)), ((10, 20), (20, 10)))


def numa_dimm(slot_no: int, mib: int, node: int) -> list[QmpStep]:
    return [QmpStep("object-add", {"qom-type": "memory-backend-memfd", "id": f"mem{slot_no}",
                                   "size": mib * MiB, "share": True, "host-nodes": [node],
                                   "policy": "bind"}),
            QmpStep("device_add", {"driver": "pc-dimm", "id": f"dimm{slot_no}",
                                   "memdev": f"mem{slot_no}", "node": node})]


NUMA_CASES = {
    # name: (state, target MiB, steps)
    "even growth: a DIMM per node": (state(), 256 + 512, numa_dimm(1, 256, 0)
                                     + numa_dimm(2, 256, 1)),
    "one block: the lower node": (state(), 256 + 128, numa_dimm(1, 128, 0)),
    "node 0 ahead: node 1 catches up": (
        replace(state(dimms=(("dimm1", 256),)), dimm_nodes=(0,)), 256 + 256 + 256,
        numa_dimm(2, 256, 1)),
}


@pytest.mark.parametrize("case", sorted(NUMA_CASES))
def test_pc_dimm_with_guest_nodes(case: str) -> None:
    st, mib, steps = NUMA_CASES[case]
    sizing = replace(SIZING, memory_slots=4)
    plan = plan_hotplug(sizing, st, ResizeTarget(st.vcpus, mib), _numa())
    assert list(plan.steps) == steps
    assert plan.memory_mib == mib


def test_pc_dimm_with_more_nodes_due_than_slots_puts_the_rest_on_one() -> None:
    plan = plan_hotplug(SIZING, state(dimms=(("dimm1", 128),)), ResizeTarget(1, 256 + 128 + 512),
                        _numa())
    assert list(plan.steps) == numa_dimm(2, 512, 0)
    assert any("1 memory slots are free" in r for r in plan.reasons)


def set_size(node: int, mib: int) -> QmpStep:
    return QmpStep("qom-set", {"path": f"/machine/peripheral/virtiomem{node}",
                               "property": "requested-size", "value": mib * MiB})


def test_virtio_mem_per_guest_node() -> None:
    from pykata.plan.hotplug import virtio_mem_devices

    devices = virtio_mem_devices(VIRTIO, _numa(), 128)
    assert [(d.id, d.region_mib, d.node, d.host_nodes) for d in devices] == [
        ("virtiomem0", 1024, 0, (0,)), ("virtiomem1", 1024, 1, (1,))]
    grow = plan_hotplug(VIRTIO, state(), ResizeTarget(1, 256 + 384), _numa())
    assert list(grow.steps) == [set_size(0, 256), set_size(1, 128)]
    now = replace(state(), virtio_mem=(("virtiomem0", 256), ("virtiomem1", 128)))
    more = plan_hotplug(VIRTIO, now, ResizeTarget(1, 256 + 512), _numa())
    assert list(more.steps) == [set_size(1, 256)]      # node 0 already has its share
    shrink = plan_hotplug(VIRTIO, now, ResizeTarget(1, 256), _numa())
    assert list(shrink.steps) == [set_size(0, 0), set_size(1, 0)]
    assert shrink.memory_mib == 256
