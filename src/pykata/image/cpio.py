"""The newc ("070701") cpio format the kernel unpacks as an initramfs, written in Python.

Output is deterministic: entries are sorted so that a directory always precedes what it
holds, inode numbers count up from 1, every mtime is fixed and every owner is root.
`CpioWriter` only writes to the stream it is given; `add_tree` is the one function that
reads the file system (a staging directory). It must not compress: see compress.py.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from pykata.domain.errors import ImageError

MAGIC = b"070701"
TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class Entry:
    """One archive member. `path` is relative ("usr/bin/x"); `data` is a symlink's target."""

    path: str
    mode: int  # full st_mode, file type bits included
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def dir_entry(path: str, perm: int = 0o755) -> Entry:
    return Entry(path, stat.S_IFDIR | perm)


def file_entry(path: str, data: bytes, perm: int = 0o644) -> Entry:
    return Entry(path, stat.S_IFREG | perm, data)


def symlink_entry(path: str, target: str) -> Entry:
    return Entry(path, stat.S_IFLNK | 0o777, target.encode())


def chardev_entry(path: str, major: int, minor: int, perm: int = 0o600) -> Entry:
    return Entry(path, stat.S_IFCHR | perm, rdev=(major, minor))


def sort_key(path: str) -> tuple[str, ...]:
    """Parents sort before children ("a" < "a/b" < "a-b" would break a plain string sort)."""
    return PurePosixPath(path).parts


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


def header(entry: Entry, ino: int, mtime: int) -> bytes:
    """The 110-byte header plus the NUL-terminated, 4-byte-aligned name."""
    name = entry.path.encode() + b"\0"
    nlink = 2 if stat.S_ISDIR(entry.mode) else 1
    fields = (ino, entry.mode, 0, 0, nlink, mtime, len(entry.data), 0, 0,
              entry.rdev[0], entry.rdev[1], len(name), 0)
    raw = MAGIC + b"".join(b"%08X" % f for f in fields) + name
    return raw + _pad(len(raw))


class CpioWriter:
    """Streams entries to `out`; call `finish()` once to write the trailer."""

    def __init__(self, out: BinaryIO, mtime: int = 0) -> None:
        self._out, self._mtime, self._ino, self.size = out, mtime, 0, 0

    def _write(self, chunk: bytes) -> None:
        self._out.write(chunk)
        self.size += len(chunk)

    def add(self, entry: Entry) -> None:
        if not entry.path or entry.path.startswith("/") or entry.path == TRAILER:
            raise ImageError(f"cpio: bad member name {entry.path!r}")
        self._ino += 1
        self._write(header(entry, self._ino, self._mtime))
        self._write(entry.data + _pad(len(entry.data)))

    def add_all(self, entries: Iterable[Entry]) -> None:
        for e in sorted(entries, key=lambda e: sort_key(e.path)):
            self.add(e)

    def finish(self) -> None:
        self._write(header(Entry(TRAILER, 0), 0, 0))
        # The kernel is happy without it, but bootloaders like 512-byte multiples.
        self._write(b"\0" * (-self.size % 512))


def write_archive(out: BinaryIO, entries: Iterable[Entry], mtime: int = 0) -> int:
    """Write a complete archive (sorted entries + trailer); returns bytes written."""
    w = CpioWriter(out, mtime)
    w.add_all(entries)
    w.finish()
    return w.size


def _tree_entry(path: Path, rel: str) -> Entry:
    st = path.lstat()
    perm = stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        return symlink_entry(rel, os.readlink(path))
    if stat.S_ISDIR(st.st_mode):
        return dir_entry(rel, perm)
    if stat.S_ISREG(st.st_mode):
        return file_entry(rel, path.read_bytes(), perm)
    raise ImageError(f"cpio: {path} is not a file, directory or symlink")


def tree_paths(root: Path) -> list[str]:
    """Every path under `root` (relative, posix), in archive order."""
    found = [Path(d, n).relative_to(root).as_posix()
             for d, dirs, files in os.walk(root) for n in (*dirs, *files)]
    return sorted(found, key=sort_key)


def write_tree(out: BinaryIO, root: Path, extra: Iterable[Entry] = (), mtime: int = 0) -> int:
    """Archive the staging tree `root` plus `extra` entries (device nodes); returns size.

    Files are read one at a time so the archive never sits in memory whole.
    """
    extras = {e.path: e for e in extra}
    paths = sorted({*tree_paths(root), *extras}, key=sort_key)
    w = CpioWriter(out, mtime)
    for rel in paths:
        w.add(extras[rel] if rel in extras else _tree_entry(root / rel, rel))
    w.finish()
    return w.size
