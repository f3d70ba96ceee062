"""The DAX guest image: a read-only ext4 filesystem behind an fsdax info block, and the tiny
initramfs that mounts it.

`rootfs.img` is what QEMU maps read-only and shared into every guest (virtio-pmem). Its
layout, so that the guest's libnvdimm makes /dev/pmem0 a DAX-capable device of its own
accord, with no write to the (read-only, shared) image:

    [0, 4 KiB)          zeros
    [4 KiB, 8 KiB)      the pfn info block ("NVDIMM_PFN_INFO"), mode RAM: the guest keeps
                        the image's struct pages in its own RAM (64 bytes per 4 KiB page)
    [8 KiB, 2 MiB)      zeros
    [2 MiB, end)        ext4 with 4 KiB blocks (DAX needs the page size) and no journal

The image's size is a multiple of the guest's 128 MiB memory block (the zeros after the
filesystem are sparse): a DIMM hot-plugged after it must not share a block with it.
`pfn_info_block` is pure; `write_rootfs_image` runs mkfs.ext4.
"""

from __future__ import annotations

import os
import struct
import subprocess
import uuid
from collections.abc import Sequence
from pathlib import Path

from pykata.domain.contract import DAX_IMAGE_ALIGN
from pykata.domain.errors import ImageError
from pykata.image import kmod
from pykata.image.cpio import Entry, dir_entry, file_entry

MIB = 1 << 20
DATA_OFFSET = 2 * MIB  # where the filesystem starts; also the mapping's alignment
INFO_OFFSET = 4096
INFO_SIZE = 4096
PAGE = 4096
PFN_SIGNATURE = b"NVDIMM_PFN_INFO\0"
PFN_MODE_RAM = 1
# signature, uuid, parent_uuid, flags, version major/minor, dataoff, npfns, mode,
# start_pad, end_trunc, align, page_size, page_struct_size; then padding; checksum last.
_INFO = struct.Struct("<16s16s16sIHHQQIIIIIH")
_VERSION = (1, 4)
_STRUCT_PAGE = 64
# What the guest kernel must have, checked against its config when the image is built.
KERNEL_CONFIG = ("CONFIG_FS_DAX", "CONFIG_ZONE_DEVICE", "CONFIG_EXT4_FS", "CONFIG_NVDIMM_PFN")
# The drivers the tiny initramfs loads: the virtio PCI transport and virtio-pmem.
MOUNT_MODULES = ("virtio_pci", "virtio_pmem", "nd_pmem")


def fletcher64(data: bytes) -> int:
    """libnvdimm's info-block checksum: over little-endian 32-bit words, a 32-bit running
    sum (wrapping) and a 64-bit sum of sums; the result is sums << 32 | sum, in 64 bits."""
    lo, hi = 0, 0
    for (word,) in struct.iter_unpack("<I", data):
        lo = (lo + word) & 0xFFFFFFFF
        hi += lo
    return ((hi << 32) | lo) & 0xFFFFFFFFFFFFFFFF


def pfn_info_block(image_size: int, ident: bytes) -> bytes:
    """The 4 KiB info block for an image of `image_size` bytes. A raw namespace has a zero
    parent uuid; `ident` (16 bytes) names this info block."""
    if image_size % DAX_IMAGE_ALIGN or not image_size:
        raise ImageError(f"DAX image size {image_size}: expected a multiple of "
                         f"{DAX_IMAGE_ALIGN >> 20} MiB")
    npfns = (image_size - DATA_OFFSET) // PAGE
    head = _INFO.pack(PFN_SIGNATURE, ident, bytes(16), 0, *_VERSION, DATA_OFFSET, npfns,
                      PFN_MODE_RAM, 0, 0, DATA_OFFSET, PAGE, _STRUCT_PAGE)
    body = head + bytes(INFO_SIZE - 8 - len(head))
    return body + struct.pack("<Q", fletcher64(body + bytes(8)))


def missing_kernel_config(config_text: str) -> list[str]:
    """The KERNEL_CONFIG options the kernel's config file does not set to y."""
    have = {line.partition("=")[0] for line in config_text.splitlines()
            if line.endswith("=y")}
    return [opt for opt in KERNEL_CONFIG if opt not in have]


