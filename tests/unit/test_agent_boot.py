from __future__ import annotations

from pathlib import Path

import pytest

from pykata.agent.boot import plan_boot_modules, read_virtio_devices

MODULES = [f"/lib/modules/v/{n}.ko" for n in (
    "virtio_ring", "virtio", "virtio_pci", "virtio_console", "fuse", "virtiofs", "vsock",
    "vmw_vsock_virtio_transport_common", "vmw_vsock_virtio_transport", "virtio_mem",
    "failover", "net_failover", "virtio_net", "mystery")]


def _names(paths: list[str]) -> list[str]:
    return [Path(p).stem for p in paths]


@pytest.mark.parametrize(
    ("devices", "want"),
    [
        (set(), ["mystery"]),
        ({3, 26}, ["virtio_console", "fuse", "virtiofs", "mystery"]),
        ({3, 19}, ["virtio_console", "vsock", "vmw_vsock_virtio_transport_common",
                   "vmw_vsock_virtio_transport", "mystery"]),
        ({1, 24}, ["virtio_mem", "failover", "net_failover", "virtio_net", "mystery"]),
    ],
    ids=["no-devices", "serial-and-fs", "vsock", "net-and-mem"],
)
def test_plan_boot_modules(devices: set[int], want: list[str]) -> None:
    assert _names(plan_boot_modules(MODULES, devices)) == want


def test_read_virtio_devices(tmp_path: Path) -> None:
    for name, device in (("virtio0", "0x0003"), ("virtio1", "0x001a"), ("virtio2", "junk")):
        (tmp_path / "bus/virtio/devices" / name).mkdir(parents=True)
        (tmp_path / "bus/virtio/devices" / name / "device").write_text(device + "\n")
    assert read_virtio_devices(str(tmp_path)) == {3, 26}
    assert read_virtio_devices(str(tmp_path / "none")) == set()
