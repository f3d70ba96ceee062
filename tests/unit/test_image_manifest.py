"""Manifest JSON, the inputs hash, image paths and the info text."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from pykata.domain.errors import ImageError
from pykata.image.manifest import (
    FileInfo,
    Manifest,
    format_info,
    image_paths,
    inputs_hash,
    read_manifest,
)

M = Manifest(
    inputs_hash="ab" * 32, builder_version="1", kernel_version="6.1.0-56-cloud-amd64",
    packages=(("busybox-static", "1:1.35.0-4"), ("crun", "1.8.1-1")),
    modules=("/lib/modules/6.1.0-56-cloud-amd64/virtio.ko",
             "/lib/modules/6.1.0-56-cloud-amd64/virtio_pci.ko"),
    oci_runtime="crun", compression="none", vmlinuz=FileInfo(100, "11" * 32),
    initramfs=FileInfo(3 << 20, "22" * 32), rootfs=FileInfo(58 << 20, "33" * 32),
    dax_initramfs=FileInfo(2 << 20, "44" * 32), build_time="2025-01-01T00:00:00+00:00",
    build_seconds=6.5)


def test_json_round_trip() -> None:
    assert Manifest.from_json(M.to_json()) == M


@pytest.mark.parametrize("text", ["{", "[]", '{"inputs_hash": "x"}'],
                         ids=["bad-json", "not-object", "missing-keys"])
def test_from_json_malformed(text: str) -> None:
    with pytest.raises(ImageError, match="malformed image manifest"):
        Manifest.from_json(text)


def test_read_manifest(tmp_path: Path) -> None:
    assert read_manifest(tmp_path) is None
    paths = image_paths(tmp_path)
    paths.manifest.parent.mkdir(parents=True)
    paths.manifest.write_text(M.to_json())
    assert read_manifest(tmp_path) == M
    paths.manifest.write_text("junk")
    with pytest.raises(ImageError, match="manifest.json"):
        read_manifest(tmp_path)


def test_image_paths() -> None:
    p = image_paths(Path("/var/lib/pykata"))
    assert p.kernel == Path("/var/lib/pykata/image/vmlinuz")
    assert p.initrd == Path("/var/lib/pykata/image/initramfs.img")
    assert p.manifest == Path("/var/lib/pykata/image/manifest.json")
    assert p.busybox_rootfs == Path("/var/lib/pykata/rootfs/busybox")


BASE = ({"crun": "1.8.1-1", "libc6": "2.36-9"}, {"agent/main.py": "aa"},
        {"compression": "none", "modules": ["virtio_pci"]}, "1")


@pytest.mark.parametrize("changed", [
    ({"crun": "1.8.1-2", "libc6": "2.36-9"}, *BASE[1:]),
    (BASE[0], {"agent/main.py": "ab"}, *BASE[2:]),
    (*BASE[:2], {"compression": "zstd", "modules": ["virtio_pci"]}, BASE[3]),
    (*BASE[:3], "2"),
], ids=["package-version", "agent-file", "option", "builder-version"])
def test_inputs_hash_changes_with_each_input(changed: tuple[object, ...]) -> None:
    assert inputs_hash(*BASE) != inputs_hash(*changed)  # type: ignore[arg-type]


def test_inputs_hash_ignores_mapping_order() -> None:
    reordered = ({"libc6": "2.36-9", "crun": "1.8.1-1"}, *BASE[1:])
    assert inputs_hash(*BASE) == inputs_hash(*reordered)
    assert len(inputs_hash(*BASE)) == 64


def test_format_info() -> None:
    text = format_info(replace(M, compression="zstd"))
    assert "6.1.0-56-cloud-amd64" in text
    assert "3.0 MiB, compression zstd" in text
    assert "  /lib/modules/6.1.0-56-cloud-amd64/virtio_pci.ko" in text
    assert "  crun 1.8.1-1" in text
