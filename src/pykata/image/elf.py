"""A tiny ELF64 reader: DT_NEEDED, PT_INTERP and a kernel module's .modinfo strings.

Works on bytes only (pure): the caller reads the file. It understands just enough of
little-endian ELF64 (x86_64) for the image builder and raises ImageError for anything else;
it must not grow into a general ELF library.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pykata.domain.errors import ImageError

ELF_MAGIC = b"\x7fELF"
_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_DYN = struct.Struct("<qQ")
_PT_LOAD, _PT_DYNAMIC, _PT_INTERP = 1, 2, 3
_DT_NULL, _DT_NEEDED, _DT_STRTAB = 0, 1, 5


@dataclass(frozen=True)
class _Header:
    phoff: int
    phnum: int
    shoff: int
    shnum: int
    shstrndx: int


@dataclass(frozen=True)
class _Segment:
    type: int
    offset: int
    vaddr: int
    filesz: int


def is_elf(data: bytes) -> bool:
    return data[:4] == ELF_MAGIC


def _header(data: bytes, what: str) -> _Header:
    if len(data) < _EHDR.size or not is_elf(data):
        raise ImageError(f"{what}: not an ELF file")
    ident = data[:16]
    if ident[4] != 2 or ident[5] != 1:
        raise ImageError(f"{what}: not a little-endian ELF64 file (class {ident[4]})")
    f = _EHDR.unpack_from(data, 0)
    return _Header(phoff=f[5], phnum=f[10], shoff=f[6], shnum=f[12], shstrndx=f[13])


def _segments(data: bytes, h: _Header) -> list[_Segment]:
    out = []
    for i in range(h.phnum):
        p = _PHDR.unpack_from(data, h.phoff + i * _PHDR.size)
        out.append(_Segment(type=p[0], offset=p[2], vaddr=p[3], filesz=p[5]))
    return out


def _cstr(data: bytes, offset: int) -> str:
    end = data.index(b"\0", offset)
    return data[offset:end].decode()


def interpreter(data: bytes, what: str = "ELF") -> str | None:
    """The PT_INTERP path (the dynamic loader), or None for static files."""
    for seg in _segments(data, _header(data, what)):
        if seg.type == _PT_INTERP:
            return data[seg.offset : seg.offset + seg.filesz].rstrip(b"\0").decode()
    return None


def _vaddr_to_offset(segments: list[_Segment], vaddr: int, what: str) -> int:
    for seg in segments:
        if seg.type == _PT_LOAD and seg.vaddr <= vaddr < seg.vaddr + seg.filesz:
            return seg.offset + (vaddr - seg.vaddr)
    raise ImageError(f"{what}: DT_STRTAB address {vaddr:#x} is in no PT_LOAD segment")


def needed(data: bytes, what: str = "ELF") -> tuple[str, ...]:
    """DT_NEEDED sonames in file order; () for static files and relocatable objects.

    Reads the dynamic segment the way the loader does (program headers, not sections),
    so stripped files work too.
    """
    segments = _segments(data, _header(data, what))
    dyn = next((s for s in segments if s.type == _PT_DYNAMIC), None)
    if dyn is None:
        return ()
    entries: list[tuple[int, int]] = []
    for off in range(dyn.offset, dyn.offset + dyn.filesz, _DYN.size):
        tag, val = _DYN.unpack_from(data, off)
        if tag == _DT_NULL:
            break
        entries.append((tag, val))
    strtab = next((v for t, v in entries if t == _DT_STRTAB), None)
    if strtab is None:
        raise ImageError(f"{what}: dynamic segment has no DT_STRTAB")
    base = _vaddr_to_offset(segments, strtab, what)
    return tuple(_cstr(data, base + v) for t, v in entries if t == _DT_NEEDED)


def section(data: bytes, name: str, what: str = "ELF") -> bytes | None:
    """The contents of the named section, or None when there is none."""
    h = _header(data, what)
    if h.shnum == 0:
        return None
    headers = [_SHDR.unpack_from(data, h.shoff + i * _SHDR.size) for i in range(h.shnum)]
    names_off = headers[h.shstrndx][4]
    for sh in headers:
        if _cstr(data, names_off + sh[0]) == name:
            return data[sh[4] : sh[4] + sh[5]]
    return None


def modinfo(data: bytes, what: str = "module") -> dict[str, list[str]]:
    """A kernel module's `key=value` strings from its .modinfo section, grouped by key."""
    raw = section(data, ".modinfo", what)
    if raw is None:
        raise ImageError(f"{what}: no .modinfo section (not a kernel module?)")
    out: dict[str, list[str]] = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.decode(errors="replace").partition("=")
        if sep:
            out.setdefault(key, []).append(value)
    return out


def module_depends(data: bytes, what: str = "module") -> tuple[str, ...]:
    """The module names listed in `depends=` (comma separated, possibly empty)."""
    return split_depends(modinfo(data, what))


def split_depends(info: dict[str, list[str]]) -> tuple[str, ...]:
    return tuple(d for v in info.get("depends", []) for d in v.split(",") if d)
