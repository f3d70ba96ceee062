"""The guest's Python: which stdlib files ship, and turning .py into sourceless .pyc.

`keep_stdlib_path` and `guest_magic` are pure. `compile_tree` compiles a staging directory
in place (legacy layout: module.pyc where module.py was, then the .py is removed) with the
host interpreter, which is only valid when its bytecode magic equals the guest's; the
caller checks that with `check_magic` first. Nothing here decides where files go.
"""

from __future__ import annotations

import importlib.util
import os
import py_compile
import re
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path, PurePosixPath

from pykata.domain.errors import ImageError

# Top-level entries of /usr/lib/python3.11 an agent never needs.
PRUNED_TOP = frozenset({
    "test", "idlelib", "tkinter", "turtledemo", "turtle.py", "ensurepip", "lib2to3",
    "pydoc_data", "distutils", "_distutils_system_mod.py", "sqlite3", "curses", "venv",
    "__phello__", "__hello__.py", "antigravity.py", "this.py", "sitecustomize.py",
    "EXTERNALLY-MANAGED", "LICENSE.txt",
})
# Test suites nested inside packages (ctypes/test, unittest/test, ...).
PRUNED_DIRS = frozenset({"test", "tests", "idle_test", "__pycache__"})
# Extension modules that are test helpers or need libraries the image leaves out
# (ncurses, readline, sqlite, Berkeley DB, NIS, OpenSSL, libcrypt, Tk).
PRUNED_EXTENSIONS = frozenset({
    "_testcapi", "_testbuffer", "_testclinic", "_testimportmultiple", "_testinternalcapi",
    "_testmultiphase", "_ctypes_test", "_xxtestfuzz", "xxlimited", "xxlimited_35",
    "_curses", "_curses_panel", "readline", "_sqlite3", "_dbm", "_gdbm", "nis",
    "ossaudiodev", "_ssl", "_hashlib", "_crypt", "_tkinter",
})

_MAGIC_RE = re.compile(r"^MAGIC_NUMBER = \((\d+)\)\.to_bytes\(2, 'little'\) \+ b'\\r\\n'",
                       re.MULTILINE)


def keep_stdlib_path(rel: PurePosixPath) -> bool:
    """Whether a path relative to /usr/lib/python3.11 goes into the guest."""
    parts = rel.parts
    if not parts or parts[0] in PRUNED_TOP or parts[0].startswith("config-3."):
        return False
    if any(p in PRUNED_DIRS for p in parts[:-1]) or parts[-1] == "__pycache__":
        return False
    if parts[0] == "lib-dynload" and len(parts) == 2:
        return parts[1].split(".", 1)[0] not in PRUNED_EXTENSIONS
    return True


def guest_magic(bootstrap_external_source: str) -> bytes:
    """The .pyc magic number from the guest's importlib/_bootstrap_external.py."""
    m = _MAGIC_RE.search(bootstrap_external_source)
    if m is None:
        raise ImageError("guest importlib/_bootstrap_external.py: MAGIC_NUMBER not found")
    return int(m.group(1)).to_bytes(2, "little") + b"\r\n"


def host_magic() -> bytes:
    return importlib.util.MAGIC_NUMBER


def check_magic(guest: bytes, host: bytes | None = None) -> None:
    host = host_magic() if host is None else host
    if guest != host:
        raise ImageError(
            f"host Python bytecode magic {host.hex()} differs from the guest's "
            f"{guest.hex()}: build the image with a Python 3.11 interpreter")


def _compile_one(job: tuple[str, str]) -> str | None:
    """Compile one file; returns an error line instead of raising (it crosses processes)."""
    src, dfile = job
    try:
        py_compile.compile(src, cfile=src + "c", dfile=dfile, doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    except py_compile.PyCompileError as exc:
        return f"{dfile}: {exc.msg.strip().splitlines()[-1]}"
    os.unlink(src)
    return None


def python_sources(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if p.is_file() and not p.is_symlink())


def compile_tree(root: Path, guest_prefix: str, sources: Sequence[Path]) -> None:
    """Compile `sources` (under `root`, shown as `guest_prefix/...`) to sourceless .pyc.

    UNCHECKED_HASH pycs carry no mtime, so the output is reproducible.
    """
    jobs = [(str(p), f"{guest_prefix}/{p.relative_to(root).as_posix()}") for p in sources]
    workers = max(1, min(8, os.cpu_count() or 1))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        errors = [e for e in pool.map(_compile_one, jobs, chunksize=32) if e is not None]
    if errors:
        raise ImageError(f"compiling python failed for {len(errors)} file(s): "
                         + "; ".join(errors[:5]))
