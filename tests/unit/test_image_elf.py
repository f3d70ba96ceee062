"""ELF reading (DT_NEEDED, PT_INTERP, .modinfo) from small synthetic ELF64 files."""

from __future__ import annotations

import struct

import pytest

from pykata.domain.errors import ImageError
from pykata.image import elf

_BASE = 0x400000


def _ehdr(phnum: int, shoff: int = 0, shnum: int = 0, shstrndx: int = 0) -> bytes:
    ident = b"\x7fELF" + bytes([2, 1, 1]) + b"\0" * 9
    return struct.pack("<16sHHIQQQIHHHHHH", ident, 3, 62, 1, 0, 64 if phnum else 0, shoff,
                       0, 64, 56, phnum, 64, shnum, shstrndx)


def dynamic_elf(needed: list[str], interp: str | None = None) -> bytes:
    """ehdr | phdrs (LOAD, DYNAMIC[, INTERP]) | strtab | dynamic | interp."""
    phnum = 3 if interp else 2
    strtab = b"\0"
    name_offsets = []
    for n in needed:
        name_offsets.append(len(strtab))
        strtab += n.encode() + b"\0"
    strtab_off = 64 + 56 * phnum
    dyn_off = strtab_off + len(strtab)
    entries = [(1, o) for o in name_offsets] + [(5, _BASE + strtab_off), (0, 0)]
    dynamic = b"".join(struct.pack("<qQ", t, v) for t, v in entries)
    interp_off = dyn_off + len(dynamic)
    interp_bytes = interp.encode() + b"\0" if interp else b""
    total = interp_off + len(interp_bytes)
    phdrs = [struct.pack("<IIQQQQQQ", 1, 5, 0, _BASE, _BASE, total, total, 0x1000),
             struct.pack("<IIQQQQQQ", 2, 6, dyn_off, _BASE + dyn_off, 0, len(dynamic),
                         len(dynamic), 8)]
    if interp:
        phdrs.append(struct.pack("<IIQQQQQQ", 3, 4, interp_off, _BASE + interp_off, 0,
                                 len(interp_bytes), len(interp_bytes), 1))
    return _ehdr(phnum) + b"".join(phdrs) + strtab + dynamic + interp_bytes


def module_elf(modinfo: list[str]) -> bytes:
    """A relocatable object: ehdr | .modinfo | .shstrtab | section headers."""
    info = b"".join(s.encode() + b"\0" for s in modinfo)
    shstr = b"\0.modinfo\0.shstrtab\0"
    info_off, shstr_off = 64, 64 + len(info)
    shoff = shstr_off + len(shstr)
    shdrs = [b"\0" * 64,
             struct.pack("<IIQQQQIIQQ", 1, 1, 2, 0, info_off, len(info), 0, 0, 1, 0),
             struct.pack("<IIQQQQIIQQ", 10, 3, 0, 0, shstr_off, len(shstr), 0, 0, 1, 0)]
    return _ehdr(0, shoff, 3, 2) + info + shstr + b"".join(shdrs)


@pytest.mark.parametrize(("needed", "interp"), [
    (["libc.so.6"], "/lib64/ld-linux-x86-64.so.2"),
    (["libsystemd.so.0", "libseccomp.so.2", "libc.so.6"], "/lib64/ld-linux-x86-64.so.2"),
    (["ld-linux-x86-64.so.2"], None),
    ([], None),
], ids=["one", "order-kept", "shared-lib-no-interp", "no-needed"])
def test_needed_and_interpreter(needed: list[str], interp: str | None) -> None:
    data = dynamic_elf(needed, interp)
    assert elf.is_elf(data)
    assert elf.needed(data) == tuple(needed)
    assert elf.interpreter(data) == interp


def test_static_file_needs_nothing() -> None:
    data = _ehdr(0)
    assert elf.needed(data) == ()
    assert elf.interpreter(data) is None


@pytest.mark.parametrize(("data", "message"), [
    (b"#!/bin/sh\n" + b"\0" * 64, "not an ELF file"),
    (b"\x7fELF", "not an ELF file"),
    (b"\x7fELF" + bytes([1, 1, 1]) + b"\0" * 60, "not a little-endian ELF64"),
], ids=["script", "truncated", "elf32"])
def test_rejects_non_elf64(data: bytes, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        elf.needed(data, "x")


@pytest.mark.parametrize(("strings", "depends"), [
    (["license=GPL", "depends=virtio_ring,virtio,virtio_pci_modern_dev", "name=virtio_pci"],
     ("virtio_ring", "virtio", "virtio_pci_modern_dev")),
    (["license=GPL", "depends=", "name=overlay"], ()),
    (["name=fuse"], ()),
], ids=["several", "empty", "absent"])
def test_module_depends(strings: list[str], depends: tuple[str, ...]) -> None:
    data = module_elf(strings)
    assert elf.module_depends(data) == depends
    assert elf.modinfo(data)["name"] == [strings[-1].split("=")[1]]


def test_section_lookup_and_missing_modinfo() -> None:
    data = module_elf(["a=1"])
    assert elf.section(data, ".modinfo") == b"a=1\0"
    assert elf.section(data, ".text") is None
    with pytest.raises(ImageError, match="no .modinfo"):
        elf.modinfo(dynamic_elf(["libc.so.6"]), "virtio.ko")
