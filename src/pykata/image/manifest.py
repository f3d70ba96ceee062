"""What a built image is: the manifest, its JSON form, the cache key, where files live.

Pure apart from `read_manifest`, which reads one file. The cache key (`inputs_hash`)
covers everything that changes the image's bytes: package versions, the agent sources,
builder options and the builder's own version. Building is builder.py's job.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pykata.domain.errors import ImageError

BUILDER_VERSION = "7"


@dataclass(frozen=True)
class ImagePaths:
    kernel: Path
    initrd: Path
    rootfs: Path  # the DAX image
    dax_initrd: Path  # the tiny initramfs that mounts it
    manifest: Path
    busybox_rootfs: Path


def image_paths(dir: Path) -> ImagePaths:
    image = dir / "image"
    return ImagePaths(kernel=image / "vmlinuz", initrd=image / "initramfs.img",
                      rootfs=image / "rootfs.img", dax_initrd=image / "initramfs-dax.img",
                      manifest=image / "manifest.json", busybox_rootfs=dir / "rootfs/busybox")


@dataclass(frozen=True)
class FileInfo:
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    inputs_hash: str
    builder_version: str
    kernel_version: str
    packages: tuple[tuple[str, str], ...]  # (name, version), sorted by name
    modules: tuple[str, ...]  # guest paths, load order
    oci_runtime: str  # "crun" | "runc"
    compression: str  # "none" | "gzip" | "zstd"
    vmlinuz: FileInfo
    initramfs: FileInfo
    rootfs: FileInfo
    dax_initramfs: FileInfo
    build_time: str  # ISO 8601, UTC
    build_seconds: float

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        try:
            d = json.loads(text)
            return cls(
                inputs_hash=str(d["inputs_hash"]), builder_version=str(d["builder_version"]),
                kernel_version=str(d["kernel_version"]),
                packages=tuple((str(n), str(v)) for n, v in d["packages"]),
                modules=tuple(str(m) for m in d["modules"]),
                oci_runtime=str(d["oci_runtime"]), compression=str(d["compression"]),
                vmlinuz=_file_info(d["vmlinuz"]), initramfs=_file_info(d["initramfs"]),
                rootfs=_file_info(d["rootfs"]), dax_initramfs=_file_info(d["dax_initramfs"]),
                build_time=str(d["build_time"]), build_seconds=float(d["build_seconds"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ImageError(f"malformed image manifest: {exc!r}") from exc


def _file_info(d: Any) -> FileInfo:
    return FileInfo(size=int(d["size"]), sha256=str(d["sha256"]))


def read_manifest(dir: Path) -> Manifest | None:
    """The manifest of the image under `dir`, or None when there is none."""
    path = image_paths(dir).manifest
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ImageError(f"{path}: {exc.strerror}") from exc
    try:
        return Manifest.from_json(text)
    except ImageError as exc:
        raise ImageError(f"{path}: {exc}") from exc


def inputs_hash(packages: Mapping[str, str], agent_files: Mapping[str, str],
                options: Mapping[str, object], builder_version: str = BUILDER_VERSION) -> str:
    """sha256 over a canonical JSON of everything the image is made from.

    `agent_files` maps relative path -> sha256 of its contents.
    """
    doc = {"builder_version": builder_version, "packages": sorted(packages.items()),
           "agent_files": sorted(agent_files.items()), "options": dict(sorted(options.items()))}
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def format_info(m: Manifest) -> str:
    """Human text for `pykata image info`."""
    lines = [
        f"kernel:       {m.kernel_version}  ({_mib(m.vmlinuz.size)}, "
        f"sha256 {m.vmlinuz.sha256[:16]})",
        f"initramfs:    {_mib(m.initramfs.size)}, compression {m.compression}, "
        f"sha256 {m.initramfs.sha256[:16]}",
        f"dax image:    {_mib(m.rootfs.size)} (rootfs.img, ext4 on virtio-pmem), "
        f"sha256 {m.rootfs.sha256[:16]}",
        f"dax initrd:   {_mib(m.dax_initramfs.size)} (initramfs-dax.img, mounts it), "
        f"sha256 {m.dax_initramfs.sha256[:16]}",
        f"oci runtime:  {m.oci_runtime}",
        f"built:        {m.build_time} in {m.build_seconds:.1f} s "
        f"(builder {m.builder_version})",
        f"inputs hash:  {m.inputs_hash[:16]}",
        f"modules ({len(m.modules)}):",
        *(f"  {mod}" for mod in m.modules),
        f"packages ({len(m.packages)}):",
        *(f"  {name} {ver}" for name, ver in m.packages),
    ]
    return "\n".join(lines) + "\n"
