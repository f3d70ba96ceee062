"""File helpers for staging trees: copy out of an unpacked package, resolving its symlinks.

An unpacked .deb may hold absolute symlinks (/lib64/ld-linux-x86-64.so.2 -> /lib/...)
that must be read inside the package tree, never on the host. Helpers here copy bytes and
modes; they decide nothing about what the image contains.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path, PurePosixPath

from pykata.domain.errors import ImageError

_MAX_LINKS = 40


def resolve_in_tree(root: Path, rel: str | PurePosixPath) -> Path | None:
    """Follow symlinks of `root/rel` as if `root` were "/"; None if it dangles."""
    parts = list(PurePosixPath(rel).parts)
    current: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part in ("/", "."):
            continue
        if part == "..":
            if current:
                current.pop()
            continue
        candidate = root.joinpath(*current, part)
        if candidate.is_symlink():
            hops += 1
            if hops > _MAX_LINKS:
                raise ImageError(f"{candidate}: too many levels of symbolic links")
            target = PurePosixPath(os.readlink(candidate))
            if target.is_absolute():
                current = []
            parts = list(target.parts) + parts
            continue
        if not candidate.exists():
            return None
        current.append(part)
    return root.joinpath(*current)


def copy_file(src: Path, dst: Path, mode: int | None = None) -> None:
    """Copy bytes (following a final symlink) and the permission bits."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    os.chmod(dst, mode if mode is not None else src.stat().st_mode & 0o7777)


def copy_from_tree(root: Path, rel: str, dst: Path) -> None:
    """Copy the file `rel` of an unpacked package to `dst`, as a regular file."""
    real = resolve_in_tree(root, rel)
    if real is None or not real.is_file():
        raise ImageError(f"{root.name}: /{rel} is missing from the package")
    copy_file(real, dst)


def write_text(path: Path, text: str, mode: int = 0o644) -> None:
    write_bytes(path, text.encode(), mode)


def write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def tree_size(root: Path) -> int:
    return sum(p.lstat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())
