"""The builder's cache check and atomic switch-over, on fake generations (no apt)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from pykata.domain.errors import ImageError
from pykata.image.builder import (
    BuildOptions,
    build_image,
    cached_manifest,
    commit_generation,
    remove_stale,
)
from pykata.image.files import sha256_file
from pykata.image.manifest import BUILDER_VERSION, FileInfo, Manifest, image_paths


def fake_build(dir: Path, name: str, initrd: bytes = b"initrd") -> tuple[Path, Manifest]:
    """A finished `store/.build-<name>` as build_image leaves it before committing."""
    build = dir / "store" / f".build-{name}"
    (build / "image").mkdir(parents=True)
    (build / "busybox/bin").mkdir(parents=True)
    (build / "busybox/bin/busybox").write_bytes(b"bb")
    (build / "image/vmlinuz").write_bytes(b"kernel")
    (build / "image/initramfs.img").write_bytes(initrd)
    (build / "image/rootfs.img").write_bytes(b"rootfs")
    (build / "image/initramfs-dax.img").write_bytes(b"mount")
    m = Manifest(
        inputs_hash=name * 8, builder_version=BUILDER_VERSION, kernel_version="6.1",
        packages=(), modules=(), oci_runtime="crun", compression="none",
        vmlinuz=FileInfo(6, sha256_file(build / "image/vmlinuz")),
        initramfs=FileInfo(len(initrd), sha256_file(build / "image/initramfs.img")),
        rootfs=FileInfo(6, sha256_file(build / "image/rootfs.img")),
        dax_initramfs=FileInfo(5, sha256_file(build / "image/initramfs-dax.img")),
        build_time="2025-01-01T00:00:00+00:00", build_seconds=1.0)
    (build / "image/manifest.json").write_text(m.to_json())
    return build, m


def test_commit_switches_links_and_drops_old_generation(tmp_path: Path) -> None:
    first, m1 = fake_build(tmp_path, "aaaa")
    commit_generation(tmp_path, first)
    assert cached_manifest(tmp_path, m1.inputs_hash) == m1
    second, m2 = fake_build(tmp_path, "bbbb", b"initrd-2")
    commit_generation(tmp_path, second)
    paths = image_paths(tmp_path)
    assert paths.initrd.read_bytes() == b"initrd-2"
    assert (paths.busybox_rootfs / "bin/busybox").is_file()
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == ["gen-bbbb"]
    assert cached_manifest(tmp_path, m1.inputs_hash) is None
    assert cached_manifest(tmp_path, m2.inputs_hash) == m2


def test_remove_stale_keeps_the_live_generation(tmp_path: Path) -> None:
    build, _ = fake_build(tmp_path, "aaaa")
    commit_generation(tmp_path, build)
    (tmp_path / "store/.build-killed/work").mkdir(parents=True)
    (tmp_path / "store/gen-orphan").mkdir()
    remove_stale(tmp_path)
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == ["gen-aaaa"]


@pytest.mark.parametrize("damage", ["truncate", "flip", "remove-rootfs", "bad-manifest"])
def test_cached_manifest_rejects_damaged_images(tmp_path: Path, damage: str) -> None:
    build, m = fake_build(tmp_path, "aaaa")
    commit_generation(tmp_path, build)
    paths = image_paths(tmp_path)
    if damage == "truncate":
        paths.initrd.write_bytes(b"init")
    elif damage == "flip":
        paths.initrd.write_bytes(b"INITRD")
    elif damage == "remove-rootfs":
        (paths.busybox_rootfs / "bin/busybox").unlink()
    else:
        paths.manifest.write_text("{")
    assert cached_manifest(tmp_path, m.inputs_hash) is None


@pytest.mark.parametrize(("opts", "message"), [
    (BuildOptions(oci_runtime="youki"), "oci_runtime 'youki'"),
    (BuildOptions(compression="xz"), "compression 'xz'"),
    (BuildOptions(modules=()), "modules"),
], ids=["runtime", "compression", "no-modules"])
def test_bad_options_fail_before_any_work(tmp_path: Path, opts: BuildOptions,
                                          message: str) -> None:
    with pytest.raises(ImageError, match=message):
        build_image(replace(opts, dir=tmp_path), lambda _: None)
    assert not any(tmp_path.iterdir())
