"""What libraries are still missing, and the fixed files of the guest layout."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from pykata.image.sharedlibs import ElfNeeds, Missing, unresolved
from pykata.image.stage import FLOOR_SCRIPT, INIT_STUB, stage_busybox, stage_config

LOADER = "/lib64/ld-linux-x86-64.so.2"


@pytest.mark.parametrize(("needs", "present", "root_has", "expected"), [
    ({"/usr/bin/crun": ElfNeeds(("libc.so.6",), LOADER)}, set(), set(),
     Missing({"libc.so.6": "/usr/bin/crun"}, {LOADER: "/usr/bin/crun"})),
    ({"/usr/bin/crun": ElfNeeds(("libc.so.6",), LOADER)}, {"libc.so.6"}, {LOADER},
     Missing({}, {})),
    ({"/lib/x86_64-linux-gnu/libc.so.6": ElfNeeds(("ld-linux-x86-64.so.2",), LOADER),
      "/usr/bin/x": ElfNeeds((), LOADER)}, set(), {LOADER},
     Missing({}, {})),
    ({"/bin/busybox": ElfNeeds((), None)}, set(), set(), Missing({}, {})),
    ({"/b": ElfNeeds(("libz.so.1",), None), "/a": ElfNeeds(("libz.so.1",), None)},
     set(), set(), Missing({"libz.so.1": "/a"}, {})),
], ids=["all-missing", "all-there", "loader-is-not-a-library", "static", "first-needer-named"])
def test_unresolved(needs: dict[str, ElfNeeds], present: set[str], root_has: set[str],
                    expected: Missing) -> None:
    assert unresolved(needs, present, root_has) == expected


def test_stage_config_layout(tmp_path: Path) -> None:
    mods = ["/lib/modules/6.1/virtio.ko", "/lib/modules/6.1/virtio_pci.ko"]
    stage_config(tmp_path, "/usr/bin/crun", mods)
    assert (tmp_path / "init").read_text() == INIT_STUB
    assert INIT_STUB.startswith("#!/usr/bin/python3.11 -SsE\n")
    assert (tmp_path / "pykata-floor").read_text() == FLOOR_SCRIPT
    assert (tmp_path / "init").stat().st_mode & 0o777 == 0o755
    cfg = json.loads((tmp_path / "etc/pykata/agent.json").read_text())
    assert cfg == {"oci_runtime": "/usr/bin/crun", "modules": mods}
    assert (tmp_path / "etc/passwd").read_text().startswith("root:x:0:0:")
    for d in ("proc", "sys", "dev", "run", "tmp", "mnt"):
        assert (tmp_path / d).is_dir()
    assert stat.S_IMODE((tmp_path / "tmp").stat().st_mode) == 0o1777


def test_stage_busybox_relative_applet_links(tmp_path: Path) -> None:
    pkg, root = tmp_path / "pkg", tmp_path / "root"
    (pkg / "bin").mkdir(parents=True)
    fake = pkg / "bin/busybox"
    fake.write_text("#!/bin/sh\nprintf '/bin/sh\\nusr/bin/env\\nlinuxrc\\nbin/busybox\\n'\n")
    fake.chmod(0o755)
    stage_busybox(pkg, root)
    assert (root / "bin/busybox").read_bytes() == fake.read_bytes()
    links = {p: os.readlink(root / p) for p in ("bin/sh", "usr/bin/env", "linuxrc")}
    assert links == {"bin/sh": "busybox", "usr/bin/env": "../../bin/busybox",
                     "linuxrc": "bin/busybox"}
    assert not (root / "bin/busybox").is_symlink()
