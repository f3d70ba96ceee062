"""The guest stdlib prune predicate, the bytecode magic check, and .pyc compilation."""

from __future__ import annotations

import importlib.util
import marshal
from pathlib import Path, PurePosixPath

import pytest

from pykata.domain.errors import ImageError
from pykata.image import pycompile


@pytest.mark.parametrize(("path", "keep"), [
    ("os.py", True),
    ("encodings/utf_8.py", True),
    ("asyncio/base_events.py", True),
    ("json/decoder.py", True),
    ("ctypes/util.py", True),
    ("lib-dynload/_asyncio.cpython-311-x86_64-linux-gnu.so", True),
    ("lib-dynload/_ctypes.cpython-311-x86_64-linux-gnu.so", True),
    ("test/test_os.py", False),
    ("idlelib/idle.py", False),
    ("tkinter/__init__.py", False),
    ("lib2to3/fixer_base.py", False),
    ("ensurepip/__init__.py", False),
    ("distutils/core.py", False),
    ("pydoc_data/topics.py", False),
    ("sqlite3/__init__.py", False),
    ("config-3.11-x86_64-linux-gnu/Makefile", False),
    ("turtle.py", False),
    ("ctypes/test/test_bytes.py", False),
    ("unittest/test/test_case.py", False),
    ("email/__pycache__/x.cpython-311.pyc", False),
    ("lib-dynload/_ssl.cpython-311-x86_64-linux-gnu.so", False),
    ("lib-dynload/_testcapi.cpython-311-x86_64-linux-gnu.so", False),
    ("lib-dynload/readline.cpython-311-x86_64-linux-gnu.so", False),
], ids=lambda v: str(v))
def test_keep_stdlib_path(path: str, keep: bool) -> None:
    assert pycompile.keep_stdlib_path(PurePosixPath(path)) is keep


def test_guest_magic_parses_bootstrap_external() -> None:
    src = "x = 1\nMAGIC_NUMBER = (3495).to_bytes(2, 'little') + b'\\r\\n'\n"
    assert pycompile.guest_magic(src) == b"\xa7\r\r\n"


def test_guest_magic_missing() -> None:
    with pytest.raises(ImageError, match="MAGIC_NUMBER not found"):
        pycompile.guest_magic("nothing here")


def test_check_magic() -> None:
    pycompile.check_magic(importlib.util.MAGIC_NUMBER)
    with pytest.raises(ImageError, match="differs from the guest's a70d0d0a"):
        pycompile.check_magic(b"\xa7\r\r\n", host=b"\xcb\r\r\n")


def test_compile_tree_legacy_sourceless(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg/mod.py").write_text("VALUE = 42\n")
    pycompile.compile_tree(tmp_path, "/usr/lib/x", pycompile.python_sources(tmp_path))
    pyc = tmp_path / "pkg/mod.pyc"
    assert pyc.exists() and not (tmp_path / "pkg/mod.py").exists()
    data = pyc.read_bytes()
    assert data[:4] == importlib.util.MAGIC_NUMBER
    code = marshal.loads(data[16:])
    assert code.co_filename == "/usr/lib/x/pkg/mod.py"


def test_compile_tree_reports_syntax_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text("def (:\n")
    with pytest.raises(ImageError, match="bad.py"):
        pycompile.compile_tree(tmp_path, "", pycompile.python_sources(tmp_path))
