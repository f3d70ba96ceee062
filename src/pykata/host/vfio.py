"""Is each passthrough device ready for QEMU's vfio-pci: bound to the vfio-pci driver, its
IOMMU group's /dev/vfio/<group> present? Checked before QEMU starts, so the error names the
device and the fix instead of QEMU's."""

from __future__ import annotations

import os

from pykata.domain.errors import HostError


def check_vfio_ready(bdfs: tuple[str, ...], sysfs: str = "/sys", dev: str = "/dev") -> None:
    for bdf in bdfs:
        device = f"{sysfs}/bus/pci/devices/{bdf}"
        driver = os.path.basename(os.path.realpath(f"{device}/driver")) \
            if os.path.lexists(f"{device}/driver") else "no driver"
        if driver != "vfio-pci":
            raise HostError(f"passthrough device {bdf} is bound to {driver}, not vfio-pci: "
                            f"unbind it and bind it to vfio-pci (echo vfio-pci > "
                            f"{device}/driver_override; echo {bdf} > "
                            f"{sysfs}/bus/pci/drivers_probe)")
        group = os.path.basename(os.path.realpath(f"{device}/iommu_group"))
        if not os.path.exists(f"{dev}/vfio/{group}"):
            raise HostError(f"passthrough device {bdf}: {dev}/vfio/{group} does not exist "
                            "(is the vfio-pci module loaded and the IOMMU on?)")
