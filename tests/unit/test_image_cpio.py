"""The newc cpio writer: byte layout, ordering, determinism, and a round trip."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from pykata.domain.errors import ImageError
from pykata.image import cpio


def parse_newc(data: bytes) -> list[tuple[str, int, bytes, int, int]]:
    """(name, mode, data, rdevmajor, rdevminor) per member, trailer excluded."""
    out: list[tuple[str, int, bytes, int, int]] = []
    pos = 0
    while True:
        assert data[pos:pos + 6] == b"070701"
        f = [int(data[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize = f[11], f[6]
        name = data[pos + 110: pos + 110 + namesize - 1].decode()
        pos += 110 + namesize
        pos += -pos % 4
        body = data[pos:pos + filesize]
        pos += filesize
        pos += -pos % 4
        if name == "TRAILER!!!":
            return out
        assert f[2] == f[3] == 0, "uid/gid must be root"
        out.append((name, f[1], body, f[9], f[10]))


def test_header_golden_bytes() -> None:
    h = cpio.header(cpio.file_entry("init", b"abc", 0o755), ino=1, mtime=0)
    assert h == (b"070701" + b"00000001" + b"000081ED" + b"00000000" * 2 + b"00000001"
                 + b"00000000" + b"00000003" + b"00000000" * 4 + b"00000005" + b"00000000"
                 + b"init\0" + b"\0")
    assert len(h) % 4 == 0


@pytest.mark.parametrize(("paths", "expected"), [
    (["a/b", "a", "a-b"], ["a", "a/b", "a-b"]),
    (["usr/lib/x", "usr", "usr/lib", "bin"], ["bin", "usr", "usr/lib", "usr/lib/x"]),
], ids=["dash-after-children", "nested"])
def test_parents_sort_before_children(paths: list[str], expected: list[str]) -> None:
    assert sorted(paths, key=cpio.sort_key) == expected


def test_round_trip_all_member_kinds() -> None:
    entries = [
        cpio.symlink_entry("bin/sh", "/bin/busybox"),
        cpio.file_entry("bin/busybox", b"\x7fELF" * 3, 0o755),
        cpio.dir_entry("bin"),
        cpio.chardev_entry("dev/console", 5, 1),
        cpio.dir_entry("dev"),
        cpio.dir_entry("tmp", 0o1777),
    ]
    buf = io.BytesIO()
    size = cpio.write_archive(buf, entries)
    data = buf.getvalue()
    assert size == len(data) and size % 512 == 0
    members = parse_newc(data)
    assert [m[0] for m in members] == ["bin", "bin/busybox", "bin/sh", "dev", "dev/console",
                                       "tmp"]
    by_name = {m[0]: m for m in members}
    assert by_name["bin/sh"][2] == b"/bin/busybox"
    assert by_name["bin/busybox"][1] == 0o100755
    assert by_name["dev/console"][1] == 0o020600 and by_name["dev/console"][3:] == (5, 1)
    assert by_name["tmp"][1] == 0o041777


def test_output_is_deterministic() -> None:
    entries = [cpio.file_entry(f"f{i}", bytes([i]) * i) for i in range(5)]
    a, b = io.BytesIO(), io.BytesIO()
    cpio.write_archive(a, entries)
    cpio.write_archive(b, list(reversed(entries)))
    assert a.getvalue() == b.getvalue()


@pytest.mark.parametrize("name", ["", "/abs", "TRAILER!!!"], ids=["empty", "absolute", "trailer"])
def test_bad_member_names(name: str) -> None:
    with pytest.raises(ImageError, match="bad member name"):
        cpio.CpioWriter(io.BytesIO()).add(cpio.file_entry(name, b""))


def test_write_tree_with_extras(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (tmp_path / "init").write_text("#!/bin/sh\n")
    os.chmod(tmp_path / "init", 0o755)
    (tmp_path / "sh").symlink_to("/bin/busybox")
    (tmp_path / "dev").mkdir()
    buf = io.BytesIO()
    cpio.write_tree(buf, tmp_path, extra=[cpio.chardev_entry("dev/console", 5, 1)])
    members = parse_newc(buf.getvalue())
    assert [m[0] for m in members] == ["dev", "dev/console", "etc", "etc/passwd", "init", "sh"]
    assert {m[0]: m[1] for m in members}["init"] == 0o100755
    assert {m[0]: m[2] for m in members}["sh"] == b"/bin/busybox"