def filesystem_size(root: Path) -> tuple[int, int]:
    """(bytes, inodes) for an ext4 holding `root`: every file rounded up to a block, a
    block per directory, 256-byte inodes, a quarter more for ext4's own metadata."""
    blocks, inodes = 0, 16
    for dirpath, dirnames, filenames in os.walk(root):
        blocks += 1
        inodes += 1 + len(filenames)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                blocks += -(-os.path.getsize(path) // PAGE)
        inodes += sum(1 for d in dirnames if os.path.islink(os.path.join(dirpath, d)))
    size = blocks * PAGE + inodes * 256
    return size + size // 4 + 4 * MIB, inodes + inodes // 8


def write_rootfs_image(root: Path, out: Path, ident: bytes) -> int:
    """Write `root` as the DAX image `out`; returns its size."""
    fs_size, inodes = filesystem_size(root)
    total = -(-(DATA_OFFSET + fs_size) // DAX_IMAGE_ALIGN) * DAX_IMAGE_ALIGN
    with out.open("wb") as f:
        f.truncate(total)
    cmd = ["mkfs.ext4", "-q", "-F", "-b", str(PAGE), "-m", "0", "-N", str(inodes),
           "-O", "^has_journal,^resize_inode", "-L", "pykata-root",
           "-U", str(uuid.UUID(bytes=ident)),
           "-E", f"offset={DATA_OFFSET},root_owner=0:0,lazy_itable_init=0",
           "-d", str(root), str(out), str((total - DATA_OFFSET) // PAGE)]
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise ImageError("mkfs.ext4 is missing: apt-get install e2fsprogs") from exc
    except subprocess.CalledProcessError as exc:
        raise ImageError(f"mkfs.ext4 of the DAX image failed: {exc.stderr.strip()}") from exc
    with out.open("r+b") as f:
        f.seek(INFO_OFFSET)
        f.write(pfn_info_block(total, ident))
    return total


def mount_initramfs(busybox: Path, version: str, modules: list[tuple[str, Path]],
                    depends: dict[str, tuple[str, ...]], extra: tuple[Entry, ...],
                    floor: str) -> list[Entry]:
    """The tiny initramfs's entries: busybox, the modules with a modules.dep (one busybox
    modprobe loads them all: under TCG every process costs milliseconds), /init, and the
    benchmarks' /pykata-floor (`floor`: a script that powers off at once)."""
    files = {name: f"{name}.ko" for name, _ in modules}
    dep, _ = kmod.depmod_files(files, depends, {})
    where = f"lib/modules/{version}"
    return [*(dir_entry(d) for d in ("bin", "dev", "lib", "lib/modules", where, "newroot",
                                     "proc", "sys")),
            file_entry("bin/busybox", busybox.read_bytes(), 0o755),
            *(file_entry(f"{where}/{files[name]}", ko.read_bytes()) for name, ko in modules),
            file_entry(f"{where}/modules.dep", dep.encode()),
            file_entry("init", mount_script(MOUNT_MODULES).encode(), 0o755),
            file_entry("pykata-floor", floor.encode(), 0o755), *extra]


def mount_script(modules: Sequence[str]) -> str:
    """The tiny initramfs's /init: load the pmem drivers, mount the image read-only with
    DAX (without, and say so, where the device cannot do DAX), then switch to its /init.
    /dev moves with it: Python reads /dev/urandom before the agent mounts anything."""
    return f"""#!/bin/busybox sh
# pykata: mount the DAX guest image (virtio-pmem, /dev/pmem0) and switch to it.
bb=/bin/busybox
say() {{ echo "pykata-init: $*" > /dev/console; }}
fail() {{ say "$*"; $bb poweroff -f; }}
$bb mount -t devtmpfs -o nosuid,mode=0755 devtmpfs /dev
$bb mount -t proc proc /proc
$bb modprobe -a {' '.join(modules)} || say "modprobe {' '.join(modules)} failed"
$bb umount /proc
i=0
while [ ! -b /dev/pmem0 ]; do
  i=$((i + 1)); [ $i -gt 1000 ] && fail "no /dev/pmem0 after 10 s"
  $bb usleep 10000
done
$bb mount -t ext4 -o ro,noatime,dax=always /dev/pmem0 /newroot \\
  || {{ say "DAX unavailable: the image is read through the page cache"; \\
       $bb mount -t ext4 -o ro,noatime /dev/pmem0 /newroot; }} \\
  || fail "cannot mount /dev/pmem0"
$bb mount --move /dev /newroot/dev || fail "cannot move /dev"
exec $bb switch_root /newroot /init
"""
