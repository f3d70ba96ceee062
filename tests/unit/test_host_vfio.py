"""The passthrough readiness check against a fake sysfs and /dev."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pykata.domain.errors import HostError
from pykata.host.vfio import check_vfio_ready

BDF = "0000:9a:00.0"


def _host(tmp: Path, driver: str | None, dev_node: bool) -> tuple[str, str]:
    sysfs, dev = tmp / "sys", tmp / "dev"
    device = sysfs / "bus/pci/devices" / BDF
    device.mkdir(parents=True)
    (sysfs / "kernel/iommu_groups/40").mkdir(parents=True)
    os.symlink(sysfs / "kernel/iommu_groups/40", device / "iommu_group")
    if driver:
        (sysfs / "bus/pci/drivers" / driver).mkdir(parents=True)
        os.symlink(sysfs / "bus/pci/drivers" / driver, device / "driver")
    (dev / "vfio").mkdir(parents=True)
    if dev_node:
        (dev / "vfio/40").touch()
    return str(sysfs), str(dev)


def test_bound_to_vfio_pci_is_ready(tmp_path: Path) -> None:
    check_vfio_ready((BDF,), *_host(tmp_path, "vfio-pci", True))


@pytest.mark.parametrize("driver, node, why", [
    ("nvidia", True, f"{BDF} is bound to nvidia, not vfio-pci"),
    (None, True, f"{BDF} is bound to no driver, not vfio-pci"),
    ("vfio-pci", False, "vfio/40 does not exist"),
])
def test_not_ready_is_named(tmp_path: Path, driver: str | None, node: bool, why: str) -> None:
    with pytest.raises(HostError, match=why):
        check_vfio_ready((BDF,), *_host(tmp_path, driver, node))
