"""Parsing apt's output, .deb names, soname owners, symlinks inside unpacked packages."""

from __future__ import annotations

from pathlib import Path

import pytest

from pykata.domain.errors import ImageError
from pykata.image import debs
from pykata.image.files import resolve_in_tree

POLICY = """\
libc6:
  Installed: 2.36-9+deb12u10
  Candidate: 2.36-9+deb12u14
  Version table:
     2.36-9+deb12u14 500
        500 http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
zlib1g:amd64:
  Installed: (none)
  Candidate: 1:1.2.13.dfsg-1
gone:
  Installed: (none)
  Candidate: (none)
"""

SHOW = """\
Package: linux-image-cloud-amd64
Version: 6.1.192-2
Depends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)
Description: Linux for x86-64 cloud (meta-package)

Package: linux-image-cloud-amd64
Version: 6.1.176-1
Depends: linux-image-6.1.0-50-cloud-amd64 (= 6.1.176-1)
"""


def test_parse_policy() -> None:
    assert debs.parse_policy(POLICY) == {
        "libc6": "2.36-9+deb12u14", "zlib1g": "1:1.2.13.dfsg-1", "gone": None}


@pytest.mark.parametrize(("version", "expected"), [
    ("6.1.192-2", ("linux-image-6.1.0-56-cloud-amd64", "6.1.192-2")),
    ("6.1.176-1", ("linux-image-6.1.0-50-cloud-amd64", "6.1.176-1")),
], ids=["candidate", "older"])
def test_parse_kernel_depends(version: str, expected: tuple[str, str]) -> None:
    assert debs.parse_kernel_depends(SHOW, version) == expected


def test_parse_kernel_depends_errors() -> None:
    with pytest.raises(ImageError, match="no apt-cache record for version 9.9"):
        debs.parse_kernel_depends(SHOW, "9.9")
    with pytest.raises(ImageError, match="no pinned linux-image"):
        debs.parse_kernel_depends("Version: 1\nDepends: foo\n", "1")


@pytest.mark.parametrize(("name", "version", "glob"), [
    ("crun", "1.8.1-1+deb12u1", "crun_1.8.1-1+deb12u1_*.deb"),
    ("busybox-static", "1:1.35.0-4", "busybox-static_1%3a1.35.0-4_*.deb"),
], ids=["plain", "epoch"])
def test_deb_glob(name: str, version: str, glob: str) -> None:
    assert debs.deb_glob(name, version) == glob


def test_package_for_soname() -> None:
    assert debs.package_for_soname("libc.so.6", "/usr/bin/crun") == "libc6"
    with pytest.raises(ImageError, match="/usr/bin/x needs libfoo.so.9.*SONAME_PACKAGES"):
        debs.package_for_soname("libfoo.so.9", "/usr/bin/x")


def test_resolve_in_tree_follows_links_inside_the_tree(tmp_path: Path) -> None:
    lib = tmp_path / "lib/x86_64-linux-gnu"
    lib.mkdir(parents=True)
    (lib / "ld-linux-x86-64.so.2").write_bytes(b"loader")
    (lib / "libz.so.1.2.13").write_bytes(b"z")
    (lib / "libz.so.1").symlink_to("libz.so.1.2.13")
    (tmp_path / "lib64").mkdir()
    (tmp_path / "lib64/ld-linux-x86-64.so.2").symlink_to(
        "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    (tmp_path / "dangling").symlink_to("/etc/nowhere")
    assert resolve_in_tree(tmp_path, "lib64/ld-linux-x86-64.so.2") == \
        lib / "ld-linux-x86-64.so.2"
    assert resolve_in_tree(tmp_path, "lib/x86_64-linux-gnu/libz.so.1") == lib / "libz.so.1.2.13"
    assert resolve_in_tree(tmp_path, "dangling") is None
    assert resolve_in_tree(tmp_path, "missing") is None
