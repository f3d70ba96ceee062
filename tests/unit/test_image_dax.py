"""The DAX guest image: its info block, the ext4 behind it, the tiny initramfs's script, and
the plan's choice between it and the initramfs root."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path
from typing import Any

import pytest

from pykata.domain.config import build_config
from pykata.domain.errors import ConfigError, ImageError
from pykata.domain.host import HostFacts
from pykata.image import dax
from pykata.plan.arch import plan_arch
from pykata.plan.pci import Passthrough
from pykata.plan.vm import dma_params, plan_guest_image, plan_qemu_argv, plan_vm

MIB = 1 << 20
IMAGE = 128 * MIB
FACTS = HostFacts(frozenset(), False, "", False, online_cpus=4, mem_total_mib=16384)
DEVICES = frozenset({"pc-dimm", "virtio-mem-pci", "virtio-pmem-pci"})
BUILT = "/var/lib/pykata/image"


def test_fletcher64_sums_words_and_sums_of_sums() -> None:
    words = struct.pack("<3I", 1, 2, 0xFFFFFFFF)
    # running sums 1, 3, 2 (wrapped); sums of sums 1 + 3 + 2
    assert dax.fletcher64(words) == (6 << 32) | 2
    assert dax.fletcher64(bytes(4096)) == 0


def test_the_info_block_is_what_libnvdimm_validates() -> None:
    ident = bytes(range(16))
    block = dax.pfn_info_block(IMAGE, ident)
    assert len(block) == 4096
    (sig, uuid, parent, flags, major, minor, dataoff, npfns, mode, start_pad, end_trunc,
     align, page_size, struct_page) = struct.unpack_from("<16s16s16sIHHQQIIIIIH", block)
    assert sig == b"NVDIMM_PFN_INFO\0" and uuid == ident and parent == bytes(16)
    assert (flags, major, minor, mode) == (0, 1, 4, dax.PFN_MODE_RAM)
    assert (dataoff, align, start_pad, end_trunc) == (2 * MIB, 2 * MIB, 0, 0)
    assert npfns == (IMAGE - 2 * MIB) // 4096
    assert (page_size, struct_page) == (4096, 64)
    (checksum,) = struct.unpack_from("<Q", block, 4088)
    assert checksum == dax.fletcher64(block[:4088] + bytes(8))


@pytest.mark.parametrize("size", [0, 2 * MIB, 130 * MIB])
def test_the_info_block_refuses_sizes_the_guest_cannot_map(size: int) -> None:
    with pytest.raises(ImageError, match=f"DAX image size {size}"):
        dax.pfn_info_block(size, bytes(16))


def test_kernel_config_check_names_what_is_missing() -> None:
    config = ("CONFIG_FS_DAX=y\nCONFIG_ZONE_DEVICE=y\nCONFIG_EXT4_FS=m\n"
              "# CONFIG_NVDIMM_PFN is not set\n")
    assert dax.missing_kernel_config(config) == ["CONFIG_EXT4_FS", "CONFIG_NVDIMM_PFN"]
    full = "".join(f"{opt}=y\n" for opt in dax.KERNEL_CONFIG)
    assert dax.missing_kernel_config(full) == []


@pytest.mark.skipif(shutil.which("mkfs.ext4") is None, reason="mkfs.ext4 is not installed")
def test_the_image_is_an_ext4_behind_the_info_block(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/hello").write_text("hello\n")
    (root / "bin").symlink_to("usr/bin")
    out = tmp_path / "rootfs.img"
    size = dax.write_rootfs_image(root, out, bytes(16))
    assert size == out.stat().st_size == 128 * MIB
    data = out.read_bytes()
    assert data[4096:4112] == b"NVDIMM_PFN_INFO\0"
    assert data[:4096] == bytes(4096)
    # ext4's superblock sits 1024 bytes into the filesystem; its magic 56 bytes into that
    assert struct.unpack_from("<H", data, 2 * MIB + 1024 + 56)[0] == 0xEF53
    assert dax.pfn_info_block(size, bytes(16)) == data[4096:8192]


def test_the_mount_script_loads_mounts_with_dax_and_switches() -> None:
    script = dax.mount_script(["virtio_pci", "virtio_pmem"])
    assert script.startswith("#!/bin/busybox sh\n")
    assert script.index("modprobe -a virtio_pci virtio_pmem") < script.index("/newroot")
    assert "-o ro,noatime,dax=always /dev/pmem0 /newroot" in script
    assert "mount --move /dev /newroot/dev" in script
    assert script.rstrip().endswith("exec $bb switch_root /newroot /init")


def test_the_tiny_initramfs_has_the_modules_and_their_dep_file(tmp_path: Path) -> None:
    busybox, a, b = (tmp_path / n for n in ("busybox", "a.ko", "b.ko"))
    for f in (busybox, a, b):
        f.write_bytes(f.name.encode())
    entries = {e.path: e for e in dax.mount_initramfs(
        busybox, "6.1.0-x", [("a", a), ("b", b)], {"a": (), "b": ("a",)}, (), "floor")}
    where = "lib/modules/6.1.0-x"
    assert entries[f"{where}/b.ko"].data == b"b.ko"
    assert entries[f"{where}/modules.dep"].data == b"a.ko:\nb.ko: a.ko\n"
    assert entries["init"].data.startswith(b"#!/bin/busybox sh")
    assert entries["pykata-floor"].data == b"floor"
    paths = list(entries)
    assert paths.index(where) < paths.index(f"{where}/a.ko")  # directories first


def _cfg(qemu: dict[str, Any] | None = None) -> Any:
    return build_config([("t", {"hypervisor": {"qemu": qemu or {}}})])


def _guest(qemu: dict[str, Any] | None = None, devices: frozenset[str] = DEVICES,
           size: int = IMAGE, arch: str = "x86_64") -> Any:
    binary = "/usr/bin/qemu-system-aarch64" if arch == "aarch64" else "/usr/bin/q"
    return plan_guest_image(_cfg(qemu), plan_arch(binary, arch), devices, size)


def test_the_default_root_is_the_built_dax_image() -> None:
    g = _guest()
    assert (g.kernel, g.initrd, g.image, g.image_bytes) == (
        f"{BUILT}/vmlinuz", f"{BUILT}/initramfs-dax.img", f"{BUILT}/rootfs.img", IMAGE)


@pytest.mark.parametrize(("kw", "why"), [
    ({"devices": frozenset({"pc-dimm"})}, "QEMU has no virtio-pmem-pci"),
    ({"size": 0}, "rootfs.img cannot be read"),
    ({"size": 58 * MIB}, "not a multiple of 128 MiB"),
    ({"arch": "aarch64"}, "aarch64 guests here have no virtio-pmem"),
])
def test_the_built_image_falls_back_to_its_initramfs(kw: dict[str, Any], why: str) -> None:
    g = _guest(**kw)
    assert (g.initrd, g.image) == (f"{BUILT}/initramfs.img", "")
    assert why in g.reason


def test_a_configured_initrd_is_the_initramfs_layout() -> None:
    g = _guest({"initrd": "/srv/initrd.img"})
    assert (g.initrd, g.image, g.image_bytes) == ("/srv/initrd.img", "", 0)


@pytest.mark.parametrize(("qemu", "kw", "why"), [
    ({"image": "/srv/r.img", "initrd": "/srv/i.img"}, {}, "set either image or initrd"),
    ({"image": "/srv/r.img"}, {"size": 0}, "/srv/r.img cannot be read"),
    ({"image": "/srv/a,b.img"}, {}, "comma"),
])
def test_a_configured_image_that_cannot_serve_is_an_error(qemu: dict[str, Any],
                                                           kw: dict[str, Any], why: str) -> None:
    with pytest.raises(ConfigError, match="hypervisor.qemu.image") as err:
        _guest(qemu, **kw)
    assert why in str(err.value)


def _argv(qemu: dict[str, Any] | None = None, devices: frozenset[str] = DEVICES) -> list[str]:
    vm = plan_vm(_cfg(qemu), FACTS, "sb", "/run/p/sb", devices=devices, image_bytes=IMAGE)
    return plan_qemu_argv(vm, 3, 4)


def test_the_image_is_mapped_read_only_and_shared_before_the_memory_devices() -> None:
    argv = _argv()
    backend = (f"memory-backend-file,id=image0,mem-path={BUILT}/rootfs.img,size={IMAGE},"
               "share=on,readonly=on")
    assert argv[argv.index(backend) - 1] == "-object"
    pmem = argv.index("virtio-pmem-pci,memdev=image0,id=pmem0")
    assert all(pmem < i for i, a in enumerate(argv) if a.startswith("virtio-mem-pci"))
    assert argv[argv.index("-initrd") + 1] == f"{BUILT}/initramfs-dax.img"
    # maxmem: the hotplug headroom plus the image's 128 MiB
    no_image = plan_qemu_argv(plan_vm(_cfg(), FACTS, "sb", "/run/p/sb", devices=DEVICES), 3, 4)
    assert "virtio-pmem-pci" not in " ".join(no_image)
    assert _maxmem(argv) - _maxmem(no_image) == 128


def _maxmem(argv: list[str]) -> int:
    return int(argv[argv.index("-m") + 1].split("maxmem=")[1].removesuffix("M"))


def test_a_statically_sized_vm_gets_room_for_the_image_only() -> None:
    vm = plan_vm(_cfg(), FACTS, "sb", "/run/p/sb", image_bytes=IMAGE)
    argv = plan_qemu_argv(vm, 3, 4)
    assert argv[argv.index("-m") + 1] == f"{vm.memory_mib}M,slots=0,maxmem={vm.memory_mib + 128}M"
    assert "virtio-pmem-pci,memdev=image0,id=pmem0" in argv


def test_no_bounce_buffer_unless_a_device_is_passed_through() -> None:
    x86 = plan_arch("/usr/bin/qemu-system-x86_64", "x86_64")
    assert dma_params(x86, ()) == ("swiotlb=noforce",)
    assert dma_params(x86, [Passthrough("0000:3b:00.0", 0, "rp-vfio0", None)]) == ()
    assert dma_params(plan_arch("/usr/bin/qemu-system-aarch64", "aarch64"), ()) == ()
