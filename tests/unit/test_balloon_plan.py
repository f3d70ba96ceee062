"""Free page reporting: a virtio-balloon for the guest's freed pages, where QEMU has one and
`reclaim_guest_freed_memory` asks for it; `pykata check` says which."""

from __future__ import annotations

from typing import Any

import pytest

from pykata.domain.checks import Status
from pykata.domain.config import build_config
from pykata.domain.host import HostFacts
from pykata.plan.checks import _free_page_reporting
from pykata.plan.vm import plan_qemu_argv, plan_vm

FACTS = HostFacts(frozenset(), False, "", False, online_cpus=2, mem_total_mib=8192)
BALLOON = "-device virtio-balloon-pci,id=balloon0,free-page-reporting=on"


def _argv(reclaim: bool, devices: frozenset[str]) -> str:
    cfg = build_config([("t", {"hypervisor": {"qemu": {"reclaim_guest_freed_memory": reclaim}}})])
    plan = plan_vm(cfg, FACTS, "sb", "/run/t/sb", devices=devices)
    return " ".join(plan_qemu_argv(plan, 3, 4, 5))


@pytest.mark.parametrize(("reclaim", "devices", "present"), [
    pytest.param(True, frozenset(), True, id="on-devices-unknown"),
    pytest.param(True, frozenset({"virtio-balloon-pci", "pc-dimm"}), True, id="on"),
    pytest.param(True, frozenset({"pc-dimm"}), False, id="qemu-lacks-it"),
    pytest.param(False, frozenset({"virtio-balloon-pci"}), False, id="off"),
])
def test_the_balloon_is_planned(reclaim: bool, devices: frozenset[str], present: bool) -> None:
    assert (BALLOON in _argv(reclaim, devices)) is present


class _Caps:
    def __init__(self, devices: frozenset[str]) -> None:
        self.devices = devices


class _Report:
    def __init__(self, devices: frozenset[str]) -> None:
        self.qemu_caps = _Caps(devices)


@pytest.mark.parametrize(("reclaim", "devices", "status"), [
    (True, frozenset({"virtio-balloon-pci"}), Status.PASS),
    (True, frozenset({"pc-dimm"}), Status.WARN),
    (False, frozenset(), Status.PASS),
])
def test_check_reports_free_page_reporting(reclaim: bool, devices: frozenset[str],
                                           status: Status) -> None:
    cfg = build_config([("t", {"hypervisor": {"qemu": {"reclaim_guest_freed_memory": reclaim}}})])
    report: Any = _Report(devices)
    assert _free_page_reporting(report, cfg).status is status
