from __future__ import annotations

import os
from pathlib import Path

import pytest

from pykata.domain.errors import HostError
from pykata.host.qemu_caps import CACHE_NAME, qemu_devices

HELP = '''Storage devices:
name "virtio-blk-pci", bus PCI
Misc devices:
name "pc-dimm", desc "DIMM memory module"
name "virtio-mem-pci", bus PCI
name "virtio-net-pci-transitional", bus PCI
name "qemu64-x86_64-cpu"
'''


def _fake_qemu(tmp_path: Path, text: str, rc: int = 0) -> str:
    path = tmp_path / "qemu-system-x86_64"
    path.write_text(f"#!/bin/sh\ncat <<'X'\n{text}X\nexit {rc}\n")
    path.chmod(0o755)
    return str(path)


def test_probes_once_then_reads_the_cache(tmp_path: Path) -> None:
    qemu = _fake_qemu(tmp_path, HELP)
    want = frozenset({"virtio-blk-pci", "pc-dimm", "virtio-mem-pci"})
    assert qemu_devices(qemu, str(tmp_path / "cache")) == want
    assert (tmp_path / "cache" / CACHE_NAME).exists()
    st = os.stat(qemu)
    _fake_qemu(tmp_path, "", rc=1)       # a probe now would fail...
    os.truncate(qemu, st.st_size)        # ...but the key (size, mtime) is unchanged
    os.utime(qemu, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert qemu_devices(qemu, str(tmp_path / "cache")) == want


def test_a_changed_binary_is_probed_again(tmp_path: Path) -> None:
    qemu = _fake_qemu(tmp_path, HELP)
    qemu_devices(qemu, str(tmp_path))
    _fake_qemu(tmp_path, 'name "virtio-mem-ccw", bus virtio-bus\n')
    assert qemu_devices(qemu, str(tmp_path)) == frozenset({"virtio-mem-ccw"})


def test_unwritable_cache_only_costs_a_probe(tmp_path: Path) -> None:
    qemu = _fake_qemu(tmp_path, HELP)
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert "pc-dimm" in qemu_devices(qemu, str(blocker / "cache"))


@pytest.mark.parametrize(("make", "match"), [
    (lambda p: str(p / "missing"), r"missing'.*No such file"),
    (lambda p: _fake_qemu(p, "", rc=3), r"-device help` failed: exit 3"),
], ids=["missing", "fails"])
def test_probe_errors_name_the_binary(tmp_path: Path, make: object, match: str) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    with pytest.raises(HostError, match=match):
        qemu_devices(path, str(tmp_path))
